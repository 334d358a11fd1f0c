//! `reconcile`: after a `--writable` run changed the overlay in place, make the OCI image
//! describe the true bytes again (the reference's `overlay sync`), rehashing only the
//! overlay and rewriting only the small JSON blobs.

use std::path::Path;

use serde::Serialize;

use super::{Image, apply_plan};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::overlay::read_ext3_header;
use crate::journal::Edit;
use crate::ocisif::{self, Layer, NewImage, OciImage};
use crate::sif::Container;

/// What reconcile found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    /// The image path.
    pub image: String,
    /// Whether the image has a writable overlay (`--check` of an image without one reports
    /// it in sync: there is nothing to reconcile).
    pub has_overlay: bool,
    /// The overlay's SIF object id.
    pub overlay_object: u32,
    /// Overlay size in bytes.
    pub overlay_size: u64,
    /// sha256 of the overlay bytes as they are now.
    pub actual_digest: String,
    /// The digest the manifest recorded for the overlay before reconcile.
    pub recorded_digest: String,
    /// Whether everything already agreed (then nothing was written).
    pub in_sync: bool,
    /// Whether the image was changed (false with `--check` or when in sync).
    pub updated: bool,
    /// The manifest digest after reconcile (unchanged when nothing was written).
    pub manifest_digest: String,
    /// The config digest after reconcile.
    pub config_digest: String,
    /// Bytes written into the image (metadata, JSON blobs, zeroing); 0 when nothing changed.
    pub bytes_written: u64,
    /// Cosign entries dropped because the new manifest digest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the update.
    pub invalidated_signatures: Vec<u32>,
    /// The overlay's ext3 journal holds transactions that were never replayed (the job that
    /// wrote it was killed): the digests describe the bytes as they are, and the content
    /// readers see (`ls`, `seal`, `export`) is the replayed one. `recover-overlay` replays it.
    pub journal_needs_recovery: bool,
}

/// Reconcile `path`. With `check_only`, only report (the file is opened read-only).
pub fn reconcile(path: &Path, check_only: bool) -> Result<ReconcileReport> {
    let opened = if check_only {
        Image::open_read(path)?
    } else {
        Image::open_edit(path)?
    };
    if check_only
        && let Some(image) = &opened.oci
        && image.overlay().is_none()
    {
        return Ok(ReconcileReport {
            image: opened.name.clone(),
            has_overlay: false,
            overlay_object: 0,
            overlay_size: 0,
            actual_digest: String::new(),
            recorded_digest: String::new(),
            in_sync: true,
            updated: false,
            manifest_digest: image.image.descriptor.digest.to_string(),
            config_digest: image.config_descriptor.digest.to_string(),
            bytes_written: 0,
            dropped_cosign_entries: 0,
            invalidated_signatures: Vec::new(),
            journal_needs_recovery: false,
        });
    }
    let (image, overlay) = opened.require_oci_overlay()?;
    let overlay = overlay.clone();
    let name = &opened.name;
    let ctx = |e: Error| e.context(name);
    let actual = opened.hash_overlay().map_err(ctx)?;
    let journal_needs_recovery =
        read_ext3_header(&opened.file, overlay.offset, overlay.object_size)
            .is_ok_and(|h| h.needs_recovery);
    if journal_needs_recovery {
        crate::progress::notice(&format!(
            "{name}: the overlay's ext3 journal needs recovery (a job writing it was killed); \
             reconciling the bytes as they are. Run `sifovl recover-overlay {name}` to replay it"
        ));
    }
    let synced = image.overlay_in_sync(&overlay, &actual);
    let mut report = ReconcileReport {
        image: name.clone(),
        has_overlay: true,
        overlay_object: overlay.object,
        overlay_size: overlay.object_size,
        actual_digest: actual.to_string(),
        recorded_digest: overlay.descriptor.digest.to_string(),
        in_sync: synced,
        updated: false,
        manifest_digest: image.image.descriptor.digest.to_string(),
        config_digest: image.config_descriptor.digest.to_string(),
        bytes_written: 0,
        dropped_cosign_entries: 0,
        invalidated_signatures: Vec::new(),
        journal_needs_recovery,
    };
    if synced || check_only {
        return Ok(report);
    }
    let mut container = opened.container.clone();
    let mut edit = Edit::begin(path, &opened.file)?;
    let done =
        record_reconcile(&mut container, &mut edit, image, &overlay, &actual).map_err(ctx)?;
    report.bytes_written = done.bytes_written;
    let (manifest_digest, config_digest) = (done.manifest_digest, done.config_digest);
    edit.commit()?;
    report.updated = true;
    report.manifest_digest = manifest_digest.to_string();
    report.config_digest = config_digest.to_string();
    report.dropped_cosign_entries = image.cosign.len();
    report.invalidated_signatures = container.signatures();
    Ok(report)
}

/// What [`record_reconcile`] recorded.
pub(crate) struct Reconciled {
    /// Bytes the edit will write (metadata, JSON blobs, zeroing).
    pub bytes_written: u64,
    /// The new manifest's digest.
    pub manifest_digest: Digest,
    /// The new config's digest.
    pub config_digest: Digest,
}

/// Record in `edit` the writes that make `image` describe its overlay `overlay` as holding
/// bytes that hash to `actual` (the overlay's own descriptor first, then the manifest,
/// config and index); `container` is updated to match.
pub(crate) fn record_reconcile(
    container: &mut Container,
    edit: &mut Edit<'_>,
    image: &OciImage,
    overlay: &Layer,
    actual: &Digest,
) -> Result<Reconciled> {
    if overlay.descriptor.size != overlay.object_size {
        return Err(Error::malformed(format!(
            "overlay object {} holds {} bytes but the manifest says {}",
            overlay.object, overlay.object_size, overlay.descriptor.size
        )));
    }
    let on_disk = container.metadata_bytes();
    // Patch the overlay's own descriptor first, so the update engine sees the new digest
    // present and keeps the overlay where it is (the reference's order, spec section 4).
    let time = container.time_for_edit();
    container.set_oci_digest(overlay.object, actual, time)?;
    let new = reconciled_image(image, overlay, actual)?;
    let manifest_digest = new.manifest_digest();
    let config_digest = new.config_digest();
    let plan = ocisif::replace_image(container, image, new)?;
    Ok(Reconciled {
        bytes_written: apply_plan(edit, &on_disk, plan),
        manifest_digest,
        config_digest,
    })
}

/// The manifest and config reconcile writes when the overlay `overlay` of `image` hashes to
/// `actual`: the overlay's descriptor and last diff_id changed, nothing else. Pure, so a
/// push from a read-only file can send the reconciled image without writing it.
pub(crate) fn reconciled_image(
    image: &OciImage,
    overlay: &Layer,
    actual: &Digest,
) -> Result<NewImage> {
    let last = image.layers.len() - 1;
    let (manifest, config) = image.with_layer_replaced(last, actual, overlay.object_size, None)?;
    Ok(NewImage::build(image, manifest, &config, Vec::new()))
}
