//! Where everything goes in a new ext3 filesystem: block groups, their metadata, the journal
//! size, and the encoding of the superblock, group descriptors and journal superblock.
//!
//! The layout is mke2fs's for `-t ext3 -b 4096 -I 256` without `resize_inode`: 32768 blocks
//! per group; superblock backups in groups 0, 1 and powers of 3, 5 and 7 (sparse_super), each
//! followed by a copy of the descriptor table; then the group's block bitmap, inode bitmap and
//! inode table. No flex_bg, no uninit_bg: every group's bitmaps are written, and unused
//! inode-table blocks are left as zeros (a zero inode is a free inode).

use super::{put16, put32};
use crate::error::{Error, Result};

/// Block size: 4 KiB, as mke2fs picks for anything but tiny filesystems.
pub(super) const BLOCK: u64 = 4096;
/// Inode record size.
pub(super) const INODE_SIZE: u64 = 256;
/// Blocks (and most inodes) per group: the bits of one bitmap block.
pub(super) const BLOCKS_PER_GROUP: u64 = BLOCK * 8;
/// One inode per this many bytes, mke2fs's ratio for its `small` (under 512 MiB),
/// `default` and `big` (4 TiB and more) filesystem types.
fn bytes_per_inode(size: u64) -> u64 {
    match size {
        s if s < 512 << 20 => 4096,
        s if s < 4 << 40 => 16384,
        _ => 32768,
    }
}
/// Inodes per inode-table block.
const INODES_PER_BLOCK: u64 = BLOCK / INODE_SIZE;
/// Largest block count without the 64bit feature.
const MAX_BLOCKS: u64 = u32::MAX as u64;
/// mke2fs drops a last group that would hold fewer free blocks than this.
const MIN_LAST_GROUP_FREE: u64 = 50;

/// `s_feature_compat`: has_journal, ext_attr, dir_index.
pub(super) const FEATURE_COMPAT: u32 = 0x4 | 0x8 | 0x20;
/// `s_feature_incompat`: filetype.
pub(super) const FEATURE_INCOMPAT: u32 = 0x2;
/// `s_feature_ro_compat`: sparse_super, large_file.
pub(super) const FEATURE_RO_COMPAT: u32 = 0x1 | 0x2;

/// The geometry of a filesystem being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// Filesystem size in blocks.
    pub blocks: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
    /// Blocks of the group descriptor table.
    pub gdt_blocks: u64,
    /// Blocks of one group's inode table.
    pub itable_blocks: u64,
    /// Blocks of the journal's data (its inode maps this many, plus indirect blocks).
    pub journal_blocks: u64,
}

/// Whether group `g` holds a superblock backup under sparse_super.
pub(in crate::fs::ext) fn has_superblock(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut p = base;
        while p < g {
            p *= base;
        }
        p == g
    })
}

/// The journal size mke2fs picks (`ext2fs_default_journal_size`), in blocks.
pub(super) fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Indirect blocks needed to map `n` logical blocks without holes (ext2/3 block map).
pub(super) fn indirect_blocks(n: u64) -> u64 {
    let per = BLOCK / 4;
    let mut rest = n.saturating_sub(12);
    let mut meta = 0;
    if rest == 0 {
        return 0;
    }
    // Single indirect.
    meta += 1;
    rest = rest.saturating_sub(per);
    if rest == 0 {
        return meta;
    }
    // Double indirect: one top block plus one per `per` data blocks.
    let dind = rest.min(per * per);
    meta += 1 + dind.div_ceil(per);
    rest -= dind;
    if rest == 0 {
        return meta;
    }
    meta + 1 + rest.div_ceil(per * per) + rest.div_ceil(per)
}

impl Layout {
    /// The layout of a filesystem in `size` bytes with at least `min_inodes` inodes.
    pub fn new(size: u64, min_inodes: u64) -> Result<Layout> {
        let mut blocks = (size / BLOCK).min(MAX_BLOCKS);
        if size / BLOCK > MAX_BLOCKS {
            return Err(Error::refused(format!(
                "an ext3 overlay of {} MiB is beyond ext3's 16 TiB limit",
                size >> 20
            )));
        }
        loop {
            let layout = Layout::with_blocks(blocks, min_inodes)?;
            let last = layout.groups - 1;
            let in_last = layout.group_end(last) - layout.group_start(last);
            if layout.groups > 1 && in_last < layout.group_overhead(last) + MIN_LAST_GROUP_FREE {
                // Too small to be worth a group: leave those blocks out of the filesystem.
                blocks = layout.group_start(last);
                continue;
            }
            if layout.group_overhead(0) + 16 > layout.group_end(0) {
                return Err(Error::refused(format!(
                    "{} KiB is too small for an ext3 filesystem",
                    size >> 10
                )));
            }
            return Ok(layout);
        }
    }

    fn with_blocks(blocks: u64, min_inodes: u64) -> Result<Layout> {
        if blocks < 64 {
            return Err(Error::refused(format!(
                "{} KiB is too small for an ext3 filesystem",
                (blocks * BLOCK) >> 10
            )));
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let wanted = (blocks * BLOCK / bytes_per_inode(blocks * BLOCK))
            .max(min_inodes)
            .max(16);
        let inodes_per_group = wanted
            .div_ceil(groups)
            .next_multiple_of(INODES_PER_BLOCK)
            .max(INODES_PER_BLOCK);
        if inodes_per_group > BLOCKS_PER_GROUP {
            return Err(Error::refused(format!(
                "{min_inodes} inodes do not fit in {} block groups",
                groups
            )));
        }
        Ok(Layout {
            blocks,
            groups,
            inodes_per_group,
            gdt_blocks: (groups * 32).div_ceil(BLOCK),
            itable_blocks: inodes_per_group / INODES_PER_BLOCK,
            journal_blocks: journal_blocks(blocks),
        })
    }

    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group
    }

    pub fn group_start(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP
    }

    /// One past the last block of group `g`.
    pub fn group_end(&self, g: u64) -> u64 {
        ((g + 1) * BLOCKS_PER_GROUP).min(self.blocks)
    }

    /// Blocks of superblock and descriptor copy at the start of group `g` (0 without a backup).
    pub fn backup_blocks(&self, g: u64) -> u64 {
        if has_superblock(g) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }

    pub fn block_bitmap(&self, g: u64) -> u64 {
        self.group_start(g) + self.backup_blocks(g)
    }

    pub fn inode_bitmap(&self, g: u64) -> u64 {
        self.block_bitmap(g) + 1
    }

    pub fn inode_table(&self, g: u64) -> u64 {
        self.block_bitmap(g) + 2
    }

    /// Blocks at the start of group `g` its metadata takes.
    pub fn group_overhead(&self, g: u64) -> u64 {
        self.backup_blocks(g) + 2 + self.itable_blocks
    }

    /// First block of group `g` free for data.
    pub fn first_free(&self, g: u64) -> u64 {
        self.group_start(g) + self.group_overhead(g)
    }

    /// Blocks free for files and directories once the journal is in place.
    pub fn data_capacity(&self) -> u64 {
        let free: u64 = (0..self.groups)
            .map(|g| self.group_end(g) - self.first_free(g))
            .sum();
        free.saturating_sub(self.journal_blocks + indirect_blocks(self.journal_blocks))
    }
}

/// Everything the superblock records that is not geometry.
pub(super) struct SuperblockFields {
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub time: u32,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    /// The journal inode's `i_block` and size, backed up in the superblock.
    pub journal_i_block: [u32; 15],
    pub journal_size: u64,
}

/// The 1024-byte superblock as stored in group `group` (its `s_block_group_nr`).
pub(super) fn superblock(layout: &Layout, f: &SuperblockFields, group: u64) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    put32(&mut b, 0x00, layout.inodes() as u32);
    put32(&mut b, 0x04, layout.blocks as u32);
    // 5% reserved for root, mke2fs's default.
    put32(&mut b, 0x08, (layout.blocks * 5 / 100) as u32);
    put32(&mut b, 0x0C, f.free_blocks as u32);
    put32(&mut b, 0x10, f.free_inodes as u32);
    put32(&mut b, 0x14, 0); // s_first_data_block: 0 with 4 KiB blocks
    put32(&mut b, 0x18, 2); // s_log_block_size: 1024 << 2
    put32(&mut b, 0x1C, 2); // s_log_cluster_size
    put32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
    put32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
    put32(&mut b, 0x28, layout.inodes_per_group as u32);
    put32(&mut b, 0x30, f.time); // s_wtime
    put16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count: -1, no forced checks
    put16(&mut b, 0x38, 0xEF53);
    put16(&mut b, 0x3A, 1); // s_state: clean
    put16(&mut b, 0x3C, 1); // s_errors: continue
    put32(&mut b, 0x40, f.time); // s_lastcheck
    put32(&mut b, 0x4C, 1); // s_rev_level: dynamic
    put32(&mut b, 0x54, 11); // s_first_ino
    put16(&mut b, 0x58, INODE_SIZE as u16);
    put16(&mut b, 0x5A, group as u16);
    put32(&mut b, 0x5C, FEATURE_COMPAT);
    put32(&mut b, 0x60, FEATURE_INCOMPAT);
    put32(&mut b, 0x64, FEATURE_RO_COMPAT);
    b[0x68..0x78].copy_from_slice(&f.uuid);
    put32(&mut b, 0xE0, super::JOURNAL_INO);
    b[0xEC..0xFC].copy_from_slice(&f.hash_seed);
    b[0xFC] = 1; // s_def_hash_version: half_md4
    b[0xFD] = 1; // s_jnl_backup_type: the journal inode's blocks are copied below
    put32(&mut b, 0x100, 0x4 | 0x8); // s_default_mount_opts: user_xattr, acl
    put32(&mut b, 0x108, f.time); // s_mkfs_time
    for (i, &v) in f.journal_i_block.iter().enumerate() {
        put32(&mut b, 0x10C + 4 * i, v);
    }
    put32(&mut b, 0x10C + 4 * 15, (f.journal_size >> 32) as u32);
    put32(&mut b, 0x10C + 4 * 16, f.journal_size as u32);
    put16(&mut b, 0x15C, 32); // s_min_extra_isize
    put16(&mut b, 0x15E, 32); // s_want_extra_isize
    put32(&mut b, 0x160, 0x1); // s_flags: signed directory hash, as x86 mke2fs
    b
}

/// Per-group counts for the descriptor table.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct GroupCounts {
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub dirs: u64,
}

/// The descriptor table, padded to whole blocks.
pub(super) fn descriptors(layout: &Layout, counts: &[GroupCounts]) -> Vec<u8> {
    let mut b = vec![0u8; (layout.gdt_blocks * BLOCK) as usize];
    for (g, c) in counts.iter().enumerate() {
        let d = &mut b[g * 32..g * 32 + 32];
        let g = g as u64;
        put32(d, 0x00, layout.block_bitmap(g) as u32);
        put32(d, 0x04, layout.inode_bitmap(g) as u32);
        put32(d, 0x08, layout.inode_table(g) as u32);
        put16(d, 0x0C, c.free_blocks as u16);
        put16(d, 0x0E, c.free_inodes as u16);
        put16(d, 0x10, c.dirs as u16);
    }
    b
}

/// The JBD2 superblock (version 2, big-endian) of an empty internal journal.
pub(super) fn journal_superblock(blocks: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    let be = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    be(&mut b, 0x00, 0xC03B_3998); // h_magic
    be(&mut b, 0x04, 4); // h_blocktype: superblock v2
    be(&mut b, 0x0C, BLOCK as u32); // s_blocksize
    be(&mut b, 0x10, blocks as u32); // s_maxlen
    be(&mut b, 0x14, 1); // s_first
    be(&mut b, 0x18, 1); // s_sequence
    // s_start 0: the journal is empty (clean).
    b[0x30..0x40].copy_from_slice(uuid);
    be(&mut b, 0x40, 1); // s_nr_users
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_follow_sparse_super() {
        let with: Vec<u64> = (0..100).filter(|&g| has_superblock(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn journal_sizes_follow_mke2fs() {
        assert_eq!(journal_blocks(16384), 1024); // 64 MiB
        assert_eq!(journal_blocks(262144), 8192); // 1 GiB
        assert_eq!(journal_blocks(2621440), 16384); // 10 GiB
        assert_eq!(journal_blocks(16 << 20), 131072); // 64 GiB
        assert_eq!(journal_blocks(64 << 20), 262144); // 256 GiB
    }

    #[test]
    fn indirect_counts() {
        assert_eq!(indirect_blocks(12), 0);
        assert_eq!(indirect_blocks(13), 1);
        assert_eq!(indirect_blocks(12 + 1024), 1);
        assert_eq!(indirect_blocks(12 + 1024 + 1), 3);
        assert_eq!(indirect_blocks(12 + 1024 + 1024 * 1024), 2 + 1024);
        assert_eq!(indirect_blocks(12 + 1024 + 1024 * 1024 + 1), 2 + 1024 + 3);
    }

    #[test]
    fn layouts() {
        let l = Layout::new(64 << 20, 0).unwrap();
        assert_eq!((l.blocks, l.groups, l.gdt_blocks), (16384, 1, 1));
        assert_eq!(l.inodes(), 16384);
        let l = Layout::new(10 << 30, 0).unwrap();
        assert_eq!(l.groups, 80);
        assert_eq!(l.inodes(), 655360);
        // A last group too small to hold its own metadata is left out.
        let l = Layout::new((128 << 20) + (64 << 10), 0).unwrap();
        assert_eq!((l.blocks, l.groups), (32768, 1));
        let l = Layout::new(64 << 20, 30_000).unwrap();
        assert!(l.inodes() >= 30_000);
        assert!(Layout::new(64 << 20, 1_000_000).is_err());
        assert!(Layout::new(100 << 10, 0).is_err());
    }
}
