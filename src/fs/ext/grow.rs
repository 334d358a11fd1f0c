//! Growing an ext2/3 filesystem in place, as `resize2fs` does for a larger device: the
//! content stays where it is, and only metadata changes. The last group is filled out, new
//! block groups are added after it (their bitmaps, descriptors and superblock backups), and
//! the superblock and every descriptor-table copy are rewritten with the new counts.
//!
//! The plan is a list of byte patches over the grown image (everything else reads as the
//! old image, then zeros), so the caller can apply it through its crash-safe edit: nothing
//! of the old filesystem is touched before the commit, and a resize of a large overlay
//! writes a few blocks per group instead of its whole content.
//!
//! Only the layouts where that is simple and sure are grown in place: 1-4 KiB blocks, a
//! full bitmap block of blocks per group, 32-byte descriptors (no 64bit, meta_bg, flex_bg,
//! sparse_super2 or checksummed descriptors), a descriptor table that does not need another
//! block, and, with `resize_inode`, no new superblock backup (its reserved blocks would have
//! to be mapped by the resize inode). Anything else gets [`Growth::Rewrite`] with the
//! reason, and the caller rewrites the filesystem instead.

use crate::error::{Error, Result};

use super::superblock::{
    INCOMPAT_FILETYPE, LEN, OFFSET, RO_COMPAT_BTREE_DIR, RO_COMPAT_LARGE_FILE,
    RO_COMPAT_SPARSE_SUPER, Superblock,
};
use super::write::{get16, get32, put16, put32};

/// `s_feature_compat`: reserved descriptor-table blocks mapped by inode 7.
const COMPAT_RESIZE_INODE: u32 = 0x10;
/// `s_feature_compat`: at most two superblock backups, placed anywhere.
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
/// `s_feature_ro_compat` flags that change nothing about block groups.
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
/// `s_feature_incompat`: extent-mapped files (block groups as ext2/3's).
const INCOMPAT_EXTENTS: u32 = 0x40;
/// Bytes to write at a byte offset of the filesystem.
pub type Patch = (u64, Vec<u8>);
/// Bytes of a group descriptor without the 64bit feature.
const DESC: u64 = 32;
/// A new last group must leave at least this many blocks free, or it is left out (mke2fs's
/// and resize2fs's rule).
const MIN_LAST_GROUP_FREE: u64 = 50;

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

fn set_bits(bitmap: &mut [u8], from: u64, to: u64, on: bool) {
    for bit in from..to {
        let (byte, mask) = ((bit / 8) as usize, 1u8 << (bit % 8));
        if on {
            bitmap[byte] |= mask;
        } else {
            bitmap[byte] &= !mask;
        }
    }
}

/// Whether group `g` holds a superblock backup.
fn has_backup(g: u64, sparse_super: bool) -> bool {
    !sparse_super || super::write::layout::has_superblock(g)
}

/// Plan growing the filesystem that `read` reads (byte offset in the filesystem, buffer to
/// fill) to fill `new_size` bytes. Errors are for a filesystem that cannot be read or makes
/// no sense; a layout this code does not grow is [`Growth::Rewrite`].
pub fn plan_growth(
    read: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    new_size: u64,
) -> Result<Growth> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::io(format!("ext3 overlay: reading {what}"), e)
    };
    let mut sb_raw = vec![0u8; LEN];
    read(OFFSET as u64, &mut sb_raw).map_err(io("the superblock"))?;
    let sb = Superblock::decode(&sb_raw)
        .filter(Superblock::has_magic)
        .ok_or_else(|| Error::malformed("ext3 overlay: no ext2/3/4 superblock"))?;
    let free_inodes_before = u64::from(get32(&sb_raw, 0x10));
    let rewrite = |why: &str| Ok(Growth::Rewrite(why.to_string()));
    let compat = sb.feature_compat;
    let ro_known = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_BTREE_DIR
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE;
    if sb.feature_incompat & !(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS) != 0
        || sb.feature_ro_compat & !ro_known != 0
        || compat & COMPAT_SPARSE_SUPER2 != 0
    {
        return rewrite(
            "its features (64bit, meta_bg, flex_bg, checksums or others) are not grown in place",
        );
    }
    let Some(bs) = sb.block_size().map(u64::from).filter(|&b| b <= 4096) else {
        return rewrite("its block size is not grown in place");
    };
    let bpg = u64::from(sb.blocks_per_group);
    let ipg = u64::from(sb.inodes_per_group);
    let isz = u64::from(sb.inode_size());
    let fdb = u64::from(sb.first_data_block);
    let old_blocks = sb.blocks();
    if bpg != bs * 8
        || ipg == 0
        || ipg > bs * 8
        || isz == 0
        || (ipg * isz) % bs != 0
        || fdb > 1
        || old_blocks <= fdb
    {
        return rewrite("its block-group geometry is not grown in place");
    }
    let sparse_super = sb.feature_ro_compat & RO_COMPAT_SPARSE_SUPER != 0;
    let reserved_gdt = if compat & COMPAT_RESIZE_INODE != 0 {
        u64::from(get16(&sb_raw, 0xCE))
    } else {
        0
    };
    let per_gdt_block = bs / DESC;
    let groups_of = |blocks: u64| (blocks - fdb).div_ceil(bpg);
    let old_groups = groups_of(old_blocks);
    let gdt_blocks = old_groups.div_ceil(per_gdt_block);
    let itable_blocks = ipg * isz / bs;
    let start = |g: u64| fdb + g * bpg;
    let backup_blocks = |g: u64| {
        if has_backup(g, sparse_super) {
            1 + gdt_blocks + reserved_gdt
        } else {
            0
        }
    };
    let overhead = |g: u64| backup_blocks(g) + 2 + itable_blocks;

    let mut new_blocks = (new_size / bs).min(u64::from(u32::MAX));
    let mut new_groups = groups_of(new_blocks.max(old_blocks));
    while new_groups > old_groups {
        let last = new_groups - 1;
        if new_blocks - start(last) >= overhead(last) + MIN_LAST_GROUP_FREE {
            break;
        }
        // Too small to be worth a group: leave those blocks out, as mke2fs would.
        new_blocks = start(last);
        new_groups -= 1;
    }
    if new_blocks <= old_blocks {
        return rewrite("the growth is too small to add blocks to it");
    }
    // A longer descriptor table takes the first reserved blocks after it (resize_inode),
    // in every group with a backup: the groups' metadata stays where it is.
    let new_gdt_blocks = new_groups.div_ceil(per_gdt_block);
    let taken = new_gdt_blocks - gdt_blocks;
    if taken > reserved_gdt {
        return rewrite("its group descriptor table would need another block");
    }
    if new_groups * ipg > u64::from(u32::MAX) {
        return rewrite("it would have more inodes than ext3 counts");
    }

    // The old backups must be where this layout puts them (a superblock magic at the start
    // of each backup group), or the layout is not the one this code knows.
    for g in (1..old_groups).filter(|&g| has_backup(g, sparse_super)) {
        let mut magic = [0u8; 2];
        read(start(g) * bs + 0x38, &mut magic).map_err(io("a superblock backup"))?;
        if u16::from_le_bytes(magic) != super::superblock::MAGIC {
            return rewrite("its superblock backups are not where ext3 puts them");
        }
    }
    let mut gdt = vec![0u8; (new_gdt_blocks * bs) as usize];
    read((fdb + 1) * bs, &mut gdt[..(gdt_blocks * bs) as usize])
        .map_err(io("the group descriptors"))?;
    let mut patches: Vec<Patch> = Vec::new();
    if reserved_gdt > 0 {
        let resize = ResizeInode {
            bs,
            fdb,
            bpg,
            gdt_blocks,
            reserved_gdt,
            taken,
            inode_size: isz,
            inode_table: u64::from(get32(&gdt, 8)),
            old_groups,
            new_groups,
            sparse_super,
        };
        match resize.patches(read)? {
            Some(p) => patches.extend(p),
            None => return rewrite("its resize inode is not laid out as mke2fs lays it out"),
        }
        put16(&mut sb_raw, 0xCE, (reserved_gdt - taken) as u16);
    }
    let mut freed = 0u64;

    // The old last group: its blocks past the old end were marked in use as padding.
    let last = old_groups - 1;
    let old_in_last = old_blocks - start(last);
    let new_in_last = (new_blocks - start(last)).min(bpg);
    if new_in_last > old_in_last {
        let desc = (last * DESC) as usize;
        let bitmap_block = u64::from(get32(&gdt, desc));
        if bitmap_block < start(last) || bitmap_block >= old_blocks {
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
        let in_group = (new_blocks - start(g)).min(bpg);
        let block_bitmap_at = start(g) + backup_blocks(g);
        let mut block_bitmap = vec![0u8; bs as usize];
        set_bits(&mut block_bitmap, 0, overhead(g), true);
        set_bits(&mut block_bitmap, in_group, bs * 8, true);
        patches.push((block_bitmap_at * bs, block_bitmap));
        patches.push(((block_bitmap_at + 1) * bs, inode_bitmap.clone()));
        let free = in_group - overhead(g);
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
    let old_reserved = u64::from(get32(&sb_raw, 0x08));
    put32(&mut sb_raw, 0x00, (new_groups * ipg) as u32);
    put32(&mut sb_raw, 0x04, new_blocks as u32);
    put32(
        &mut sb_raw,
        0x08,
        (u128::from(old_reserved) * u128::from(new_blocks) / u128::from(old_blocks)) as u32,
    );
    let free_blocks = u64::from(get32(&sb_raw, 0x0C)) + freed;
    put32(&mut sb_raw, 0x0C, free_blocks as u32);
    put32(
        &mut sb_raw,
        0x10,
        (free_inodes_before + added_inodes) as u32,
    );
    // `s_overhead_clusters` (mke2fs 1.47 records it) no longer holds: zero makes the
    // kernel compute it, as resize2fs leaves it.
    put32(&mut sb_raw, 0x248, 0);
    for g in (0..new_groups).filter(|&g| has_backup(g, sparse_super)) {
        let mut copy = sb_raw.clone();
        put16(&mut copy, 0x5A, g as u16);
        let (sb_at, gdt_at) = if g == 0 {
            (OFFSET as u64, (fdb + 1) * bs)
        } else {
            (start(g) * bs, (start(g) + 1) * bs)
        };
        patches.push((sb_at, copy));
        patches.push((gdt_at, gdt.clone()));
    }
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
        inodes_used: u64::from(sb.inodes_count).saturating_sub(free_inodes_before),
    }))
}

/// The resize inode (inode 7) of a filesystem with reserved descriptor-table blocks, as
/// mke2fs makes it (`ext2fs_create_resize_inode`) and e2fsck checks it: its double-indirect
/// block lists the primary reserved blocks, and each of those, read as an indirect block,
/// lists its copies in the groups with a backup (group 1 first).
struct ResizeInode {
    bs: u64,
    fdb: u64,
    bpg: u64,
    gdt_blocks: u64,
    reserved_gdt: u64,
    /// Reserved blocks the descriptor table takes.
    taken: u64,
    inode_size: u64,
    /// Group 0's inode table.
    inode_table: u64,
    old_groups: u64,
    new_groups: u64,
    sparse_super: bool,
}

impl ResizeInode {
    /// The patches that keep the resize inode valid for the grown filesystem: the copies in
    /// new backup groups listed, the taken blocks dropped from it, its block count updated.
    /// `None` if it is not laid out as expected.
    fn patches(
        &self,
        read: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<Option<Vec<Patch>>> {
        let io = |e: std::io::Error| Error::io("ext3 overlay: reading the resize inode", e);
        let bs = self.bs;
        let per = bs / 4;
        let inode_at = self.inode_table * bs + 6 * self.inode_size;
        let mut inode = vec![0u8; 128];
        read(inode_at, &mut inode).map_err(io)?;
        let dind_block = u64::from(get32(&inode, 0x28 + 13 * 4));
        if dind_block == 0 {
            return Ok(None);
        }
        let mut dind = vec![0u8; bs as usize];
        read(dind_block * bs, &mut dind).map_err(io)?;
        // Position of group g's copy in each indirect block: the backups before it.
        let backups = |to: u64| {
            (1..to)
                .filter(|&g| has_backup(g, self.sparse_super))
                .count() as u64
        };
        let sectors = bs / 512;
        let mut blocks_delta: i64 = 0;
        let mut out = Vec::new();
        for j in 0..self.reserved_gdt {
            let primary = self.fdb + 1 + self.gdt_blocks + j;
            let slot = (((self.gdt_blocks + j) % per) * 4) as usize;
            if u64::from(get32(&dind, slot)) != primary {
                return Ok(None);
            }
            let mut ind = vec![0u8; bs as usize];
            read(primary * bs, &mut ind).map_err(io)?;
            if j < self.taken {
                // Becomes a descriptor-table block: no longer the inode's, nor its copies.
                let listed = (0..per as usize)
                    .filter(|&i| get32(&ind, i * 4) != 0)
                    .count() as i64;
                blocks_delta -= (1 + listed) * sectors as i64;
                put32(&mut dind, slot, 0);
                continue;
            }
            let mut changed = false;
            for g in
                (self.old_groups..self.new_groups).filter(|&g| has_backup(g, self.sparse_super))
            {
                let index = backups(g);
                if index >= per {
                    return Ok(None);
                }
                put32(
                    &mut ind,
                    (index * 4) as usize,
                    (primary + g * self.bpg) as u32,
                );
                blocks_delta += sectors as i64;
                changed = true;
            }
            if changed {
                out.push((primary * bs, ind));
            }
        }
        if self.taken > 0 {
            out.push((dind_block * bs, dind));
        }
        if blocks_delta != 0 {
            let i_blocks = i64::from(get32(&inode, 0x1C)) + blocks_delta;
            if i_blocks < 0 || i_blocks > i64::from(u32::MAX) {
                return Ok(None);
            }
            let mut field = vec![0u8; 4];
            put32(&mut field, 0, i_blocks as u32);
            out.push((inode_at + 0x1C, field));
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
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
