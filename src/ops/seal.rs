//! `seal`: turn the writable ext3 overlay into a read-only squashfs layer (OCI-SIF) or a
//! squashfs overlay partition (native SIF), reading the ext3 directly from the image and
//! streaming its `upper/` tree into a squashfs writer: no mount, no external program.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::{Format, Image, Overlay, replace_with_new_layer};
use crate::digest::hash_range;
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, EntrySource};
use crate::fs::ext::ExtFs;
use crate::fs::squashfs::{Compression, SquashfsWriter, WriterOptions};
use crate::fs::whiteout::{UpperConversion, UpperToOverlayfs};
use crate::journal::Edit;
use crate::oci::{Descriptor, MediaType};
use crate::ocisif::{BlobData, NewBlob, OciImage};
use crate::sif::{Container, FsType};

/// Options of `sifovl seal`.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// Squashfs compressor and level.
    pub compression: Compression,
    /// Squashfs block size in bytes (a power of two, 4 KiB to 1 MiB).
    pub block_size: u32,
    /// Map every owner to 0:0, as the reference (fuse2fs `uid=0,gid=0`) does.
    pub root_owned: bool,
    /// Seal even though SIF signatures will no longer verify.
    pub force: bool,
    /// The squashfs superblock time (seconds since the epoch); `None` is now, as mksquashfs.
    /// The CLI fills it from `SOURCE_DATE_EPOCH` (reproducible builds' convention).
    pub mkfs_time: Option<u32>,
    /// Keep AUFS markers (`.wh.NAME`, `.wh..wh..opq`) and fuse-overlayfs's private xattrs
    /// as the overlay holds them, as the reference does, instead of converting them to
    /// the OverlayFS form (docs/seal.md).
    pub keep_aufs_markers: bool,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            compression: Compression::default(),
            block_size: 128 * 1024,
            root_owned: false,
            force: false,
            mkfs_time: None,
            keep_aufs_markers: false,
        }
    }
}

/// What `seal` did.
#[derive(Debug, Clone, Serialize)]
pub struct SealReport {
    /// The image path.
    pub image: String,
    /// OCI-SIF or native SIF.
    pub format: Format,
    /// The object that holds the squashfs now.
    pub object: u32,
    /// Byte offset of the squashfs in the file.
    pub offset: u64,
    /// Size of the squashfs in bytes.
    pub squashfs_size: u64,
    /// Size of the ext3 overlay it replaced.
    pub overlay_size: u64,
    /// The sealed layer's digest (OCI-SIF only).
    pub digest: Option<String>,
    /// Entries written into the squashfs.
    pub entries: u64,
    /// fuse-overlayfs markers dropped.
    pub dropped_markers: u64,
    /// File size before the edit.
    pub file_size_before: u64,
    /// File size after the edit.
    pub file_size_after: u64,
    /// Cosign entries dropped because the new manifest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the edit.
    pub invalidated_signatures: Vec<u32>,
    /// What the AUFS-marker conversion did (all zero with `keep_aufs_markers`); its
    /// `warnings` name every entry handled by a fallback rule.
    pub aufs_markers: UpperConversion,
}

/// The entries of `upper/` as the sealed layer must hold them: AUFS markers converted
/// (`UpperToOverlayfs`, which drops the dangling `.wh..opq` devices) unless kept, then any
/// `.wh..opq` left dropped (as the reference's mksquashfs exclude does), owners mapped to
/// root when asked.
struct SealFilter<S> {
    inner: S,
    root_owned: bool,
    /// Drop `.wh..opq` by name (the reference's exclude; the conversion does it otherwise).
    drop_opq: bool,
    dropped: u64,
    entries: u64,
}

impl<S: EntrySource> EntrySource for SealFilter<S> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some(mut entry) = self.inner.next_entry()? else {
                return Ok(None);
            };
            if self.drop_opq && entry.name() == b".wh..opq" && !entry.path.is_empty() {
                self.dropped += 1;
                continue;
            }
            if self.root_owned {
                entry.metadata.uid = 0;
                entry.metadata.gid = 0;
            }
            self.entries += 1;
            return Ok(Some(entry));
        }
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        self.inner.read_content()
    }

    fn stored_with_holes(&self) -> Option<bool> {
        self.inner.stored_with_holes()
    }
}

/// What `write_squashfs` wrote: length, entries, dropped markers, the conversion's report.
type Written = (u64, u64, u64, UpperConversion);

/// Write the sealed squashfs of `overlay` into `file` at `at`.
fn write_squashfs(
    file: &File,
    overlay: Overlay,
    at: u64,
    options: &SealOptions,
) -> Result<Written> {
    let ext = ExtFs::open(file, overlay.offset, overlay.size)?;
    if ext.needs_recovery() {
        // The reader sees the journal replayed: the sealed layer holds what the killed job
        // had committed, as a kernel mount after recovery would show.
        crate::progress::notice(&format!(
            "the overlay's ext3 journal needed recovery: sealing it as replayed ({} blocks from the journal)",
            ext.replayed_blocks()
        ));
    }
    let upper = ext
        .walk_dir(b"upper")
        .map_err(|e| e.context("overlay upper/"))?;
    let mut writer = SquashfsWriter::new(
        file,
        at,
        WriterOptions {
            compression: options.compression,
            block_size: options.block_size,
            mkfs_time: options.mkfs_time,
            ..WriterOptions::default()
        },
    )?
    // Through the journal, so each write is a fault point of the crash tests.
    .with_write_hook(crate::journal::staged_write);
    // The bar measures the data to seal (a metadata-only walk first), not the overlay's
    // capacity, which would leave it stopped short of the end.
    let mut data_bytes = 0u64;
    let mut sizes = ext
        .walk_dir(b"upper")
        .map_err(|e| e.context("overlay upper/"))?;
    while let Some(entry) = sizes.next_entry()? {
        if let EntryKind::File { size } = entry.kind {
            data_bytes = data_bytes.saturating_add(size);
        }
    }
    let progress = crate::progress::task("sealing", data_bytes);
    let mut copy = |source: &mut dyn EntrySource| -> Result<()> {
        while let Some(entry) = source.next_entry()? {
            if let EntryKind::File { size } = entry.kind {
                let holes = source.stored_with_holes();
                let mut content = source.read_content()?;
                writer.add_file(&entry, &mut content, holes)?;
                progress.advance(size);
            } else {
                writer.add_entry(&entry, None)?;
            }
        }
        Ok(())
    };
    let (entries, dropped, conversion) = if options.keep_aufs_markers {
        let mut source = SealFilter {
            inner: upper,
            root_owned: options.root_owned,
            drop_opq: true,
            dropped: 0,
            entries: 0,
        };
        copy(&mut source)?;
        (source.entries, source.dropped, UpperConversion::default())
    } else {
        let mut source = SealFilter {
            inner: UpperToOverlayfs::new(upper),
            root_owned: options.root_owned,
            drop_opq: false,
            dropped: 0,
            entries: 0,
        };
        copy(&mut source)?;
        let entries = source.entries - source.inner.repeated_dirs();
        let conversion = source.inner.into_report();
        let dropped = source.dropped + conversion.dangling_markers + conversion.opaque_markers;
        (entries, dropped, conversion)
    };
    let len = writer.finish()?;
    Ok((len, entries, dropped, conversion))
}

/// Seal the overlay of the image at `path`.
pub fn seal(path: &Path, options: &SealOptions) -> Result<SealReport> {
    let image = Image::open_edit(path)?;
    // Nothing to seal is the first thing to say, before any --force question.
    let overlay = image.require_overlay()?;
    let signatures =
        image.refuse_if_signed(options.force, "sealing would invalidate them", "seal")?;
    let Image {
        name,
        file,
        mut container,
        oci,
    } = image;
    let ctx = |e: Error| e.context(&name);
    let size_before = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut report = SealReport {
        image: name.clone(),
        format: if oci.is_some() {
            Format::OciSif
        } else {
            Format::Native
        },
        object: 0,
        offset: 0,
        squashfs_size: 0,
        overlay_size: overlay.size,
        digest: None,
        entries: 0,
        dropped_markers: 0,
        file_size_before: size_before,
        file_size_after: 0,
        dropped_cosign_entries: 0,
        invalidated_signatures: signatures,
        aufs_markers: UpperConversion::default(),
    };
    let mut edit = Edit::begin(path, &file)?;
    let (staged, len) = edit
        .stage_with(|f, at| {
            let (len, entries, dropped, conversion) = write_squashfs(f, overlay, at, options)?;
            report.entries = entries;
            report.dropped_markers = dropped;
            report.aufs_markers = conversion;
            Ok(len)
        })
        .map_err(ctx)?;
    report.squashfs_size = len;
    match &oci {
        Some(image) => seal_oci(
            &file,
            image,
            &mut container,
            &mut edit,
            staged,
            len,
            &mut report,
        ),
        None => seal_native(&mut container, &mut edit, overlay, staged, len, &mut report),
    }
    .map_err(|e| ctx(super::with_capacity_hint(report.format, e)))?;
    edit.commit()?;
    report.file_size_after = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(report)
}

/// Replace the ext3 layer by the squashfs staged at `staged` (`len` bytes).
fn seal_oci(
    file: &File,
    image: &OciImage,
    container: &mut Container,
    edit: &mut Edit<'_>,
    staged: u64,
    len: u64,
    report: &mut SealReport,
) -> Result<()> {
    let digest = hash_range(file, staged, len)?;
    let layer = Descriptor {
        media_type: MediaType::SquashfsLayer,
        size: len,
        digest,
    };
    let last = image.layers.len() - 1;
    let (manifest, config) = image.with_layer_replaced(last, &digest, len, Some(&layer))?;
    let blob = NewBlob {
        digest,
        size: len,
        data: BlobData::Staged {
            offset: staged,
            sparse: false,
        },
    };
    let placed = replace_with_new_layer(
        container,
        edit,
        image,
        manifest,
        &config,
        blob,
        "sealed layer",
    )?;
    report.object = placed.object;
    report.offset = placed.offset;
    report.digest = Some(digest.to_string());
    report.dropped_cosign_entries = image.cosign.len();
    Ok(())
}

/// Replace the ext3 overlay partition by a squashfs overlay partition in the same group.
fn seal_native(
    container: &mut Container,
    edit: &mut Edit<'_>,
    overlay: Overlay,
    staged: u64,
    len: u64,
    report: &mut SealReport,
) -> Result<()> {
    let (object, offset) = super::replace_overlay_partition(
        container,
        edit,
        overlay,
        FsType::Squashfs,
        staged,
        len,
        false,
    )?;
    report.object = object;
    report.offset = offset;
    Ok(())
}
