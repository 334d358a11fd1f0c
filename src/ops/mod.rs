//! Operations as plain functions: each takes a path and options, returns a report, and
//! leaves the image either fully edited or untouched. They never print and never read the
//! environment; the CLI fills their options and renders their reports.

pub mod add;
pub mod browse;
mod image;
pub mod inspect;
pub mod objects;
pub mod pack;
pub mod reconcile;
pub mod recover;
pub mod seal;
pub mod verify;

use crate::journal::Edit;
use crate::ocisif::{BlobData, WritePlan};

pub use image::Format;
pub(crate) use image::{Image, Overlay};

/// Record an update-engine plan in `edit`, in the order the plan requires: zero deleted
/// objects, lay the new blobs (copying staged ones into place), set the length, then rewrite
/// the metadata sectors that differ from `on_disk_metadata` (the header and descriptor table
/// as the file holds them now). Returns the bytes the edit will write.
pub(crate) fn apply_plan(edit: &mut Edit<'_>, on_disk_metadata: &[u8], plan: WritePlan) -> u64 {
    for (offset, len) in plan.zero {
        edit.zero(offset, len);
    }
    for (offset, blob) in plan.blobs {
        match blob.data {
            BlobData::Bytes(bytes) => edit.write(offset, bytes),
            BlobData::Staged {
                offset: src,
                sparse,
            } => edit.copy(src, offset, blob.size, sparse),
        }
    }
    if let Some(len) = plan.final_len {
        edit.set_final_len(len);
    }
    plan.summary.bytes_written + edit.write_changed_sectors(on_disk_metadata, &plan.metadata)
}
