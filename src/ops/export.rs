//! `export`: the image of an OCI-SIF as an OCI image layout directory, an OCI archive or a
//! `docker save`-style archive (docs/import-export.md).
//!
//! - [`LayerFormat::Squashfs`]: blobs copied byte for byte (each checked against its
//!   digest on the way), manifest and config bytes as stored; `import` of the result gives
//!   back the same OCI objects.
//! - [`LayerFormat::Tar`]: an image Docker and Podman run: every squashfs layer becomes a
//!   gzip tar layer with AUFS whiteouts, an ext3 overlay its `upper/` (stale or not: it is
//!   read as it is now), layer media types of the manifest's family, `diff_ids` rebuilt,
//!   unknown config fields and history kept.
//!
//! Blobs are staged as temporary files beside their final names and renamed; `index.json`
//! is written last. Archives are built in a staging directory and renamed into place whole.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::Image;
use super::pack::layer_as_tar;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result, ResultExt};
use crate::fs::tar::TarCompression;
use crate::oci::{Config, Descriptor, Index, MediaType, REF_NAME};
use crate::ocisif::OciImage;

/// Where an image is exported to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportDest {
    /// An OCI image layout directory (created, or added to if it is one already).
    Layout {
        /// The layout directory.
        dir: PathBuf,
    },
    /// An OCI layout in a tar file.
    OciArchive {
        /// The archive to create.
        file: PathBuf,
    },
    /// A `docker load`-able archive (`manifest.json` plus an OCI layout, as Docker 25 writes).
    DockerArchive {
        /// The archive to create.
        file: PathBuf,
    },
}

impl ExportDest {
    /// Parse `DIR`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:NAME:TAG]`; the tag, if any, comes back beside it.
    pub fn parse(text: &str) -> Result<(ExportDest, Option<String>)> {
        let split = |rest: &str, docker: bool| -> (PathBuf, Option<String>) {
            // docker-archive:FILE:NAME:TAG splits at the first colon, the others at the last
            // one that is not part of a path.
            let at = if docker {
                rest.find(':')
            } else {
                rest.rfind(':')
            };
            match at {
                Some(i) if docker || !rest[i + 1..].contains('/') => {
                    let tag = &rest[i + 1..];
                    (
                        PathBuf::from(&rest[..i]),
                        (!tag.is_empty()).then(|| tag.to_string()),
                    )
                }
                _ => (PathBuf::from(rest), None),
            }
        };
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = split(rest, false);
            return Ok((ExportDest::Layout { dir }, tag));
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (file, tag) = split(rest, false);
            return Ok((ExportDest::OciArchive { file }, tag));
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            let (file, tag) = split(rest, true);
            return Ok((ExportDest::DockerArchive { file }, tag));
        }
        if text.contains("://") {
            return Err(Error::unsupported(format!(
                "{text}: a registry; use `sifovl push`"
            )));
        }
        Ok((
            ExportDest::Layout {
                dir: PathBuf::from(text),
            },
            None,
        ))
    }

    fn describe(&self) -> String {
        match self {
            ExportDest::Layout { dir } => format!("oci:{}", dir.display()),
            ExportDest::OciArchive { file } => format!("oci-archive:{}", file.display()),
            ExportDest::DockerArchive { file } => format!("docker-archive:{}", file.display()),
        }
    }
}

/// The form layers take in the exported image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayerFormat {
    /// As stored: squashfs (and an ext3 overlay), digests kept.
    #[default]
    Squashfs,
    /// gzip tar layers with AUFS whiteouts (Docker, Podman).
    Tar,
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The form of the layers.
    pub layer_format: LayerFormat,
    /// The tag (`org.opencontainers.image.ref.name`; a `RepoTags` entry in a docker archive).
    pub tag: Option<String>,
    /// Compression of tar layers.
    pub compression: TarCompression,
    /// Replace an existing archive file (a layout directory is always added to).
    pub force: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            layer_format: LayerFormat::Squashfs,
            tag: None,
            compression: TarCompression::Gzip { level: 6 },
            force: false,
        }
    }
}

/// One exported layer.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedLayer {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// sha256 of its uncompressed form.
    pub diff_id: String,
}

/// What an export did.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// Where the image went.
    pub destination: String,
    /// The tag it got, if any.
    pub tag: Option<String>,
    /// The form of its layers.
    pub layer_format: LayerFormat,
    /// The exported manifest's digest.
    pub manifest: String,
    /// Its layers, bottom first.
    pub layers: Vec<ExportedLayer>,
    /// Fallback rules the overlay's whiteout conversion applied.
    pub warnings: Vec<String>,
}

/// The blobs of the exported image, staged in a layout directory.
struct Staged {
    manifest_bytes: Vec<u8>,
    media_type: MediaType,
    config_digest: Digest,
    layers: Vec<ExportedLayer>,
    warnings: Vec<String>,
}

/// Export the image of the OCI-SIF `image` to `dest`.
pub fn export(image: &Path, dest: &ExportDest, options: &ExportOptions) -> Result<ExportReport> {
    let opened = Image::open_read(image)?;
    let oci = opened.require_oci()?;
    let name = &opened.name;
    if options.layer_format == LayerFormat::Squashfs
        && let Some(overlay) = oci.overlay()
    {
        let actual = opened.hash_overlay()?;
        if !oci.overlay_in_sync(overlay, &actual) {
            return Err(Error::refused(format!(
                "{name}: the overlay changed since its digests were last recorded; run `sifovl reconcile` first (or export with --layer-format tar, which reads it as it is)"
            )));
        }
    }
    let (staging_dir, _staging_guard) = match dest {
        ExportDest::Layout { dir } => (dir.clone(), None),
        ExportDest::OciArchive { file } | ExportDest::DockerArchive { file } => {
            if file.exists() && !options.force {
                return Err(Error::refused(format!(
                    "{}: already exists (use --force to replace it)",
                    file.display()
                )));
            }
            let parent = parent_dir(file);
            let staging = tempfile::Builder::new()
                .prefix(".sifovl-export-")
                .tempdir_in(&parent)
                .with_context(|| format!("{}: creating a staging directory", parent.display()))?;
            (staging.path().to_path_buf(), Some(staging))
        }
    };
    prepare_layout(&staging_dir)?;
    let staged = match options.layer_format {
        LayerFormat::Squashfs => stage_as_stored(&opened.file, oci, &staging_dir, name)?,
        LayerFormat::Tar => stage_as_tar(&opened.file, oci, &staging_dir, options, name)?,
    };
    let manifest_digest = Digest::of(&staged.manifest_bytes);
    write_blob(&staging_dir, &staged.manifest_bytes)?;
    update_index(&staging_dir, &staged, options.tag.as_deref())?;
    match dest {
        ExportDest::Layout { .. } => {}
        ExportDest::OciArchive { file } => {
            archive_layout(&staging_dir, file, None)?;
        }
        ExportDest::DockerArchive { file } => {
            let manifest =
                docker_manifest_json(&staged, manifest_digest, options.tag.as_deref(), file);
            archive_layout(&staging_dir, file, Some(manifest))?;
        }
    }
    Ok(ExportReport {
        destination: dest.describe(),
        tag: options.tag.clone(),
        layer_format: options.layer_format,
        manifest: manifest_digest.to_string(),
        layers: staged.layers,
        warnings: staged.warnings,
    })
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Make `dir` an OCI layout (or check that it is one, or an empty directory).
fn prepare_layout(dir: &Path) -> Result<()> {
    let what = || dir.display().to_string();
    if dir.exists() {
        let is_layout = dir.join("oci-layout").is_file();
        let empty = std::fs::read_dir(dir).with_context(what)?.next().is_none();
        if !is_layout && !empty {
            return Err(Error::refused(format!(
                "{}: exists and is neither empty nor an OCI image layout",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(what)?;
    if !dir.join("oci-layout").is_file() {
        write_atomic(dir, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    Ok(())
}

/// Write `bytes` to `dir/name` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| dir.display())?;
    temp.write_all(bytes).with_context(|| dir.display())?;
    temp.as_file().sync_all().with_context(|| dir.display())?;
    temp.persist(dir.join(name))
        .map_err(|e| Error::io(format!("{}/{name}", dir.display()), e.error))?;
    Ok(())
}

/// Store a small blob (JSON) under its digest.
fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::of(bytes);
    write_atomic(&dir.join("blobs/sha256"), &digest.hex(), bytes)?;
    Ok(digest)
}

/// Stream a blob into the layout: `fill` writes it; it lands under the digest of what was
/// written.
fn stage_blob<T>(
    dir: &Path,
    fill: impl FnOnce(&mut HashingWriter<&mut BufWriter<&mut File>>) -> Result<T>,
) -> Result<(Digest, u64, T)> {
    stage_digested(dir, |out| {
        let mut writer = HashingWriter::new(out);
        let extra = fill(&mut writer)?;
        Ok((writer.digest(), writer.count(), extra))
    })
}

/// As [`stage_blob`], for a writer that hashes what it writes itself (the tar layer
/// writer does): `fill` gives the digest and size of what it wrote with its result, and
/// the blob is not hashed a second time.
fn stage_digested<T>(
    dir: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(Digest, u64, T)>,
) -> Result<(Digest, u64, T)> {
    let blobs = dir.join("blobs/sha256");
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&blobs)
        .with_context(|| blobs.display())?;
    let (digest, size, extra) = {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file_mut());
        let written = fill(&mut out)?;
        out.flush().with_context(|| blobs.display())?;
        written
    };
    temp.as_file().sync_all().with_context(|| blobs.display())?;
    temp.persist(blobs.join(digest.hex()))
        .map_err(|e| Error::io(format!("{}", blobs.display()), e.error))?;
    Ok((digest, size, extra))
}

/// The stored image: every blob copied and checked against its digest.
fn stage_as_stored(file: &File, oci: &OciImage, dir: &Path, name: &str) -> Result<Staged> {
    let mut layers = Vec::new();
    for (i, layer) in oci.layers.iter().enumerate() {
        let d = &layer.descriptor;
        let (digest, size, ()) = stage_blob(dir, |out| {
            let mut reader = std::io::Read::take(
                ReadAt {
                    file,
                    pos: layer.offset,
                },
                d.size,
            );
            let progress = crate::progress::task("copying", d.size);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buf)
                    .with_context(|| format!("{name}: layer {i}"))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .with_context(|| format!("{name}: layer {i}"))?;
                progress.advance(n as u64);
            }
            Ok(())
        })?;
        if digest != d.digest || size != d.size {
            return Err(Error::malformed(format!(
                "{name}: layer {i}: the stored bytes hash to {digest} ({size} bytes), not {} ({} bytes); run `sifovl verify`",
                d.digest, d.size
            )));
        }
        layers.push(ExportedLayer {
            media_type: d.media_type.as_str().to_string(),
            digest: d.digest.to_string(),
            size: d.size,
            diff_id: d.digest.to_string(),
        });
    }
    let config_digest = write_blob(dir, &oci.config_bytes)?;
    Ok(Staged {
        manifest_bytes: oci.manifest_bytes.clone(),
        media_type: oci.image.descriptor.media_type.clone(),
        config_digest,
        layers,
        warnings: Vec::new(),
    })
}

/// A `Read` over a file from a position on (positioned reads: the file is shared).
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The image with every layer converted to a tar layer.
fn stage_as_tar(
    file: &File,
    oci: &OciImage,
    dir: &Path,
    options: &ExportOptions,
    name: &str,
) -> Result<Staged> {
    let docker = oci
        .manifest
        .media_type()
        .unwrap_or_else(|| oci.image.descriptor.media_type.clone())
        .is_docker();
    let media_type = match (docker, options.compression) {
        (true, TarCompression::None) => MediaType::DockerLayerTar,
        (true, _) => MediaType::DockerLayerTarGzip,
        (false, TarCompression::None) => MediaType::OciLayerTar,
        (false, TarCompression::Gzip { .. }) => MediaType::OciLayerTarGzip,
        (false, TarCompression::Zstd { .. }) => MediaType::OciLayerTarZstd,
    };
    if docker && matches!(options.compression, TarCompression::Zstd { .. }) {
        return Err(Error::refused(format!(
            "{name}: a Docker v2 manifest has no zstd layer type; use gzip (or none)"
        )));
    }
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut warnings = Vec::new();
    for (i, layer) in oci.layers.iter().enumerate() {
        let what = format!("{name}: layer {i}");
        if !matches!(
            layer.descriptor.media_type,
            MediaType::SquashfsLayer | MediaType::Ext3Layer
        ) {
            return Err(Error::unsupported(format!(
                "{what}: media type {}, not squashfs or ext3",
                layer.descriptor.media_type
            )));
        }
        let progress = crate::progress::task("converting", layer.object_size);
        let (digest, size, tar) = stage_digested(dir, |out| {
            let tar = layer_as_tar(
                file,
                layer.offset,
                layer.object_size,
                out,
                options.compression,
            )
            .map_err(|e| e.context(&what))?;
            Ok((tar.digests.digest, tar.digests.size, tar))
        })?;
        progress.advance(layer.object_size);
        warnings.extend(tar.warnings.iter().map(|w| format!("overlay upper{w}")));
        let descriptor = Descriptor {
            media_type: media_type.clone(),
            size,
            digest,
        };
        layers.push(ExportedLayer {
            media_type: media_type.as_str().to_string(),
            digest: digest.to_string(),
            size,
            diff_id: tar.digests.diff_id.to_string(),
        });
        descriptors.push(descriptor);
        diff_ids.push(tar.digests.diff_id);
    }
    let config_bytes = if oci.has_image_config() {
        let mut config: Config = oci.config.clone();
        config.set_diff_ids(&diff_ids);
        config.to_bytes()
    } else {
        oci.config_bytes.clone()
    };
    let config_digest = write_blob(dir, &config_bytes)?;
    let mut manifest = oci.manifest.clone();
    manifest.set_layers(&descriptors);
    manifest.set_config(config_bytes.len() as u64, &config_digest);
    Ok(Staged {
        manifest_bytes: manifest.to_bytes(),
        media_type: oci.image.descriptor.media_type.clone(),
        config_digest,
        layers,
        warnings,
    })
}

/// Add the image to the layout's `index.json` (replacing an entry with the same tag).
fn update_index(dir: &Path, staged: &Staged, tag: Option<&str>) -> Result<()> {
    let manifest = crate::oci::Manifest::parse(&staged.manifest_bytes, "exported manifest")?;
    let mut descriptor = manifest.index_descriptor(
        &staged.manifest_bytes,
        &staged.media_type,
        &manifest.config().media_type,
    );
    if let (Some(tag), Value::Object(map)) = (tag, &mut descriptor) {
        let mut annotations = serde_json::Map::new();
        annotations.insert(REF_NAME.into(), Value::from(tag));
        // Annotations go before artifactType, in ggcr's descriptor key order.
        let at = map.len().saturating_sub(1);
        map.shift_insert(at, "annotations".into(), Value::Object(annotations));
    }
    let path = dir.join("index.json");
    let mut entries: Vec<Value> = Vec::new();
    if path.is_file() {
        let bytes = std::fs::read(&path).with_context(|| path.display())?;
        let index: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed(format!("{}: invalid JSON: {e}", path.display())))?;
        let digest = Digest::of(&staged.manifest_bytes).to_string();
        for entry in index
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let entry_tag = entry
                .get("annotations")
                .and_then(|a| a.get(REF_NAME))
                .and_then(Value::as_str);
            let same_tag = tag.is_some() && entry_tag == tag;
            let same_untagged = tag.is_none()
                && entry_tag.is_none()
                && entry.get("digest").and_then(Value::as_str) == Some(digest.as_str());
            if !same_tag && !same_untagged {
                entries.push(entry);
            }
        }
    }
    entries.push(descriptor);
    write_atomic(
        dir,
        "index.json",
        &Index::with_manifests(entries).to_bytes(),
    )
}

/// Docker's `manifest.json` for a `docker load`-able archive.
fn docker_manifest_json(
    staged: &Staged,
    _manifest: Digest,
    tag: Option<&str>,
    file: &Path,
) -> Vec<u8> {
    let repo_tags: Vec<Value> = tag
        .map(|t| {
            if t.contains(':') {
                t.to_string()
            } else {
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|| "image".into());
                format!("{stem}:{t}")
            }
        })
        .into_iter()
        .map(Value::from)
        .collect();
    let layers: Vec<Value> = staged
        .layers
        .iter()
        .map(|l| Value::from(format!("blobs/sha256/{}", &l.digest["sha256:".len()..])))
        .collect();
    let value = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", staged.config_digest.hex()),
        "RepoTags": repo_tags,
        "Layers": layers,
    }]);
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Tar the layout `dir` (plus `manifest.json` for Docker) into `file`, through a temporary
/// file renamed into place.
fn archive_layout(dir: &Path, file: &Path, docker_manifest: Option<Vec<u8>>) -> Result<()> {
    let parent = parent_dir(file);
    let temp = tempfile::Builder::new()
        .prefix(".sifovl-export-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&parent)
        .with_context(|| parent.display())?;
    {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, temp.as_file()));
        let what = || file.display().to_string();
        let add_dir = |builder: &mut tar::Builder<_>, name: &str| -> Result<()> {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_mtime(0);
            builder
                .append_data(&mut header, name, std::io::empty())
                .with_context(what)
        };
        add_dir(&mut builder, "blobs/")?;
        add_dir(&mut builder, "blobs/sha256/")?;
        let add_file = |builder: &mut tar::Builder<_>, name: &str, path: &Path| -> Result<()> {
            let source = File::open(path).with_context(|| path.display())?;
            let len = source.metadata().with_context(|| path.display())?.len();
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(len);
            header.set_mtime(0);
            builder
                .append_data(&mut header, name, source)
                .with_context(what)
        };
        let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
            .with_context(|| dir.display())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        blobs.sort();
        for blob in &blobs {
            add_file(
                &mut builder,
                &format!("blobs/sha256/{blob}"),
                &dir.join("blobs/sha256").join(blob),
            )?;
        }
        add_file(&mut builder, "oci-layout", &dir.join("oci-layout"))?;
        add_file(&mut builder, "index.json", &dir.join("index.json"))?;
        if let Some(manifest) = docker_manifest {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(manifest.len() as u64);
            header.set_mtime(0);
            builder
                .append_data(&mut header, "manifest.json", &manifest[..])
                .with_context(what)?;
        }
        builder
            .into_inner()
            .and_then(|mut w| w.flush())
            .with_context(what)?;
    }
    temp.as_file().sync_all().with_context(|| file.display())?;
    temp.persist(file)
        .map_err(|e| Error::io(format!("{}", file.display()), e.error))?;
    Ok(())
}
