//! The squashfs reader: everything the writer writes (and what mksquashfs and tar2sqfs
//! write), from an offset inside any file, as an entry stream. Every offset, size and count
//! read from the image is checked against the image before use.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use super::compress::Compression;
use super::{
    METADATA_BLOCK, NO_FRAGMENT, NO_TABLE, NO_XATTR, SUPERBLOCK_LEN, UNCOMPRESSED_BLOCK,
    UNCOMPRESSED_METADATA, decode_dev,
};
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr};

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed(format!("squashfs: {}", msg.into()))
}

/// Superblock facts.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compression: Compression,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
}

/// A decoded inode.
#[derive(Debug, Clone)]
pub struct Inode {
    pub number: u32,
    pub kind: u16,
    pub permissions: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub nlink: u32,
    pub xattr: u32,
    pub size: u64,
    /// Directory: (block, offset) of the listing; file: blocks start.
    pub start: u64,
    pub offset: u32,
    pub block_sizes: Vec<u32>,
    /// Where each data block starts (prefix sums of `block_sizes` from `start`).
    pub block_starts: Vec<u64>,
    pub fragment: u32,
    pub fragment_offset: u32,
    pub target: Vec<u8>,
    pub rdev: u32,
}

/// A decompressed metadata block and the position of the next one.
type MetadataBlock = (std::rc::Rc<Vec<u8>>, u64);

/// A squashfs image inside a file.
pub struct SquashfsReader<'f> {
    file: &'f File,
    offset: u64,
    sb: Superblock,
    ids: Vec<u32>,
    fragments: Vec<(u64, u32)>,
    xattr_ids: Vec<(u64, u32)>,
    xattr_start: u64,
    cache: RefCell<HashMap<u64, MetadataBlock>>,
}

impl<'f> SquashfsReader<'f> {
    /// Open the image at `offset`; `len` bounds it (the rest of the file if larger).
    pub fn open(file: &'f File, offset: u64, len: u64) -> Result<SquashfsReader<'f>> {
        let mut raw = [0u8; SUPERBLOCK_LEN];
        file.read_exact_at(&mut raw, offset)
            .map_err(|e| Error::io("squashfs: reading the superblock", e))?;
        if le32(&raw, 0) != super::MAGIC {
            return Err(bad("no squashfs magic (hsqs)"));
        }
        if (le16(&raw, 28), le16(&raw, 30)) != (4, 0) {
            return Err(Error::unsupported(format!(
                "squashfs version {}.{}",
                le16(&raw, 28),
                le16(&raw, 30)
            )));
        }
        let compression = match le16(&raw, 20) {
            1 => Compression::Gzip { level: 9 },
            4 => Compression::Xz,
            5 => Compression::Lz4,
            6 => Compression::Zstd { level: 15 },
            other => {
                return Err(Error::unsupported(format!(
                    "squashfs compressor id {other}"
                )));
            }
        };
        let block_size = le32(&raw, 12);
        if !block_size.is_power_of_two()
            || !(4096..=1 << 20).contains(&block_size)
            || le16(&raw, 22) as u32 != block_size.trailing_zeros()
        {
            return Err(bad(format!("block size {block_size} is invalid")));
        }
        let sb = Superblock {
            inode_count: le32(&raw, 4),
            mkfs_time: le32(&raw, 8),
            block_size,
            fragment_count: le32(&raw, 16),
            compression,
            flags: le16(&raw, 24),
            id_count: le16(&raw, 26),
            root_inode: le64(&raw, 32),
            bytes_used: le64(&raw, 40),
            id_table: le64(&raw, 48),
            xattr_table: le64(&raw, 56),
            inode_table: le64(&raw, 64),
            directory_table: le64(&raw, 72),
            fragment_table: le64(&raw, 80),
        };
        if sb.bytes_used > len
            || sb.inode_table >= sb.bytes_used
            || sb.directory_table > sb.bytes_used
            || sb.directory_table < sb.inode_table
        {
            return Err(bad(format!(
                "table offsets lie outside the {}-byte image",
                sb.bytes_used.min(len)
            )));
        }
        let mut reader = SquashfsReader {
            file,
            offset,
            sb,
            ids: Vec::new(),
            fragments: Vec::new(),
            xattr_ids: Vec::new(),
            xattr_start: 0,
            cache: RefCell::new(HashMap::new()),
        };
        let ids = reader.read_lookup_table(
            reader.sb.id_table,
            reader.sb.id_count as u64 * 4,
            "id table",
        )?;
        reader.ids = ids.chunks_exact(4).map(|c| le32(c, 0)).collect();
        if reader.sb.fragment_table != NO_TABLE && reader.sb.fragment_count > 0 {
            let frags = reader.read_lookup_table(
                reader.sb.fragment_table,
                reader.sb.fragment_count as u64 * 16,
                "fragment table",
            )?;
            reader.fragments = frags
                .chunks_exact(16)
                .map(|c| (le64(c, 0), le32(c, 8)))
                .collect();
        }
        if reader.sb.xattr_table != NO_TABLE {
            let head = reader.read_raw(reader.sb.xattr_table, 16, "xattr id table")?;
            reader.xattr_start = le64(&head, 0);
            let count = le32(&head, 8) as u64;
            let entries = reader.read_lookup_table_at(
                reader.sb.xattr_table + 16,
                count * 16,
                "xattr id table",
            )?;
            reader.xattr_ids = entries
                .chunks_exact(16)
                .map(|c| (le64(c, 0), le32(c, 8)))
                .collect();
        }
        Ok(reader)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn read_raw(&self, at: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        let end = at
            .checked_add(len)
            .filter(|&e| e <= self.sb.bytes_used)
            .ok_or_else(|| bad(format!("{what}: bytes {at}..+{len} lie outside the image")))?;
        let _ = end;
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, self.offset + at)
            .map_err(|e| Error::io(format!("squashfs: reading {what}"), e))?;
        Ok(buf)
    }

    /// One metadata block at `at`: its uncompressed bytes and where the next one starts.
    fn metadata_block(&self, at: u64, what: &str) -> Result<MetadataBlock> {
        if let Some(hit) = self.cache.borrow().get(&at) {
            return Ok(hit.clone());
        }
        let header = le16(&self.read_raw(at, 2, what)?, 0);
        let size = (header & !UNCOMPRESSED_METADATA) as u64;
        if size == 0 || size > METADATA_BLOCK as u64 {
            return Err(bad(format!(
                "{what}: metadata block of {size} bytes at {at}"
            )));
        }
        let raw = self.read_raw(at + 2, size, what)?;
        let data = if header & UNCOMPRESSED_METADATA != 0 {
            raw
        } else {
            self.sb.compression.decompress(&raw, METADATA_BLOCK)?
        };
        let entry = (std::rc::Rc::new(data), at + 2 + size);
        let mut cache = self.cache.borrow_mut();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(at, entry.clone());
        Ok(entry)
    }

    /// `len` bytes of a metadata table starting at block `block` (absolute), offset `offset`.
    fn read_metadata(
        &self,
        mut block: u64,
        offset: usize,
        len: usize,
        what: &str,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len.min(1 << 20));
        let mut skip = offset;
        while out.len() < len {
            let (data, next) = self.metadata_block(block, what)?;
            if skip > data.len() {
                return Err(bad(format!(
                    "{what}: offset {skip} beyond a {}-byte metadata block",
                    data.len()
                )));
            }
            let n = (data.len() - skip).min(len - out.len());
            out.extend_from_slice(&data[skip..skip + n]);
            skip = 0;
            block = next;
        }
        Ok(out)
    }

    fn read_lookup_table(&self, at: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if at == NO_TABLE {
            return if len == 0 {
                Ok(Vec::new())
            } else {
                Err(bad(format!("{what} is missing")))
            };
        }
        self.read_lookup_table_at(at, len, what)
    }

    /// Tables stored as metadata blocks plus an array of their positions at `at`.
    fn read_lookup_table_at(&self, at: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if len > self.sb.bytes_used.saturating_mul(8) {
            return Err(bad(format!("{what}: {len} bytes is absurd")));
        }
        let blocks = len.div_ceil(METADATA_BLOCK as u64);
        let pointers = self.read_raw(at, blocks * 8, what)?;
        let mut out = Vec::with_capacity(len as usize);
        for p in pointers.chunks_exact(8) {
            let (data, _) = self.metadata_block(le64(p, 0), what)?;
            out.extend_from_slice(&data);
        }
        if (out.len() as u64) < len {
            return Err(bad(format!("{what}: shorter than its count says")));
        }
        out.truncate(len as usize);
        Ok(out)
    }

    fn id(&self, index: u16) -> Result<u32> {
        self.ids
            .get(index as usize)
            .copied()
            .ok_or_else(|| bad(format!("id index {index} out of range")))
    }

    /// Decode the inode at reference `r` (block << 16 | offset, relative to the inode table).
    pub fn inode(&self, r: u64) -> Result<Inode> {
        let block = self.sb.inode_table + (r >> 16);
        let offset = (r & 0xffff) as usize;
        let what = "inode table";
        let h = self.read_metadata(block, offset, 16, what)?;
        let kind = le16(&h, 0);
        let mut ino = Inode {
            number: le32(&h, 12),
            kind,
            permissions: le16(&h, 2),
            uid: self.id(le16(&h, 4))?,
            gid: self.id(le16(&h, 6))?,
            mtime: le32(&h, 8),
            nlink: 1,
            xattr: NO_XATTR,
            size: 0,
            start: 0,
            offset: 0,
            block_sizes: Vec::new(),
            block_starts: Vec::new(),
            fragment: NO_FRAGMENT,
            fragment_offset: 0,
            target: Vec::new(),
            rdev: 0,
        };
        let body = |len: usize| {
            self.read_metadata(block, offset, 16 + len, what)
                .map(|v| v[16..].to_vec())
        };
        match kind {
            1 => {
                let b = body(16)?;
                ino.start = le32(&b, 0) as u64;
                ino.nlink = le32(&b, 4);
                ino.size = le16(&b, 8) as u64;
                ino.offset = le16(&b, 10) as u32;
            }
            8 => {
                let b = body(24)?;
                ino.nlink = le32(&b, 0);
                ino.size = le32(&b, 4) as u64;
                ino.start = le32(&b, 8) as u64;
                ino.offset = le16(&b, 18) as u32;
                ino.xattr = le32(&b, 20);
            }
            2 | 9 => {
                let (fixed, start, frag, frag_off, size, xattr, nlink) = if kind == 2 {
                    let b = body(16)?;
                    (
                        16,
                        le32(&b, 0) as u64,
                        le32(&b, 4),
                        le32(&b, 8),
                        le32(&b, 12) as u64,
                        NO_XATTR,
                        1,
                    )
                } else {
                    let b = body(40)?;
                    (
                        40,
                        le64(&b, 0),
                        le32(&b, 28),
                        le32(&b, 32),
                        le64(&b, 8),
                        le32(&b, 36),
                        le32(&b, 24),
                    )
                };
                if size > self.sb.bytes_used.saturating_mul(1 << 16).max(1 << 40) {
                    return Err(bad(format!("inode {}: size {size} is absurd", ino.number)));
                }
                let bs = self.sb.block_size as u64;
                let blocks = if frag == NO_FRAGMENT {
                    size.div_ceil(bs)
                } else {
                    size / bs
                } as usize;
                if blocks as u64 * 4 > self.sb.bytes_used.saturating_mul(4) + 4096 {
                    return Err(bad(format!(
                        "inode {}: {blocks} blocks is absurd",
                        ino.number
                    )));
                }
                let b = body(fixed + blocks * 4)?;
                ino.block_sizes = b[fixed..].chunks_exact(4).map(|c| le32(c, 0)).collect();
                let mut at = start;
                ino.block_starts = ino
                    .block_sizes
                    .iter()
                    .map(|s| {
                        let here = at;
                        at = at.saturating_add((s & !UNCOMPRESSED_BLOCK) as u64);
                        here
                    })
                    .collect();
                ino.start = start;
                ino.fragment = frag;
                ino.fragment_offset = frag_off;
                ino.size = size;
                ino.xattr = xattr;
                ino.nlink = nlink;
            }
            3 | 10 => {
                let b = body(8)?;
                ino.nlink = le32(&b, 0);
                let len = le32(&b, 4) as usize;
                if len > 65536 {
                    return Err(bad(format!("inode {}: symlink of {len} bytes", ino.number)));
                }
                let b = body(8 + len + if kind == 10 { 4 } else { 0 })?;
                ino.target = b[8..8 + len].to_vec();
                if kind == 10 {
                    ino.xattr = le32(&b, 8 + len);
                }
            }
            4 | 5 | 11 | 12 => {
                let b = body(if kind > 7 { 12 } else { 8 })?;
                ino.nlink = le32(&b, 0);
                ino.rdev = le32(&b, 4);
                if kind > 7 {
                    ino.xattr = le32(&b, 8);
                }
            }
            6 | 7 | 13 | 14 => {
                let b = body(if kind > 7 { 8 } else { 4 })?;
                ino.nlink = le32(&b, 0);
                if kind > 7 {
                    ino.xattr = le32(&b, 4);
                }
            }
            other => return Err(bad(format!("inode {}: unknown type {other}", ino.number))),
        }
        Ok(ino)
    }

    /// Entries of a directory inode: (name, inode reference).
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<(Vec<u8>, u64)>> {
        if dir.size < 3 {
            return Err(bad(format!(
                "directory inode {}: size {}",
                dir.number, dir.size
            )));
        }
        let len = dir.size as usize - 3;
        if len as u64 > self.sb.bytes_used.saturating_mul(8) {
            return Err(bad(format!(
                "directory inode {}: listing of {len} bytes is absurd",
                dir.number
            )));
        }
        let data = self.read_metadata(
            self.sb.directory_table + dir.start,
            dir.offset as usize,
            len,
            "directory table",
        )?;
        let mut out = Vec::new();
        let mut at = 0;
        while at + 12 <= data.len() {
            let count = le32(&data, at) as usize + 1;
            let start = le32(&data, at + 4) as u64;
            at += 12;
            if count > 256 {
                return Err(bad(format!(
                    "directory inode {}: header of {count} entries",
                    dir.number
                )));
            }
            for _ in 0..count {
                if at + 8 > data.len() {
                    return Err(bad(format!(
                        "directory inode {}: truncated listing",
                        dir.number
                    )));
                }
                let offset = le16(&data, at) as u64;
                let name_len = le16(&data, at + 6) as usize + 1;
                let name = data.get(at + 8..at + 8 + name_len).ok_or_else(|| {
                    bad(format!("directory inode {}: truncated name", dir.number))
                })?;
                if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
                    return Err(bad(format!(
                        "directory inode {}: invalid name {:?}",
                        dir.number,
                        String::from_utf8_lossy(name)
                    )));
                }
                out.push((name.to_vec(), start << 16 | offset));
                at += 8 + name_len;
            }
        }
        Ok(out)
    }

    /// The xattrs of set `index`.
    pub fn xattrs(&self, index: u32) -> Result<Vec<Xattr>> {
        if index == NO_XATTR {
            return Ok(Vec::new());
        }
        let &(r, count) = self
            .xattr_ids
            .get(index as usize)
            .ok_or_else(|| bad(format!("xattr index {index} out of range")))?;
        if count > 65536 {
            return Err(bad(format!("xattr set of {count} entries")));
        }
        let mut block = self.xattr_start + (r >> 16);
        let mut offset = (r & 0xffff) as usize;
        // Read entry by entry, following metadata blocks.
        let mut stream = Vec::new();
        let mut out = Vec::new();
        let mut need = |len: usize, stream: &mut Vec<u8>| -> Result<()> {
            while stream.len() < len {
                let (data, next) = self.metadata_block(block, "xattr table")?;
                if offset > data.len() {
                    return Err(bad("xattr offset beyond its block"));
                }
                stream.extend_from_slice(&data[offset..]);
                offset = 0;
                block = next;
            }
            Ok(())
        };
        let mut at = 0;
        for _ in 0..count {
            need(at + 4, &mut stream)?;
            let kind = le16(&stream, at);
            let name_len = le16(&stream, at + 2) as usize;
            need(at + 4 + name_len + 4, &mut stream)?;
            let prefix: &[u8] = match kind & 0xff {
                0 => b"user.",
                1 => b"trusted.",
                2 => b"security.",
                other => return Err(bad(format!("xattr prefix {other}"))),
            };
            let mut name = prefix.to_vec();
            name.extend_from_slice(&stream[at + 4..at + 4 + name_len]);
            at += 4 + name_len;
            let value_len = le32(&stream, at) as usize;
            if value_len > 1 << 20 {
                return Err(bad(format!("xattr value of {value_len} bytes")));
            }
            need(at + 4 + value_len, &mut stream)?;
            let mut value = stream[at + 4..at + 4 + value_len].to_vec();
            at += 4 + value_len;
            if kind & 0x100 != 0 {
                // Out of line: the value is a reference to the real value.
                if value.len() != 8 {
                    return Err(bad("out-of-line xattr reference"));
                }
                let r = le64(&value, 0);
                let head = self.read_metadata(
                    self.xattr_start + (r >> 16),
                    (r & 0xffff) as usize,
                    4,
                    "xattr table",
                )?;
                let len = le32(&head, 0) as usize;
                if len > 1 << 20 {
                    return Err(bad(format!("xattr value of {len} bytes")));
                }
                value = self.read_metadata(
                    self.xattr_start + (r >> 16),
                    (r & 0xffff) as usize,
                    4 + len,
                    "xattr table",
                )?[4..]
                    .to_vec();
            }
            out.push(Xattr { name, value });
        }
        out.sort();
        Ok(out)
    }

    /// Read `buf.len()` bytes of a regular file at `pos`.
    fn read_file(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.sb.block_size as u64;
        let mut done = 0;
        while done < buf.len() {
            let at = pos + done as u64;
            let index = (at / bs) as usize;
            let within = (at % bs) as usize;
            let block = self.file_block(inode, index)?;
            let n = (block.len().saturating_sub(within)).min(buf.len() - done);
            if n == 0 {
                return Err(bad(format!("inode {}: data ends early", inode.number)));
            }
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// The uncompressed bytes of block `index` of a file (the fragment for the tail).
    fn file_block(&self, inode: &Inode, index: usize) -> Result<Vec<u8>> {
        let bs = self.sb.block_size as u64;
        let expected = (inode.size - index as u64 * bs).min(bs) as usize;
        if let Some(&size) = inode.block_sizes.get(index) {
            if size == 0 {
                return Ok(vec![0; expected]);
            }
            let at = inode.block_starts[index];
            let raw = self.read_raw(at, (size & !UNCOMPRESSED_BLOCK) as u64, "file data")?;
            let data = if size & UNCOMPRESSED_BLOCK != 0 {
                raw
            } else {
                self.sb.compression.decompress(&raw, bs as usize)?
            };
            if data.len() < expected {
                return Err(bad(format!(
                    "inode {}: block {index} is short",
                    inode.number
                )));
            }
            return Ok(data[..expected].to_vec());
        }
        let &(start, size) = self.fragments.get(inode.fragment as usize).ok_or_else(|| {
            bad(format!(
                "inode {}: fragment {} out of range",
                inode.number, inode.fragment
            ))
        })?;
        let raw = self.read_raw(start, (size & !UNCOMPRESSED_BLOCK) as u64, "fragment")?;
        let data = if size & UNCOMPRESSED_BLOCK != 0 {
            raw
        } else {
            self.sb.compression.decompress(&raw, bs as usize)?
        };
        let off = inode.fragment_offset as usize;
        data.get(off..off + expected)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad(format!("inode {}: fragment too short", inode.number)))
    }

    /// Walk the whole image: root first (empty path), pre-order, names sorted.
    pub fn walk(&self) -> Result<SquashfsWalk<'_, 'f>> {
        Ok(SquashfsWalk {
            reader: self,
            stack: vec![(Vec::new(), self.sb.root_inode)],
            seen: HashMap::new(),
            dirs: HashSet::new(),
            current: None,
        })
    }
}

/// Pre-order walk of a squashfs image.
pub struct SquashfsWalk<'a, 'f> {
    reader: &'a SquashfsReader<'f>,
    stack: Vec<(Vec<u8>, u64)>,
    seen: HashMap<u32, Vec<u8>>,
    dirs: HashSet<u32>,
    current: Option<Inode>,
}

impl SquashfsWalk<'_, '_> {
    /// The inode of the entry last returned.
    pub fn current_inode(&self) -> Option<&Inode> {
        self.current.as_ref()
    }
}

impl EntrySource for SquashfsWalk<'_, '_> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some((path, r)) = self.stack.pop() else {
            self.current = None;
            return Ok(None);
        };
        let inode = self.reader.inode(r)?;
        let is_dir = matches!(inode.kind, 1 | 8);
        let kind = if !is_dir && inode.nlink > 1 && self.seen.contains_key(&inode.number) {
            EntryKind::HardLink {
                target: self.seen[&inode.number].clone(),
            }
        } else {
            if !is_dir && inode.nlink > 1 {
                self.seen.insert(inode.number, path.clone());
            }
            match inode.kind {
                1 | 8 => {
                    if !self.dirs.insert(inode.number) {
                        return Err(bad(format!(
                            "directory inode {} is reached twice (loop)",
                            inode.number
                        )));
                    }
                    let mut children = self.reader.read_dir(&inode)?;
                    children.sort();
                    for (name, child) in children.into_iter().rev() {
                        let mut p = path.clone();
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(&name);
                        self.stack.push((p, child));
                    }
                    EntryKind::Directory
                }
                2 | 9 => EntryKind::File { size: inode.size },
                3 | 10 => EntryKind::Symlink {
                    target: inode.target.clone(),
                },
                4 | 11 => {
                    let (major, minor) = decode_dev(inode.rdev);
                    EntryKind::BlockDevice { major, minor }
                }
                5 | 12 => {
                    let (major, minor) = decode_dev(inode.rdev);
                    EntryKind::CharDevice { major, minor }
                }
                6 | 13 => EntryKind::Fifo,
                _ => EntryKind::Socket,
            }
        };
        let metadata = Metadata {
            permissions: inode.permissions as u32 & 0o7777,
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime as i64,
            mtime_nsec: 0,
            xattrs: self.reader.xattrs(inode.xattr)?,
        };
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
            .ok_or_else(|| bad("no current entry"))?;
        Ok(Box::new(Content {
            reader: self.reader,
            inode,
            pos: 0,
        }))
    }
}

struct Content<'a, 'f> {
    reader: &'a SquashfsReader<'f>,
    inode: Inode,
    pos: u64,
}

impl Read for Content<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.inode.size - self.pos)
            .min(buf.len() as u64)
            .min(self.reader.sb.block_size as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.reader
            .read_file(&self.inode, self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}
