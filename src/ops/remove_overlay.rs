//! `remove-overlay`: drop the writable ext3 overlay, the undo of `add`. An OCI-SIF loses its
//! last layer (manifest, config `diff_ids` and the layer's history entry follow, the image
//! index is rebuilt); a native SIF loses its ext3 overlay partition. The space is given
//! back when the overlay was the last object of the file.

use std::path::Path;

use serde::Serialize;

use super::{Format, Image, apply_plan};
use crate::error::Result;
use crate::journal::Edit;
use crate::ocisif::{self, NewImage};

/// Options of `sifovl remove-overlay`.
#[derive(Debug, Clone, Default)]
pub struct RemoveOptions {
    /// Remove even though SIF signatures will no longer verify.
    pub force: bool,
}

/// What `remove-overlay` did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    /// The image path.
    pub image: String,
    /// OCI-SIF or native SIF.
    pub format: Format,
    /// The SIF object that held the overlay.
    pub object: u32,
    /// The overlay's size in bytes.
    pub overlay_size: u64,
    /// The new manifest's digest (OCI-SIF only).
    pub manifest_digest: Option<String>,
    /// File size before the edit.
    pub file_size_before: u64,
    /// File size after the edit.
    pub file_size_after: u64,
    /// Cosign entries dropped because the new manifest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the edit.
    pub invalidated_signatures: Vec<u32>,
}

/// Remove the writable overlay of the image at `path`.
pub fn remove_overlay(path: &Path, options: &RemoveOptions) -> Result<RemoveReport> {
    let image = Image::open_edit(path)?;
    let overlay = image.require_overlay()?;
    let signatures = image.refuse_if_signed(
        options.force,
        "removing the overlay would invalidate them",
        "remove it",
    )?;
    let format = image.format();
    let Image {
        name,
        file,
        mut container,
        oci,
    } = image;
    let file_size_before = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut report = RemoveReport {
        image: name.clone(),
        format,
        object: overlay.object,
        overlay_size: overlay.size,
        manifest_digest: None,
        file_size_before,
        file_size_after: 0,
        dropped_cosign_entries: 0,
        invalidated_signatures: signatures,
    };
    let mut edit = Edit::begin(path, &file)?;
    let on_disk = container.metadata_bytes();
    match &oci {
        Some(image) => {
            let mut manifest = image.manifest.clone();
            manifest.pop_layer();
            let mut config = image.config.clone();
            if image.has_image_config() {
                config.pop_layer();
            }
            let new = NewImage::build(image, manifest, &config, Vec::new());
            report.manifest_digest = Some(new.manifest_digest().to_string());
            report.dropped_cosign_entries = image.cosign.len();
            let plan =
                ocisif::replace_image(&mut container, image, new).map_err(|e| e.context(&name))?;
            apply_plan(&mut edit, &on_disk, plan);
        }
        None => {
            let time = container.time_for_edit();
            let removed = container.delete(overlay.object, time)?;
            let final_len = container.compact();
            let zero_end = removed.end().min(final_len);
            if zero_end > removed.offset {
                edit.zero(removed.offset, zero_end - removed.offset);
            }
            edit.set_final_len(final_len);
            edit.write_changed_sectors(&on_disk, &container.metadata_bytes());
        }
    }
    edit.commit()?;
    report.file_size_after = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(report)
}
