//! Resizing an ext2/3 filesystem in place, as `resize2fs` does: growing adds block groups
//! after the content ([`grow`]), shrinking moves what lives past the new end below it and
//! drops the groups there ([`shrink`]). Both produce a plan of byte patches (and, for a
//! shrink, block moves) over the old image, so the caller can apply it through its
//! crash-safe edit: nothing of the old filesystem is touched before the commit.
//!
//! Only the layouts where that is simple and sure are resized in place: 1-4 KiB blocks, a
//! full bitmap block of blocks per group, 32-byte descriptors (no 64bit, meta_bg, flex_bg,
//! sparse_super2 or checksummed descriptors), block-group metadata where mke2fs puts it,
//! and a resize inode laid out as mke2fs lays it out. Anything else is rewritten by the
//! caller, with the reason this module gives.

pub mod grow;
pub mod shrink;

pub use grow::{GrowPlan, Growth, plan_growth};
pub use shrink::{Move, Shrink, ShrinkPlan, plan_shrink};

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
/// A last group must leave at least this many blocks free, or it is left out (mke2fs's
/// and resize2fs's rule).
const MIN_LAST_GROUP_FREE: u64 = 50;
/// The resize inode's number.
const RESIZE_INO: u32 = 7;

/// A byte reader over the filesystem: byte offset, buffer to fill.
pub type Read<'r> = dyn FnMut(u64, &mut [u8]) -> std::io::Result<()> + 'r;

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

fn bit(bitmap: &[u8], n: u64) -> bool {
    bitmap[(n / 8) as usize] & (1 << (n % 8)) != 0
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + use<> {
    let what = what.to_string();
    move |e: std::io::Error| Error::io(format!("ext3 overlay: reading {what}"), e)
}

/// The block-group geometry of a filesystem this module resizes.
struct Geometry {
    /// The primary superblock, as stored.
    sb_raw: Vec<u8>,
    sb: Superblock,
    bs: u64,
    bpg: u64,
    ipg: u64,
    isz: u64,
    /// `s_first_data_block`: 1 with 1 KiB blocks, else 0.
    fdb: u64,
    blocks: u64,
    groups: u64,
    gdt_blocks: u64,
    reserved_gdt: u64,
    sparse_super: bool,
    itable_blocks: u64,
}

impl Geometry {
    /// The geometry, or why the filesystem is not resized in place (`Ok(Err(why))`).
    fn read(read: &mut Read<'_>) -> Result<std::result::Result<Geometry, String>> {
        let mut sb_raw = vec![0u8; LEN];
        read(OFFSET as u64, &mut sb_raw).map_err(io("the superblock"))?;
        let sb = Superblock::decode(&sb_raw)
            .filter(Superblock::has_magic)
            .ok_or_else(|| Error::malformed("ext3 overlay: no ext2/3/4 superblock"))?;
        let refuse = |why: &str| Ok(Err(why.to_string()));
        let ro_known = RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_BTREE_DIR
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE;
        if sb.feature_incompat & !(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS) != 0
            || sb.feature_ro_compat & !ro_known != 0
            || sb.feature_compat & COMPAT_SPARSE_SUPER2 != 0
        {
            return refuse(
                "its features (64bit, meta_bg, flex_bg, checksums or others) are not resized in place",
            );
        }
        let Some(bs) = sb.block_size().map(u64::from).filter(|&b| b <= 4096) else {
            return refuse("its block size is not resized in place");
        };
        let bpg = u64::from(sb.blocks_per_group);
        let ipg = u64::from(sb.inodes_per_group);
        let isz = u64::from(sb.inode_size());
        let fdb = u64::from(sb.first_data_block);
        let blocks = sb.blocks();
        if bpg != bs * 8
            || ipg == 0
            || ipg > bs * 8
            || isz < 128
            || (ipg * isz) % bs != 0
            || fdb != u64::from(bs == 1024)
            || blocks <= fdb
        {
            return refuse("its block-group geometry is not resized in place");
        }
        let reserved_gdt = if sb.feature_compat & COMPAT_RESIZE_INODE != 0 {
            u64::from(get16(&sb_raw, 0xCE))
        } else {
            0
        };
        let groups = (blocks - fdb).div_ceil(bpg);
        Ok(Ok(Geometry {
            sparse_super: sb.feature_ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
            gdt_blocks: groups.div_ceil(bs / DESC),
            itable_blocks: ipg * isz / bs,
            sb_raw,
            sb,
            bs,
            bpg,
            ipg,
            isz,
            fdb,
            blocks,
            groups,
            reserved_gdt,
        }))
    }

    /// First block of group `g`.
    fn start(&self, g: u64) -> u64 {
        self.fdb + g * self.bpg
    }

    /// Whether group `g` holds a superblock backup.
    fn has_backup(&self, g: u64) -> bool {
        !self.sparse_super || super::write::layout::has_superblock(g)
    }

    fn backup_blocks(&self, g: u64) -> u64 {
        if self.has_backup(g) {
            1 + self.gdt_blocks + self.reserved_gdt
        } else {
            0
        }
    }

    /// Blocks of group `g` its own metadata takes.
    fn overhead(&self, g: u64) -> u64 {
        self.backup_blocks(g) + 2 + self.itable_blocks
    }

    /// The block and group counts of a filesystem of at most `blocks` blocks whose last
    /// group is worth having (mke2fs's rule), keeping at least `min_groups` groups.
    fn fit(&self, blocks: u64, min_groups: u64) -> (u64, u64) {
        let mut blocks = blocks;
        let mut groups = (blocks - self.fdb).div_ceil(self.bpg);
        while groups > min_groups {
            let last = groups - 1;
            if blocks - self.start(last) >= self.overhead(last) + MIN_LAST_GROUP_FREE {
                break;
            }
            blocks = self.start(last);
            groups -= 1;
        }
        (blocks, groups)
    }

    /// Check that the superblock backups of the old groups are where this layout puts
    /// them (a superblock magic at the start of each backup group).
    fn backups_in_place(&self, read: &mut Read<'_>) -> Result<bool> {
        for g in (1..self.groups).filter(|&g| self.has_backup(g)) {
            let mut magic = [0u8; 2];
            read(self.start(g) * self.bs + 0x38, &mut magic).map_err(io("a superblock backup"))?;
            if u16::from_le_bytes(magic) != super::superblock::MAGIC {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Group descriptor table, `blocks` blocks of it (the old table, then zeros).
    fn read_gdt(&self, read: &mut Read<'_>, blocks: u64) -> Result<Vec<u8>> {
        let mut gdt = vec![0u8; (blocks.max(self.gdt_blocks) * self.bs) as usize];
        read(
            (self.fdb + 1) * self.bs,
            &mut gdt[..(self.gdt_blocks * self.bs) as usize],
        )
        .map_err(io("the group descriptors"))?;
        gdt.truncate((blocks * self.bs) as usize);
        Ok(gdt)
    }

    /// The superblock `sb_raw` with the new `blocks`, `inodes` and free counts, then a copy
    /// of it and of `gdt` in every one of the first `groups` groups with a backup, each
    /// copy saying where it is.
    fn superblock_copies(
        &self,
        sb_raw: &mut [u8],
        gdt: &[u8],
        groups: u64,
        blocks: u64,
        free: (u64, u64),
    ) -> Vec<Patch> {
        let old_reserved = u64::from(get32(sb_raw, 0x08));
        put32(sb_raw, 0x00, (groups * self.ipg) as u32);
        put32(sb_raw, 0x04, blocks as u32);
        put32(
            sb_raw,
            0x08,
            (u128::from(old_reserved) * u128::from(blocks) / u128::from(self.blocks)) as u32,
        );
        put32(sb_raw, 0x0C, free.0 as u32);
        put32(sb_raw, 0x10, free.1 as u32);
        // `s_overhead_clusters` (mke2fs 1.47 records it) no longer holds: zero makes the
        // kernel compute it, as resize2fs leaves it.
        put32(sb_raw, 0x248, 0);
        let mut patches = Vec::new();
        for g in (0..groups).filter(|&g| self.has_backup(g)) {
            let mut copy = sb_raw.to_vec();
            put16(&mut copy, 0x5A, g as u16);
            let (sb_at, gdt_at) = if g == 0 {
                (OFFSET as u64, (self.fdb + 1) * self.bs)
            } else {
                (self.start(g) * self.bs, (self.start(g) + 1) * self.bs)
            };
            patches.push((sb_at, copy));
            patches.push((gdt_at, gdt.to_vec()));
        }
        patches
    }

    /// The resize inode as it must be for `groups` groups (see [`ResizeInode`]).
    fn resize_inode(&self, gdt: &[u8], groups: u64, taken: u64) -> ResizeInode {
        ResizeInode {
            bs: self.bs,
            fdb: self.fdb,
            bpg: self.bpg,
            gdt_blocks: self.gdt_blocks,
            reserved_gdt: self.reserved_gdt,
            taken,
            inode_size: self.isz,
            inode_table: u64::from(get32(gdt, 8)),
            old_groups: self.groups,
            new_groups: groups,
            sparse_super: self.sparse_super,
        }
    }
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
    /// The patches that keep the resize inode valid for the new group count: the copies in
    /// new backup groups listed (or those of dropped groups unlisted), the taken blocks
    /// dropped from it, its block count updated. `None` if it is not laid out as expected.
    fn patches(&self, read: &mut Read<'_>) -> Result<Option<Vec<Patch>>> {
        let io = io("the resize inode");
        let bs = self.bs;
        let per = bs / 4;
        let inode_at = self.inode_table * bs + u64::from(RESIZE_INO - 1) * self.inode_size;
        let mut inode = vec![0u8; 128];
        read(inode_at, &mut inode).map_err(&io)?;
        let dind_block = u64::from(get32(&inode, 0x28 + 13 * 4));
        if dind_block == 0 {
            return Ok(None);
        }
        let mut dind = vec![0u8; bs as usize];
        read(dind_block * bs, &mut dind).map_err(&io)?;
        let has_backup = |g: u64| !self.sparse_super || super::write::layout::has_superblock(g);
        // Position of group g's copy in each indirect block: the backups before it.
        let backups = |to: u64| (1..to).filter(|&g| has_backup(g)).count() as u64;
        let sectors = bs / 512;
        let growing = self.new_groups > self.old_groups;
        let changed_groups =
            self.old_groups.min(self.new_groups)..self.old_groups.max(self.new_groups);
        let mut blocks_delta: i64 = 0;
        let mut out = Vec::new();
        for j in 0..self.reserved_gdt {
            let primary = self.fdb + 1 + self.gdt_blocks + j;
            let slot = (((self.gdt_blocks + j) % per) * 4) as usize;
            if u64::from(get32(&dind, slot)) != primary {
                return Ok(None);
            }
            let mut ind = vec![0u8; bs as usize];
            read(primary * bs, &mut ind).map_err(&io)?;
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
            for g in changed_groups.clone().filter(|&g| has_backup(g)) {
                let index = backups(g);
                if index >= per {
                    return Ok(None);
                }
                let copy = primary + g * self.bpg;
                let listed = u64::from(get32(&ind, (index * 4) as usize));
                if growing {
                    put32(&mut ind, (index * 4) as usize, copy as u32);
                    blocks_delta += sectors as i64;
                } else if listed == copy {
                    put32(&mut ind, (index * 4) as usize, 0);
                    blocks_delta -= sectors as i64;
                } else if listed != 0 {
                    return Ok(None);
                }
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
