//! Growing an ext2/3 filesystem in place, as `resize2fs` does for a larger device: the
//! content stays where it is, and only metadata changes. The last group is filled out, new
//! block groups are added after it (their bitmaps, descriptors and superblock backups), and
//! the superblock and every descriptor-table copy are rewritten with the new counts.
//!
//! The plan is a list of byte patches over the grown image (everything else reads as the
//! old image, then zeros), so a resize of a large overlay writes a few blocks per group
//! instead of its whole content. Besides the layouts the parent module refuses, a growth
//! whose descriptor table would need more blocks than `resize_inode` reserved is rewritten.

use crate::error::{Error, Result};

use super::super::write::{get16, get32, put16, put32};
use super::{DESC, Geometry, Patch, Read, io, set_bits};

/// How a filesystem grows.
#[derive(Debug)]
pub enum Growth {
    /// In place: write `patches` (byte offset in the filesystem, bytes) over the old image
    /// extended with zeros.
    InPlace(GrowPlan),
    /// Not in place, for this reason: rewrite the filesystem.
    Rewrite(String),
}

/// What growing in place writes.
#[derive(Debug)]
pub struct GrowPlan {
    /// Bytes of the grown filesystem (its block count times the block size; the object
    /// holding it may be longer).
    pub fs_bytes: u64,
    /// Byte offset in the filesystem, bytes to write there; sorted, disjoint.
    pub patches: Vec<Patch>,
    /// Bytes of the old filesystem (the object holding it may be longer).
    pub old_fs_bytes: u64,
    /// Block groups before and after.
    pub groups: (u64, u64),
    /// Inodes in use (unchanged).
    pub inodes_used: u64,
}

/// Plan growing the filesystem that `read` reads (byte offset in the filesystem, buffer to
/// fill) to fill `new_size` bytes. Errors are for a filesystem that cannot be read or makes
/// no sense; a layout this code does not grow is [`Growth::Rewrite`].
pub fn plan_growth(read: &mut Read<'_>, new_size: u64) -> Result<Growth> {
    let geo = match Geometry::read(read)? {
        Ok(geo) => geo,
        Err(why) => return Ok(Growth::Rewrite(why)),
    };
    let rewrite = |why: &str| Ok(Growth::Rewrite(why.to_string()));
    let Geometry {
        bs,
        ipg,
        reserved_gdt,
        gdt_blocks,
        ..
    } = geo;
    let (old_blocks, old_groups) = (geo.blocks, geo.groups);
    let free_inodes_before = u64::from(get32(&geo.sb_raw, 0x10));
    let (new_blocks, new_groups) = geo.fit((new_size / bs).min(u64::from(u32::MAX)), old_groups);
    if new_blocks <= old_blocks {
        return rewrite("the growth is too small to add blocks to it");
    }
    // A longer descriptor table takes the first reserved blocks after it (resize_inode),
    // in every group with a backup: the groups' metadata stays where it is.
    let new_gdt_blocks = new_groups.div_ceil(bs / DESC);
    let taken = new_gdt_blocks - gdt_blocks;
    if taken > reserved_gdt {
        return rewrite("its group descriptor table would need another block");
    }
    if new_groups * ipg > u64::from(u32::MAX) {
        return rewrite("it would have more inodes than ext3 counts");
    }
    if !geo.backups_in_place(read)? {
        return rewrite("its superblock backups are not where ext3 puts them");
    }
    let mut gdt = geo.read_gdt(read, new_gdt_blocks)?;
    let mut sb_raw = geo.sb_raw.clone();
    let mut patches: Vec<Patch> = Vec::new();
    if reserved_gdt > 0 {
        match geo.resize_inode(&gdt, new_groups, taken).patches(read)? {
            Some(p) => patches.extend(p),
            None => return rewrite("its resize inode is not laid out as mke2fs lays it out"),
        }
        put16(&mut sb_raw, 0xCE, (reserved_gdt - taken) as u16);
    }
    let mut freed = 0u64;

    // The old last group: its blocks past the old end were marked in use as padding.
    let last = old_groups - 1;
    let old_in_last = old_blocks - geo.start(last);
    let new_in_last = (new_blocks - geo.start(last)).min(geo.bpg);
    if new_in_last > old_in_last {
        let desc = (last * DESC) as usize;
        let bitmap_block = u64::from(get32(&gdt, desc));
        if bitmap_block < geo.start(last) || bitmap_block >= old_blocks {
            return Err(Error::malformed(format!(
                "ext3 overlay: group {last}'s block bitmap {bitmap_block} lies outside the filesystem"
            )));
        }
        let mut bitmap = vec![0u8; bs as usize];
        read(bitmap_block * bs, &mut bitmap).map_err(io("a block bitmap"))?;
        set_bits(&mut bitmap, old_in_last, new_in_last, false);
        patches.push((bitmap_block * bs, bitmap));
        let added = new_in_last - old_in_last;
        let free = u64::from(get16(&gdt, desc + 0x0C)) + added;
        put16(&mut gdt, desc + 0x0C, free as u16);
        freed += added;
    }

    // New groups: bitmaps after the backup (if any), then the inode table, left as zeros.
    let mut inode_bitmap = vec![0u8; bs as usize];
    set_bits(&mut inode_bitmap, ipg, bs * 8, true);
    for g in old_groups..new_groups {
        let in_group = (new_blocks - geo.start(g)).min(geo.bpg);
        let block_bitmap_at = geo.start(g) + geo.backup_blocks(g);
        let mut block_bitmap = vec![0u8; bs as usize];
        set_bits(&mut block_bitmap, 0, geo.overhead(g), true);
        set_bits(&mut block_bitmap, in_group, bs * 8, true);
        patches.push((block_bitmap_at * bs, block_bitmap));
        patches.push(((block_bitmap_at + 1) * bs, inode_bitmap.clone()));
        let free = in_group - geo.overhead(g);
        freed += free;
        let desc = (g * DESC) as usize;
        gdt[desc..desc + DESC as usize].fill(0);
        put32(&mut gdt, desc, block_bitmap_at as u32);
        put32(&mut gdt, desc + 4, (block_bitmap_at + 1) as u32);
        put32(&mut gdt, desc + 8, (block_bitmap_at + 2) as u32);
        put16(&mut gdt, desc + 0x0C, free as u16);
        put16(&mut gdt, desc + 0x0E, ipg as u16);
    }

    // The superblock: counts, then a copy in every group with a backup, each saying where
    // it is, followed by the descriptor table.
    let added_inodes = (new_groups - old_groups) * ipg;
    let free = (
        u64::from(get32(&sb_raw, 0x0C)) + freed,
        free_inodes_before + added_inodes,
    );
    patches.extend(geo.superblock_copies(&mut sb_raw, &gdt, new_groups, new_blocks, free));
    patches.sort_by_key(|p| p.0);
    if patches
        .windows(2)
        .any(|w| w[0].0 + w[0].1.len() as u64 > w[1].0)
    {
        return Err(Error::malformed(
            "ext3 overlay: its group metadata overlaps (a damaged descriptor table)",
        ));
    }
    Ok(Growth::InPlace(GrowPlan {
        fs_bytes: new_blocks * bs,
        patches,
        old_fs_bytes: old_blocks * bs,
        groups: (old_groups, new_groups),
        inodes_used: u64::from(geo.sb.inodes_count).saturating_sub(free_inodes_before),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::super::superblock::{INCOMPAT_FILETYPE, RO_COMPAT_SPARSE_SUPER};
    use super::*;

    /// A bare 4 KiB-block ext3 superblock of `blocks` blocks in one partial group, with
    /// group 0's descriptor pointing its block bitmap at `bitmap`.
    fn image(blocks: u32, bitmap: u32) -> Vec<u8> {
        let mut img = vec![0u8; 3 * 4096];
        let sb = &mut img[1024..2048];
        put32(sb, 0x00, 8192); // inodes
        put32(sb, 0x04, blocks);
        put32(sb, 0x18, 2); // 4 KiB blocks
        put32(sb, 0x20, 32768);
        put32(sb, 0x28, 8192);
        put16(sb, 0x38, 0xEF53);
        put32(sb, 0x4C, 1);
        put16(sb, 0x58, 256);
        put32(sb, 0x5C, 0x4);
        put32(sb, 0x60, INCOMPAT_FILETYPE);
        put32(sb, 0x64, RO_COMPAT_SPARSE_SUPER);
        put32(&mut img[4096..], 0, bitmap);
        img
    }

    fn plan(img: &[u8], new_size: u64) -> Result<Growth> {
        plan_growth(
            &mut |at, buf: &mut [u8]| {
                let src = img
                    .get(at as usize..at as usize + buf.len())
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            },
            new_size,
        )
    }

    #[test]
    fn hostile_or_foreign_filesystems_are_refused_or_rewritten_never_patched_blindly() {
        // No superblock at all.
        assert!(plan(&[0u8; 8192], 1 << 30).is_err());
        // A block bitmap outside the filesystem: an error, not a patch somewhere.
        let err = plan(&image(16384, 999_999), 128 << 20).unwrap_err();
        assert!(err.to_string().contains("block bitmap"), "{err}");
        // Features not grown in place: rewritten, with the reason.
        let mut img = image(16384, 2);
        put32(&mut img[1024..], 0x60, INCOMPAT_FILETYPE | 0x80);
        assert!(
            matches!(plan(&img, 1 << 30).unwrap(), Growth::Rewrite(w) if w.contains("features"))
        );
        // Blocks per group that are not one bitmap block's bits.
        let mut img = image(16384, 2);
        put32(&mut img[1024..], 0x20, 1000);
        assert!(
            matches!(plan(&img, 1 << 30).unwrap(), Growth::Rewrite(w) if w.contains("geometry"))
        );
        // Growth that adds less than a worthwhile group: rewritten.
        assert!(matches!(
            plan(&image(32768, 2), (128 << 20) + 4096).unwrap(),
            Growth::Rewrite(_)
        ));
    }

    #[test]
    fn the_last_group_is_filled_out_and_the_counts_follow() {
        // 64 MiB in one partial group grown to 96 MiB: still one group, 8192 blocks freed.
        let mut img = image(16384, 2);
        put32(&mut img[1024..], 0x0C, 1000); // free blocks
        let mut bitmap = vec![0u8; 4096];
        set_bits(&mut bitmap, 0, 32768, true);
        img[2 * 4096..3 * 4096].copy_from_slice(&bitmap);
        let Growth::InPlace(plan) = plan(&img, 96 << 20).unwrap() else {
            panic!("not in place")
        };
        assert_eq!(plan.groups, (1, 1));
        assert_eq!(plan.fs_bytes, 96 << 20);
        let (at, bitmap) = &plan.patches.iter().find(|p| p.0 == 2 * 4096).unwrap();
        assert_eq!(*at, 8192);
        assert_eq!(
            bitmap[16384 / 8 - 1],
            0xFF,
            "blocks of the old end stay in use"
        );
        assert_eq!(bitmap[16384 / 8], 0, "the new blocks are free");
        assert_eq!(
            bitmap[24576 / 8],
            0xFF,
            "padding past the new end stays set"
        );
        let sb = &plan.patches.iter().find(|p| p.0 == 1024).unwrap().1;
        assert_eq!(get32(sb, 0x04), 24576);
        assert_eq!(get32(sb, 0x0C), 1000 + 8192);
    }
}
