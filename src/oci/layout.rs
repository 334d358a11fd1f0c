//! OCI images outside a SIF: an image layout directory, the same layout inside a tar file
//! (`oci-archive`), and `docker save` archives (`docker-archive`). Each is a [`BlobStore`];
//! [`select_image`] resolves one runnable image in it (tag, nested index, platform) and
//! checks every JSON blob against the digest and size that name it.
//!
//! Archives are indexed, not unpacked: a blob is a byte range of the tar file, read in place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::json;
use super::media_type::MediaType;
use super::model::{Descriptor, Manifest, REF_NAME};
use super::platform::Platform;
use crate::digest::Digest;
use crate::error::{Error, Result, ResultExt};

/// JSON blobs larger than this are not plausible index, manifest or config blobs.
pub const MAX_JSON: u64 = 16 << 20;

/// Where a blob's bytes are: a byte range of a file (a layout's blob file, a tar member).
#[derive(Debug, Clone)]
pub struct BlobLocation {
    /// The file holding the blob.
    pub path: PathBuf,
    /// Where the blob starts in it.
    pub offset: u64,
    /// The blob's stored length.
    pub size: u64,
}

impl BlobLocation {
    /// A reader over exactly the blob's bytes.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        let mut file = File::open(&self.path).with_context(|| self.path.display())?;
        file.seek(SeekFrom::Start(self.offset))
            .with_context(|| self.path.display())?;
        Ok(Box::new(file.take(self.size)))
    }
}

/// A place blobs are read from by digest.
pub trait BlobStore {
    /// Where blob `digest` is stored.
    fn locate(&self, digest: &Digest) -> Result<BlobLocation>;

    /// What the store is, for messages (`oci:DIR`, `oci-archive:FILE`).
    fn describe(&self) -> String;

    /// The top-level `index.json`, if the store has one (a `docker save` archive may not).
    fn index_json(&self) -> Result<Option<Vec<u8>>>;

    /// Blob `digest`: a reader over exactly its stored bytes, and their length.
    fn open_blob(&self, digest: &Digest) -> Result<(Box<dyn Read + Send>, u64)> {
        let location = self.locate(digest)?;
        Ok((location.open()?, location.size))
    }
}

/// Read a whole JSON blob, refusing absurd sizes before allocating.
pub fn read_json_blob(
    store: &dyn BlobStore,
    descriptor: &Descriptor,
    what: &str,
) -> Result<Vec<u8>> {
    if descriptor.size > MAX_JSON {
        return Err(Error::malformed(format!(
            "{}: {what} {}: declared size {} is beyond the {MAX_JSON}-byte limit for JSON",
            store.describe(),
            descriptor.digest,
            descriptor.size
        )));
    }
    let (reader, len) = store.open_blob(&descriptor.digest)?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: {what} {}", store.describe(), descriptor.digest))?;
    let actual = Digest::of(&bytes);
    if bytes.len() as u64 != descriptor.size || len != descriptor.size {
        return Err(Error::malformed(format!(
            "{}: {what} {}: {} bytes stored, {} declared",
            store.describe(),
            descriptor.digest,
            bytes.len(),
            descriptor.size
        )));
    }
    if actual != descriptor.digest {
        return Err(Error::malformed(format!(
            "{}: {what} {}: content hashes to {actual}",
            store.describe(),
            descriptor.digest
        )));
    }
    Ok(bytes)
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
pub struct LayoutDir {
    dir: PathBuf,
}

impl LayoutDir {
    /// Open the layout at `dir`.
    pub fn open(dir: &Path) -> Result<LayoutDir> {
        if !dir.join("index.json").is_file() {
            return Err(Error::not_found(format!(
                "{}: not an OCI image layout (no index.json)",
                dir.display()
            )));
        }
        Ok(LayoutDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Where blob `digest` lives (the digest is validated, so no path can escape).
    pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
        dir.join("blobs/sha256").join(digest.hex())
    }
}

impl BlobStore for LayoutDir {
    fn locate(&self, digest: &Digest) -> Result<BlobLocation> {
        let path = Self::blob_path(&self.dir, digest);
        let meta = std::fs::metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!("{}: blob {digest} is missing", self.describe()))
            } else {
                Error::io(format!("{}", path.display()), e)
            }
        })?;
        Ok(BlobLocation {
            path,
            offset: 0,
            size: meta.len(),
        })
    }

    fn describe(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn index_json(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join("index.json");
        let len = std::fs::metadata(&path)
            .with_context(|| path.display())?
            .len();
        if len > MAX_JSON {
            return Err(Error::malformed(format!(
                "{}: index.json is {len} bytes, beyond the {MAX_JSON}-byte limit",
                self.describe()
            )));
        }
        Ok(Some(std::fs::read(&path).with_context(|| path.display())?))
    }
}

/// A tar file indexed by member name: `oci-archive` (a layout in a tar) and `docker-archive`.
pub struct TarArchive {
    file: PathBuf,
    kind: &'static str,
    /// Normalised member name -> (data offset, size).
    members: HashMap<String, (u64, u64)>,
    /// Normalised member name -> what it links to (symbolic or hard), normalised.
    links: HashMap<String, String>,
}

/// `./a//b/` -> `a/b`.
fn normalise(name: &str) -> String {
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl TarArchive {
    /// Index the members of the tar file `file`; `kind` names the transport in messages.
    pub fn open(file: &Path, kind: &'static str) -> Result<TarArchive> {
        let what = || format!("{kind}:{}", file.display());
        let mut handle = File::open(file).with_context(|| file.display())?;
        let mut magic = [0u8; 4];
        let n = handle.read(&mut magic).with_context(what)?;
        if magic[..n].starts_with(&[0x1f, 0x8b])
            || magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        {
            return Err(Error::unsupported(format!(
                "{}: the archive is compressed; decompress it first (archives are read in place)",
                what()
            )));
        }
        handle.seek(SeekFrom::Start(0)).with_context(what)?;
        let mut archive = tar::Archive::new(handle);
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let entries = archive
            .entries()
            .map_err(|e| Error::malformed(format!("{}: not a tar archive: {e}", what())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::malformed(format!("{}: bad tar member: {e}", what())))?;
            let path = entry
                .path()
                .map_err(|e| Error::malformed(format!("{}: bad member name: {e}", what())))?;
            let name = normalise(&path.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = target.to_string_lossy().into_owned();
                    let resolved = if kind.is_symlink() && !target.starts_with('/') {
                        // Relative to the link's directory (`../abc/layer.tar`).
                        let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
                        resolve_relative(parent, &target)
                    } else {
                        Some(normalise(&target))
                    };
                    if let Some(resolved) = resolved {
                        links.insert(name, resolved);
                    }
                }
            } else if kind.is_file() {
                members.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        Ok(TarArchive {
            file: file.to_path_buf(),
            kind,
            members,
            links,
        })
    }

    /// The (offset, size) of member `name`, following links (a few hops at most).
    pub fn member(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalise(name);
        for _ in 0..8 {
            if let Some(&range) = self.members.get(&name) {
                return Some(range);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    /// Where member `name` is.
    pub fn locate_member(&self, name: &str) -> Result<BlobLocation> {
        let (offset, size) = self
            .member(name)
            .ok_or_else(|| Error::not_found(format!("{}: no member {name}", self.describe())))?;
        Ok(BlobLocation {
            path: self.file.clone(),
            offset,
            size,
        })
    }

    /// A reader over member `name`.
    pub fn open_member(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        let location = self.locate_member(name)?;
        Ok((location.open()?, location.size))
    }

    /// Member `name` read whole (JSON metadata), refusing absurd sizes.
    pub fn read_member(&self, name: &str) -> Result<Vec<u8>> {
        let (reader, size) = self.open_member(name)?;
        if size > MAX_JSON {
            return Err(Error::malformed(format!(
                "{}: {name} is {size} bytes, beyond the {MAX_JSON}-byte limit",
                self.describe()
            )));
        }
        let mut bytes = Vec::new();
        reader
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: {name}", self.describe()))?;
        Ok(bytes)
    }
}

/// `parent/target` with `.` and `..` resolved; `None` when it climbs out of the archive.
fn resolve_relative(parent: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl BlobStore for TarArchive {
    fn locate(&self, digest: &Digest) -> Result<BlobLocation> {
        let name = format!("blobs/sha256/{}", digest.hex());
        if self.member(&name).is_none() {
            return Err(Error::not_found(format!(
                "{}: blob {digest} is missing",
                self.describe()
            )));
        }
        self.locate_member(&name)
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.kind, self.file.display())
    }

    fn index_json(&self) -> Result<Option<Vec<u8>>> {
        if self.member("index.json").is_none() {
            return Ok(None);
        }
        self.read_member("index.json").map(Some)
    }
}

/// The image [`select_image`] found: its manifest (checked against its digest) and config.
#[derive(Debug, Clone)]
pub struct SelectedImage {
    /// The manifest's bytes as stored.
    pub manifest_bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its media type (from the manifest, else from the descriptor that named it).
    pub media_type: MediaType,
    /// The config's bytes as stored.
    pub config_bytes: Vec<u8>,
    /// Things worth telling the user that did not stop the import.
    pub warnings: Vec<String>,
}

impl SelectedImage {
    /// The manifest's digest.
    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest_bytes)
    }
}

fn is_schema1(media_type: &MediaType, value: &Value) -> bool {
    media_type
        .as_str()
        .starts_with("application/vnd.docker.distribution.manifest.v1")
        || value.get("schemaVersion").and_then(Value::as_u64) == Some(1)
}

/// Resolve the one image of `store` to import: the index entry tagged `reference` (the
/// `org.opencontainers.image.ref.name` annotation) or the only image; through nested
/// indexes and manifest lists by `platform`.
pub fn select_image(
    store: &dyn BlobStore,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<SelectedImage> {
    let name = store.describe();
    let index_bytes = store
        .index_json()?
        .ok_or_else(|| Error::not_found(format!("{name}: no index.json")))?;
    let index = json::parse(&index_bytes, &format!("{name}: index.json"))?;
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::malformed(format!("{name}: index.json has no manifests array")))?;
    let ref_of = |v: &Value| {
        v.get("annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let candidates: Vec<&Value> = entries
        .iter()
        .filter(|v| !ref_of(v).is_some_and(|r| r.starts_with("_cosign")))
        .collect();
    let chosen = match reference {
        Some(tag) => {
            let matching: Vec<&Value> = candidates
                .iter()
                .copied()
                .filter(|v| ref_of(v).is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}"))))
                .collect();
            match matching.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Error::not_found(format!(
                        "{name}: no image tagged {tag:?} (tags: {})",
                        tag_list(&candidates, ref_of)
                    )));
                }
                _ => {
                    return Err(Error::malformed(format!(
                        "{name}: several images tagged {tag:?}"
                    )));
                }
            }
        }
        None => match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::not_found(format!(
                    "{name}: the index lists no image"
                )));
            }
            _ => {
                return Err(Error::refused(format!(
                    "{name}: the index lists {} images; name one as {name}:TAG (tags: {})",
                    candidates.len(),
                    tag_list(&candidates, ref_of)
                )));
            }
        },
    };
    let mut warnings = Vec::new();
    resolve(store, chosen, platform, &mut warnings, 0)
}

fn tag_list(entries: &[&Value], ref_of: impl Fn(&Value) -> Option<String>) -> String {
    let tags: Vec<String> = entries.iter().filter_map(|v| ref_of(v)).collect();
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

/// Follow descriptor `entry` to an image manifest.
fn resolve(
    store: &dyn BlobStore,
    entry: &Value,
    platform: &Platform,
    warnings: &mut Vec<String>,
    depth: usize,
) -> Result<SelectedImage> {
    let name = store.describe();
    if depth > 4 {
        return Err(Error::malformed(format!("{name}: indexes nested too deep")));
    }
    let descriptor = Descriptor::from_json(entry, &format!("{name}: index entry"))?;
    if let Some(have) = Platform::from_descriptor(entry)
        && have.score(platform).is_none()
        && depth == 0
    {
        warnings.push(format!(
            "the image is built for {have}, not {platform}; importing it anyway"
        ));
    }
    let bytes = read_json_blob(store, &descriptor, "manifest")?;
    let value = json::parse(&bytes, &format!("{name}: manifest {}", descriptor.digest))?;
    let own_type = value
        .get("mediaType")
        .and_then(Value::as_str)
        .map(MediaType::parse);
    let media_type = match (&own_type, &descriptor.media_type) {
        (Some(own), _) => own.clone(),
        (None, MediaType::Other(t)) if t.is_empty() => {
            if value.get("manifests").is_some() {
                MediaType::OciIndex
            } else {
                MediaType::OciManifest
            }
        }
        (None, declared) => declared.clone(),
    };
    if is_schema1(&media_type, &value) {
        return Err(Error::unsupported(format!(
            "{name}: manifest {} is Docker schema 1, which sifovl does not read; convert it with `skopeo copy --format v2s2`",
            descriptor.digest
        )));
    }
    if media_type.is_index() || (own_type.is_none() && value.get("manifests").is_some()) {
        let children = value
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::malformed(format!(
                    "{name}: index {} has no manifests",
                    descriptor.digest
                ))
            })?;
        let best = children
            .iter()
            .filter_map(|c| {
                Platform::from_descriptor(c)
                    .and_then(|p| p.score(platform))
                    .map(|s| (s, c))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, c)| c);
        let child = match best {
            Some(child) => child,
            None => {
                let available: Vec<String> = children
                    .iter()
                    .filter_map(Platform::from_descriptor)
                    .filter(|p| p.os != "unknown")
                    .map(|p| p.to_string())
                    .collect();
                return Err(Error::not_found(format!(
                    "{name}: no image for {platform} in index {} (available: {}); choose one with --platform",
                    descriptor.digest,
                    if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    }
                )));
            }
        };
        return resolve(store, child, platform, warnings, depth + 1);
    }
    if !media_type.is_image_manifest() {
        warnings.push(format!(
            "manifest {} has media type {:?}; reading it as an image manifest",
            descriptor.digest,
            media_type.as_str()
        ));
    }
    let manifest = Manifest::parse(&bytes, &format!("{name}: manifest {}", descriptor.digest))?;
    let config_bytes = read_json_blob(store, manifest.config(), "config")?;
    Ok(SelectedImage {
        manifest_bytes: bytes,
        manifest,
        media_type,
        config_bytes,
        warnings: std::mem::take(warnings),
    })
}

/// A `docker save` archive: `manifest.json` lists the config and layer files of each image
/// (by `RepoTags`); there is no registry manifest, so one is made: a Docker v2 manifest
/// whose layer digests are the hashes of the layer members (hashed once, when opened).
/// (Docker 25 and later also write an OCI layout into the archive; callers prefer it when
/// `index.json` is present, since it keeps the real manifest.)
pub struct DockerArchive {
    archive: TarArchive,
    /// Digest -> member holding that blob.
    by_digest: HashMap<Digest, String>,
    selected: SelectedImage,
}

/// What `manifest.json` says of one image.
#[derive(Debug, Clone)]
struct DockerArchiveImage {
    config: String,
    layers: Vec<String>,
    tags: Vec<String>,
}

impl DockerArchive {
    /// Index `file` and resolve the image named `reference` (a `RepoTags` entry,
    /// `name:tag` or just `tag`), or the only one.
    pub fn open(file: &Path, reference: Option<&str>) -> Result<DockerArchive> {
        let archive = TarArchive::open(file, "docker-archive")?;
        let image = Self::image(&archive, reference)?;
        let name = archive.describe();
        let config_bytes = archive.read_member(&image.config)?;
        let config_digest = Digest::of(&config_bytes);
        let mut by_digest = HashMap::new();
        by_digest.insert(config_digest, image.config.clone());
        let mut layers = Vec::new();
        for member in &image.layers {
            let (mut reader, size) = archive.open_member(member)?;
            let mut magic = [0u8; 4];
            let mut hasher = crate::digest::HashingWriter::new(std::io::sink());
            let head = std::io::Read::by_ref(&mut reader)
                .take(4)
                .read(&mut magic)
                .with_context(|| format!("{name}: {member}"))?;
            std::io::Write::write_all(&mut hasher, &magic[..head])
                .with_context(|| format!("{name}: {member}"))?;
            std::io::copy(&mut reader, &mut hasher).with_context(|| format!("{name}: {member}"))?;
            let digest = hasher.digest();
            let media_type = if magic.starts_with(b"hsqs") {
                MediaType::SquashfsLayer
            } else if magic.starts_with(&[0x1f, 0x8b]) {
                MediaType::DockerLayerTarGzip
            } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                MediaType::OciLayerTarZstd
            } else {
                MediaType::DockerLayerTar
            };
            by_digest.insert(digest, member.clone());
            layers.push(serde_json::json!({"mediaType": media_type.as_str(), "size": size, "digest": digest.to_string()}));
        }
        let mut manifest = serde_json::Map::new();
        manifest.insert("schemaVersion".into(), Value::from(2));
        manifest.insert(
            "mediaType".into(),
            Value::from(MediaType::DockerManifest.as_str()),
        );
        manifest.insert(
            "config".into(),
            serde_json::json!({"mediaType": MediaType::DockerConfig.as_str(), "size": config_bytes.len(), "digest": config_digest.to_string()}),
        );
        manifest.insert("layers".into(), Value::Array(layers));
        let manifest_bytes = json::object_to_go_bytes(&manifest);
        let parsed = Manifest::parse(&manifest_bytes, &format!("{name}: manifest.json"))?;
        Ok(DockerArchive {
            archive,
            by_digest,
            selected: SelectedImage {
                manifest_bytes,
                manifest: parsed,
                media_type: MediaType::DockerManifest,
                config_bytes,
                warnings: Vec::new(),
            },
        })
    }

    /// The image, with the manifest made for it.
    pub fn selected(&self) -> &SelectedImage {
        &self.selected
    }

    fn image(archive: &TarArchive, reference: Option<&str>) -> Result<DockerArchiveImage> {
        let name = archive.describe();
        let bytes = archive.read_member("manifest.json").map_err(|_| {
            Error::malformed(format!(
                "{name}: no manifest.json: not a `docker save` archive"
            ))
        })?;
        let value = json::parse(&bytes, &format!("{name}: manifest.json"))?;
        let list = value
            .as_array()
            .ok_or_else(|| Error::malformed(format!("{name}: manifest.json is not an array")))?;
        let mut images = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let what = format!("{name}: manifest.json[{i}]");
            let config = item
                .get("Config")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::malformed(format!("{what}: no Config")))?
                .to_string();
            let layers = item
                .get("Layers")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::malformed(format!("{what}: no Layers")))?
                .iter()
                .map(|l| {
                    l.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| Error::malformed(format!("{what}: a layer is not a string")))
                })
                .collect::<Result<Vec<_>>>()?;
            let tags = item
                .get("RepoTags")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            images.push(DockerArchiveImage {
                config,
                layers,
                tags,
            });
        }
        let matches = |image: &DockerArchiveImage, wanted: &str| {
            image
                .tags
                .iter()
                .any(|t| t == wanted || t.rsplit_once(':').is_some_and(|(_, tag)| tag == wanted))
        };
        let chosen: Vec<&DockerArchiveImage> = match reference {
            Some(wanted) => images.iter().filter(|i| matches(i, wanted)).collect(),
            None => images.iter().collect(),
        };
        match chosen.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::not_found(format!(
                "{name}: no image{} in manifest.json",
                reference
                    .map(|r| format!(" tagged {r:?}"))
                    .unwrap_or_default()
            ))),
            _ => Err(Error::refused(format!(
                "{name}: {} images in the archive; name one as docker-archive:FILE:TAG",
                chosen.len()
            ))),
        }
    }
}

impl BlobStore for DockerArchive {
    fn locate(&self, digest: &Digest) -> Result<BlobLocation> {
        let member = self.by_digest.get(digest).ok_or_else(|| {
            Error::not_found(format!("{}: blob {digest} is missing", self.describe()))
        })?;
        self.archive.locate_member(member)
    }

    fn describe(&self) -> String {
        self.archive.describe()
    }

    fn index_json(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_relative_links_resolve_inside_the_archive() {
        assert_eq!(normalise("./blobs//sha256/ab/"), "blobs/sha256/ab");
        assert_eq!(
            resolve_relative("abc", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(resolve_relative("", "../x"), None);
    }
}
