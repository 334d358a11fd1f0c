//! `recover-overlay`: replay the committed transactions of the writable overlay's ext3
//! journal in place, as `e2fsck` does, without e2fsprogs, and bring an OCI-SIF's digests in
//! line with the recovered bytes (so the image verifies afterwards).
//!
//! The replay is computed by the ext reader ([`ExtFs`]); this operation writes it home in
//! one crash-safe edit ([`Edit`]): every block the recovery changes (the replayed blocks,
//! the superblock with `needs_recovery` cleared, the journal superblock with the log
//! emptied) is first staged past the end of the file, then copied into the overlay at
//! commit, together with the reconciled OCI metadata. A crash before the commit leaves the
//! image as it was; after it, the next command finishes the edit.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::Image;
use super::reconcile::record_reconcile;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::ext::ExtFs;
use crate::journal::Edit;

/// What `recover-overlay` does.
#[derive(Debug, Clone, Default)]
pub struct RecoverOverlayOptions {
    /// Only report whether recovery is needed (the file is opened read-only).
    pub check_only: bool,
    /// Recover even if SIF signatures will no longer verify.
    pub force: bool,
}

/// What `recover-overlay` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverOverlayReport {
    /// The image path.
    pub image: String,
    /// The overlay's SIF object id.
    pub overlay_object: u32,
    /// Whether the overlay's journal needed recovery.
    pub needs_recovery: bool,
    /// Whether the image was changed (false with `--check` or when nothing was needed).
    pub recovered: bool,
    /// Committed transactions replayed.
    pub transactions: u32,
    /// First transaction ID replayed (`None` when none was).
    pub first_transaction: Option<u32>,
    /// Last transaction ID replayed.
    pub last_transaction: Option<u32>,
    /// Distinct filesystem blocks replayed from the journal.
    pub blocks_replayed: u64,
    /// Journal tags skipped because their block was revoked.
    pub revoked_tags: u64,
    /// Revoke records in the committed transactions.
    pub revoke_records: u64,
    /// Overlay blocks written (replayed ones plus the superblock and the journal
    /// superblock).
    pub blocks_written: u64,
    /// Bytes written into the image, OCI metadata included.
    pub bytes_written: u64,
    /// sha256 of the overlay after recovery (OCI-SIF).
    pub overlay_digest: Option<String>,
    /// The manifest digest after recovery (OCI-SIF).
    pub manifest_digest: Option<String>,
    /// Cosign entries dropped because the new manifest digest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the edit.
    pub invalidated_signatures: Vec<u32>,
}

/// The recovered blocks of an overlay, one after the other (what the edit stages).
struct RecoveredBlocks<'a, 'f> {
    fs: &'a ExtFs<'f>,
    blocks: &'a [u64],
    next: usize,
    buf: Vec<u8>,
    at: usize,
}

impl Read for RecoveredBlocks<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            let Some(&block) = self.blocks.get(self.next) else {
                return Ok(0);
            };
            self.fs
                .recovered_block(block, &mut self.buf)
                .map_err(std::io::Error::other)?;
            self.next += 1;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The overlay's bytes as the recovery leaves them, read in order (for its new digest).
struct RecoveredOverlay<'a, 'f> {
    fs: &'a ExtFs<'f>,
    file: &'a std::fs::File,
    offset: u64,
    size: u64,
    block_size: u64,
    /// Recovery blocks, ascending, and the index of the next one not yet passed.
    blocks: &'a [u64],
    next: usize,
    pos: u64,
}

impl Read for RecoveredOverlay<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let bs = self.block_size;
        let block = self.pos / bs;
        while self.blocks.get(self.next).is_some_and(|&b| b < block) {
            self.next += 1;
        }
        if self.blocks.get(self.next) == Some(&block) {
            let mut buf = vec![0u8; bs as usize];
            self.fs
                .recovered_block(block, &mut buf)
                .map_err(std::io::Error::other)?;
            let within = (self.pos % bs) as usize;
            let n = out
                .len()
                .min(bs as usize - within)
                .min((self.size - self.pos) as usize);
            out[..n].copy_from_slice(&buf[within..within + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let until = self
            .blocks
            .get(self.next)
            .map_or(self.size, |&b| (b * bs).min(self.size));
        let n = (out.len() as u64).min(until - self.pos).min(1 << 20) as usize;
        self.file
            .read_exact_at(&mut out[..n], self.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Recover the writable overlay of the image at `path`.
pub fn recover_overlay(
    path: &Path,
    options: &RecoverOverlayOptions,
) -> Result<RecoverOverlayReport> {
    let opened = if options.check_only {
        Image::open_read(path)?
    } else {
        Image::open_edit(path)?
    };
    let name = &opened.name;
    let overlay = opened.require_overlay()?;
    let in_overlay = |e: Error| e.context(format!("{name}: overlay (object {})", overlay.object));
    let fs = ExtFs::open(&opened.file, overlay.offset, overlay.size).map_err(in_overlay)?;
    let mut report = RecoverOverlayReport {
        image: name.clone(),
        overlay_object: overlay.object,
        needs_recovery: fs.needs_recovery(),
        recovered: false,
        transactions: 0,
        first_transaction: None,
        last_transaction: None,
        blocks_replayed: 0,
        revoked_tags: 0,
        revoke_records: 0,
        blocks_written: 0,
        bytes_written: 0,
        overlay_digest: None,
        manifest_digest: None,
        dropped_cosign_entries: 0,
        invalidated_signatures: Vec::new(),
    };
    if let Some(replay) = fs.replay() {
        report.transactions = replay.transactions;
        report.first_transaction = (replay.transactions > 0).then_some(replay.first_transaction);
        report.last_transaction = replay.last_transaction();
        report.blocks_replayed = replay.block_count();
        report.revoked_tags = replay.revoked_tags;
        report.revoke_records = replay.revoke_records;
    }
    if !report.needs_recovery || options.check_only {
        return Ok(report);
    }
    let signatures = opened.refuse_if_signed(
        options.force,
        "recovering the overlay would invalidate them",
        "recover it",
    )?;

    let blocks = fs.recovery_blocks();
    let bs = fs.block_size() as u64;
    if let Some(&last) = blocks.last()
        && (last + 1).saturating_mul(bs) > overlay.size
    {
        return Err(in_overlay(Error::malformed(format!(
            "recovery would write block {last}, past the end of the overlay"
        ))));
    }
    let mut edit = Edit::begin(path, &opened.file)?;
    let staged_len = blocks.len() as u64 * bs;
    let mut source = RecoveredBlocks {
        fs: &fs,
        blocks: &blocks,
        next: 0,
        buf: vec![0u8; bs as usize],
        at: bs as usize,
    };
    let staged = edit.stage(&mut source, staged_len, 0, false)?;
    // One copy per run of consecutive blocks.
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i + 1;
        while j < blocks.len() && blocks[j] == blocks[j - 1] + 1 {
            j += 1;
        }
        edit.copy(
            staged + i as u64 * bs,
            overlay.offset + blocks[i] * bs,
            (j - i) as u64 * bs,
            false,
        );
        i = j;
    }
    report.blocks_written = blocks.len() as u64;
    report.bytes_written = staged_len;

    let mut container = opened.container.clone();
    if let Some(image) = &opened.oci {
        let layer = image
            .overlay()
            .ok_or_else(|| Error::malformed(format!("{name}: overlay layer vanished")))?;
        let mut recovered = RecoveredOverlay {
            fs: &fs,
            file: &opened.file,
            offset: overlay.offset,
            size: overlay.size,
            block_size: bs,
            blocks: &blocks,
            next: 0,
            pos: 0,
        };
        let (actual, _) = Digest::of_reader(&mut recovered)
            .map_err(|e| in_overlay(Error::io("hashing the recovered overlay", e)))?;
        let done = record_reconcile(&mut container, &mut edit, image, layer, &actual)
            .map_err(|e| e.context(name))?;
        report.bytes_written += done.bytes_written;
        report.overlay_digest = Some(actual.to_string());
        report.manifest_digest = Some(done.manifest_digest.to_string());
        report.dropped_cosign_entries = image.cosign.len();
    }
    edit.commit()?;
    report.recovered = true;
    report.invalidated_signatures = signatures;
    Ok(report)
}
