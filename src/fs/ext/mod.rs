//! A read-only ext2/3/4 reader for overlay images inside other files.
//!
//! Reads with positioned reads at a byte offset (the overlay sits anywhere inside a SIF), never
//! loads the image and treats every field as hostile: offsets, counts and lengths are bounds-checked, directory and block
//! map walks are bounded, allocations are capped.
//!
//! It exposes what overlay semantics need and ext4-view does not: xattrs in every namespace
//! (in-inode and external block), device numbers, inode numbers and link counts (hard links),
//! holes in block-mapped files, and timestamps outside 1970..2038.
//!
//! A filesystem whose journal needs recovery (a job killed while the kernel wrote it) is read
//! *through* the journal: [`ExtFs::open`] computes the replay (`journal`) and every read of
//! metadata or data goes through one function (`ExtFs::read_exact`) that takes a block's
//! newest committed copy from the journal when there is one, so callers see the recovered
//! filesystem without anything being written. [`ExtFs::recovery_blocks`] and
//! [`ExtFs::recovered_block`] give what a recovery in place writes.
//!
//! Modules: `superblock` decodes the superblock (shared with [`crate::fs::overlay`]'s header
//! rule), `inode` decodes inodes and maps their blocks (block maps and extent trees),
//! `xattr` decodes xattr entries, `journal` computes a JBD2 replay, `walk` streams a tree as
//! entries. This file opens a filesystem (superblock, geometry, group descriptors) and reads
//! directories.

mod inode;
mod journal;
pub mod resize;
pub(crate) mod superblock;
mod walk;
pub mod write;
mod xattr;

use std::fs::File;
use std::os::unix::fs::FileExt;

pub use inode::Inode;
pub use journal::{JournalCopy, Replay};
use superblock::Superblock;
pub use walk::ExtWalk;
pub use write::{Ext3Options, Ext3Summary, Outcome, TreeNeeds, write_ext3};

use crate::error::{Error, Result};
use crate::fs::entry::{EntryKind, Metadata, Xattr};

const ROOT_INODE: u32 = 2;
/// Incompat features we can read: filetype, recover, meta_bg, extents, 64bit, flex_bg,
/// mmp, csum_seed, largedir (we read directories linearly), dirdata excluded.
const INCOMPAT_SUPPORTED: u32 =
    0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x4000;
/// Largest directory we read (bytes): far beyond any real overlay directory.
const MAX_DIR_BYTES: u64 = 1 << 30;
/// Largest symlink target.
const MAX_SYMLINK: u64 = 1 << 16;

/// The little-endian `u16` at `at`; a structure too short for it is malformed.
fn le16(b: &[u8], at: usize) -> Result<u16> {
    crate::fs::bytes::le16(b, at).ok_or_else(too_short)
}

/// The little-endian `u32` at `at`; a structure too short for it is malformed.
fn le32(b: &[u8], at: usize) -> Result<u32> {
    crate::fs::bytes::le32(b, at).ok_or_else(too_short)
}

fn too_short() -> Error {
    Error::malformed("ext filesystem: a structure is shorter than its fields")
}

/// The layout facts of a filesystem, checked at open.
#[derive(Debug, Clone)]
struct Geometry {
    block_size: u32,
    blocks: u64,
    inodes: u32,
    inodes_per_group: u32,
    blocks_per_group: u32,
    first_data_block: u32,
    inode_size: u16,
    groups: u32,
    /// Group descriptor size.
    desc_size: usize,
    /// Directory entries carry a file type byte (and a one-byte name length).
    filetype: bool,
    needs_recovery: bool,
    /// First meta block group (`u64::MAX` without meta_bg).
    first_meta_bg: u64,
    sparse_super: bool,
}

/// Read the superblock of the filesystem at `offset` and check its magic.
fn read_superblock(file: &File, offset: u64, len: u64) -> Result<Superblock> {
    if len < (superblock::OFFSET + superblock::LEN) as u64 {
        return Err(Error::malformed(format!(
            "ext filesystem: {len} bytes is too small"
        )));
    }
    let mut raw = [0u8; superblock::LEN];
    file.read_exact_at(&mut raw, offset + superblock::OFFSET as u64)
        .map_err(|e| Error::io("ext filesystem: reading the superblock", e))?;
    decode_superblock(&raw)
}

fn decode_superblock(raw: &[u8]) -> Result<Superblock> {
    let sb = Superblock::decode(raw).ok_or_else(too_short)?;
    if !sb.has_magic() {
        return Err(Error::malformed("ext filesystem: no superblock magic"));
    }
    Ok(sb)
}

/// Refuse incompatible features we cannot read, naming the likely one.
fn check_features(sb: &Superblock) -> Result<()> {
    let incompat = sb.feature_incompat;
    if incompat & !INCOMPAT_SUPPORTED != 0 {
        let what = if sb.has_incompat(superblock::INCOMPAT_INLINE_DATA) {
            "inline data"
        } else if sb.has_incompat(superblock::INCOMPAT_ENCRYPT) {
            "encryption"
        } else {
            "unknown features"
        };
        return Err(Error::unsupported(format!(
            "ext filesystem: incompatible features {:#x} ({what}) are not supported",
            incompat & !INCOMPAT_SUPPORTED
        )));
    }
    Ok(())
}

impl Geometry {
    /// Check the superblock's geometry against itself and the `len` bytes it lives in.
    fn check(sb: &Superblock, block_size: u32, len: u64) -> Result<Geometry> {
        let blocks = sb.blocks();
        let inode_size = sb.inode_size();
        if sb.blocks_per_group == 0
            || sb.inodes_per_group == 0
            || !(128..=block_size as u16).contains(&inode_size)
            || !inode_size.is_power_of_two()
        {
            return Err(Error::malformed(
                "ext filesystem: invalid group geometry or inode size",
            ));
        }
        if blocks.saturating_mul(block_size as u64) > len.saturating_mul(2).max(1 << 20)
            && blocks > len
        {
            return Err(Error::malformed(format!(
                "ext filesystem: claims {blocks} blocks of {block_size} bytes in {len} bytes"
            )));
        }
        let groups = blocks
            .saturating_sub(sb.first_data_block as u64)
            .div_ceil(sb.blocks_per_group as u64);
        if groups == 0 || groups > (1 << 24) {
            return Err(Error::malformed(format!(
                "ext filesystem: {groups} block groups is absurd"
            )));
        }
        let desc_size = if sb.has_incompat(superblock::INCOMPAT_64BIT) {
            let d = sb.desc_size as usize;
            if !(32..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(Error::malformed(format!(
                    "ext filesystem: group descriptor size {d}"
                )));
            }
            d
        } else {
            32
        };
        Ok(Geometry {
            block_size,
            blocks,
            inodes: sb.inodes_count,
            inodes_per_group: sb.inodes_per_group,
            blocks_per_group: sb.blocks_per_group,
            first_data_block: sb.first_data_block,
            inode_size,
            groups: groups as u32,
            desc_size,
            filetype: sb.has_incompat(superblock::INCOMPAT_FILETYPE),
            needs_recovery: sb.needs_recovery(),
            first_meta_bg: if sb.has_incompat(superblock::INCOMPAT_META_BG) {
                sb.first_meta_bg as u64
            } else {
                u64::MAX
            },
            sparse_super: sb.feature_ro_compat & superblock::RO_COMPAT_SPARSE_SUPER != 0,
        })
    }

    /// Whether block group `group` holds a superblock backup (all do without sparse_super;
    /// with it, groups 0, 1 and powers of 3, 5 and 7).
    fn has_superblock(&self, group: u64) -> bool {
        if !self.sparse_super || group <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < group {
                p *= base;
            }
            p == group
        })
    }

    /// The block holding group `group`'s descriptor, and the descriptor's offset in it.
    /// Descriptors form one table after the superblock's block, or with meta_bg (which
    /// SingularityCE's overlay rule allows) one block of them at the start of each
    /// meta-group, from `s_first_meta_bg` on.
    fn descriptor_location(&self, group: u64) -> (u64, usize) {
        let per_block = (self.block_size as usize / self.desc_size) as u64;
        let metablock = group / per_block;
        let first_data_block = self.first_data_block as u64;
        let block = if metablock < self.first_meta_bg {
            first_data_block + 1 + metablock
        } else {
            let first = metablock * per_block;
            first_data_block
                + first * self.blocks_per_group as u64
                + self.has_superblock(first) as u64
        };
        (block, (group % per_block) as usize * self.desc_size)
    }
}

/// An ext2/3/4 filesystem inside a file.
pub struct ExtFs<'f> {
    file: &'f File,
    offset: u64,
    len: u64,
    geo: Geometry,
    /// Inode table block of each group.
    inode_tables: Vec<u64>,
    /// The journal replay every read goes through (`None`: the journal needs no recovery,
    /// or the filesystem was opened with [`ExtFs::open_unreplayed`]).
    replay: Option<Replay>,
}

fn block_size_of(sb: &Superblock) -> Result<u32> {
    sb.block_size().ok_or_else(|| {
        Error::malformed(format!(
            "ext filesystem: block size 2^(10+{}) is invalid",
            sb.log_block_size
        ))
    })
}

impl<'f> ExtFs<'f> {
    /// Open the filesystem stored at `offset` in `file`, `len` bytes long, as recovered: when
    /// its journal needs recovery, every read sees the committed transactions replayed
    /// (nothing is written). A journal that cannot be replayed is an error.
    pub fn open(file: &'f File, offset: u64, len: u64) -> Result<ExtFs<'f>> {
        let mut fs = ExtFs::open_unreplayed(file, offset, len)?;
        if !fs.geo.needs_recovery {
            return Ok(fs);
        }
        let sb = read_superblock(file, offset, len)?;
        let replay = journal::compute(&fs, &sb)?;
        let replays_something = !replay.blocks.is_empty();
        fs.replay = Some(replay);
        if replays_something {
            // The superblock and the group descriptors may be in the journal too.
            let mut raw = [0u8; superblock::LEN];
            fs.read_exact(&mut raw, superblock::OFFSET as u64, "replayed superblock")?;
            let sb = decode_superblock(&raw)
                .map_err(|e| e.context("the superblock as the journal leaves it"))?;
            let block_size = block_size_of(&sb)?;
            if block_size != fs.geo.block_size {
                return Err(Error::malformed(format!(
                    "ext journal: the replayed superblock changes the block size to {block_size}"
                )));
            }
            check_features(&sb)?;
            let mut geo = Geometry::check(&sb, block_size, len)?;
            geo.needs_recovery = true;
            fs.geo = geo;
            fs.inode_tables = fs.read_inode_table_locations()?;
        }
        Ok(fs)
    }

    /// Open the filesystem as its bytes are, without replaying its journal.
    pub fn open_unreplayed(file: &'f File, offset: u64, len: u64) -> Result<ExtFs<'f>> {
        let sb = read_superblock(file, offset, len)?;
        let block_size = block_size_of(&sb)?;
        check_features(&sb)?;
        let geo = Geometry::check(&sb, block_size, len)?;
        let mut fs = ExtFs {
            file,
            offset,
            len,
            geo,
            inode_tables: Vec::new(),
            replay: None,
        };
        fs.inode_tables = fs.read_inode_table_locations()?;
        Ok(fs)
    }

    /// The journal replay reads go through (`None` when the journal needs no recovery).
    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }

    /// Number of filesystem blocks whose newest copy is read from the journal.
    pub fn replayed_blocks(&self) -> u64 {
        self.replay.as_ref().map_or(0, Replay::block_count)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.geo.block_size
    }

    /// The blocks a recovery in place writes, ascending: every replayed block, the block
    /// holding the superblock (needs_recovery cleared) and the journal superblock's block
    /// (log emptied). Empty when the journal needs no recovery.
    pub fn recovery_blocks(&self) -> Vec<u64> {
        let Some(replay) = &self.replay else {
            return Vec::new();
        };
        let bs = self.geo.block_size as u64;
        let mut blocks: Vec<u64> = replay.blocks.keys().copied().collect();
        blocks.push(superblock::OFFSET as u64 / bs);
        blocks.push(replay.journal_superblock_at / bs);
        blocks.sort_unstable();
        blocks.dedup();
        blocks
    }

    /// What a recovery in place writes to `block` (one of [`ExtFs::recovery_blocks`]):
    /// the block as recovered, with the superblock's needs_recovery flag cleared and the
    /// journal superblock emptied, as e2fsck leaves them. `buf` is one block.
    pub fn recovered_block(&self, block: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.geo.block_size as u64;
        if buf.len() as u64 != bs {
            return Err(Error::malformed("recovered_block: buffer is not one block"));
        }
        if block >= self.geo.blocks {
            return Err(Error::malformed(format!(
                "ext filesystem: recovered block {block} is out of range"
            )));
        }
        let at = block * bs;
        self.read_exact(buf, at, "recovered block")?;
        let sb_at = superblock::OFFSET as u64;
        if (at..at + bs).contains(&sb_at) {
            let from = (sb_at - at) as usize;
            let sb = buf
                .get_mut(from..from + superblock::LEN)
                .ok_or_else(too_short)?;
            superblock::clear_needs_recovery(sb);
        }
        if let Some(replay) = &self.replay
            && replay.journal_superblock_at == at
        {
            let jsb = &replay.recovered_journal_superblock;
            buf.get_mut(..jsb.len())
                .ok_or_else(too_short)?
                .copy_from_slice(jsb);
        }
        Ok(())
    }

    /// The first block of every group's inode table, from the group descriptors.
    fn read_inode_table_locations(&self) -> Result<Vec<u64>> {
        let geo = &self.geo;
        let mut tables = Vec::with_capacity(geo.groups as usize);
        let mut block_cache: Option<(u64, Vec<u8>)> = None;
        for g in 0..geo.groups as u64 {
            let (block, at) = geo.descriptor_location(g);
            let data = match block_cache {
                Some((cached, ref data)) if cached == block => data,
                _ => {
                    let bs = geo.block_size as u64;
                    let data =
                        self.read_bytes(block.saturating_mul(bs), bs, "group descriptors")?;
                    &block_cache.insert((block, data)).1
                }
            };
            let d = data.get(at..at + geo.desc_size).ok_or_else(too_short)?;
            let lo = le32(d, 0x08)? as u64;
            let hi = if geo.desc_size >= 64 {
                le32(d, 0x28)? as u64
            } else {
                0
            };
            tables.push(lo | hi << 32);
        }
        Ok(tables)
    }

    /// First block of the inode table of block group `group` (from the group descriptors).
    pub fn inode_table_block(&self, group: usize) -> Option<u64> {
        self.inode_tables.get(group).copied()
    }

    /// Number of block groups.
    pub fn group_count(&self) -> usize {
        self.inode_tables.len()
    }

    /// The journal has transactions that were never replayed (a killed writer).
    pub fn needs_recovery(&self) -> bool {
        self.geo.needs_recovery
    }

    /// Read `buf` from byte `at` of the filesystem as recovered: blocks the journal replay
    /// holds come from their newest copy in the journal (escaped copies get their magic
    /// back), the rest from where they are. Every read of the filesystem goes through here.
    fn read_exact(&self, buf: &mut [u8], at: u64, what: &str) -> Result<()> {
        let Some(replay) = self.replay.as_ref().filter(|r| !r.blocks.is_empty()) else {
            return self.read_raw(buf, at, what);
        };
        if at
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return self.read_raw(buf, at, what);
        }
        let bs = self.geo.block_size as u64;
        let end = at + buf.len() as u64;
        let mut pos = at;
        while pos < end {
            let block = pos / bs;
            let within = pos % bs;
            let from = (pos - at) as usize;
            match replay.blocks.get(&block) {
                Some(copy) => {
                    let n = (bs - within).min(end - pos);
                    let out = &mut buf[from..from + n as usize];
                    self.read_raw(out, copy.at + within, what)?;
                    if copy.escaped && within < 4 {
                        let magic = journal::MAGIC.to_be_bytes();
                        for (i, b) in out.iter_mut().take(4 - within as usize).enumerate() {
                            *b = magic[within as usize + i];
                        }
                    }
                    pos += n;
                }
                None => {
                    let next = replay
                        .blocks
                        .range(block + 1..)
                        .next()
                        .map_or(u64::MAX, |(b, _)| b.saturating_mul(bs));
                    let n = end.min(next) - pos;
                    self.read_raw(&mut buf[from..from + n as usize], pos, what)?;
                    pos += n;
                }
            }
        }
        Ok(())
    }

    /// Read `buf` from byte `at` of the filesystem as its bytes are (no journal replay).
    fn read_raw(&self, buf: &mut [u8], at: u64, what: &str) -> Result<()> {
        if at
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(Error::malformed(format!(
                "ext filesystem: {what} at byte {at} lies outside the {}-byte filesystem",
                self.len
            )));
        }
        self.file
            .read_exact_at(buf, self.offset + at)
            .map_err(|e| Error::io(format!("ext filesystem: reading {what}"), e))
    }

    fn read_bytes(&self, at: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if len > self.len {
            return Err(Error::malformed(format!(
                "ext filesystem: {what} of {len} bytes is larger than the filesystem"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf, at, what)?;
        Ok(buf)
    }

    fn read_block(&self, block: u64, what: &str) -> Result<Vec<u8>> {
        if block == 0 || block >= self.geo.blocks {
            return Err(Error::malformed(format!(
                "ext filesystem: {what}: block {block} is out of range"
            )));
        }
        let bs = self.geo.block_size as u64;
        self.read_bytes(block.saturating_mul(bs), bs, what)
    }

    /// Directory entries (name, inode) of a directory inode, `.` and `..` excluded.
    fn read_dir(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, u32)>> {
        let data = self.read_all(inode, MAX_DIR_BYTES, "directory")?;
        let bs = self.geo.block_size as usize;
        let mut out = Vec::new();
        for block in data.chunks(bs) {
            let mut at = 0usize;
            while at + 8 <= block.len() {
                let ino = le32(block, at)?;
                let rec_len = le16(block, at + 4)? as usize;
                let name_len = if self.geo.filetype {
                    block[at + 6] as usize
                } else {
                    le16(block, at + 6)? as usize
                };
                if rec_len < 8 || at + rec_len > block.len() || 8 + name_len > rec_len {
                    return Err(Error::malformed(format!(
                        "ext filesystem: directory inode {}: corrupt entry at byte {at}",
                        inode.number
                    )));
                }
                if ino != 0 {
                    let name = block[at + 8..at + 8 + name_len].to_vec();
                    if name != b"." && name != b".." {
                        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                            return Err(Error::malformed(format!(
                                "ext filesystem: directory inode {}: invalid name {:?}",
                                inode.number,
                                String::from_utf8_lossy(&name)
                            )));
                        }
                        out.push((name, ino));
                    }
                }
                at += rec_len;
            }
        }
        out.sort();
        Ok(out)
    }

    /// Look a path up from the root (components separated by `/`).
    fn lookup(&self, path: &[u8]) -> Result<u32> {
        let mut current = ROOT_INODE;
        for component in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let inode = self.inode(current)?;
            if !inode.is_dir() {
                return Err(Error::not_found(format!(
                    "{}: not a directory",
                    String::from_utf8_lossy(path)
                )));
            }
            current = self
                .read_dir(&inode)?
                .into_iter()
                .find(|(name, _)| name == component)
                .map(|(_, ino)| ino)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "ext filesystem: /{} not found",
                        String::from_utf8_lossy(path)
                    ))
                })?;
        }
        Ok(current)
    }

    /// Extended attributes of an inode, sorted by name.
    fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        if !inode.inline_xattrs.is_empty() {
            // In-inode: entries start right after the magic; values are relative to them.
            xattr::parse_entries(&inode.inline_xattrs, 0, &inode.inline_xattrs, &mut out).map_err(
                |e| {
                    e.context(format!(
                        "ext filesystem: inode {} in-inode xattrs",
                        inode.number
                    ))
                },
            )?;
        }
        if inode.file_acl != 0 {
            let block = self.read_block(
                inode.file_acl,
                &format!("inode {} xattr block", inode.number),
            )?;
            if le32(&block, 0)? != xattr::MAGIC {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: xattr block has no magic",
                    inode.number
                )));
            }
            xattr::parse_entries(&block, 32, &block, &mut out).map_err(|e| {
                e.context(format!(
                    "ext filesystem: inode {} xattr block",
                    inode.number
                ))
            })?;
        }
        out.sort();
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    fn metadata(&self, inode: &Inode) -> Result<Metadata> {
        Ok(Metadata {
            permissions: (inode.mode & 0o7777) as u32,
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime,
            mtime_nsec: inode.mtime_nsec,
            xattrs: self.xattrs(inode)?,
        })
    }

    fn kind(&self, inode: &Inode) -> Result<EntryKind> {
        Ok(match inode.file_type() {
            0o040000 => EntryKind::Directory,
            0o100000 => EntryKind::File { size: inode.size },
            0o120000 => {
                // A fast symlink keeps its target in i_block and owns no data block
                // (the kernel's test: no sectors besides an xattr block's).
                let xattr_sectors = if inode.file_acl != 0 {
                    self.geo.block_size as u64 / 512
                } else {
                    0
                };
                let fast = inode.size < 60 && inode.sectors.saturating_sub(xattr_sectors) == 0;
                let target = if fast {
                    inode.block[..inode.size as usize].to_vec()
                } else {
                    self.read_all(inode, MAX_SYMLINK, "symlink")?
                };
                EntryKind::Symlink { target }
            }
            0o020000 => {
                let (major, minor) = inode.rdev()?;
                EntryKind::CharDevice { major, minor }
            }
            0o060000 => {
                let (major, minor) = inode.rdev()?;
                EntryKind::BlockDevice { major, minor }
            }
            0o010000 => EntryKind::Fifo,
            0o140000 => EntryKind::Socket,
            other => {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: unknown file type {other:o}",
                    inode.number
                )));
            }
        })
    }

    /// Walk the tree under directory `path` (e.g. `b"upper"`); yielded paths are relative to
    /// it and the directory itself comes first with the empty path.
    pub fn walk_dir(&self, path: &[u8]) -> Result<ExtWalk<'_, 'f>> {
        let ino = self.lookup(path)?;
        let inode = self.inode(ino)?;
        if !inode.is_dir() {
            return Err(Error::not_found(format!(
                "ext filesystem: /{} is not a directory",
                String::from_utf8_lossy(path)
            )));
        }
        Ok(ExtWalk::new(self, ino))
    }

    /// Walk the whole filesystem.
    pub fn walk(&self) -> Result<ExtWalk<'_, 'f>> {
        self.walk_dir(b"")
    }
}
