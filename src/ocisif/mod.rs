//! The OCI image layout stored inside a SIF: the one place that maps OCI blobs to SIF
//! `OCI.RootIndex` / `OCI.Blob` objects.
//!
//! Reading follows SingularityCE: the RootIndex is the single `OCI.RootIndex` object, a
//! blob is the single `OCI.Blob` whose descriptor digest equals the wanted digest, and the
//! runnable image is the single non-cosign image manifest of the RootIndex.
//!
//! Writing follows the reference update engine (`ReplaceImage`, spec section 2) so that the
//! bytes come out the same — blobs kept when their digest is present, every other OCI object
//! deleted (zeroed, file truncated), new blobs appended packed into the lowest free slots in
//! walk order, RootIndex last — but goes through a [`crate::journal::Edit`], so a crash
//! leaves either the old file or the new one.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result, ResultExt};
use crate::journal::Edit;
use crate::oci::Digest;
use crate::oci::model::{self, Config, Descriptor, Index, IndexEntry, Manifest};
use crate::sif::{Container, DataType, ObjectSpec};

/// JSON blobs larger than this are not plausible index, manifest or config blobs.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// A layer of the image and the SIF object that holds it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub descriptor: Descriptor,
    /// SIF object id.
    pub object: u32,
    pub offset: u64,
    /// Size of the SIF object (equals the descriptor's size in a consistent image).
    pub object_size: u64,
    /// The digest the SIF descriptor records for the object.
    pub object_digest: Digest,
}

/// The single image of an OCI-SIF, fully resolved.
#[derive(Debug, Clone)]
pub struct OciImage {
    pub index_object: u32,
    pub index_bytes: Vec<u8>,
    pub index: Index,
    /// The selected image's entry in the RootIndex.
    pub image: IndexEntry,
    pub manifest_object: u32,
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub config_descriptor: Descriptor,
    pub config_object: u32,
    pub config_bytes: Vec<u8>,
    pub config: Config,
    pub layers: Vec<Layer>,
    /// Cosign signature / attestation entries of the RootIndex.
    pub cosign: Vec<IndexEntry>,
}

impl OciImage {
    /// The last layer, if it is a writable ext3 overlay.
    pub fn overlay(&self) -> Option<&Layer> {
        self.layers
            .last()
            .filter(|l| l.descriptor.media_type == model::EXT3_LAYER)
    }

    /// Whether the config is a Docker/OCI image config (edited) or an opaque one (kept).
    pub fn has_image_config(&self) -> bool {
        model::is_image_config(&self.config_descriptor.media_type)
    }
}

/// Whether a SIF holds an OCI image: SingularityCE's test is exactly one `OCI.RootIndex`.
/// Several are an error here (SingularityCE would silently take the file for a native SIF).
pub fn is_oci_sif(container: &Container) -> Result<bool> {
    let roots: Vec<u32> = container
        .objects()
        .filter(|d| d.data_type == DataType::OciRootIndex)
        .map(|d| d.id)
        .collect();
    match roots.len() {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::malformed(format!(
            "{} OCI.RootIndex objects {roots:?}: an OCI-SIF has exactly one (SingularityCE would take this for a native SIF)",
            roots.len()
        ))),
    }
}

/// The one OCI object whose descriptor digest is `digest`.
pub fn find_blob(container: &Container, digest: &Digest) -> Result<u32> {
    let wanted = digest.to_string();
    let mut found = container.objects().filter(|d| {
        d.data_type == DataType::OciBlob && d.oci_digest().is_ok_and(|text| text == wanted)
    });
    let first = found
        .next()
        .ok_or_else(|| Error::not_found(format!("blob {digest}: no OCI.Blob object holds it")))?;
    if let Some(second) = found.next() {
        return Err(Error::malformed(format!(
            "blob {digest}: held by two objects ({} and {}); SingularityCE cannot read this image",
            first.id, second.id
        )));
    }
    Ok(first.id)
}

/// Read a whole small object (a JSON blob), refusing absurd sizes.
pub fn read_small_object(
    file: &File,
    container: &Container,
    id: u32,
    what: &str,
) -> Result<Vec<u8>> {
    let d = container.object(id)?;
    if d.size > MAX_JSON_BLOB {
        return Err(Error::malformed(format!(
            "{what} (object {id}): {} bytes, too large for a JSON blob",
            d.size
        )));
    }
    let mut buf = vec![0u8; d.size as usize];
    file.read_exact_at(&mut buf, d.offset)
        .with_context(|| format!("{what} (object {id}) at offset {}", d.offset))?;
    Ok(buf)
}

/// Resolve the image of an OCI-SIF.
pub fn read_image(file: &File, container: &Container) -> Result<OciImage> {
    // Every OCI object's digest must be well formed, or lookups by digest mean nothing.
    for d in container.objects() {
        if matches!(d.data_type, DataType::OciBlob | DataType::OciRootIndex) {
            d.oci_digest()?;
        }
    }
    let mut roots = container
        .objects()
        .filter(|d| d.data_type == DataType::OciRootIndex);
    let root = roots
        .next()
        .ok_or_else(|| Error::unsupported("not an OCI-SIF (no OCI.RootIndex object)"))?;
    if let Some(other) = roots.next() {
        return Err(Error::malformed(format!(
            "two OCI.RootIndex objects ({} and {}); SingularityCE takes this for a native SIF",
            root.id, other.id
        )));
    }
    let index_object = root.id;
    let index_bytes = read_small_object(file, container, index_object, "RootIndex")?;
    let index_what = format!("RootIndex (object {index_object})");
    let index = Index::parse(&index_bytes, &index_what)?;
    let entries = index.entries(&index_what)?;
    let cosign: Vec<IndexEntry> = entries.iter().filter(|e| e.is_cosign()).cloned().collect();
    let image = index.single_image(&index_what)?;

    let manifest_what = format!("manifest {}", image.descriptor.digest);
    let manifest_object =
        find_blob(container, &image.descriptor.digest).map_err(|e| e.context(&index_what))?;
    let manifest_bytes = read_small_object(file, container, manifest_object, &manifest_what)?;
    let manifest = Manifest::parse(&manifest_bytes, &manifest_what)?;

    let config_descriptor = manifest.config(&manifest_what)?;
    let config_what = format!("config {}", config_descriptor.digest);
    let config_object =
        find_blob(container, &config_descriptor.digest).map_err(|e| e.context(&manifest_what))?;
    let config_bytes = read_small_object(file, container, config_object, &config_what)?;
    let config = Config::parse(&config_bytes, &config_what)?;

    let mut layers = Vec::new();
    let descriptors = manifest.layers(&manifest_what)?;
    let count = descriptors.len();
    for (i, descriptor) in descriptors.into_iter().enumerate() {
        let found = find_blob(container, &descriptor.digest);
        let object = match found {
            Ok(object) => object,
            // The state SingularityCE's `overlay sync` leaves when it dies between patching
            // the overlay's SIF digest and rewriting the JSON: the manifest still names the old
            // digest. The overlay is then the one OCI.Blob nothing references.
            Err(e) if i + 1 == count && descriptor.media_type == model::EXT3_LAYER => {
                let referenced: Vec<Digest> = [image.descriptor.digest, config_descriptor.digest]
                    .into_iter()
                    .chain(manifest.layers(&manifest_what)?.iter().map(|l| l.digest))
                    .chain(cosign.iter().map(|c| c.descriptor.digest))
                    .collect();
                let orphans: Vec<&crate::sif::Descriptor> = container
                    .objects()
                    .filter(|d| d.data_type == DataType::OciBlob && d.size == descriptor.size)
                    .filter(|d| {
                        d.oci_digest()
                            .ok()
                            .and_then(|t| Digest::parse(&t).ok())
                            .is_some_and(|g| !referenced.contains(&g))
                    })
                    .collect();
                match orphans.as_slice() {
                    [only] if cosign.is_empty() => only.id,
                    _ => return Err(e.context(format!("{manifest_what}: layer {i}"))),
                }
            }
            Err(e) => return Err(e.context(format!("{manifest_what}: layer {i}"))),
        };
        let d = container.object(object)?;
        let object_digest = Digest::parse(&d.oci_digest()?)?;
        layers.push(Layer {
            descriptor,
            object,
            offset: d.offset,
            object_size: d.size,
            object_digest,
        });
    }
    Ok(OciImage {
        index_object,
        index_bytes,
        index,
        image,
        manifest_object,
        manifest_bytes,
        manifest,
        config_descriptor,
        config_object,
        config_bytes,
        config,
        layers,
        cosign,
    })
}

/// Where the bytes of a blob to be written come from.
#[derive(Debug)]
pub enum BlobData {
    Bytes(Vec<u8>),
    /// Already staged in the file by the edit, at this offset.
    Staged {
        offset: u64,
        sparse: bool,
    },
}

/// A blob the new image needs that the SIF may not hold yet.
#[derive(Debug)]
pub struct NewBlob {
    pub digest: Digest,
    pub size: u64,
    pub data: BlobData,
}

/// What the update engine did.
#[derive(Debug, Default, Clone)]
pub struct UpdateSummary {
    /// Object ids deleted, in deletion order.
    pub deleted: Vec<u32>,
    /// (object id, digest) written, RootIndex last.
    pub written: Vec<(u32, Digest)>,
    /// Bytes the journal will write into the image (data, zeroing, metadata).
    pub bytes_written: u64,
}

impl UpdateSummary {
    /// The object the engine wrote `digest` into, if it wrote it.
    pub fn object_for(&self, digest: &Digest) -> Option<u32> {
        self.written
            .iter()
            .find(|(_, d)| d == digest)
            .map(|(id, _)| *id)
    }
}

/// The new image an operation produced: its manifest and config bytes plus any new blobs.
pub struct NewImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Descriptor>,
    /// Layer blobs that are new (not yet in the SIF).
    pub new_layers: Vec<NewBlob>,
}

impl NewImage {
    /// Serialise `manifest`/`config` after an edit: the config's new digest goes into the
    /// manifest, and the manifest gets its bytes.
    pub fn build(
        old: &OciImage,
        mut manifest: Manifest,
        config: &Config,
        new_layers: Vec<NewBlob>,
    ) -> Result<NewImage> {
        let config_bytes = if old.has_image_config() {
            config.to_bytes()
        } else {
            old.config_bytes.clone()
        };
        manifest.set_config(config_bytes.len() as u64, &Digest::of(&config_bytes));
        let manifest_bytes = manifest.to_bytes();
        let layers = manifest.layers("new manifest")?;
        Ok(NewImage {
            manifest_bytes,
            manifest,
            config_bytes,
            layers,
            new_layers,
        })
    }
}

/// Replace the image of `old` by `new` in the SIF, as the reference's `ReplaceImage` does:
/// the RootIndex is rebuilt with one entry (cosign entries are dropped, since an edit of the
/// image invalidates them), unchanged blobs stay where they are, the rest is rewritten.
/// Records everything in `edit`; nothing is visible until the caller commits.
///
/// `on_disk_metadata` is [`Container::metadata_bytes`] as the file holds it now (callers
/// that patched descriptors before calling take it before patching).
pub fn replace_image(
    container: &mut Container,
    edit: &mut Edit<'_>,
    on_disk_metadata: &[u8],
    old: &OciImage,
    new: NewImage,
) -> Result<UpdateSummary> {
    let descriptor = new.manifest.index_descriptor(
        &new.manifest_bytes,
        &old.image.descriptor.media_type,
        &new.manifest.config("new manifest")?.media_type,
    );
    let index = old.index.with_single_image(descriptor);
    let index_bytes = index.to_bytes();
    let mut blobs = new.new_layers;
    let config_digest = Digest::of(&new.config_bytes);
    let manifest_digest = Digest::of(&new.manifest_bytes);
    blobs.push(NewBlob {
        digest: config_digest,
        size: new.config_bytes.len() as u64,
        data: BlobData::Bytes(new.config_bytes),
    });
    blobs.push(NewBlob {
        digest: manifest_digest,
        size: new.manifest_bytes.len() as u64,
        data: BlobData::Bytes(new.manifest_bytes),
    });
    let mut walk: Vec<Digest> = new.layers.iter().map(|l| l.digest).collect();
    walk.push(config_digest);
    walk.push(manifest_digest);
    update_root_index(
        container,
        edit,
        on_disk_metadata,
        &old.index_bytes,
        index_bytes,
        &walk,
        blobs,
    )
}

/// The reference's `UpdateRootIndex` (spec section 2, step 2), journalled.
///
/// `walk` lists the digests the new index references in the reference's walk order
/// (layers, config, manifest); `blobs` supplies the bytes of those the SIF lacks.
pub fn update_root_index(
    container: &mut Container,
    edit: &mut Edit<'_>,
    on_disk_metadata: &[u8],
    old_index_bytes: &[u8],
    index_bytes: Vec<u8>,
    walk: &[Digest],
    mut blobs: Vec<NewBlob>,
) -> Result<UpdateSummary> {
    let mut summary = UpdateSummary::default();
    if Digest::of(&index_bytes) != Digest::of(old_index_bytes) {
        let time = container.time_for_edit();
        let present: HashSet<String> = container
            .objects()
            .filter(|d| d.data_type == DataType::OciBlob)
            .filter_map(|d| d.oci_digest().ok())
            .collect();
        let mut keep = HashSet::new();
        let mut write = Vec::new();
        for digest in walk {
            let text = digest.to_string();
            if present.contains(&text) {
                keep.insert(text);
            } else if !write.contains(digest) {
                // Written once even if listed twice (the reference would duplicate it).
                write.push(*digest);
            }
        }
        // Delete every OCI object not kept; the old RootIndex always goes.
        let doomed: Vec<u32> = container
            .objects()
            .filter(|d| match d.data_type {
                DataType::OciRootIndex => true,
                DataType::OciBlob => !d.oci_digest().is_ok_and(|t| keep.contains(&t)),
                _ => false,
            })
            .map(|d| d.id)
            .collect();
        let mut zero_ranges = Vec::new();
        for id in doomed {
            let removed = container.delete(id, time)?;
            zero_ranges.push((removed.offset, removed.size));
            summary.deleted.push(id);
        }
        container.compact();
        let mut placements = Vec::new();
        for digest in &write {
            let pos = blobs
                .iter()
                .position(|b| b.digest == *digest)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "blob {digest}: needed by the new image but not available"
                    ))
                })?;
            let blob = blobs.swap_remove(pos);
            let placed = container.plan_add(
                ObjectSpec::oci_blob(DataType::OciBlob, digest, blob.size),
                time,
            )?;
            summary.written.push((placed.id, *digest));
            placements.push((placed.offset, blob));
        }
        let index_digest = Digest::of(&index_bytes);
        let placed = container.plan_add(
            ObjectSpec::oci_blob(
                DataType::OciRootIndex,
                &index_digest,
                index_bytes.len() as u64,
            ),
            time,
        )?;
        summary.written.push((placed.id, index_digest));
        placements.push((
            placed.offset,
            NewBlob {
                digest: index_digest,
                size: index_bytes.len() as u64,
                data: BlobData::Bytes(index_bytes),
            },
        ));
        let final_len = container.data_end();
        // Zero what was deleted and stays inside the file, then lay the new blobs over it.
        for (offset, size) in zero_ranges {
            let end = (offset + size).min(final_len);
            if end > offset {
                edit.zero(offset, end - offset);
                summary.bytes_written += end - offset;
            }
        }
        for (offset, blob) in placements {
            summary.bytes_written += blob.size;
            match blob.data {
                BlobData::Bytes(bytes) => edit.write(offset, bytes),
                BlobData::Staged {
                    offset: src,
                    sparse,
                } => edit.copy(src, offset, blob.size, sparse),
            }
        }
        edit.set_final_len(final_len);
    }
    summary.bytes_written +=
        write_metadata_changes(edit, on_disk_metadata, &container.metadata_bytes());
    Ok(summary)
}

/// Journal the 512-byte sectors of the header and descriptor table that changed.
pub fn write_metadata_changes(edit: &mut Edit<'_>, old: &[u8], new: &[u8]) -> u64 {
    const SECTOR: usize = 512;
    let mut written = 0;
    let mut start = None;
    let sectors = new.len().div_ceil(SECTOR);
    for s in 0..=sectors {
        let changed = s < sectors && {
            let range = s * SECTOR..((s + 1) * SECTOR).min(new.len());
            old.get(range.clone()) != Some(&new[range])
        };
        match (changed, start) {
            (true, None) => start = Some(s),
            (false, Some(first)) => {
                let range = first * SECTOR..(s * SECTOR).min(new.len());
                written += range.len() as u64;
                edit.write(range.start as u64, new[range].to_vec());
                start = None;
            }
            _ => {}
        }
    }
    written
}
