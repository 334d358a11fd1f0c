//! Index, manifest and config blobs as order-preserving JSON with the few typed edits the
//! overlay operations need. Everything not edited is kept as parsed (see [`super::json`]).

use serde_json::{Map, Value, json};

use super::digest::Digest;
use super::json;
use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const SQUASHFS_LAYER: &str = "application/vnd.sylabs.image.layer.v1.squashfs";
pub const EXT3_LAYER: &str = "application/vnd.sylabs.image.layer.v1.ext3";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The history entry `overlay create` appends (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A content descriptor: what every reference from one blob to another holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: Digest,
}

impl Descriptor {
    /// Read `{mediaType, size, digest}` from a descriptor object; `what` names it in errors.
    pub fn from_json(value: &Value, what: &str) -> Result<Descriptor> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::malformed(format!("{what}: descriptor is not an object")))?;
        let media_type = obj
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
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
        json!({"mediaType": self.media_type, "size": self.size, "digest": self.digest.to_string()})
    }
}

/// Whether a manifest media type is an image manifest a runtime can select.
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether a media type is a nested index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether a config media type is a Docker/OCI image config (whose `rootfs` and `history`
/// the reference edits); other configs (data containers) are kept byte for byte.
pub fn is_image_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// One entry of an index's `manifests` array.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub position: usize,
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
    value: Value,
}

impl Index {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index> {
        let value = json::parse(bytes, what)?;
        if !value.is_object() {
            return Err(Error::malformed(format!(
                "{what}: index is not a JSON object"
            )));
        }
        Ok(Index { value })
    }

    pub fn entries(&self, what: &str) -> Result<Vec<IndexEntry>> {
        let Some(manifests) = self.value.get("manifests") else {
            return Ok(Vec::new());
        };
        let list = manifests
            .as_array()
            .ok_or_else(|| Error::malformed(format!("{what}: `manifests` is not an array")))?;
        list.iter()
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
            .collect()
    }

    /// The one runnable image, by SingularityCE's rule: among top-level image manifests
    /// whose `ref.name` does not start with `_cosign`, there must be exactly one.
    pub fn single_image(&self, what: &str) -> Result<IndexEntry> {
        let entries = self.entries(what)?;
        let mut images = entries
            .into_iter()
            .filter(|e| is_image_manifest(&e.descriptor.media_type) && !e.is_cosign());
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
    pub fn with_single_image(&self, image: Value) -> Index {
        let mut value = self.value.clone();
        let obj = value.as_object_mut().expect("checked at parse");
        obj.insert("manifests".into(), Value::Array(vec![image]));
        Index { value }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        json::to_go_bytes(&self.value)
    }

    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// An image manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    value: Value,
}

impl Manifest {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Manifest> {
        let value = json::parse(bytes, what)?;
        let manifest = Manifest { value };
        manifest.config(what)?;
        manifest.layers(what)?;
        Ok(manifest)
    }

    pub fn media_type(&self) -> Option<&str> {
        self.value.get("mediaType").and_then(Value::as_str)
    }

    pub fn artifact_type(&self) -> Option<&str> {
        self.value.get("artifactType").and_then(Value::as_str)
    }

    pub fn config(&self, what: &str) -> Result<Descriptor> {
        let config = self
            .value
            .get("config")
            .ok_or_else(|| Error::malformed(format!("{what}: manifest has no config")))?;
        Descriptor::from_json(config, &format!("{what}: config"))
    }

    pub fn layers(&self, what: &str) -> Result<Vec<Descriptor>> {
        let Some(layers) = self.value.get("layers") else {
            return Ok(Vec::new());
        };
        let layers = layers
            .as_array()
            .ok_or_else(|| Error::malformed(format!("{what}: `layers` is not an array")))?;
        layers
            .iter()
            .enumerate()
            .map(|(i, v)| Descriptor::from_json(v, &format!("{what}: layers[{i}]")))
            .collect()
    }

    /// Point the config descriptor at a new config blob (other keys of it kept).
    pub fn set_config(&mut self, size: u64, digest: &Digest) {
        let config = self.value["config"]
            .as_object_mut()
            .expect("checked at parse");
        config.insert("size".into(), Value::from(size));
        config.insert("digest".into(), Value::from(digest.to_string()));
    }

    pub fn push_layer(&mut self, layer: &Descriptor) {
        let obj = self.value.as_object_mut().expect("checked at parse");
        let layers = obj
            .entry("layers")
            .or_insert_with(|| Value::Array(Vec::new()));
        layers
            .as_array_mut()
            .expect("checked at parse")
            .push(layer.to_json());
    }

    /// Replace layer `index` by a descriptor of the reference's exact form.
    pub fn set_layer(&mut self, index: usize, layer: &Descriptor) {
        self.value["layers"][index] = layer.to_json();
    }

    /// Only the digest and size of layer `index` change (its other keys are kept).
    pub fn set_layer_digest(&mut self, index: usize, size: u64, digest: &Digest) {
        let layer = self.value["layers"][index]
            .as_object_mut()
            .expect("checked at parse");
        layer.insert("size".into(), Value::from(size));
        layer.insert("digest".into(), Value::from(digest.to_string()));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        json::to_go_bytes(&self.value)
    }

    /// The RootIndex descriptor the reference (ggcr ≥ 0.21.6) writes for this manifest.
    pub fn index_descriptor(
        &self,
        bytes: &[u8],
        fallback_media_type: &str,
        config_media_type: &str,
    ) -> Value {
        let mut desc = Map::new();
        desc.insert(
            "mediaType".into(),
            Value::from(self.media_type().unwrap_or(fallback_media_type)),
        );
        desc.insert("size".into(), Value::from(bytes.len() as u64));
        desc.insert("digest".into(), Value::from(Digest::of(bytes).to_string()));
        desc.insert(
            "artifactType".into(),
            Value::from(self.artifact_type().unwrap_or(config_media_type)),
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
    value: Value,
}

impl Config {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Config> {
        let value = json::parse(bytes, what)?;
        if !value.is_object() {
            return Err(Error::malformed(format!(
                "{what}: config is not a JSON object"
            )));
        }
        let config = Config { value };
        config.diff_ids(what)?;
        Ok(config)
    }

    /// `rootfs.diff_ids` (empty when absent).
    pub fn diff_ids(&self, what: &str) -> Result<Vec<Digest>> {
        let Some(ids) = self.value.get("rootfs").and_then(|r| r.get("diff_ids")) else {
            return Ok(Vec::new());
        };
        let ids = ids
            .as_array()
            .ok_or_else(|| Error::malformed(format!("{what}: rootfs.diff_ids is not an array")))?;
        ids.iter()
            .enumerate()
            .map(|(i, v)| {
                let text = v.as_str().ok_or_else(|| {
                    Error::malformed(format!("{what}: rootfs.diff_ids[{i}] is not a string"))
                })?;
                Digest::parse(text).map_err(|e| e.context(format!("{what}: rootfs.diff_ids[{i}]")))
            })
            .collect()
    }

    fn diff_ids_mut(&mut self) -> &mut Vec<Value> {
        let obj = self.value.as_object_mut().expect("checked at parse");
        insert_in_ggcr_order(obj, "rootfs", json!({"type": "layers"}));
        let rootfs = obj.get_mut("rootfs").expect("just ensured");
        if !rootfs.is_object() {
            *rootfs = json!({"type": "layers"});
        }
        let ids = rootfs
            .as_object_mut()
            .expect("made an object")
            .entry("diff_ids")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !ids.is_array() {
            *ids = Value::Array(Vec::new());
        }
        ids.as_array_mut().expect("made an array")
    }

    pub fn push_diff_id(&mut self, digest: &Digest) {
        self.diff_ids_mut().push(Value::from(digest.to_string()));
    }

    pub fn set_diff_id(&mut self, index: usize, digest: &Digest) {
        let ids = self.diff_ids_mut();
        ids[index] = Value::from(digest.to_string());
    }

    /// Append `{"created":"0001-01-01T00:00:00Z"}` to `history`, as `overlay create` does.
    pub fn push_empty_history(&mut self) {
        let obj = self.value.as_object_mut().expect("checked at parse");
        insert_in_ggcr_order(obj, "history", Value::Array(Vec::new()));
        let history = obj.get_mut("history").expect("just ensured");
        if let Some(list) = history.as_array_mut() {
            list.push(json!({"created": ZERO_TIME}));
        }
    }

    pub fn history_len(&self) -> usize {
        self.value
            .get("history")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        json::to_go_bytes(&self.value)
    }

    pub fn value(&self) -> &Value {
        &self.value
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
        let one = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{d1}"}},{{"mediaType":"{OCI_MANIFEST}","size":1,"digest":"{d2}","annotations":{{"{REF_NAME}":"_cosign:sha256-{}.sig"}}}}]}}"#,
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
    fn malformed_descriptors_are_named() {
        let bad = r#"{"config":{"mediaType":"x","size":"12","digest":"sha256:00"},"layers":[]}"#;
        let err = Manifest::parse(bad.as_bytes(), "manifest sha256:m").unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest sha256:m: config: descriptor has no valid size"
        );
    }
}
