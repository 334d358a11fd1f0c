//! A read-only ext2/3/4 reader for overlay images inside other files.
//!
//! Reads with positioned reads at a byte offset (the overlay sits anywhere inside a SIF), never
//! loads the image, never replays the journal (it reports a pending recovery instead) and treats
//! every field as hostile: offsets, counts and lengths are bounds-checked, directory and block
//! map walks are bounded, allocations are capped.
//!
//! It exposes what overlay semantics need and ext4-view does not: xattrs in every namespace
//! (in-inode and external block), device numbers, inode numbers and link counts (hard links),
//! holes in block-mapped files, and timestamps outside 1970..2038.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr};

const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xEF53;
const ROOT_INODE: u32 = 2;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
/// Incompat features we can read: filetype, recover, meta_bg, extents, 64bit, flex_bg,
/// mmp, csum_seed, largedir (we read directories linearly), dirdata excluded.
const INCOMPAT_SUPPORTED: u32 =
    0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x4000;
const EXTENT_MAGIC: u16 = 0xF30A;
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// Deepest directory nesting we follow (a loop in a corrupted image stops here).
const MAX_DEPTH: usize = 4096;
/// Largest directory we read (bytes): far beyond any real overlay directory.
const MAX_DIR_BYTES: u64 = 1 << 30;
/// Largest symlink target.
const MAX_SYMLINK: u64 = 1 << 16;

/// Superblock facts callers may want.
#[derive(Debug, Clone)]
pub struct SuperblockInfo {
    pub block_size: u32,
    pub blocks: u64,
    pub inodes: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub needs_recovery: bool,
    pub inode_size: u16,
}

/// One inode, decoded.
#[derive(Debug, Clone)]
pub struct Inode {
    pub number: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub flags: u32,
    /// The 60-byte `i_block` area (block map, extent tree or fast symlink target).
    pub block: [u8; 60],
    pub file_acl: u64,
    /// 512-byte sectors allocated (data, indirect and xattr blocks).
    pub sectors: u64,
    /// In-inode xattr area (after the extra fields), if any.
    inline_xattrs: Vec<u8>,
}

impl Inode {
    pub fn file_type(&self) -> u16 {
        self.mode & 0o170000
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == 0o040000
    }
    fn uses_extents(&self) -> bool {
        self.flags & 0x80000 != 0
    }
    /// (major, minor) of a device inode, old or new encoding.
    pub fn rdev(&self) -> (u32, u32) {
        let w0 = u32::from_le_bytes(self.block[0..4].try_into().unwrap());
        if w0 != 0 {
            ((w0 >> 8) & 0xff, w0 & 0xff)
        } else {
            let w1 = u32::from_le_bytes(self.block[4..8].try_into().unwrap());
            ((w1 & 0xfff00) >> 8, (w1 & 0xff) | ((w1 >> 12) & 0xfff00))
        }
    }
}

/// An ext2/3/4 filesystem inside a file.
pub struct ExtFs<'f> {
    file: &'f File,
    offset: u64,
    len: u64,
    info: SuperblockInfo,
    inodes_per_group: u32,
    /// Inode table block of each group.
    inode_tables: Vec<u64>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

impl<'f> ExtFs<'f> {
    /// Open the filesystem stored at `offset` in `file`, `len` bytes long.
    pub fn open(file: &'f File, offset: u64, len: u64) -> Result<ExtFs<'f>> {
        let mut sb = [0u8; 1024];
        if len < SUPERBLOCK_OFFSET + 1024 {
            return Err(Error::malformed(format!(
                "ext filesystem: {len} bytes is too small"
            )));
        }
        file.read_exact_at(&mut sb, offset + SUPERBLOCK_OFFSET)
            .map_err(|e| Error::io("ext filesystem: reading the superblock", e))?;
        if le16(&sb, 0x38) != MAGIC {
            return Err(Error::malformed("ext filesystem: no superblock magic"));
        }
        let log = le32(&sb, 0x18);
        if log > 6 {
            return Err(Error::malformed(format!(
                "ext filesystem: block size 2^(10+{log}) is invalid"
            )));
        }
        let block_size = 1024u32 << log;
        let incompat = le32(&sb, 0x60);
        if incompat & !INCOMPAT_SUPPORTED != 0 {
            let what = if incompat & INCOMPAT_INLINE_DATA != 0 {
                "inline data"
            } else if incompat & INCOMPAT_ENCRYPT != 0 {
                "encryption"
            } else {
                "unknown features"
            };
            return Err(Error::unsupported(format!(
                "ext filesystem: incompatible features {:#x} ({what}) are not supported",
                incompat & !INCOMPAT_SUPPORTED
            )));
        }
        let blocks_lo = le32(&sb, 0x04) as u64;
        let blocks = if incompat & INCOMPAT_64BIT != 0 {
            blocks_lo | (le32(&sb, 0x150) as u64) << 32
        } else {
            blocks_lo
        };
        let blocks_per_group = le32(&sb, 0x20);
        let inodes_per_group = le32(&sb, 0x28);
        let first_data_block = le32(&sb, 0x14);
        let rev = le32(&sb, 0x4C);
        let inode_size = if rev == 0 { 128 } else { le16(&sb, 0x58) };
        if blocks_per_group == 0
            || inodes_per_group == 0
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
        let groups64 = blocks
            .saturating_sub(first_data_block as u64)
            .div_ceil(blocks_per_group as u64);
        if groups64 == 0 || groups64 > (1 << 24) {
            return Err(Error::malformed(format!(
                "ext filesystem: {groups64} block groups is absurd"
            )));
        }
        let groups = groups64 as u32;
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            let d = le16(&sb, 0xFE) as usize;
            if !(32..=1024).contains(&d) || !d.is_power_of_two() {
                return Err(Error::malformed(format!(
                    "ext filesystem: group descriptor size {d}"
                )));
            }
            d
        } else {
            32
        };
        let info = SuperblockInfo {
            block_size,
            blocks,
            inodes: le32(&sb, 0x00),
            feature_compat: le32(&sb, 0x5C),
            feature_incompat: incompat,
            feature_ro_compat: le32(&sb, 0x64),
            needs_recovery: incompat & INCOMPAT_RECOVER != 0,
            inode_size,
        };
        let mut fs = ExtFs {
            file,
            offset,
            len,
            info,
            inodes_per_group,
            inode_tables: Vec::new(),
        };
        // Group descriptors: one table after the superblock's block, or with meta_bg (which
        // SingularityCE's overlay rule allows) one block of them at the start of each
        // meta-group, from `s_first_meta_bg` on.
        let per_block = (block_size as usize / desc_size) as u64;
        let first_meta_bg = if incompat & 0x10 != 0 {
            le32(&sb, 0x104) as u64
        } else {
            u64::MAX
        };
        let sparse_super = le32(&sb, 0x64) & 0x1 != 0;
        let has_superblock = |group: u64| -> bool {
            if !sparse_super || group <= 1 {
                return true;
            }
            [3u64, 5, 7].iter().any(|&base| {
                let mut p = base;
                while p < group {
                    p *= base;
                }
                p == group
            })
        };
        let mut tables = Vec::with_capacity(groups as usize);
        let mut block_cache: Option<(u64, Vec<u8>)> = None;
        for g in 0..groups as u64 {
            let metablock = g / per_block;
            let block = if metablock < first_meta_bg {
                first_data_block as u64 + 1 + metablock
            } else {
                let first = metablock * per_block;
                first_data_block as u64
                    + first * blocks_per_group as u64
                    + has_superblock(first) as u64
            };
            if block_cache.as_ref().is_none_or(|(b, _)| *b != block) {
                let data = fs.read_bytes(
                    block * block_size as u64,
                    block_size as u64,
                    "group descriptors",
                )?;
                block_cache = Some((block, data));
            }
            let data = &block_cache.as_ref().expect("just read").1;
            let at = (g % per_block) as usize * desc_size;
            let d = &data[at..at + desc_size];
            let lo = le32(d, 0x08) as u64;
            let hi = if desc_size >= 64 {
                le32(d, 0x28) as u64
            } else {
                0
            };
            tables.push(lo | hi << 32);
        }
        fs.inode_tables = tables;
        Ok(fs)
    }

    pub fn info(&self) -> &SuperblockInfo {
        &self.info
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
        self.info.needs_recovery
    }

    fn read_exact(&self, buf: &mut [u8], at: u64, what: &str) -> Result<()> {
        let end = at
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::malformed(format!(
                    "ext filesystem: {what} at byte {at} lies outside the {}-byte filesystem",
                    self.len
                ))
            })?;
        let _ = end;
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
        if block == 0 || block >= self.info.blocks {
            return Err(Error::malformed(format!(
                "ext filesystem: {what}: block {block} is out of range"
            )));
        }
        let bs = self.info.block_size as u64;
        self.read_bytes(block * bs, bs, what)
    }

    /// Read and decode inode `number`.
    pub fn inode(&self, number: u32) -> Result<Inode> {
        if number == 0 || number > self.info.inodes {
            return Err(Error::malformed(format!(
                "ext filesystem: inode {number} is out of range"
            )));
        }
        let index = number - 1;
        let group = (index / self.inodes_per_group) as usize;
        let table = *self.inode_tables.get(group).ok_or_else(|| {
            Error::malformed(format!(
                "ext filesystem: inode {number}: group {group} does not exist"
            ))
        })?;
        let isz = self.info.inode_size as u64;
        let at = table
            .checked_mul(self.info.block_size as u64)
            .and_then(|t| t.checked_add((index % self.inodes_per_group) as u64 * isz))
            .ok_or_else(|| {
                Error::malformed(format!(
                    "ext filesystem: inode {number}: table offset overflows"
                ))
            })?;
        let raw = self.read_bytes(at, isz, &format!("inode {number}"))?;
        let mode = le16(&raw, 0);
        let uid = le16(&raw, 2) as u32 | (le16(&raw, 0x78) as u32) << 16;
        let gid = le16(&raw, 0x18) as u32 | (le16(&raw, 0x7A) as u32) << 16;
        let size = le32(&raw, 4) as u64 | (le32(&raw, 0x6C) as u64) << 32;
        let mtime_lo = le32(&raw, 0x10) as i32 as i64;
        let mut mtime = mtime_lo;
        let mut mtime_nsec = 0;
        let mut inline_xattrs = Vec::new();
        if isz > 128 {
            let extra = le16(&raw, 0x80) as u64;
            if 128 + extra > isz {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {number}: extra size {extra} too large"
                )));
            }
            if extra >= 0x8C - 0x80 {
                // i_mtime_extra at 0x88: low 2 bits extend the epoch, the rest is nanoseconds.
                let x = le32(&raw, 0x88);
                mtime += ((x & 3) as i64) << 32;
                mtime_nsec = x >> 2;
            }
            let start = (128 + extra) as usize;
            if raw.len() >= start + 4 && le32(&raw, start) == XATTR_MAGIC {
                inline_xattrs = raw[start + 4..].to_vec();
            }
        }
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[0x28..0x28 + 60]);
        let file_acl = le32(&raw, 0x68) as u64 | (le16(&raw, 0x76) as u64) << 32;
        Ok(Inode {
            number,
            mode,
            uid,
            gid,
            size,
            links: le16(&raw, 0x1A),
            mtime,
            mtime_nsec,
            flags: le32(&raw, 0x20),
            block,
            file_acl,
            sectors: le32(&raw, 0x1C) as u64 | (le16(&raw, 0x74) as u64) << 32,
            inline_xattrs,
        })
    }

    /// Physical block of logical block `n` of `inode`; `None` for a hole.
    fn map_block(&self, inode: &Inode, n: u64) -> Result<Option<u64>> {
        if inode.uses_extents() {
            return self.map_extent(inode, n);
        }
        let per = (self.info.block_size / 4) as u64;
        let direct = |i: usize| le32(&inode.block, i * 4) as u64;
        let lookup = |block: u64, index: u64| -> Result<u64> {
            if block == 0 {
                return Ok(0);
            }
            let data = self.read_block(block, &format!("inode {} indirect block", inode.number))?;
            Ok(le32(&data, (index * 4) as usize) as u64)
        };
        let mut n = n;
        let phys = if n < 12 {
            direct(n as usize)
        } else {
            n -= 12;
            if n < per {
                lookup(direct(12), n)?
            } else {
                n -= per;
                if n < per * per {
                    let l1 = lookup(direct(13), n / per)?;
                    lookup(l1, n % per)?
                } else {
                    n -= per * per;
                    if n >= per * per * per {
                        return Err(Error::malformed(format!(
                            "ext filesystem: inode {}: block beyond the triple-indirect range",
                            inode.number
                        )));
                    }
                    let l1 = lookup(direct(14), n / (per * per))?;
                    let l2 = lookup(l1, n / per % per)?;
                    lookup(l2, n % per)?
                }
            }
        };
        Ok((phys != 0).then_some(phys))
    }

    fn map_extent(&self, inode: &Inode, n: u64) -> Result<Option<u64>> {
        let mut node = inode.block.to_vec();
        for _depth in 0..8 {
            if le16(&node, 0) != EXTENT_MAGIC {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: bad extent header",
                    inode.number
                )));
            }
            let entries = le16(&node, 2) as usize;
            let depth = le16(&node, 6);
            if 12 + entries * 12 > node.len() {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: extent node overflows",
                    inode.number
                )));
            }
            if depth == 0 {
                for i in 0..entries {
                    let e = &node[12 + i * 12..24 + i * 12];
                    let first = le32(e, 0) as u64;
                    let mut count = le16(e, 4) as u64;
                    let uninit = count > 32768;
                    if uninit {
                        count -= 32768;
                    }
                    let start = (le16(e, 6) as u64) << 32 | le32(e, 8) as u64;
                    if n >= first && n < first + count {
                        // Uninitialised extents read as zeros.
                        return Ok((!uninit).then_some(start + (n - first)));
                    }
                }
                return Ok(None);
            }
            let mut next = None;
            for i in 0..entries {
                let e = &node[12 + i * 12..24 + i * 12];
                if le32(e, 0) as u64 <= n {
                    next = Some((le16(e, 8) as u64) << 32 | le32(e, 4) as u64);
                } else {
                    break;
                }
            }
            let Some(block) = next else { return Ok(None) };
            node = self.read_block(block, &format!("inode {} extent node", inode.number))?;
        }
        Err(Error::malformed(format!(
            "ext filesystem: inode {}: extent tree too deep",
            inode.number
        )))
    }

    /// Read `len` bytes of an inode's data from logical offset `pos` (holes read as zeros).
    fn read_data(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.info.block_size as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let logical = at / bs;
            let within = (at % bs) as usize;
            let n = (bs as usize - within).min(buf.len() - done);
            match self.map_block(inode, logical)? {
                Some(phys) => {
                    if phys >= self.info.blocks {
                        return Err(Error::malformed(format!(
                            "ext filesystem: inode {}: block {phys} is out of range",
                            inode.number
                        )));
                    }
                    self.read_exact(
                        &mut buf[done..done + n],
                        phys * bs + within as u64,
                        &format!("inode {} data", inode.number),
                    )?;
                }
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// The whole content of a small inode (directory, symlink), capped.
    fn read_all(&self, inode: &Inode, cap: u64, what: &str) -> Result<Vec<u8>> {
        if inode.size > cap || inode.size > self.len {
            return Err(Error::malformed(format!(
                "ext filesystem: inode {}: {what} of {} bytes is too large",
                inode.number, inode.size
            )));
        }
        let mut buf = vec![0u8; inode.size as usize];
        self.read_data(inode, 0, &mut buf)?;
        Ok(buf)
    }

    /// Directory entries (name, inode) of a directory inode, `.` and `..` excluded.
    pub fn read_dir(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, u32)>> {
        let data = self.read_all(inode, MAX_DIR_BYTES, "directory")?;
        let bs = self.info.block_size as usize;
        let filetype = self.info.feature_incompat & INCOMPAT_FILETYPE != 0;
        let mut out = Vec::new();
        for block in data.chunks(bs) {
            let mut at = 0usize;
            while at + 8 <= block.len() {
                let ino = le32(block, at);
                let rec_len = le16(block, at + 4) as usize;
                let name_len = if filetype {
                    block[at + 6] as usize
                } else {
                    le16(block, at + 6) as usize
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
    pub fn lookup(&self, path: &[u8]) -> Result<u32> {
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
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        if !inode.inline_xattrs.is_empty() {
            // In-inode: entries start right after the magic; values are relative to them.
            parse_xattr_entries(&inode.inline_xattrs, 0, &inode.inline_xattrs, &mut out).map_err(
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
            if le32(&block, 0) != XATTR_MAGIC {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: xattr block has no magic",
                    inode.number
                )));
            }
            parse_xattr_entries(&block, 32, &block, &mut out).map_err(|e| {
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
                    self.info.block_size as u64 / 512
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
                let (major, minor) = inode.rdev();
                EntryKind::CharDevice { major, minor }
            }
            0o060000 => {
                let (major, minor) = inode.rdev();
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
        Ok(ExtWalk {
            fs: self,
            stack: vec![(Vec::new(), ino, 0)],
            seen: HashMap::new(),
            current: None,
            visited_dirs: Default::default(),
        })
    }

    /// Walk the whole filesystem.
    pub fn walk(&self) -> Result<ExtWalk<'_, 'f>> {
        self.walk_dir(b"")
    }
}

fn parse_xattr_entries(
    area: &[u8],
    start: usize,
    values: &[u8],
    out: &mut Vec<Xattr>,
) -> Result<()> {
    let mut at = start;
    let mut count = 0;
    while at + 16 <= area.len() {
        if le32(area, at) == 0 {
            break;
        }
        count += 1;
        if count > 4096 {
            return Err(Error::malformed("too many xattr entries"));
        }
        let name_len = area[at] as usize;
        let index = area[at + 1];
        let value_offs = le16(area, at + 2) as usize;
        let value_inum = le32(area, at + 4);
        let value_size = le32(area, at + 8) as usize;
        if at + 16 + name_len > area.len() {
            return Err(Error::malformed("xattr name overflows"));
        }
        if value_inum != 0 {
            return Err(Error::unsupported(
                "xattr values stored in separate inodes (ea_inode)",
            ));
        }
        let prefix: &[u8] = match index {
            1 => b"user.",
            2 => b"system.posix_acl_access",
            3 => b"system.posix_acl_default",
            4 => b"trusted.",
            6 => b"security.",
            7 => b"system.",
            8 => b"system.richacl",
            _ => b"",
        };
        let mut name = prefix.to_vec();
        name.extend_from_slice(&area[at + 16..at + 16 + name_len]);
        let value = values
            .get(value_offs..value_offs.saturating_add(value_size))
            .ok_or_else(|| Error::malformed("xattr value lies outside its area"))?
            .to_vec();
        out.push(Xattr { name, value });
        at += (16 + name_len).next_multiple_of(4);
    }
    Ok(())
}

/// Pre-order walk with siblings in name order, hard links after their first name.
pub struct ExtWalk<'a, 'f> {
    fs: &'a ExtFs<'f>,
    /// (path, inode, depth) still to visit, last first.
    stack: Vec<(Vec<u8>, u32, usize)>,
    /// Inodes of files already yielded with several links: inode -> first path.
    seen: HashMap<u32, Vec<u8>>,
    current: Option<Inode>,
    /// Directory inodes already walked (loop detection).
    visited_dirs: std::collections::HashSet<u32>,
}

impl ExtWalk<'_, '_> {
    /// The inode of the entry last returned (tests compare inode numbers with debugfs).
    pub fn current_inode(&self) -> Option<&Inode> {
        self.current.as_ref()
    }
}

impl EntrySource for ExtWalk<'_, '_> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some((path, ino, depth)) = self.stack.pop() else {
            self.current = None;
            return Ok(None);
        };
        let fs = self.fs;
        let inode = fs.inode(ino)?;
        let metadata = fs
            .metadata(&inode)
            .map_err(|e| e.context(crate::fs::entry::display_path(&path)))?;
        let kind = if !inode.is_dir() && inode.links > 1 {
            match self.seen.get(&ino) {
                Some(first) => EntryKind::HardLink {
                    target: first.clone(),
                },
                None => {
                    self.seen.insert(ino, path.clone());
                    fs.kind(&inode)?
                }
            }
        } else {
            fs.kind(&inode)?
        };
        if inode.is_dir() {
            if depth > MAX_DEPTH {
                return Err(Error::malformed(
                    "ext filesystem: directories nested too deep (a loop?)",
                ));
            }
            // A directory reached twice (a loop, or a hard-linked directory in a corrupted
            // image) would make the walk repeat or never end.
            if !self.visited_dirs.insert(ino) {
                return Err(Error::malformed(format!(
                    "ext filesystem: directory inode {ino} is reached twice (loop)"
                )));
            }
            let children = fs.read_dir(&inode)?;
            for (name, child) in children.into_iter().rev() {
                let mut child_path = path.clone();
                if !child_path.is_empty() {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(&name);
                self.stack.push((child_path, child, depth + 1));
            }
        }
        self.current = Some(inode);
        Ok(Some(Entry {
            path,
            kind,
            metadata,
        }))
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        let inode = self
            .current
            .clone()
            .ok_or_else(|| Error::malformed("no current entry"))?;
        Ok(Box::new(ContentReader {
            fs: self.fs,
            inode,
            pos: 0,
        }))
    }
}

struct ContentReader<'a, 'f> {
    fs: &'a ExtFs<'f>,
    inode: Inode,
    pos: u64,
}

impl Read for ContentReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.inode.size - self.pos;
        let n = left.min(buf.len() as u64).min(1 << 20) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.fs
            .read_data(&self.inode, self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}
