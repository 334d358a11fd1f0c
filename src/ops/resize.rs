//! `resize`: grow or shrink the writable ext3 overlay (the last layer of an OCI-SIF, or a
//! native SIF's overlay partition) by reading its whole tree through our ext reader and
//! writing a new filesystem of the new size with our ext3 writer, in one crash-safe edit.
//!
//! Everything a tree holds is kept (files, holes, directories, symlinks, hard links,
//! devices, FIFOs, sockets, modes, owners, modification times, xattrs, whiteouts, `work/`),
//! and the filesystem UUID and directory hash seed. Inode numbers are handed out anew, and
//! access and change times become the modification time (the entry model carries only that).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use super::{Format, Image, Overlay, replace_with_new_layer};
use crate::digest::hash_range_sparse;
use crate::error::{Error, Result};
use crate::fs::ext::{Ext3Options, ExtFs, Outcome, TreeNeeds, write_ext3};
use crate::fs::overlay::{EXT3_MAX_BYTES, MIN_OVERLAY_MIB, read_ext3_header, too_small};
use crate::fs::target::Target;
use crate::journal::Edit;
use crate::oci::{Descriptor, MediaType};
use crate::ocisif::{BlobData, NewBlob, OciImage};
use crate::sif::{Container, FsType};

/// Options of `sifovl resize`.
#[derive(Debug, Clone, Default)]
pub struct ResizeOptions {
    /// The new overlay size in MiB.
    pub size_mib: u64,
    /// Resize even though SIF signatures will no longer verify.
    pub force: bool,
    /// The new superblock's time (seconds since the epoch); now when `None`.
    pub time: Option<i64>,
}

/// What `resize` did.
#[derive(Debug, Clone, Serialize)]
pub struct ResizeReport {
    /// The image path.
    pub image: String,
    /// OCI-SIF or native SIF.
    pub format: Format,
    /// The object that holds the overlay now.
    pub object: u32,
    /// Byte offset of the overlay in the file.
    pub offset: u64,
    /// Overlay size before, in bytes.
    pub old_size: u64,
    /// Overlay size after, in bytes.
    pub new_size: u64,
    /// The smallest size (MiB) the content fits in.
    pub min_size_mib: u64,
    /// The new overlay's digest (OCI-SIF only).
    pub digest: Option<String>,
    /// Inodes in use in the new overlay.
    pub inodes: u64,
    /// Bytes of file content copied.
    pub data_bytes: u64,
    /// Cosign entries dropped because the new manifest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the edit.
    pub invalidated_signatures: Vec<u32>,
}

/// The UUID (`s_uuid`) and directory hash seed (`s_hash_seed`) of the overlay, kept by the
/// new filesystem.
fn identity(file: &File, overlay: Overlay) -> Result<([u8; 16], [u8; 16])> {
    let mut sb = [0u8; 1024];
    file.read_exact_at(&mut sb, overlay.offset + 1024)
        .map_err(|e| Error::io("reading the overlay superblock", e))?;
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    let mut seed = [0u8; 16];
    seed.copy_from_slice(&sb[0xEC..0xFC]);
    Ok((uuid, seed))
}

/// Resize the overlay of the image at `path`.
pub fn resize(path: &Path, options: &ResizeOptions) -> Result<ResizeReport> {
    let image = Image::open_edit(path)?;
    let signatures =
        image.refuse_if_signed(options.force, "resizing would invalidate them", "resize")?;
    let overlay = image.require_overlay()?;
    let Image {
        name,
        file,
        mut container,
        oci,
    } = image;
    let ctx = |e: Error| e.context(&name);
    if options.size_mib < MIN_OVERLAY_MIB {
        return Err(ctx(Error::refused(format!(
            "overlay size {} MiB: must be at least {MIN_OVERLAY_MIB} MiB",
            options.size_mib
        ))));
    }
    let new_size = options
        .size_mib
        .checked_mul(1 << 20)
        .filter(|&s| s <= EXT3_MAX_BYTES)
        .ok_or_else(|| {
            ctx(Error::refused(format!(
                "an overlay of {} MiB is beyond ext3's 16 TiB limit",
                options.size_mib
            )))
        })?;
    read_ext3_header(&file, overlay.offset, overlay.size).map_err(ctx)?;
    let ext = ExtFs::open_unreplayed(&file, overlay.offset, overlay.size).map_err(ctx)?;
    if ext.needs_recovery() {
        return Err(ctx(Error::refused(format!(
            "the overlay's ext3 journal needs recovery (the job that wrote it was killed); run `sifovl recover-overlay {}` first, then resize",
            path.display()
        ))));
    }
    // Refuse a size the content cannot fit before writing anything.
    let needs = TreeNeeds::scan(&mut ext.walk().map_err(ctx)?).map_err(ctx)?;
    let min_size_mib = needs.min_size_mib().max(MIN_OVERLAY_MIB);
    if options.size_mib < min_size_mib {
        return Err(ctx(too_small(options.size_mib, min_size_mib)));
    }
    let (uuid, hash_seed) = identity(&file, overlay).map_err(ctx)?;
    let ext3 = Ext3Options {
        size: new_size,
        uuid: Some(uuid),
        hash_seed: Some(hash_seed),
        time: options.time,
        min_inodes: needs.inodes,
    };

    let mut report = ResizeReport {
        image: name.clone(),
        format: if oci.is_some() {
            Format::OciSif
        } else {
            Format::Native
        },
        object: 0,
        offset: 0,
        old_size: overlay.size,
        new_size,
        min_size_mib,
        digest: None,
        inodes: 0,
        data_bytes: 0,
        dropped_cosign_entries: 0,
        invalidated_signatures: signatures,
    };
    let mut edit = Edit::begin(path, &file)?;
    // Staged beyond where the final layout can reach, so the commit never moves it.
    let reach = edit.old_len() + new_size + (1 << 20);
    let (staged, len) = edit
        .stage_with_at(reach, |f, at| {
            if f.metadata().map(|m| m.len()).unwrap_or(0) < at + new_size {
                crate::journal::staged_set_len(f, at + new_size)
                    .map_err(|e| Error::io("extending the file for the new overlay", e))?;
            }
            let target = Target::at(f, at).with_write_hook(crate::journal::staged_write);
            match write_ext3(target, &ext3, &mut ext.walk()?)? {
                Outcome::Written(summary) => {
                    report.inodes = summary.inodes_used;
                    report.data_bytes = summary.data_bytes;
                    Ok(new_size)
                }
                Outcome::Full { .. } => Err(too_small(options.size_mib, min_size_mib + 1)),
            }
        })
        .map_err(ctx)?;
    match &oci {
        Some(image) => resize_oci(
            &file,
            image,
            &mut container,
            &mut edit,
            staged,
            len,
            &mut report,
        ),
        None => resize_native(&mut container, &mut edit, overlay, staged, len, &mut report),
    }
    .map_err(ctx)?;
    edit.commit()?;
    Ok(report)
}

/// Replace the ext3 layer by the new one staged at `staged`.
fn resize_oci(
    file: &File,
    image: &OciImage,
    container: &mut Container,
    edit: &mut Edit<'_>,
    staged: u64,
    len: u64,
    report: &mut ResizeReport,
) -> Result<()> {
    let digest = hash_range_sparse(file, staged, len)?;
    let layer = Descriptor {
        media_type: MediaType::Ext3Layer,
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
            sparse: true,
        },
    };
    let placed = replace_with_new_layer(
        container,
        edit,
        image,
        manifest,
        &config,
        blob,
        "resized overlay",
    )?;
    report.object = placed.object;
    report.offset = placed.offset;
    report.digest = Some(digest.to_string());
    report.dropped_cosign_entries = image.cosign.len();
    Ok(())
}

/// Replace the overlay partition by one of the new size in the same group.
fn resize_native(
    container: &mut Container,
    edit: &mut Edit<'_>,
    overlay: Overlay,
    staged: u64,
    len: u64,
    report: &mut ResizeReport,
) -> Result<()> {
    let (object, offset) = super::replace_overlay_partition(
        container,
        edit,
        overlay,
        FsType::Ext3,
        staged,
        len,
        true,
    )?;
    report.object = object;
    report.offset = offset;
    Ok(())
}
