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
//! walk order, RootIndex last. It does not write: it plans. [`replace_image`] edits the
//! in-memory [`Container`] and returns a [`WritePlan`] (zeroing, blob placements, new
//! metadata) that the caller applies through its crash-safe edit.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::digest::Digest;
use crate::error::{Error, Result, ResultExt};
use crate::oci::{Config, Descriptor, Index, IndexEntry, Manifest, MediaType};
use crate::sif::{Container, CreateOptions, DataType, ObjectSpec};

/// JSON blobs larger than this are not plausible index, manifest or config blobs.
pub(crate) const MAX_JSON_BLOB: u64 = 16 << 20;

/// A layer of the image and the SIF object that holds it.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
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
pub(crate) struct OciImage {
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
    pub(crate) fn overlay(&self) -> Option<&Layer> {
        self.layers
            .last()
            .filter(|l| l.descriptor.media_type == MediaType::Ext3Layer)
    }

    /// Whether the config is a Docker/OCI image config (edited) or an opaque one (kept).
    pub(crate) fn has_image_config(&self) -> bool {
        self.config_descriptor.media_type.is_image_config()
    }

    /// The config's `diff_ids`, which must be one per layer in an image config (the rule
    /// every edit of a layer relies on). `None` for an opaque config (no diff_ids).
    pub(crate) fn checked_diff_ids(&self) -> Result<Option<&[Digest]>> {
        if !self.has_image_config() {
            return Ok(None);
        }
        let ids = self.config.diff_ids();
        if ids.len() != self.layers.len() {
            return Err(Error::malformed(format!(
                "config has {} diff_ids for {} layers",
                ids.len(),
                self.layers.len()
            )));
        }
        Ok(Some(ids))
    }

    /// Whether every record of the overlay's digest (its SIF descriptor, its manifest
    /// descriptor and the last `diff_id`, one per layer) agrees with `actual`, the digest of
    /// its bytes: the in-sync rule of `reconcile`, `inspect --hash` and `verify`.
    pub(crate) fn overlay_in_sync(&self, overlay: &Layer, actual: &Digest) -> bool {
        let diff_id_ok = match self.checked_diff_ids() {
            Ok(Some(ids)) => ids.last() == Some(actual),
            Ok(None) => true,
            Err(_) => false,
        };
        overlay.descriptor.digest == *actual && overlay.object_digest == *actual && diff_id_ok
    }

    /// The manifest and config after layer `index` is replaced: by `layer` as the reference
    /// writes a new descriptor (`Some`), or with only its digest and size changed (`None`
    /// keeps the descriptor's other keys). The diff_id follows (layers whose diff_id is
    /// their digest: squashfs and ext3).
    pub(crate) fn with_layer_replaced(
        &self,
        index: usize,
        digest: &Digest,
        size: u64,
        layer: Option<&Descriptor>,
    ) -> Result<(Manifest, Config)> {
        let mut manifest = self.manifest.clone();
        match layer {
            Some(layer) => manifest.set_layer(index, layer)?,
            None => manifest.set_layer_digest(index, size, digest)?,
        }
        let mut config = self.config.clone();
        if self.checked_diff_ids()?.is_some() {
            config.set_diff_id(index, digest)?;
        }
        Ok((manifest, config))
    }
}

/// Whether a SIF holds an OCI image: SingularityCE's test is exactly one `OCI.RootIndex`.
/// Several are an error here (SingularityCE would silently take the file for a native SIF).
pub(crate) fn is_oci_sif(container: &Container) -> Result<bool> {
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
pub(crate) fn find_blob(container: &Container, digest: &Digest) -> Result<u32> {
    // A digest has one spelling (`sha256:` and 64 lowercase hex digits, all `Digest::parse`
    // accepts), so comparing the descriptor's text is the same test as parsing it, without
    // the parse: every layer looks its blob up among all objects, and with 1,000 layers
    // the parses were most of the time `inspect` took.
    let text = digest.to_string();
    let holds = |extra: &[u8]| {
        let end = extra.iter().position(|&b| b == 0).unwrap_or(extra.len());
        &extra[..end] == text.as_bytes()
    };
    let mut found = container
        .objects()
        .filter(|d| d.data_type == DataType::OciBlob && holds(&d.extra));
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
pub(crate) fn read_small_object(
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
pub(crate) fn read_image(file: &File, container: &Container) -> Result<OciImage> {
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
    let cosign: Vec<IndexEntry> = index
        .entries()
        .iter()
        .filter(|e| e.is_cosign())
        .cloned()
        .collect();
    let image = index.single_image(&index_what)?.clone();

    let manifest_what = format!("manifest {}", image.descriptor.digest);
    let manifest_object =
        find_blob(container, &image.descriptor.digest).map_err(|e| e.context(&index_what))?;
    let manifest_bytes = read_small_object(file, container, manifest_object, &manifest_what)?;
    let manifest = Manifest::parse(&manifest_bytes, &manifest_what)?;

    let config_descriptor = manifest.config().clone();
    let config_what = format!("config {}", config_descriptor.digest);
    let config_object =
        find_blob(container, &config_descriptor.digest).map_err(|e| e.context(&manifest_what))?;
    let config_bytes = read_small_object(file, container, config_object, &config_what)?;
    let config = Config::parse(&config_bytes, &config_what)?;

    let mut layers = Vec::new();
    let count = manifest.layers().len();
    for (i, descriptor) in manifest.layers().iter().cloned().enumerate() {
        let found = find_blob(container, &descriptor.digest);
        let object = match found {
            Ok(object) => object,
            // The state SingularityCE's `overlay sync` leaves when it dies between patching
            // the overlay's SIF digest and rewriting the JSON: the manifest still names the old
            // digest. The overlay is then the one OCI.Blob nothing references.
            Err(e) if i + 1 == count && descriptor.media_type == MediaType::Ext3Layer => {
                let referenced: Vec<Digest> = [image.descriptor.digest, config_descriptor.digest]
                    .into_iter()
                    .chain(manifest.layers().iter().map(|l| l.digest))
                    .chain(cosign.iter().map(|c| c.descriptor.digest))
                    .collect();
                let orphans: Vec<&crate::sif::Descriptor> = container
                    .objects()
                    .filter(|d| d.data_type == DataType::OciBlob && d.size == descriptor.size)
                    .filter(|d| d.oci_digest().is_ok_and(|g| !referenced.contains(&g)))
                    .collect();
                match orphans.as_slice() {
                    [only] if cosign.is_empty() => only.id,
                    _ => return Err(e.context(format!("{manifest_what}: layer {i}"))),
                }
            }
            Err(e) => return Err(e.context(format!("{manifest_what}: layer {i}"))),
        };
        let d = container.object(object)?;
        let object_digest = d.oci_digest()?;
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
pub(crate) enum BlobData {
    Bytes(Vec<u8>),
    /// Already staged in the file by the edit, at this offset.
    Staged {
        offset: u64,
        sparse: bool,
    },
    /// Already written at its final place, but for its first `head_len` bytes, staged at
    /// `head_at` (see `Edit::place_directly`).
    Placed {
        head_at: u64,
        head_len: u64,
        sparse: bool,
    },
    /// Already at its final place for its first `kept` bytes (the object it replaces, grown
    /// in place), but for these patches (offset in the blob, bytes) written at commit; the
    /// rest reads as zeros.
    InPlace {
        kept: u64,
        patches: Vec<(u64, Vec<u8>)>,
    },
}

/// A blob the new image needs that the SIF may not hold yet.
#[derive(Debug)]
pub(crate) struct NewBlob {
    pub digest: Digest,
    pub size: u64,
    pub data: BlobData,
}

/// What the update engine did.
#[derive(Debug, Default, Clone)]
pub(crate) struct UpdateSummary {
    /// Object ids deleted, in deletion order.
    pub deleted: Vec<u32>,
    /// (object id, digest) written, RootIndex last.
    pub written: Vec<(u32, Digest)>,
    /// Bytes the plan writes into the image (data, zeroing, metadata).
    pub bytes_written: u64,
}

impl UpdateSummary {
    /// The object the engine wrote `digest` into, if it wrote it.
    pub(crate) fn object_for(&self, digest: &Digest) -> Option<u32> {
        self.written
            .iter()
            .find(|(_, d)| d == digest)
            .map(|(id, _)| *id)
    }
}

/// The writes that turn the file into the planned image, in the order they must be
/// applied: zero what was deleted, lay the new blobs, set the length, rewrite the changed
/// metadata sectors. Nothing of it is written until the caller applies it.
#[derive(Debug, Default)]
pub(crate) struct WritePlan {
    /// Ranges of deleted objects that stay inside the file: zeroed, as the reference does.
    pub zero: Vec<(u64, u64)>,
    /// New blobs and where they go.
    pub blobs: Vec<(u64, NewBlob)>,
    /// The file's new length (`None`: unchanged).
    pub final_len: Option<u64>,
    /// The header and descriptor table after the edit ([`Container::metadata_bytes`]).
    pub metadata: Vec<u8>,
    /// What the plan does, for reports.
    pub summary: UpdateSummary,
}

/// The new image an operation produced: its manifest and config bytes plus any new blobs.
pub(crate) struct NewImage {
    /// The new manifest's bytes.
    pub manifest_bytes: Vec<u8>,
    /// The new manifest.
    pub manifest: Manifest,
    /// The new config's bytes.
    pub config_bytes: Vec<u8>,
    /// Layer blobs that are new (not yet in the SIF).
    pub new_layers: Vec<NewBlob>,
}

impl NewImage {
    /// Serialise `manifest`/`config` after an edit: the config's new digest goes into the
    /// manifest, and the manifest gets its bytes.
    pub(crate) fn build(
        old: &OciImage,
        mut manifest: Manifest,
        config: &Config,
        new_layers: Vec<NewBlob>,
    ) -> NewImage {
        let config_bytes = if old.has_image_config() {
            config.to_bytes()
        } else {
            old.config_bytes.clone()
        };
        manifest.set_config(config_bytes.len() as u64, &Digest::of(&config_bytes));
        let manifest_bytes = manifest.to_bytes();
        NewImage {
            manifest_bytes,
            manifest,
            config_bytes,
            new_layers,
        }
    }

    /// The new manifest's digest.
    pub(crate) fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest_bytes)
    }

    /// The new config's digest.
    pub(crate) fn config_digest(&self) -> Digest {
        Digest::of(&self.config_bytes)
    }
}

/// Replace the image of `old` by `new` in the SIF, as the reference's `ReplaceImage` does:
/// the RootIndex is rebuilt with one entry (cosign entries are dropped, since an edit of the
/// image invalidates them), unchanged blobs stay where they are, the rest is rewritten.
/// Edits `container` and returns the writes that make the file match it.
pub(crate) fn replace_image(
    container: &mut Container,
    old: &OciImage,
    new: NewImage,
) -> Result<WritePlan> {
    let descriptor = new.manifest.index_descriptor(
        &new.manifest_bytes,
        &old.image.descriptor.media_type,
        &new.manifest.config().media_type,
    );
    let index = old.index.with_single_image(descriptor)?;
    let index_bytes = index.to_bytes();
    let mut blobs = new.new_layers;
    let config_digest = Digest::of(&new.config_bytes);
    let manifest_digest = Digest::of(&new.manifest_bytes);
    let mut walk: Vec<Digest> = new.manifest.layers().iter().map(|l| l.digest).collect();
    walk.push(config_digest);
    walk.push(manifest_digest);
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
    update_root_index(container, &old.index_bytes, index_bytes, &walk, blobs)
}

/// The reference's `UpdateRootIndex` (spec section 2, step 2), as a plan.
///
/// `walk` lists the digests the new index references in the reference's walk order
/// (layers, config, manifest); `blobs` supplies the bytes of those the SIF lacks.
pub(crate) fn update_root_index(
    container: &mut Container,
    old_index_bytes: &[u8],
    index_bytes: Vec<u8>,
    walk: &[Digest],
    mut blobs: Vec<NewBlob>,
) -> Result<WritePlan> {
    let mut plan = WritePlan::default();
    if Digest::of(&index_bytes) != Digest::of(old_index_bytes) {
        let time = container.time_for_edit();
        let present: HashSet<Digest> = container
            .objects()
            .filter(|d| d.data_type == DataType::OciBlob)
            .filter_map(|d| d.oci_digest().ok())
            .collect();
        let mut keep = HashSet::new();
        let mut write = Vec::new();
        for digest in walk {
            if present.contains(digest) {
                keep.insert(*digest);
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
        let mut deleted_ranges = Vec::new();
        for id in doomed {
            let removed = container.delete(id, time)?;
            deleted_ranges.push((removed.offset, removed.size));
            plan.summary.deleted.push(id);
        }
        container.compact();
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
            plan.summary.written.push((placed.id, *digest));
            plan.blobs.push((placed.offset, blob));
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
        plan.summary.written.push((placed.id, index_digest));
        plan.blobs.push((
            placed.offset,
            NewBlob {
                digest: index_digest,
                size: index_bytes.len() as u64,
                data: BlobData::Bytes(index_bytes),
            },
        ));
        let final_len = container.data_end();
        // Zero what was deleted and stays inside the file; the new blobs are laid over it.
        for (offset, size) in deleted_ranges {
            let end = (offset + size).min(final_len);
            if end > offset {
                plan.zero.push((offset, end - offset));
                plan.summary.bytes_written += end - offset;
            }
        }
        plan.summary.bytes_written += plan.blobs.iter().map(|(_, b)| b.size).sum::<u64>();
        plan.final_len = Some(final_len);
    }
    plan.metadata = container.metadata_bytes();
    Ok(plan)
}

/// Descriptor slots SingularityCE leaves free in a new OCI-SIF (`spareDescriptorCapacity`):
/// room for an overlay and a cosign signature later.
pub(crate) const SPARE_DESCRIPTORS: u32 = 8;

/// A new OCI-SIF holding one image, as the reference's `Write` lays it out: deterministic
/// header, one `OCI.Blob` per blob packed back to back in walk order (layers, config,
/// manifest), the RootIndex last, and [`SPARE_DESCRIPTORS`] free slots.
pub(crate) struct NewSif {
    container: Container,
}

impl NewSif {
    /// An empty layout for an image of `blob_count` blobs (layers + config + manifest).
    pub(crate) fn new(blob_count: usize) -> Result<NewSif> {
        let capacity = u32::try_from(blob_count)
            .ok()
            .and_then(|n| n.checked_add(1 + SPARE_DESCRIPTORS))
            .ok_or_else(|| Error::refused(format!("{blob_count} blobs: too many for one SIF")))?;
        Ok(NewSif {
            container: Container::new(&CreateOptions {
                capacity,
                ..CreateOptions::default()
            })?,
        })
    }

    /// Where the next object's bytes go (objects are packed, unaligned).
    pub(crate) fn next_offset(&self) -> u64 {
        self.container.data_end()
    }

    /// Record the next blob (its bytes already at [`next_offset`](Self::next_offset));
    /// returns its SIF object id.
    pub(crate) fn add_blob(&mut self, digest: &Digest, size: u64) -> Result<u32> {
        let time = self.container.time_for_edit();
        Ok(self
            .container
            .plan_add(ObjectSpec::oci_blob(DataType::OciBlob, digest, size), time)?
            .id)
    }

    /// Record the RootIndex (bytes at [`next_offset`](Self::next_offset)) and give back the
    /// finished container.
    pub(crate) fn finish(mut self, index_bytes: &[u8]) -> Result<Container> {
        let time = self.container.time_for_edit();
        self.container.plan_add(
            ObjectSpec::oci_blob(
                DataType::OciRootIndex,
                &Digest::of(index_bytes),
                index_bytes.len() as u64,
            ),
            time,
        )?;
        Ok(self.container)
    }
}

#[cfg(test)]
mod find_blob_tests {
    use super::*;
    use crate::sif::{CreateOptions, ObjectSpec};

    #[test]
    fn finds_a_blob_by_its_one_spelling() {
        let mut c = Container::new(&CreateOptions::default()).unwrap();
        let d = Digest::of(b"layer");
        let upper = d
            .to_string()
            .to_ascii_uppercase()
            .replace("SHA256", "sha256");
        let mut spec = ObjectSpec::oci_blob(DataType::OciBlob, &d, 5);
        c.plan_add(spec.clone(), 0).unwrap();
        // Not a digest `Digest::parse` accepts: no object holds `d` by this one.
        spec.extra = upper.into_bytes();
        c.plan_add(spec, 0).unwrap();
        assert_eq!(find_blob(&c, &d).unwrap(), 1);
        let other = Digest::of(b"other");
        assert!(
            find_blob(&c, &other)
                .unwrap_err()
                .to_string()
                .contains("no OCI.Blob")
        );
    }
}
