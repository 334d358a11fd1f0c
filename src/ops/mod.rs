//! Operations as plain functions: each takes a path and options, returns a report, and
//! leaves the image either fully edited or untouched. They never print and never read the
//! environment; the CLI fills their options and renders their reports.

pub mod add;
pub mod browse;
pub mod export;
mod image;
pub mod import;
pub mod inspect;
pub mod objects;
pub mod pack;
pub mod reconcile;
pub mod recover;
pub mod recover_overlay;
pub mod remove_overlay;
pub mod resize;
pub mod seal;
pub mod transfer;
pub mod verify;
pub mod view;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::journal::Edit;
use crate::oci::{Config, Manifest};
use crate::ocisif::{self, BlobData, NewBlob, NewImage, OciImage, WritePlan};
use crate::sif::Container;

pub use image::Format;

/// A full descriptor table, with the way out for this kind of image.
pub(crate) fn with_capacity_hint(format: Format, e: Error) -> Error {
    if !e.message().contains("insufficient descriptor capacity") {
        return e;
    }
    let hint = match format {
        Format::OciSif => {
            "; `sifovl export IMAGE DIR` then `sifovl import DIR NEW.sif` rewrites the image with room to spare"
        }
        Format::Native => {
            "; the table cannot grow in place: remove an object the image no longer needs (`sifovl remove-overlay` for an old overlay)"
        }
    };
    Error::new(e.kind(), format!("{}{hint}", e.message()))
}
pub(crate) use image::{Image, Overlay};

/// Record an update-engine plan in `edit`, in the order the plan requires: zero deleted
/// objects, lay the new blobs (copying staged ones into place), set the length, then rewrite
/// the metadata sectors that differ from `on_disk_metadata` (the header and descriptor table
/// as the file holds them now). Returns the bytes the edit will write.
/// Where the new layer of an edited image landed.
pub(crate) struct PlacedLayer {
    /// The SIF object that holds it.
    pub object: u32,
    /// Its byte offset in the file.
    pub offset: u64,
    /// The new manifest's digest.
    pub manifest_digest: Digest,
}

/// Replace the OCI image by `manifest` and `config`, whose one new blob is `layer` (staged
/// by the edit), and record the writes in `edit`. `what` names the layer if it turns out to
/// be in the image already.
pub(crate) fn replace_with_new_layer(
    container: &mut Container,
    edit: &mut Edit<'_>,
    image: &OciImage,
    manifest: Manifest,
    config: &Config,
    layer: NewBlob,
    what: &str,
) -> Result<PlacedLayer> {
    let digest = layer.digest;
    let new = NewImage::build(image, manifest, config, vec![layer]);
    let manifest_digest = new.manifest_digest();
    let on_disk = container.metadata_bytes();
    let plan = ocisif::replace_image(container, image, new)?;
    let object = plan
        .summary
        .object_for(&digest)
        .ok_or_else(|| Error::malformed(format!("{what} {digest} is already in the image")))?;
    apply_plan(edit, &on_disk, plan);
    Ok(PlacedLayer {
        object,
        offset: container.object(object)?.offset,
        manifest_digest,
    })
}

/// Where [`replace_with_new_layer`] will put a new layer of `size` bytes, known before the
/// layer exists: the layout depends on the sizes of what stays and what is added, not on
/// digests, so a plan on a copy of the container (with any `digest` not in the image) says
/// where the layer goes. Lets a new layer be written straight to its place.
pub(crate) fn new_layer_offset(
    container: &Container,
    image: &OciImage,
    manifest: Manifest,
    config: &Config,
    digest: Digest,
    size: u64,
) -> Result<u64> {
    let mut probe = container.clone();
    let layer = NewBlob {
        digest,
        size,
        data: BlobData::Bytes(Vec::new()),
    };
    let new = NewImage::build(image, manifest, config, vec![layer]);
    let plan = ocisif::replace_image(&mut probe, image, new)?;
    plan.blobs
        .iter()
        .find(|(_, blob)| blob.digest == digest)
        .map(|(offset, _)| *offset)
        .ok_or_else(|| Error::malformed(format!("layer {digest} is already in the image")))
}

/// Replace the native SIF's overlay partition `overlay` by a new overlay partition of
/// `fs_type` in the same group and arch, holding the `len` bytes staged at `staged` (copied
/// with holes kept when `sparse`), and record the writes in `edit`: the old bytes the new
/// partition does not cover are zeroed, the file ends at the last object. Returns the new
/// partition's (object id, offset).
pub(crate) fn replace_overlay_partition(
    container: &mut Container,
    edit: &mut Edit<'_>,
    overlay: Overlay,
    fs_type: crate::sif::FsType,
    staged: u64,
    len: u64,
    sparse: bool,
) -> Result<(u32, u64)> {
    use crate::sif::{ObjectSpec, PartType};
    let descriptor = container.object(overlay.object)?.clone();
    let partition = descriptor.partition()?;
    let group = descriptor.group().unwrap_or(1);
    let on_disk = container.metadata_bytes();
    let time = container.time_for_edit();
    let removed = container.delete(overlay.object, time)?;
    container.compact();
    let placed = container.plan_add(
        ObjectSpec::partition(fs_type, PartType::Overlay, partition.arch, group, len),
        time,
    )?;
    let final_len = container.data_end();
    let zero_end = removed.end().min(final_len);
    let covered = placed.offset..placed.offset + len;
    if zero_end > removed.offset && !(covered.start <= removed.offset && covered.end >= zero_end) {
        edit.zero(removed.offset, zero_end - removed.offset);
    }
    edit.copy(staged, placed.offset, len, sparse);
    edit.set_final_len(final_len);
    edit.write_changed_sectors(&on_disk, &container.metadata_bytes());
    Ok((placed.id, placed.offset))
}

pub(crate) fn apply_plan(edit: &mut Edit<'_>, on_disk_metadata: &[u8], plan: WritePlan) -> u64 {
    // What a blob grown in place keeps of the object it replaces is never zeroed.
    let kept: Vec<(u64, u64)> = plan
        .blobs
        .iter()
        .filter_map(|(offset, blob)| match blob.data {
            BlobData::InPlace { kept, .. } => Some((*offset, offset + kept)),
            _ => None,
        })
        .collect();
    for (offset, len) in plan.zero {
        let mut pieces = vec![(offset, offset + len)];
        for &(from, to) in &kept {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| [(a, b.min(from)), (a.max(to), b)])
                .filter(|(a, b)| a < b)
                .collect();
        }
        for (a, b) in pieces {
            edit.zero(a, b - a);
        }
    }
    for (offset, blob) in plan.blobs {
        match blob.data {
            BlobData::Bytes(bytes) => edit.write(offset, bytes),
            BlobData::Staged {
                offset: src,
                sparse,
            } => edit.copy(src, offset, blob.size, sparse),
            BlobData::Placed {
                head_at,
                head_len,
                sparse,
            } => {
                if head_len > 0 {
                    edit.copy(head_at, offset, head_len, sparse);
                }
            }
            BlobData::InPlace { patches, .. } => {
                for (at, bytes) in patches {
                    edit.write(offset + at, bytes);
                }
            }
        }
    }
    if let Some(len) = plan.final_len {
        edit.set_final_len(len);
    }
    plan.summary.bytes_written + edit.write_changed_sectors(on_disk_metadata, &plan.metadata)
}
