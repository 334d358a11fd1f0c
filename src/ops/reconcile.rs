//! `reconcile`: after a `--writable` run changed the overlay in place, make the OCI image
//! describe the true bytes again (the reference's `overlay sync`), rehashing only the
//! overlay and rewriting only the small JSON blobs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use super::{open_for_edit, open_for_read, signature_objects};
use crate::error::{Error, Result};
use crate::fs::overlay::check_ext3_header;
use crate::journal::Edit;
use crate::oci::Digest;
use crate::ocisif::{self, Layer, NewImage, OciImage};

/// What reconcile found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub image: String,
    /// The overlay's SIF object id.
    pub overlay_object: u32,
    pub overlay_size: u64,
    /// sha256 of the overlay bytes as they are now.
    pub actual_digest: String,
    /// The digest the manifest recorded for the overlay before reconcile.
    pub recorded_digest: String,
    /// Whether everything already agreed (then nothing was written).
    pub in_sync: bool,
    /// Whether the image was changed (false with `--check` or when in sync).
    pub updated: bool,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Bytes written into the image (metadata, JSON blobs, zeroing); 0 when nothing changed.
    pub bytes_written: u64,
    /// Cosign entries dropped because the new manifest digest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the update.
    pub invalidated_signatures: Vec<u32>,
}

/// Hash an object's bytes with the overlay header check on the way, one sequential pass.
pub fn hash_overlay(file: &File, layer: &Layer) -> Result<Digest> {
    let what = || format!("overlay (object {})", layer.object);
    let mut header = [0u8; crate::fs::overlay::HEADER_LEN];
    if layer.object_size < header.len() as u64 {
        return Err(Error::malformed(format!(
            "{}: {} bytes, too small for ext3",
            what(),
            layer.object_size
        )));
    }
    file.read_exact_at(&mut header, layer.offset)
        .map_err(|e| Error::io(what(), e))?;
    check_ext3_header(&header).map_err(|e| e.context(what()))?;
    hash_range(file, layer.offset, layer.object_size).map_err(|e| e.context(what()))
}

/// sha256 of `len` bytes at `offset`, reading in large blocks on a second thread so that
/// reading and hashing overlap.
pub fn hash_range(file: &File, offset: u64, len: u64) -> Result<Digest> {
    use sha2::{Digest as _, Sha256};
    use std::sync::mpsc::sync_channel;
    const BLOCK: usize = 4 << 20;
    let (full_tx, full_rx) = sync_channel::<std::io::Result<(Vec<u8>, usize)>>(2);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        empty_tx.send(vec![0u8; BLOCK]).expect("fresh channel");
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut done = 0u64;
            while done < len {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let n = (len - done).min(BLOCK as u64) as usize;
                let result = file
                    .read_exact_at(&mut buf[..n], offset + done)
                    .map(|_| (buf, n));
                let failed = result.is_err();
                if full_tx.send(result).is_err() || failed {
                    return;
                }
                done += n as u64;
            }
        });
        let mut hasher = Sha256::new();
        let progress = crate::progress::task("hashing", len);
        let mut done = 0u64;
        while done < len {
            let (buf, n) = full_rx
                .recv()
                .map_err(|_| Error::io("reading", std::io::Error::other("reader thread stopped")))?
                .map_err(|e| {
                    Error::io(
                        format!("reading bytes {}..{}", offset + done, offset + len),
                        e,
                    )
                })?;
            hasher.update(&buf[..n]);
            progress.advance(n as u64);
            done += n as u64;
            let _ = empty_tx.send(buf);
        }
        Ok(Digest::from_bytes(hasher.finalize().into()))
    })
}

/// Whether every record of the overlay's digest agrees with `actual`.
fn in_sync(image: &OciImage, overlay: &Layer, actual: &Digest) -> Result<bool> {
    let diff_id_ok = if image.has_image_config() {
        let ids = image.config.diff_ids("config")?;
        ids.len() == image.layers.len() && ids.last() == Some(actual)
    } else {
        true
    };
    Ok(overlay.descriptor.digest == *actual && overlay.object_digest == *actual && diff_id_ok)
}

/// Reconcile `path`. With `check_only`, only report (the file is opened read-only).
pub fn reconcile(path: &Path, check_only: bool) -> Result<ReconcileReport> {
    let name = path.display().to_string();
    let ctx = |e: Error| e.context(&name);
    let (file, mut container) = if check_only {
        open_for_read(path)?
    } else {
        open_for_edit(path)?
    };
    let image = ocisif::read_image(&file, &container).map_err(ctx)?;
    let overlay = image
        .overlay()
        .ok_or_else(|| {
            Error::refused(format!(
                "{name}: image does not contain a writable overlay (last layer is not ext3)"
            ))
        })?
        .clone();
    let actual = hash_overlay(&file, &overlay).map_err(ctx)?;
    let synced = in_sync(&image, &overlay, &actual).map_err(ctx)?;
    let mut report = ReconcileReport {
        image: name.clone(),
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
    };
    if synced || check_only {
        return Ok(report);
    }
    if overlay.descriptor.size != overlay.object_size {
        return Err(Error::malformed(format!(
            "{name}: overlay object {} holds {} bytes but the manifest says {}",
            overlay.object, overlay.object_size, overlay.descriptor.size
        )));
    }

    let mut edit = Edit::begin(path, &file)?;
    let on_disk = container.metadata_bytes();
    // Patch the overlay's own descriptor first, so the update engine sees the new digest
    // present and keeps the overlay where it is (the reference's order, spec section 4).
    let time = container.time_for_edit();
    container
        .set_oci_digest(overlay.object, &actual.to_string(), time)
        .map_err(ctx)?;
    let last = image.layers.len() - 1;
    let mut manifest = image.manifest.clone();
    manifest.set_layer_digest(last, overlay.object_size, &actual);
    let mut config = image.config.clone();
    if image.has_image_config() {
        let ids = config.diff_ids("config").map_err(ctx)?;
        if ids.len() != image.layers.len() {
            return Err(Error::malformed(format!(
                "{name}: config has {} diff_ids for {} layers",
                ids.len(),
                image.layers.len()
            )));
        }
        config.set_diff_id(last, &actual);
    }
    let new = NewImage::build(&image, manifest, &config, Vec::new()).map_err(ctx)?;
    let manifest_digest = Digest::of(&new.manifest_bytes);
    let config_digest = Digest::of(&new.config_bytes);
    let summary =
        ocisif::replace_image(&mut container, &mut edit, &on_disk, &image, new).map_err(ctx)?;
    edit.commit()?;
    report.updated = true;
    report.bytes_written = summary.bytes_written;
    report.manifest_digest = manifest_digest.to_string();
    report.config_digest = config_digest.to_string();
    report.dropped_cosign_entries = image.cosign.len();
    report.invalidated_signatures = signature_objects(&container);
    Ok(report)
}
