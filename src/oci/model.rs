//! Index, manifest and config blobs: typed views parsed once, over the order-preserving JSON
//! that stays the single source of their bytes. Edits change the JSON and the typed view
//! together; everything not edited is kept as parsed (see [`super::json`]), so unknown
//! fields, key order and number spellings survive.

use serde_json::{Map, Value, json};

use super::json;
use super::media_type::MediaType;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// The annotation naming an index entry (a tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The history entry `overlay create` appends (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `secs` since the Unix epoch as an RFC 3339 UTC time (`2024-05-01T12:00:00Z`), the form
/// of `created` fields.
pub fn rfc3339_utc(secs: i64) -> String {
    let (year, month, day, hour, minute, second) = crate::time::civil_utc(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// A content descriptor: what every reference from one blob to another holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The referenced blob's media type (`Other("")` when absent).
    pub media_type: MediaType,
    /// The referenced blob's size in bytes.
    pub size: u64,
    /// The referenced blob's digest.
    pub digest: Digest,
}

impl Descriptor {
    /// Read `{mediaType, size, digest}` from a descriptor object; `what` names it in errors.
    pub fn from_json(value: &Value, what: &str) -> Result<Descriptor> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::malformed(format!("{what}: descriptor is not an object")))?;
        let media_type =
            MediaType::parse(obj.get("mediaType").and_then(Value::as_str).unwrap_or(""));
        let size = obj
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::malformed(format!("{what}: descriptor has no valid size")))?;
        let digest_text = obj
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::malformed(format!("{what}: descriptor has no digest")))?;
        let digest = Digest::parse(digest_text).map_err(|e| e.context(what))?;
        Ok(Descriptor {
            media_type,
            size,
            digest,
        })
    }

    /// The exact form the reference writes for layers it creates: `{mediaType,size,digest}`.
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type.as_str(), "size": self.size, "digest": self.digest.to_string()})
    }
}

/// Point a descriptor object at another blob: only `size` and `digest` change.
fn retarget(value: &mut Value, size: u64, digest: &Digest) {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("size".into(), Value::from(size));
        obj.insert("digest".into(), Value::from(digest.to_string()));
    }
}

/// One entry of an index's `manifests` array.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// Position in the `manifests` array.
    pub position: usize,
    /// The manifest (or nested index) it points at.
    pub descriptor: Descriptor,
    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub ref_name: Option<String>,
}

impl IndexEntry {
    /// A cosign signature or attestation image stored by tag name (`_cosign:sha256-….sig`).
    pub fn is_cosign(&self) -> bool {
        self.ref_name
            .as_deref()
            .is_some_and(|n| n.starts_with("_cosign"))
    }
}

/// An image index (the SIF RootIndex, or a nested index).
#[derive(Debug, Clone)]
pub struct Index {
    value: Map<String, Value>,
    entries: Vec<IndexEntry>,
}

impl Index {
    /// Parse an index blob; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index> {
        let value = json::parse_object(bytes, what, "index")?;
        let entries = match value.get("manifests") {
            None => Vec::new(),
            Some(manifests) => manifests
                .as_array()
                .ok_or_else(|| Error::malformed(format!("{what}: `manifests` is not an array")))?
                .iter()
                .enumerate()
                .map(|(position, v)| {
                    let descriptor =
                        Descriptor::from_json(v, &format!("{what}: manifests[{position}]"))?;
                    let ref_name = v
                        .get("annotations")
                        .and_then(|a| a.get(REF_NAME))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    Ok(IndexEntry {
                        position,
                        descriptor,
                        ref_name,
                    })
                })
                .collect::<Result<_>>()?,
        };
        Ok(Index { value, entries })
    }

    /// A new OCI index holding one image descriptor, as ggcr writes a RootIndex.
    pub fn single(image: Value) -> Index {
        Index::with_manifests(vec![image])
    }

    /// A new OCI index listing `manifests` (descriptor objects).
    pub fn with_manifests(manifests: Vec<Value>) -> Index {
        let mut value = Map::new();
        value.insert("schemaVersion".into(), Value::from(2));
        value.insert(
            "mediaType".into(),
            Value::from(MediaType::OciIndex.as_str()),
        );
        value.insert("manifests".into(), Value::Array(manifests));
        let bytes = json::object_to_go_bytes(&value);
        // Entries that are not valid descriptors are kept as they are (typed view empty).
        Index::parse(&bytes, "new index").unwrap_or(Index {
            value,
            entries: Vec::new(),
        })
    }

    /// The entries of `manifests`, in order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The `schemaVersion` field, if it is a number.
    pub fn schema_version(&self) -> Option<u64> {
        self.value.get("schemaVersion").and_then(Value::as_u64)
    }

    /// The one runnable image, by SingularityCE's rule: among top-level image manifests
    /// whose `ref.name` does not start with `_cosign`, there must be exactly one.
    pub fn single_image(&self, what: &str) -> Result<&IndexEntry> {
        let mut images = self
            .entries
            .iter()
            .filter(|e| e.descriptor.media_type.is_image_manifest() && !e.is_cosign());
        let first = images
            .next()
            .ok_or_else(|| Error::malformed(format!("{what}: no image manifest in the index")))?;
        if images.next().is_some() {
            return Err(Error::unsupported(format!(
                "{what}: the index holds more than one image; sifovl edits single-image OCI-SIFs"
            )));
        }
        Ok(first)
    }

    /// The index after an edit of its image: every index-level field kept, `manifests`
    /// replaced by the one image descriptor (cosign entries go: the edit invalidates them).
    pub fn with_single_image(&self, image: Value) -> Result<Index> {
        let mut value = self.value.clone();
        value.insert("manifests".into(), Value::Array(vec![image]));
        Index::parse(&json::object_to_go_bytes(&value), "new index")
    }

    /// The blob's bytes, as Go's encoder writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        json::object_to_go_bytes(&self.value)
    }
}

/// An image manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    value: Map<String, Value>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

impl Manifest {
    /// Parse a manifest blob; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Manifest> {
        let value = match json::parse(bytes, what)? {
            Value::Object(map) => map,
            _ => return Err(Error::malformed(format!("{what}: manifest has no config"))),
        };
        let config = value
            .get("config")
            .ok_or_else(|| Error::malformed(format!("{what}: manifest has no config")))
            .and_then(|c| Descriptor::from_json(c, &format!("{what}: config")))?;
        let layers = match value.get("layers") {
            None => Vec::new(),
            Some(layers) => layers
                .as_array()
                .ok_or_else(|| Error::malformed(format!("{what}: `layers` is not an array")))?
                .iter()
                .enumerate()
                .map(|(i, v)| Descriptor::from_json(v, &format!("{what}: layers[{i}]")))
                .collect::<Result<_>>()?,
        };
        Ok(Manifest {
            value,
            config,
            layers,
        })
    }

    /// The manifest's own `mediaType` field, if present.
    pub fn media_type(&self) -> Option<MediaType> {
        self.value
            .get("mediaType")
            .and_then(Value::as_str)
            .map(MediaType::parse)
    }

    /// The `artifactType` field, if present.
    pub fn artifact_type(&self) -> Option<&str> {
        self.value.get("artifactType").and_then(Value::as_str)
    }

    /// The config descriptor.
    pub fn config(&self) -> &Descriptor {
        &self.config
    }

    /// The layer descriptors, bottom first.
    pub fn layers(&self) -> &[Descriptor] {
        &self.layers
    }

    /// Point the config descriptor at a new config blob (other keys of it kept).
    pub fn set_config(&mut self, size: u64, digest: &Digest) {
        if let Some(config) = self.value.get_mut("config") {
            retarget(config, size, digest);
        }
        self.config.size = size;
        self.config.digest = *digest;
    }

    /// Append a layer descriptor of the reference's exact form.
    pub fn push_layer(&mut self, layer: &Descriptor) {
        let layers = self
            .value
            .entry("layers")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = layers.as_array_mut() {
            list.push(layer.to_json());
        }
        self.layers.push(layer.clone());
    }

    fn layer_json(&mut self, index: usize) -> Result<&mut Value> {
        self.value
            .get_mut("layers")
            .and_then(Value::as_array_mut)
            .and_then(|l| l.get_mut(index))
            .ok_or_else(|| Error::malformed(format!("manifest has no layer {index}")))
    }

    /// Remove the top layer's descriptor, keeping the others exactly as they are.
    pub fn pop_layer(&mut self) -> Option<Descriptor> {
        let removed = self.layers.pop()?;
        if let Some(list) = self.value.get_mut("layers").and_then(Value::as_array_mut) {
            list.pop();
        }
        Some(removed)
    }

    /// Replace every layer descriptor by `layers` (of the reference's exact form).
    pub fn set_layers(&mut self, layers: &[Descriptor]) {
        self.value.insert(
            "layers".into(),
            Value::Array(layers.iter().map(Descriptor::to_json).collect()),
        );
        self.layers = layers.to_vec();
    }

    /// Replace layer `index` by a descriptor of the reference's exact form.
    pub fn set_layer(&mut self, index: usize, layer: &Descriptor) -> Result<()> {
        *self.layer_json(index)? = layer.to_json();
        self.layers[index] = layer.clone();
        Ok(())
    }

    /// Only the digest and size of layer `index` change (its other keys are kept).
    pub fn set_layer_digest(&mut self, index: usize, size: u64, digest: &Digest) -> Result<()> {
        retarget(self.layer_json(index)?, size, digest);
        self.layers[index].size = size;
        self.layers[index].digest = *digest;
        Ok(())
    }

    /// The blob's bytes, as Go's encoder writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        json::object_to_go_bytes(&self.value)
    }

    /// The RootIndex descriptor the reference (ggcr ≥ 0.21.6) writes for this manifest.
    pub fn index_descriptor(
        &self,
        bytes: &[u8],
        fallback_media_type: &MediaType,
        config_media_type: &MediaType,
    ) -> Value {
        let mut desc = Map::new();
        let media_type = self
            .media_type()
            .unwrap_or_else(|| fallback_media_type.clone());
        desc.insert("mediaType".into(), Value::from(media_type.as_str()));
        desc.insert("size".into(), Value::from(bytes.len() as u64));
        desc.insert("digest".into(), Value::from(Digest::of(bytes).to_string()));
        desc.insert(
            "artifactType".into(),
            Value::from(self.artifact_type().unwrap_or(config_media_type.as_str())),
        );
        Value::Object(desc)
    }
}

/// Top-level config keys in go-containerregistry's struct order: where the reference would
/// serialise a key we add.
const GGCR_CONFIG_ORDER: [&str; 12] = [
    "architecture",
    "author",
    "container",
    "created",
    "docker_version",
    "history",
    "os",
    "rootfs",
    "config",
    "os.version",
    "variant",
    "os.features",
];

/// Insert `key` (when absent) where ggcr would put it relative to the known keys present.
fn insert_in_ggcr_order(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.contains_key(key) {
        return;
    }
    let rank = |k: &str| GGCR_CONFIG_ORDER.iter().position(|o| *o == k);
    let mine = rank(key).unwrap_or(usize::MAX);
    let at = obj
        .keys()
        .position(|k| rank(k).is_some_and(|r| r > mine))
        .unwrap_or(obj.len());
    obj.shift_insert(at, key.to_string(), value);
}

/// An image config. Only Docker/OCI image configs are edited.
#[derive(Debug, Clone)]
pub struct Config {
    value: Map<String, Value>,
    diff_ids: Vec<Digest>,
}

impl Config {
    /// Parse a config blob; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Config> {
        let value = json::parse_object(bytes, what, "config")?;
        let diff_ids = match value.get("rootfs").and_then(|r| r.get("diff_ids")) {
            None => Vec::new(),
            Some(ids) => ids
                .as_array()
                .ok_or_else(|| {
                    Error::malformed(format!("{what}: rootfs.diff_ids is not an array"))
                })?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let text = v.as_str().ok_or_else(|| {
                        Error::malformed(format!("{what}: rootfs.diff_ids[{i}] is not a string"))
                    })?;
                    Digest::parse(text)
                        .map_err(|e| e.context(format!("{what}: rootfs.diff_ids[{i}]")))
                })
                .collect::<Result<_>>()?,
        };
        Ok(Config { value, diff_ids })
    }

    /// `rootfs.diff_ids` (empty when absent).
    pub fn diff_ids(&self) -> &[Digest] {
        &self.diff_ids
    }

    /// The `rootfs.diff_ids` array, created (in ggcr's key order) when absent.
    fn diff_ids_json(&mut self) -> &mut Vec<Value> {
        insert_in_ggcr_order(&mut self.value, "rootfs", json!({"type": "layers"}));
        let rootfs = self
            .value
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers"}));
        if !rootfs.is_object() {
            *rootfs = json!({"type": "layers"});
        }
        let Value::Object(rootfs) = rootfs else {
            unreachable!("made an object above")
        };
        let ids = rootfs
            .entry("diff_ids")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !ids.is_array() {
            *ids = Value::Array(Vec::new());
        }
        let Value::Array(ids) = ids else {
            unreachable!("made an array above")
        };
        ids
    }

    /// Append a diff_id (a new top layer).
    pub fn push_diff_id(&mut self, digest: &Digest) {
        self.diff_ids_json().push(Value::from(digest.to_string()));
        self.diff_ids.push(*digest);
    }

    /// Replace diff_id `index`.
    pub fn set_diff_id(&mut self, index: usize, digest: &Digest) -> Result<()> {
        let ids = self.diff_ids_json();
        let slot = ids
            .get_mut(index)
            .ok_or_else(|| Error::malformed(format!("config has no diff_id {index}")))?;
        *slot = Value::from(digest.to_string());
        self.diff_ids[index] = *digest;
        Ok(())
    }

    /// Replace `rootfs.diff_ids` by `ids`.
    pub fn set_diff_ids(&mut self, ids: &[Digest]) {
        let list = self.diff_ids_json();
        *list = ids.iter().map(|d| Value::from(d.to_string())).collect();
        self.diff_ids = ids.to_vec();
    }

    /// Replace `history` by the one entry SingularityCE writes when it converts an image's
    /// layers: `{"created":…,"created_by":…,"comment":…}`.
    pub fn replace_history(&mut self, created: &str, created_by: &str, comment: &str) {
        let entry = json!({"created": created, "created_by": created_by, "comment": comment});
        insert_in_ggcr_order(&mut self.value, "history", Value::Array(Vec::new()));
        self.value
            .insert("history".into(), Value::Array(vec![entry]));
    }

    /// Append `{"created":"0001-01-01T00:00:00Z"}` to `history`, as `overlay create` does.
    pub fn push_empty_history(&mut self) {
        insert_in_ggcr_order(&mut self.value, "history", Value::Array(Vec::new()));
        if let Some(list) = self.value.get_mut("history").and_then(Value::as_array_mut) {
            list.push(json!({"created": ZERO_TIME}));
        }
    }

    /// Forget the top layer: its diff_id and its `history` entry: the one `overlay create`
    /// appends, or else the last that describes a layer when more do than layers remain
    /// (entries with `empty_layer: true` describe none). A history left empty is removed, as
    /// it was before `overlay create` added to it.
    pub fn pop_layer(&mut self) {
        if self.diff_ids.pop().is_some() {
            self.diff_ids_json().pop();
        }
        let layers = self.diff_ids.len();
        let Some(list) = self.value.get_mut("history").and_then(Value::as_array_mut) else {
            return;
        };
        let describes_layer =
            |h: &Value| h.get("empty_layer").and_then(Value::as_bool) != Some(true);
        // What `overlay create` (and `add`) appended; else the entry of the top layer when
        // the history describes every layer.
        let appended = json!({"created": ZERO_TIME});
        if list.last() == Some(&appended) {
            list.pop();
        } else if list.iter().filter(|h| describes_layer(h)).count() > layers
            && let Some(last) = list.iter().rposition(describes_layer)
        {
            list.remove(last);
        }
        if list.is_empty() {
            self.value.remove("history");
        }
    }

    /// Number of `history` entries.
    pub fn history_len(&self) -> usize {
        self.value
            .get("history")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }

    /// The blob's bytes, as Go's encoder writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        json::object_to_go_bytes(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"architecture":"amd64","created":"2024-01-01T00:00:00Z","history":[{"created":"2024-01-01T00:00:00Z","created_by":"x"}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]},"config":{"Env":["PATH=/bin"]},"container_config":{"Hostname":"kept"}}"#;

    #[test]
    fn adding_a_layer_appends_diff_id_and_zero_history_and_keeps_unknown_fields() {
        let mut config = Config::parse(CONFIG.as_bytes(), "config").unwrap();
        let d = Digest::of(b"overlay");
        config.push_diff_id(&d);
        config.push_empty_history();
        let text = String::from_utf8(config.to_bytes()).unwrap();
        let expected = CONFIG
            .replace(
                r#"{"created":"2024-01-01T00:00:00Z","created_by":"x"}]"#,
                r#"{"created":"2024-01-01T00:00:00Z","created_by":"x"},{"created":"0001-01-01T00:00:00Z"}]"#,
            )
            .replace(
                r#"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]"#,
                &format!(r#"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","{d}"]"#),
            );
        assert_eq!(text, expected);
        assert!(text.contains("container_config"));
    }

    #[test]
    fn single_image_skips_cosign_entries_and_refuses_two_images() {
        let d1 = Digest::of(b"1");
        let d2 = Digest::of(b"2");
        let manifest = MediaType::OciManifest;
        let one = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{manifest}","size":1,"digest":"{d1}"}},{{"mediaType":"{manifest}","size":1,"digest":"{d2}","annotations":{{"{REF_NAME}":"_cosign:sha256-{}.sig"}}}}]}}"#,
            d1.hex()
        );
        let index = Index::parse(one.as_bytes(), "index").unwrap();
        assert_eq!(index.single_image("index").unwrap().descriptor.digest, d1);
        let two = one.replace("_cosign:", "other:");
        let err = Index::parse(two.as_bytes(), "index")
            .unwrap()
            .single_image("index")
            .unwrap_err();
        assert!(err.to_string().contains("more than one image"), "{err}");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn malformed_descriptors_are_named() {
        let bad = r#"{"config":{"mediaType":"x","size":"12","digest":"sha256:00"},"layers":[]}"#;
        let err = Manifest::parse(bad.as_bytes(), "manifest sha256:m").unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest sha256:m: config: descriptor has no valid size"
        );
    }
}
