//! `resize`: grow or shrink the writable ext3 overlay (the last layer of an OCI-SIF, or a
//! native SIF's overlay partition), in one crash-safe edit.
//!
//! Where the layout allows (`fs::ext::resize`), both directions happen in place, as
//! resize2fs does them: growing adds block groups after the content and writes only
//! metadata; shrinking moves the blocks past the new end below it (copied at commit from
//! where they lie, past the file's final end, so a replay after a crash finds them intact)
//! and renumbers the inodes of the dropped groups. The cost then depends on what lies past
//! the new end, not on how much the overlay holds.
//!
//! Otherwise the whole tree is read through our ext reader and written as a new filesystem
//! of the new size by our ext3 writer. Everything a tree holds is kept (files, holes,
//! directories, symlinks, hard links, devices, FIFOs, sockets, modes, owners, modification
//! times, xattrs, whiteouts, `work/`), and the filesystem UUID and directory hash seed.
//! Inode numbers are handed out anew, and access and change times become the modification
//! time (the entry model carries only that).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use super::{Format, Image, Overlay, new_layer_offset, replace_with_new_layer};
use crate::digest::{Digest, hash_range_sparse};
use crate::error::{Error, Result};
use crate::fs::ext::resize::{Growth, Move, Patch, Shrink, plan_growth, plan_shrink};
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
    /// Bytes of content copied: all of it when rewritten; when resized in place, the
    /// blocks that lay past a shrunk overlay's new end (0 when grown).
    pub data_bytes: u64,
    /// Inodes that got a new number when shrunk in place (those of the dropped block
    /// groups). 0 when rewritten, though every number is handed out anew then.
    pub renumbered_inodes: u64,
    /// "in place" (only metadata written, and the blocks past a shrunk overlay's new end
    /// moved below it) or "rewritten" (the whole tree copied into a new filesystem).
    pub method: &'static str,
    /// Why the resize was not done in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_because: Option<String>,
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
        renumbered_inodes: 0,
        method: "rewritten",
        rewritten_because: None,
        dropped_cosign_entries: 0,
        invalidated_signatures: signatures,
    };
    if new_size != overlay.size {
        match resize_in_place(path, &file, &mut container, oci.as_ref(), overlay, new_size)
            .map_err(ctx)?
        {
            Ok(done) => {
                report.object = done.object;
                report.offset = done.offset;
                report.digest = done.digest.map(|d| d.to_string());
                report.inodes = done.inodes;
                report.data_bytes = done.moved_bytes;
                report.renumbered_inodes = done.renumbered_inodes;
                report.dropped_cosign_entries = oci.as_ref().map_or(0, |i| i.cosign.len());
                report.method = "in place";
                return Ok(report);
            }
            Err(why) => report.rewritten_because = Some(why),
        }
    }
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

/// What resizing in place did.
struct InPlaceDone {
    object: u32,
    offset: u64,
    digest: Option<Digest>,
    inodes: u64,
    moved_bytes: u64,
    renumbered_inodes: u64,
}

/// A resize in place, planned over the filesystem: the new object is the old one's first
/// `read_len` bytes then zeros, with `moves` copied and `patches` written over it (both
/// sorted by destination and disjoint).
struct InPlacePlan {
    new_size: u64,
    read_len: u64,
    moves: Vec<Move>,
    patches: Vec<Patch>,
    inodes: u64,
    moved_bytes: u64,
    renumbered_inodes: u64,
}

/// Plan resizing the overlay in place, or say why not (`Ok(Err(why))`).
fn plan_in_place(
    file: &File,
    overlay: Overlay,
    new_size: u64,
) -> Result<std::result::Result<InPlacePlan, String>> {
    let mut read = |at: u64, buf: &mut [u8]| {
        if at + buf.len() as u64 > overlay.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "past the end of the overlay",
            ));
        }
        file.read_exact_at(buf, overlay.offset + at)
    };
    if new_size > overlay.size {
        let plan = match plan_growth(&mut read, new_size)? {
            Growth::InPlace(plan) => plan,
            Growth::Rewrite(why) => return Ok(Err(why)),
        };
        // Past the old filesystem, the grown one expects zeros (its new inode tables): the
        // old object's bytes there must already be zeros.
        let tail = overlay.size.saturating_sub(plan.old_fs_bytes);
        if tail > 0 && !reads_as_zeros(file, overlay.offset + plan.old_fs_bytes, tail)? {
            return Ok(Err(
                "the overlay holds non-zero bytes past its filesystem".to_string()
            ));
        }
        return Ok(Ok(InPlacePlan {
            new_size,
            read_len: overlay.size,
            moves: Vec::new(),
            patches: plan.patches,
            inodes: plan.inodes_used,
            moved_bytes: 0,
            renumbered_inodes: 0,
        }));
    }
    let plan = match plan_shrink(&mut read, new_size)? {
        Shrink::InPlace(plan) => plan,
        Shrink::Rewrite(why) => return Ok(Err(why)),
    };
    Ok(Ok(InPlacePlan {
        new_size,
        read_len: plan.fs_bytes,
        moved_bytes: plan.moves.iter().map(|m| m.len).sum(),
        moves: plan.moves,
        patches: plan.patches,
        inodes: plan.inodes_used,
        renumbered_inodes: plan.renumbered_inodes,
    }))
}

/// Resize the overlay in place and commit, or say why not (`Ok(Err(why))`, nothing
/// written).
fn resize_in_place(
    path: &Path,
    file: &File,
    container: &mut Container,
    oci: Option<&OciImage>,
    overlay: Overlay,
    new_size: u64,
) -> Result<std::result::Result<InPlaceDone, String>> {
    let plan = match plan_in_place(file, overlay, new_size)? {
        Ok(plan) => plan,
        Err(why) => return Ok(Err(why)),
    };
    let old_len = file
        .metadata()
        .map_err(|e| Error::io("reading the file's length", e))?
        .len();
    // Bytes of the new object past what it keeps of the old one must become zeros: old
    // JSON objects and trailing bytes when growing, the dropped tail of the last block group
    // when shrinking.
    let stale_from = overlay.offset + plan.read_len;
    let stale_end = (overlay.offset + new_size).min(old_len);
    let mut done = InPlaceDone {
        object: overlay.object,
        offset: overlay.offset,
        digest: None,
        inodes: plan.inodes,
        moved_bytes: plan.moved_bytes,
        renumbered_inodes: plan.renumbered_inodes,
    };
    let mut edit;
    match oci {
        Some(image) => {
            let last = image.layers.len() - 1;
            // Where the layout puts a layer of the new size, known before its digest.
            let probe = Digest::of(b"sifovl: where a resized overlay goes");
            let layer = |digest: Digest| Descriptor {
                media_type: MediaType::Ext3Layer,
                size: new_size,
                digest,
            };
            let (manifest, config) =
                image.with_layer_replaced(last, &probe, new_size, Some(&layer(probe)))?;
            let at = new_layer_offset(container, image, manifest, &config, probe, new_size)?;
            if at != overlay.offset {
                return Ok(Err(format!(
                    "the image's layout would move the overlay from {} to {at}",
                    overlay.offset
                )));
            }
            let digest = hash_patched(file, overlay.offset, &plan)?;
            let (manifest, config) =
                image.with_layer_replaced(last, &digest, new_size, Some(&layer(digest)))?;
            edit = Edit::begin(path, file)?;
            let blob = NewBlob {
                digest,
                size: new_size,
                data: BlobData::InPlace {
                    kept: overlay.size.min(new_size),
                    patches: plan.patches,
                },
            };
            let placed = replace_with_new_layer(
                container,
                &mut edit,
                image,
                manifest,
                &config,
                blob,
                "resized overlay",
            )?;
            if placed.offset != overlay.offset {
                return Err(Error::malformed(format!(
                    "internal error: the resized overlay was placed at {} instead of {}",
                    placed.offset, overlay.offset
                )));
            }
            done.object = placed.object;
            done.digest = Some(digest);
        }
        None => {
            if container.object(overlay.object)?.end() != container.data_end() {
                return Ok(Err("another object follows the overlay".to_string()));
            }
            edit = Edit::begin(path, file)?;
            let on_disk = container.metadata_bytes();
            let time = container.time_for_edit();
            container.resize_last(overlay.object, new_size, time)?;
            for (at, bytes) in plan.patches {
                edit.write(overlay.offset + at, bytes);
            }
            edit.write_changed_sectors(&on_disk, &container.metadata_bytes());
            edit.set_final_len(container.data_end());
        }
    }
    if stale_end > stale_from {
        edit.zero(stale_from, stale_end - stale_from);
    }
    record_moves(
        &mut edit,
        file,
        overlay.offset,
        &plan.moves,
        container.data_end(),
    )?;
    edit.extend(container.data_end())?;
    edit.commit()?;
    Ok(Ok(done))
}

/// Record the moves of a shrink (offsets relative to `base`) in `edit`: copied at commit
/// from where they are, except the bytes the final file still holds (`final_len`), whose
/// place the commit may overwrite first: those are read now and written as bytes.
fn record_moves(
    edit: &mut Edit<'_>,
    file: &File,
    base: u64,
    moves: &[Move],
    final_len: u64,
) -> Result<()> {
    for m in moves {
        let (src, dst) = (base + m.src, base + m.dst);
        let inside = final_len.saturating_sub(src).min(m.len);
        if inside > 0 {
            let mut bytes = vec![0u8; inside as usize];
            file.read_exact_at(&mut bytes, src)
                .map_err(|e| Error::io("reading the overlay", e))?;
            edit.write(dst, bytes);
        }
        if inside < m.len {
            edit.copy(src + inside, dst + inside, m.len - inside, false);
        }
    }
    Ok(())
}

/// Whether `len` bytes at `offset` of `file` are all zeros (holes are not read).
fn reads_as_zeros(file: &File, offset: u64, len: u64) -> Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    for (from, to) in crate::digest::data_extents(file, offset, len) {
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset + pos)
                .map_err(|e| Error::io("reading the overlay", e))?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
    }
    Ok(true)
}

/// The digest of the overlay resized in place: the old object's first `read_len` bytes,
/// then zeros, with the plan's moves and patches over them.
fn hash_patched(file: &File, offset: u64, plan: &InPlacePlan) -> Result<Digest> {
    use sha2::{Digest as _, Sha256};
    const CHUNK: u64 = 1 << 20;
    let (size, read_len) = (plan.new_size, plan.read_len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let progress = crate::progress::task("hashing", size);
    let read = |buf: &mut [u8], at: u64| {
        file.read_exact_at(buf, offset + at)
            .map_err(|e| Error::io("reading the overlay", e))
    };
    // The old overlay's data regions: chunks in its holes are zeros without a read.
    let data = crate::digest::data_extents(file, offset, read_len);
    let (mut next, mut next_move, mut next_patch) = (0, 0, 0);
    let mut pos = 0u64;
    while pos < size {
        crate::interrupt::check()?;
        let n = (size - pos).min(CHUNK);
        let chunk = &mut buf[..n as usize];
        let from_file = read_len.saturating_sub(pos).min(n);
        // Sorted regions: skip those that end before this chunk.
        while data.get(next).is_some_and(|&(_, to)| to <= pos) {
            next += 1;
        }
        let holds_data = data
            .get(next)
            .is_some_and(|&(from, _)| from < pos + from_file);
        if holds_data {
            read(&mut chunk[..from_file as usize], pos)?;
            chunk[from_file as usize..].fill(0);
        } else {
            chunk.fill(0);
        }
        // Moves are sorted by destination and disjoint.
        while plan
            .moves
            .get(next_move)
            .is_some_and(|m| m.dst + m.len <= pos)
        {
            next_move += 1;
        }
        for m in plan.moves[next_move..]
            .iter()
            .take_while(|m| m.dst < pos + n)
        {
            let (a, b) = (m.dst.max(pos), (m.dst + m.len).min(pos + n));
            read(
                &mut chunk[(a - pos) as usize..(b - pos) as usize],
                m.src + (a - m.dst),
            )?;
        }
        // Patches are sorted and disjoint too.
        while plan
            .patches
            .get(next_patch)
            .is_some_and(|(at, bytes)| at + bytes.len() as u64 <= pos)
        {
            next_patch += 1;
        }
        for (at, bytes) in plan.patches[next_patch..]
            .iter()
            .take_while(|(at, _)| *at < pos + n)
        {
            let (start, end) = (*at, at + bytes.len() as u64);
            let (a, b) = (start.max(pos), end.min(pos + n));
            chunk[(a - pos) as usize..(b - pos) as usize]
                .copy_from_slice(&bytes[(a - start) as usize..(b - start) as usize]);
        }
        hasher.update(&chunk[..]);
        progress.advance(n);
        pos += n;
    }
    Ok(Digest::from_bytes(hasher.finalize().into()))
}
