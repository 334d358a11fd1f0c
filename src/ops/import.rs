//! `import`: an OCI image from a layout directory, an OCI archive or a `docker save` archive
//! into a new OCI-SIF, as SingularityCE's `pull --oci` stores it (docs/import-export.md).
//!
//! - Default: every layer squashed into one squashfs layer (whiteouts applied, hard links
//!   across layers kept), in two streaming passes over the compressed layers
//!   ([`crate::fs::merge`]); nothing is unpacked to disk.
//! - `keep_layers`: one squashfs layer per tar layer, whiteouts kept in the OverlayFS form.
//! - An image whose layers are all squashfs already (an exported OCI-SIF, say; a last ext3
//!   overlay allowed) is stored unmodified: same manifest, config and digests.
//!
//! Every blob is checked against its digest and size, every tar stream against its
//! `diff_id`; decompression is bounded. The OCI-SIF is written to a temporary file beside
//! `out` and renamed into place only when complete.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::{Digest, HashHandle, SharedHashingReader, hash_range};
use crate::error::{Error, Result, ResultExt};
use crate::fs::entry::{Entry, EntrySource};
use crate::fs::merge::{LayerMerge, MergePlan, copy_layer_directly};
use crate::fs::squashfs::{SquashfsReader, SquashfsWriter, WriterOptions};
use crate::fs::tar::{ReadAhead, TarLayerReader};
use crate::oci::layout::{
    BlobLocation, BlobStore, DockerArchive, LayoutDir, SelectedImage, TarArchive, select_image,
};
use crate::oci::{Config, Descriptor, Index, MediaType, Platform, rfc3339_utc};
use crate::ocisif::NewSif;

/// Where an image is imported from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// An OCI image layout directory (`DIR`, `oci:DIR[:TAG]`).
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if the index has several images.
        reference: Option<String>,
    },
    /// An OCI layout in a tar file (`oci-archive:FILE[:TAG]`).
    OciArchive {
        /// The archive.
        file: PathBuf,
        /// The tag to pick.
        reference: Option<String>,
    },
    /// A `docker save` archive (`docker-archive:FILE[:NAME:TAG]`).
    DockerArchive {
        /// The archive.
        file: PathBuf,
        /// The `RepoTags` entry to pick.
        reference: Option<String>,
    },
}

/// Split `PATH[:REF]`: the reference is what follows the last `:` when that is not part of
/// a path (no `/` after it) and the whole text is not an existing path.
fn split_reference(text: &str, allow_docker_ref: bool) -> (PathBuf, Option<String>) {
    if Path::new(text).exists() {
        return (PathBuf::from(text), None);
    }
    // docker-archive references may be NAME:TAG, itself holding a colon.
    let mut candidates: Vec<usize> = text.match_indices(':').map(|(i, _)| i).collect();
    if !allow_docker_ref {
        candidates = candidates.last().copied().into_iter().collect();
    }
    for i in candidates {
        let (path, reference) = (&text[..i], &text[i + 1..]);
        if Path::new(path).exists() && !reference.is_empty() {
            return (PathBuf::from(path), Some(reference.to_string()));
        }
    }
    match text.rsplit_once(':') {
        Some((path, reference)) if !reference.contains('/') && !reference.is_empty() => {
            (PathBuf::from(path), Some(reference.to_string()))
        }
        _ => (PathBuf::from(text), None),
    }
}

impl ImportSource {
    /// Parse `DIR`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `docker-archive:FILE[:REF]`
    /// (a plain path that is a file is an OCI archive if it holds an `index.json`, else a
    /// `docker save` archive).
    pub fn parse(text: &str) -> Result<ImportSource> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, reference) = split_reference(rest, false);
            return Ok(ImportSource::Layout { dir, reference });
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (file, reference) = split_reference(rest, false);
            return Ok(ImportSource::OciArchive { file, reference });
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            let (file, reference) = split_reference(rest, true);
            return Ok(ImportSource::DockerArchive { file, reference });
        }
        if let Some((transport, _)) = text.split_once("://") {
            return Err(Error::unsupported(format!(
                "{text}: {transport}:// is a registry; use `sifovl pull`"
            )));
        }
        let path = PathBuf::from(text);
        if path.is_dir() {
            return Ok(ImportSource::Layout {
                dir: path,
                reference: None,
            });
        }
        if path.is_file() {
            let archive = TarArchive::open(&path, "archive")?;
            return Ok(if archive.member("index.json").is_some() {
                ImportSource::OciArchive {
                    file: path,
                    reference: None,
                }
            } else {
                ImportSource::DockerArchive {
                    file: path,
                    reference: None,
                }
            });
        }
        Err(Error::not_found(format!(
            "{text}: no such directory or file (sources: DIR, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF])"
        )))
    }
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// One squashfs layer per tar layer instead of one for the whole image.
    pub keep_layers: bool,
    /// The platform to pick from a multi-platform index (`None`: the host's).
    pub platform: Option<Platform>,
    /// Squashfs writer settings (compression, block size, threads, mkfs time).
    pub squashfs: WriterOptions,
    /// The `created` time of the history entry a conversion writes (Unix seconds);
    /// `None` for now.
    pub created: Option<i64>,
    /// Replace `out` if it exists.
    pub force: bool,
    /// A layer may expand to at most this many times its compressed size, plus
    /// `expansion_allowance` bytes (a bound against decompression bombs; gzip's own maximum
    /// ratio is about 1,032).
    pub max_expansion: u64,
    /// See `max_expansion`; 1 GiB by default, so that small layers of zeros still import.
    pub expansion_allowance: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            keep_layers: false,
            platform: None,
            squashfs: WriterOptions::default(),
            created: None,
            force: false,
            max_expansion: 1100,
            expansion_allowance: 1 << 30,
        }
    }
}

/// How the layers were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportMode {
    /// Already squashfs: stored byte for byte, digests kept.
    Unmodified,
    /// All layers squashed into one squashfs layer.
    Squashed,
    /// One squashfs layer per source layer.
    KeepLayers,
}

/// One layer of the new image.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedLayer {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Filesystem entries, for layers sifovl wrote (`None` for copied ones).
    pub entries: Option<u64>,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The OCI-SIF written.
    pub output: String,
    /// Where the image came from.
    pub source: String,
    /// The source image's manifest digest.
    pub source_manifest: String,
    /// How layers were stored.
    pub mode: ImportMode,
    /// The new image's manifest digest.
    pub manifest: String,
    /// The new image's layers, bottom first.
    pub layers: Vec<ImportedLayer>,
    /// Size of the OCI-SIF.
    pub size: u64,
    /// What was worth telling but did not stop the import.
    pub warnings: Vec<String>,
}

/// What a source layer is, by media type and, where that is unclear, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    Squashfs,
    Ext3,
    Tar,
}

struct SourceLayer {
    descriptor: Descriptor,
    location: BlobLocation,
    kind: LayerKind,
    /// The config's diff_id for it, when the config has one per layer.
    diff_id: Option<Digest>,
    name: String,
}

/// Import `source` into the new OCI-SIF `out`.
pub fn import(source: &ImportSource, out: &Path, options: &ImportOptions) -> Result<ImportReport> {
    if out.exists() && !options.force {
        return Err(Error::refused(format!(
            "{}: already exists (use --force to replace it)",
            out.display()
        )));
    }
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let (store, selected): (Box<dyn BlobStore>, SelectedImage) = open_source(source, &platform)?;
    let store_name = store.describe();
    let mut warnings = selected.warnings.clone();
    let layers = source_layers(store.as_ref(), &selected, &mut warnings)?;

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".sifovl-import-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&dir)
        .with_context(|| format!("{}: creating a temporary file", dir.display()))?;
    let all_squashfs = layers.iter().enumerate().all(|(i, l)| {
        l.kind == LayerKind::Squashfs || (l.kind == LayerKind::Ext3 && i + 1 == layers.len())
    });
    if let Some(i) = layers
        .iter()
        .position(|l| l.kind == LayerKind::Ext3)
        .filter(|&i| i + 1 != layers.len())
    {
        return Err(Error::unsupported(format!(
            "{store_name}: layer {i} is an ext3 overlay but not the last layer; SingularityCE cannot run that"
        )));
    }
    let mode = if all_squashfs && !layers.is_empty() {
        ImportMode::Unmodified
    } else if options.keep_layers {
        ImportMode::KeepLayers
    } else {
        ImportMode::Squashed
    };

    let file = temp.as_file();
    let written = match mode {
        ImportMode::Unmodified => write_unmodified(file, &selected, &layers)?,
        _ => write_converted(file, &selected, &layers, mode, options, &mut warnings)?,
    };
    let size = file.metadata().with_context(|| out.display())?.len();
    file.sync_all().with_context(|| out.display())?;
    temp.as_file_mut().flush().with_context(|| out.display())?;
    if options.force {
        temp.persist(out)
    } else {
        temp.persist_noclobber(out)
    }
    .map_err(|e| {
        Error::io(
            format!("{}: renaming the finished image into place", out.display()),
            e.error,
        )
    })?;
    Ok(ImportReport {
        output: out.display().to_string(),
        source: store_name,
        source_manifest: selected.manifest_digest().to_string(),
        mode,
        manifest: written.manifest_digest.to_string(),
        layers: written.layers,
        size,
        warnings,
    })
}

fn open_source(
    source: &ImportSource,
    platform: &Platform,
) -> Result<(Box<dyn BlobStore>, SelectedImage)> {
    Ok(match source {
        ImportSource::Layout { dir, reference } => {
            let store = LayoutDir::open(dir)?;
            let image = select_image(&store, reference.as_deref(), platform)?;
            (Box::new(store), image)
        }
        ImportSource::OciArchive { file, reference } => {
            let store = TarArchive::open(file, "oci-archive")?;
            let image = select_image(&store, reference.as_deref(), platform)?;
            (Box::new(store), image)
        }
        ImportSource::DockerArchive { file, reference } => {
            // Docker 25 and later write an OCI layout into the archive: prefer it.
            let archive = TarArchive::open(file, "docker-archive")?;
            if archive.member("index.json").is_some() && reference.is_none() {
                let image = select_image(&archive, None, platform)?;
                (Box::new(archive), image)
            } else {
                let store = DockerArchive::open(file, reference.as_deref())?;
                let image = store.selected().clone();
                (Box::new(store), image)
            }
        }
    })
}

fn source_layers(
    store: &dyn BlobStore,
    selected: &SelectedImage,
    warnings: &mut Vec<String>,
) -> Result<Vec<SourceLayer>> {
    let name = store.describe();
    let config = Config::parse(&selected.config_bytes, &format!("{name}: config"))?;
    let layers = selected.manifest.layers();
    let diff_ids = config.diff_ids();
    if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
        warnings.push(format!(
            "the config lists {} diff_ids for {} layers; they are not checked",
            diff_ids.len(),
            layers.len()
        ));
    }
    let mut out = Vec::new();
    for (i, descriptor) in layers.iter().enumerate() {
        let what = format!("{name}: layer {i} ({})", descriptor.digest);
        let location = store.locate(&descriptor.digest)?;
        if location.size != descriptor.size {
            return Err(Error::malformed(format!(
                "{what}: {} bytes stored, {} declared",
                location.size, descriptor.size
            )));
        }
        let mut magic = [0u8; 4];
        let n = location
            .open()?
            .read(&mut magic)
            .with_context(|| what.clone())?;
        let kind = match &descriptor.media_type {
            _ if &magic[..n] == b"hsqs" => LayerKind::Squashfs,
            MediaType::SquashfsLayer => {
                return Err(Error::malformed(format!(
                    "{what}: declared squashfs but has no squashfs magic"
                )));
            }
            MediaType::Ext3Layer => LayerKind::Ext3,
            t if t.is_tar_layer() => LayerKind::Tar,
            other => {
                warnings.push(format!(
                    "layer {i} has media type {:?}; reading it as a tar layer",
                    other.as_str()
                ));
                LayerKind::Tar
            }
        };
        out.push(SourceLayer {
            descriptor: descriptor.clone(),
            location,
            kind,
            diff_id: (diff_ids.len() == layers.len()).then(|| diff_ids[i]),
            name: what,
        });
    }
    Ok(out)
}

/// What was written into the new SIF.
struct Written {
    manifest_digest: Digest,
    layers: Vec<ImportedLayer>,
}

/// Copy `location` to `file` at `offset`, checking the bytes against `descriptor`.
fn copy_blob(file: &File, offset: u64, layer: &SourceLayer) -> Result<()> {
    let (mut reader, handle) = SharedHashingReader::new(
        layer.location.open()?,
        layer.descriptor.size,
        "more bytes than its declared size",
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    let progress = crate::progress::task("copying", layer.descriptor.size);
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::io(layer.name.clone(), e))?;
        if n == 0 {
            break;
        }
        file.write_all_at(&buf[..n], at)
            .map_err(|e| Error::io("writing the new image", e))?;
        at += n as u64;
        progress.advance(n as u64);
    }
    check_digest(&layer.name, &handle, &layer.descriptor)
}

fn check_digest(what: &str, handle: &HashHandle, descriptor: &Descriptor) -> Result<()> {
    if handle.count() != descriptor.size {
        return Err(Error::malformed(format!(
            "{what}: {} bytes stored, {} declared",
            handle.count(),
            descriptor.size
        )));
    }
    let actual = handle.digest();
    if actual != descriptor.digest {
        return Err(Error::malformed(format!(
            "{what}: content hashes to {actual}, not the declared digest"
        )));
    }
    Ok(())
}

/// The image stored as it is: blobs copied, manifest and config bytes kept.
fn write_unmodified(
    file: &File,
    selected: &SelectedImage,
    layers: &[SourceLayer],
) -> Result<Written> {
    let mut sif = NewSif::new(layers.len() + 2)?;
    let mut imported = Vec::new();
    for layer in layers {
        copy_blob(file, sif.next_offset(), layer)?;
        sif.add_blob(&layer.descriptor.digest, layer.descriptor.size)?;
        imported.push(ImportedLayer {
            media_type: layer.descriptor.media_type.as_str().to_string(),
            digest: layer.descriptor.digest.to_string(),
            size: layer.descriptor.size,
            entries: None,
        });
    }
    finish_sif(
        file,
        sif,
        &selected.config_bytes,
        &selected.manifest_bytes,
        selected,
    )?;
    Ok(Written {
        manifest_digest: selected.manifest_digest(),
        layers: imported,
    })
}

/// Append config, manifest and RootIndex, then the SIF header and descriptors.
fn finish_sif(
    file: &File,
    mut sif: NewSif,
    config_bytes: &[u8],
    manifest_bytes: &[u8],
    selected: &SelectedImage,
) -> Result<()> {
    let write = |bytes: &[u8], at: u64| {
        file.write_all_at(bytes, at)
            .map_err(|e| Error::io("writing the new image", e))
    };
    write(config_bytes, sif.next_offset())?;
    sif.add_blob(&Digest::of(config_bytes), config_bytes.len() as u64)?;
    write(manifest_bytes, sif.next_offset())?;
    sif.add_blob(&Digest::of(manifest_bytes), manifest_bytes.len() as u64)?;
    let manifest = crate::oci::Manifest::parse(manifest_bytes, "new manifest")?;
    let descriptor = manifest.index_descriptor(
        manifest_bytes,
        &selected.media_type,
        &manifest.config().media_type,
    );
    let index_bytes = Index::single(descriptor).to_bytes();
    let index_at = sif.next_offset();
    write(&index_bytes, index_at)?;
    let container = sif.finish(&index_bytes)?;
    let end = index_at + index_bytes.len() as u64;
    file.set_len(end)
        .map_err(|e| Error::io("writing the new image", e))?;
    write(&container.metadata_bytes(), 0)
}

/// A tar layer as an entry stream, with the hashes of its compressed and uncompressed
/// bytes kept aside.
struct TarStream {
    /// Read and decompressed on threads of their own ([`ReadAhead`], see `open`): the tar
    /// reader and the squashfs writer's feeding no longer wait for the inflating.
    reader: TarLayerReader<Box<dyn Read + Send>>,
    compressed: HashHandle,
    /// `None` when the uncompressed bytes need no hashing (see [`TarStream::open`]).
    uncompressed: Option<HashHandle>,
}

/// A reader failing (`InvalidData`, with `beyond`) past `limit` bytes: the bomb bound,
/// where nothing is hashed.
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
    beyond: String,
}

impl<R> Bounded<R> {
    fn new(inner: R, limit: u64, beyond: String) -> Bounded<R> {
        Bounded {
            inner,
            read: 0,
            limit,
            beyond,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                self.beyond.clone(),
            ));
        }
        Ok(n)
    }
}

impl TarStream {
    /// With `diff_id_checked` (a second pass over a layer the first pass checked), the
    /// uncompressed bytes are not hashed again: the compressed digest, checked again, proves
    /// they are the same bytes, as one gzip or zstd stream always decompresses to the same
    /// output. They are still counted against the bomb bound.
    fn open(
        layer: &SourceLayer,
        options: &ImportOptions,
        diff_id_checked: bool,
    ) -> Result<TarStream> {
        let (raw, compressed) = SharedHashingReader::new(
            layer.location.open()?,
            layer.descriptor.size,
            "more bytes than its declared size",
        );
        // Three threads: the compressed bytes are read and hashed on one, inflated on
        // another, and the uncompressed ones hashed and parsed on the caller's (which also
        // feeds the squashfs writer). One thread for all of it was the longest stage of the
        // pipeline, and the only one in pass 1 of an image with one large layer.
        let decompressed = crate::fs::tar::decompressor(ReadAhead::new(raw))
            .map_err(|e| e.context(&layer.name))?;
        let decompressed = ReadAhead::new(decompressed);
        let limit = layer
            .descriptor
            .size
            .saturating_mul(options.max_expansion)
            .saturating_add(options.expansion_allowance);
        let beyond = format!(
            "expands beyond {limit} bytes, {}x its compressed size plus {} bytes: refused as a decompression bomb",
            options.max_expansion, options.expansion_allowance
        );
        let (plain, uncompressed): (Box<dyn Read + Send>, _) =
            if diff_id_checked || layer.diff_id.is_none() {
                (Box::new(Bounded::new(decompressed, limit, beyond)), None)
            } else {
                let (plain, handle) = SharedHashingReader::new(decompressed, limit, beyond);
                (Box::new(plain), Some(handle))
            };
        let reader = TarLayerReader::new(plain).map_err(|e| e.context(&layer.name))?;
        Ok(TarStream {
            reader,
            compressed,
            uncompressed,
        })
    }

    /// After the last entry: read the rest and check both digests.
    fn finish(mut self, layer: &SourceLayer) -> Result<()> {
        self.reader.drain().map_err(|e| e.context(&layer.name))?;
        check_digest(&layer.name, &self.compressed, &layer.descriptor)?;
        if let (Some(diff_id), Some(uncompressed)) = (layer.diff_id, &self.uncompressed) {
            let actual = uncompressed.digest();
            if actual != diff_id {
                return Err(Error::malformed(format!(
                    "{}: the uncompressed layer hashes to {actual}, not its diff_id {diff_id}",
                    layer.name
                )));
            }
        }
        Ok(())
    }
}

/// One layer of the new image: a source layer copied, or source layers merged into a
/// squashfs layer (with their whiteouts kept, for `keep_layers`).
enum NewLayer {
    Copy(usize),
    Merge {
        layers: Vec<usize>,
        keep_whiteouts: bool,
    },
}

/// A new layer's descriptor: known (a copied layer), or a squashfs layer of this size
/// whose digest a thread is computing.
enum NewDigest<'s> {
    Known(Descriptor),
    Hashing(std::thread::ScopedJoinHandle<'s, Result<Digest>>, u64),
}

/// The image with converted layers: new squashfs layers, `diff_ids` rewritten, history
/// replaced as SingularityCE does on conversion, manifest re-serialised.
fn write_converted(
    file: &File,
    selected: &SelectedImage,
    layers: &[SourceLayer],
    mode: ImportMode,
    options: &ImportOptions,
    warnings: &mut Vec<String>,
) -> Result<Written> {
    let plan: Vec<NewLayer> = if mode == ImportMode::KeepLayers {
        (0..layers.len())
            .map(|i| match layers[i].kind {
                LayerKind::Tar => NewLayer::Merge {
                    layers: vec![i],
                    keep_whiteouts: true,
                },
                _ => NewLayer::Copy(i),
            })
            .collect()
    } else {
        let body: Vec<usize> = (0..layers.len())
            .filter(|&i| layers[i].kind != LayerKind::Ext3)
            .collect();
        let mut plan = vec![NewLayer::Merge {
            layers: body,
            keep_whiteouts: false,
        }];
        if layers.last().is_some_and(|l| l.kind == LayerKind::Ext3) {
            plan.push(NewLayer::Copy(layers.len() - 1));
        }
        plan
    };
    let mut sif = NewSif::new(plan.len() + 2)?;
    // Each converted layer is hashed on a thread of its own while the next one is
    // converted: the hash is a full read of the layer, during which the other cores had
    // nothing to do. OCI blobs follow one another unpadded, so where the next layer goes is
    // known from this one's size alone; the SIF records them in order once every digest is
    // known, and each offset is checked against the SIF's own then.
    let written: Vec<(u64, Descriptor, Option<u64>)> =
        std::thread::scope(|scope| -> Result<Vec<_>> {
            let mut next = sif.next_offset();
            let mut pending = Vec::new();
            for new in plan {
                let offset = next;
                match new {
                    NewLayer::Copy(i) => {
                        copy_blob(file, offset, &layers[i])?;
                        let descriptor = layers[i].descriptor.clone();
                        next = offset + descriptor.size;
                        pending.push((offset, NewDigest::Known(descriptor), None));
                    }
                    NewLayer::Merge {
                        layers: indices,
                        keep_whiteouts,
                    } => {
                        let (size, entries) = merge_into_squashfs(
                            file,
                            offset,
                            layers,
                            &indices,
                            keep_whiteouts,
                            options,
                        )?;
                        let hashing = scope.spawn(move || hash_range(file, offset, size));
                        next = offset + size;
                        pending.push((offset, NewDigest::Hashing(hashing, size), Some(entries)));
                    }
                }
            }
            pending
                .into_iter()
                .map(|(offset, layer, entries)| {
                    let descriptor = match layer {
                        NewDigest::Known(descriptor) => descriptor,
                        NewDigest::Hashing(hashing, size) => Descriptor {
                            media_type: MediaType::SquashfsLayer,
                            size,
                            digest: hashing.join().map_err(|_| {
                                Error::io(
                                    "hashing the new layer",
                                    std::io::Error::other("the hashing thread stopped"),
                                )
                            })??,
                        },
                    };
                    Ok((offset, descriptor, entries))
                })
                .collect()
        })?;
    let mut descriptors = Vec::new();
    let mut imported = Vec::new();
    for (offset, descriptor, entries) in written {
        if sif.next_offset() != offset {
            return Err(Error::io(
                "writing the new image",
                std::io::Error::other(format!(
                    "layer written at {offset}, but the SIF places it at {}",
                    sif.next_offset()
                )),
            ));
        }
        sif.add_blob(&descriptor.digest, descriptor.size)?;
        imported.push(ImportedLayer {
            media_type: descriptor.media_type.as_str().to_string(),
            digest: descriptor.digest.to_string(),
            size: descriptor.size,
            entries,
        });
        descriptors.push(descriptor);
    }
    let config_bytes = if selected.manifest.config().media_type.is_image_config()
        || selected.manifest.config().media_type.is_docker()
    {
        let mut config = Config::parse(&selected.config_bytes, "config")?;
        let ids: Vec<Digest> = descriptors.iter().map(|d| d.digest).collect();
        config.set_diff_ids(&ids);
        let created = options.created.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        config.replace_history(
            &rfc3339_utc(created),
            &format!("sifovl/{}", env!("CARGO_PKG_VERSION")),
            &format!("oci-sif created from {}", selected.manifest_digest().hex()),
        );
        config.to_bytes()
    } else {
        warnings.push(format!(
            "the config has media type {:?}; kept as it is (no diff_ids to rewrite)",
            selected.manifest.config().media_type.as_str()
        ));
        selected.config_bytes.clone()
    };
    let mut manifest = selected.manifest.clone();
    manifest.set_layers(&descriptors);
    manifest.set_config(config_bytes.len() as u64, &Digest::of(&config_bytes));
    let manifest_bytes = manifest.to_bytes();
    finish_sif(file, sif, &config_bytes, &manifest_bytes, selected)?;
    Ok(Written {
        manifest_digest: Digest::of(&manifest_bytes),
        layers: imported,
    })
}

/// A source layer's entries: a tar stream, or a squashfs layer read in place.
enum LayerEntries {
    Tar(TarStream),
    Squashfs(File),
}

impl LayerEntries {
    /// `diff_id_checked`: see [`TarStream::open`].
    fn open(
        layer: &SourceLayer,
        options: &ImportOptions,
        diff_id_checked: bool,
    ) -> Result<LayerEntries> {
        match layer.kind {
            LayerKind::Tar => TarStream::open(layer, options, diff_id_checked)
                .map(LayerEntries::Tar)
                .map_err(|e| digest_error(layer).unwrap_or(e)),
            LayerKind::Squashfs => {
                let actual = {
                    let file = File::open(&layer.location.path)
                        .with_context(|| layer.location.path.display())?;
                    hash_range(&file, layer.location.offset, layer.location.size)?
                };
                if actual != layer.descriptor.digest {
                    return Err(Error::malformed(format!(
                        "{}: content hashes to {actual}, not the declared digest",
                        layer.name
                    )));
                }
                Ok(LayerEntries::Squashfs(
                    File::open(&layer.location.path)
                        .with_context(|| layer.location.path.display())?,
                ))
            }
            LayerKind::Ext3 => Err(Error::unsupported(format!(
                "{}: an ext3 layer cannot be merged",
                layer.name
            ))),
        }
    }

    /// Run `each` over the entry stream, then check what must be checked at its end.
    fn with_source(
        self,
        layer: &SourceLayer,
        each: &mut dyn FnMut(&mut dyn EntrySource) -> Result<()>,
    ) -> Result<()> {
        let ctx = |e: Error| e.context(&layer.name);
        match self {
            LayerEntries::Tar(mut stream) => match each(&mut stream.reader) {
                Ok(()) => stream.finish(layer),
                // A damaged blob says so by its digest, more usefully than by the
                // decompressor's complaint.
                Err(e) => Err(digest_error(layer).unwrap_or_else(|| ctx(e))),
            },
            LayerEntries::Squashfs(file) => {
                let reader =
                    SquashfsReader::open(&file, layer.location.offset, layer.location.size)
                        .map_err(ctx)?;
                let mut walk = reader.walk().map_err(ctx)?;
                each(&mut walk).map_err(ctx)
            }
        }
    }
}

/// Pass 1 over `indices` (global layer numbers, bottom first) into `merge`.
///
/// The next layer is read (decompressed, hashed, parsed) on threads of its own while this
/// one is merged: reading is nearly all of the pass, the merge is cheap, and layers are
/// independent until merged, which stays in order. One layer ahead at most: its entries
/// (headers, no content) wait in memory, as the merge then keeps them anyway.
fn observe_layers(
    merge: &mut LayerMerge,
    layers: &[SourceLayer],
    indices: &[usize],
    options: &ImportOptions,
    progress: &dyn crate::progress::Task,
) -> Result<()> {
    /// An entry, the end of the layer (`None`), or why reading it failed.
    type Item = Result<Option<Entry>>;
    std::thread::scope(|scope| {
        let start = |i: usize| {
            let (tx, rx) = std::sync::mpsc::channel::<Item>();
            let layer = &layers[i];
            scope.spawn(move || {
                let read = LayerEntries::open(layer, options, false).and_then(|entries| {
                    entries.with_source(layer, &mut |source| {
                        while let Some(entry) = source.next_entry()? {
                            if tx.send(Ok(Some(entry))).is_err() {
                                // The merge stopped (an earlier layer failed): so do we.
                                return Err(Error::io("import", std::io::Error::other("stopped")));
                            }
                        }
                        Ok(())
                    })
                });
                let _ = tx.send(read.map(|()| None));
            });
            rx
        };
        let mut ahead = std::collections::VecDeque::new();
        let mut started = 0;
        for (k, &i) in indices.iter().enumerate() {
            while started < indices.len() && started <= k + 1 {
                ahead.push_back(start(indices[started]));
                started += 1;
            }
            let Some(entries) = ahead.pop_front() else {
                break;
            };
            merge.begin_layer(i);
            loop {
                // A closed channel without the end marker: the reading thread panicked
                // (the scope re-raises the panic); never take it for the layer's end.
                let item = entries.recv().map_err(|_| {
                    Error::io(
                        layers[i].name.clone(),
                        std::io::Error::other("the reading thread stopped"),
                    )
                })?;
                match item? {
                    Some(entry) => merge.observe(&entry)?,
                    None => break,
                }
            }
            progress.advance(layers[i].descriptor.size);
        }
        Ok(())
    })
}

/// The digest mismatch of `layer`, if its bytes do not hash to its digest.
fn digest_error(layer: &SourceLayer) -> Option<Error> {
    let file = File::open(&layer.location.path).ok()?;
    let actual = hash_range(&file, layer.location.offset, layer.location.size).ok()?;
    (actual != layer.descriptor.digest).then(|| {
        Error::malformed(format!(
            "{}: content hashes to {actual}, not the declared digest",
            layer.name
        ))
    })
}

/// Merge source layers `indices` into one squashfs image written at `offset`; returns its
/// length and entry count. With `keep_whiteouts` (one layer), hard links to files of the
/// layers below become copies of those files (a layer alone cannot link to them).
fn merge_into_squashfs(
    file: &File,
    offset: u64,
    layers: &[SourceLayer],
    indices: &[usize],
    keep_whiteouts: bool,
    options: &ImportOptions,
) -> Result<(u64, u64)> {
    if keep_whiteouts
        && let [only] = indices
        && layers[*only].kind == LayerKind::Tar
    {
        // Most layers convert in one pass; the others come back for the two-pass plan.
        let layer = &layers[*only];
        let progress = crate::progress::task("converting", layer.descriptor.size);
        let mut writer = SquashfsWriter::new(file, offset, options.squashfs.clone())?;
        let mut written = None;
        LayerEntries::open(layer, options, false)?.with_source(layer, &mut |source| {
            written = copy_layer_directly(source, &mut writer)?;
            if written.is_none() {
                // Read on to the end anyway, so the digests are still checked.
                while source.next_entry()?.is_some() {}
            }
            Ok(())
        })?;
        drop(progress);
        if let Some(entries) = written {
            return Ok((writer.finish()?, entries));
        }
    }
    let total: u64 = indices.iter().map(|&i| layers[i].descriptor.size).sum();
    let progress = crate::progress::task("reading", total);
    let mut merge = LayerMerge::new(keep_whiteouts);
    observe_layers(&mut merge, layers, indices, options, progress.as_ref())?;
    if merge.has_lower_links()
        && let Some(&top) = indices.first()
    {
        let mut lower = LayerMerge::new(false);
        let below: Vec<usize> = (0..top).collect();
        observe_layers(&mut lower, layers, &below, options, progress.as_ref())?;
        merge
            .resolve_lower_links(&lower)
            .map_err(|e| e.context(&layers[top].name))?;
    }
    drop(progress);
    let plan: MergePlan = merge.finish();
    let entries = plan.entry_count();
    let mut writer = SquashfsWriter::new(file, offset, options.squashfs.clone())?;
    plan.write_structure(&mut writer)?;
    let needed: Vec<usize> = (0..layers.len()).filter(|&i| plan.needs_layer(i)).collect();
    let progress = crate::progress::task(
        "squashing",
        needed.iter().map(|&i| layers[i].descriptor.size).sum(),
    );
    for i in needed {
        let layer = &layers[i];
        // Pass 1 read every layer this pass needs and checked its diff_id.
        LayerEntries::open(layer, options, true)?.with_source(layer, &mut |source| {
            plan.write_layer(i, source, &mut writer)
        })?;
        progress.advance(layer.descriptor.size);
    }
    plan.write_links(&mut writer)?;
    let size = writer.finish()?;
    Ok((size, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bomb_bound_without_hashing_fails_one_byte_past_the_limit() {
        let data = [7u8; 100];
        let mut out = Vec::new();
        let mut at_limit = Bounded::new(&data[..], 100, "too big".into());
        assert_eq!(at_limit.read_to_end(&mut out).unwrap(), 100);
        let err = Bounded::new(&data[..], 99, "too big".into())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "too big");
    }
}
