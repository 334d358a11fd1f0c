//! An ext3 writer: a new filesystem holding a tree, written into a file at an offset.
//!
//! The output is what `mke2fs -t ext3 -b 4096 -I 256 -O none,has_journal,ext_attr,dir_index,
//! filetype,sparse_super,large_file` makes (no `resize_inode`), which SingularityCE's overlay
//! header rule accepts, with the tree of an [`EntrySource`] in it. Only metadata and file data
//! are written: the caller creates the file sparse, and the journal's body, unused inode-table
//! blocks and free blocks stay holes. Files are mapped by ext2/3 block maps (direct, indirect,
//! double and triple indirect); all-zero blocks of file data become holes. Directories are
//! linear (no htree; the kernel indexes them when they grow, e2fsck accepts both).
//!
//! Allocation is sequential: the journal first, then each file's data in stream order (its
//! indirect blocks among its data), then xattr and symlink blocks as they come, then every
//! directory's blocks once the whole tree is known. Inode numbers are handed out in stream
//! order from 12 (`lost+found` is 11, created when the tree has none).

pub(in crate::fs::ext) mod layout;
mod xattr;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;

use layout::{BLOCK, INODE_SIZE, Layout};

use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, display_path};
use crate::fs::target::Target;

const ROOT_INO: u32 = 2;
const JOURNAL_INO: u32 = 8;
const LOST_FOUND_INO: u32 = 11;
const FIRST_FREE_INO: u32 = 12;
/// `i_extra_isize` of every inode we write (the ext4 fields up to `i_projid`).
const EXTRA_ISIZE: usize = 32;
/// Largest link count of a file (ext3 without dir_nlink caps directories lower).
const MAX_LINKS: u16 = 65000;
/// Largest regular file: ext3 without huge_file counts its sectors in 32 bits.
const MAX_FILE_SIZE: u64 = (1 << 41) - (1 << 24);
/// Data is read and written in chunks of this many bytes.
const CHUNK: usize = 1 << 20;
/// Metadata blocks are gathered into writes of up to this many bytes.
const BATCH: usize = 4 << 20;

/// Options of a new filesystem.
#[derive(Debug, Clone, Default)]
pub struct Ext3Options {
    /// Filesystem size in bytes (rounded down to 4 KiB blocks).
    pub size: u64,
    /// Filesystem UUID; random when `None`.
    pub uuid: Option<[u8; 16]>,
    /// Directory hash seed; random when `None`.
    pub hash_seed: Option<[u8; 16]>,
    /// Creation time stamped in the superblock and on `lost+found` (seconds since the
    /// epoch); now when `None`.
    pub time: Option<i64>,
    /// At least this many inodes (0: mke2fs's ratio for the size).
    pub min_inodes: u64,
}

/// What a written filesystem holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ext3Summary {
    /// Filesystem size in bytes.
    pub size: u64,
    /// Inodes in use, reserved ones included.
    pub inodes_used: u64,
    /// Blocks in use, metadata and journal included.
    pub blocks_used: u64,
    /// Bytes of file content written (holes excluded).
    pub data_bytes: u64,
}

/// Upper bounds of what a tree needs, from its entries alone (no content read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeNeeds {
    /// Inodes, reserved ones included.
    pub inodes: u64,
    /// Blocks for data, indirect, directory, symlink and xattr blocks (holes not counted
    /// as such: every block of a file is assumed written).
    pub blocks: u64,
}

impl TreeNeeds {
    /// Scan `source` (entries only, no content).
    pub fn scan(source: &mut dyn EntrySource) -> Result<TreeNeeds> {
        let mut needs = TreeNeeds {
            inodes: FIRST_FREE_INO as u64 - 1,
            blocks: 4, // lost+found
        };
        // Directory bytes by parent path (each entry: 8 bytes + name, rounded to 4).
        let mut dir_bytes: HashMap<Vec<u8>, u64> = HashMap::new();
        while let Some(entry) = source.next_entry()? {
            if !entry.path.is_empty() {
                *dir_bytes.entry(entry.parent().to_vec()).or_default() +=
                    (8 + entry.name().len() as u64).next_multiple_of(4);
            }
            if !matches!(entry.kind, EntryKind::HardLink { .. }) {
                needs.inodes += 1;
                if !entry.metadata.xattrs.is_empty() {
                    // An xattr block, unless they fit in the inode.
                    let bytes: usize = entry
                        .metadata
                        .xattrs
                        .iter()
                        .map(|x| 20 + x.name.len() + x.value.len())
                        .sum();
                    if bytes > 80 {
                        needs.blocks += 1;
                    }
                }
            }
            match &entry.kind {
                EntryKind::File { size } => {
                    let n = size.div_ceil(BLOCK);
                    needs.blocks += n + layout::indirect_blocks(n);
                }
                EntryKind::Symlink { target } if target.len() >= 60 => needs.blocks += 1,
                EntryKind::Directory => {
                    dir_bytes.entry(entry.path.clone()).or_default();
                }
                _ => {}
            }
        }
        for bytes in dir_bytes.values() {
            // `.` and `..`, and up to one partly used block per directory.
            let n = (bytes + 24).div_ceil(BLOCK - 264) + 1;
            needs.blocks += n + layout::indirect_blocks(n);
        }
        Ok(needs)
    }

    /// The smallest filesystem size, in whole MiB, that holds these needs.
    pub fn min_size_mib(&self) -> u64 {
        let fits = |mib: u64| {
            Layout::new(mib << 20, self.inodes)
                .map(|l| l.data_capacity() >= self.blocks)
                .unwrap_or(false)
        };
        let (mut lo, mut hi) = (1u64, 1u64);
        while !fits(hi) {
            if hi > 16 << 20 {
                return hi;
            }
            lo = hi;
            hi *= 2;
        }
        // Smallest fitting size in (lo, hi].
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { hi = mid } else { lo = mid }
        }
        hi
    }
}

/// What [`write_ext3`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The filesystem is complete.
    Written(Ext3Summary),
    /// The tree did not fit: the filesystem ran out of `what` ("blocks" or "inodes"). The
    /// range holds garbage.
    Full {
        /// What ran out.
        what: &'static str,
    },
}

/// Write a new ext3 filesystem of `options.size` bytes holding the tree of `source` to
/// `target`. The root of the tree (the empty path, first) becomes the root directory. The
/// target must read as zeros (a new sparse file, or a hole): only non-zero blocks are
/// written.
pub fn write_ext3(
    target: Target<'_>,
    options: &Ext3Options,
    source: &mut dyn EntrySource,
) -> Result<Outcome> {
    let layout = Layout::new(options.size, options.min_inodes)?;
    if layout.data_capacity() < 16 {
        return Err(Error::refused(format!(
            "{} MiB is too small for an ext3 filesystem with a journal",
            options.size >> 20
        )));
    }
    let mut w = Writer::new(target, layout, options)?;
    let result = w.write_tree(source).and_then(|()| w.finish());
    match result {
        Err(_) if w.full.is_some() => Ok(Outcome::Full {
            what: w.full.unwrap_or("blocks"),
        }),
        r => r.map(Outcome::Written),
    }
}

/// Random bytes from the kernel.
fn random16() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(b)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Inode file type bits and directory-entry file type of an entry kind.
fn type_bits(kind: &EntryKind) -> (u16, u8) {
    match kind {
        EntryKind::File { .. } | EntryKind::HardLink { .. } => (0o100000, 1),
        EntryKind::Directory => (0o040000, 2),
        EntryKind::CharDevice { .. } => (0o020000, 3),
        EntryKind::BlockDevice { .. } => (0o060000, 4),
        EntryKind::Fifo => (0o010000, 5),
        EntryKind::Socket => (0o140000, 6),
        EntryKind::Symlink { .. } => (0o120000, 7),
    }
}

/// The directory-entry file type of an inode mode.
fn dirent_type(mode: u16) -> u8 {
    match mode & 0o170000 {
        0o100000 => 1,
        0o040000 => 2,
        0o020000 => 3,
        0o060000 => 4,
        0o010000 => 5,
        0o140000 => 6,
        0o120000 => 7,
        _ => 0,
    }
}

/// A time as ext4 stores it: the low 32 bits (signed) and the extra word (epoch bits and
/// nanoseconds).
fn encode_time(secs: i64, nsec: u32) -> (u32, u32) {
    let lo = secs as i32;
    let epoch = ((secs - lo as i64) >> 32) as u32 & 3;
    (lo as u32, epoch | nsec.min(999_999_999) << 2)
}

/// Little-endian fields of on-disk structures the writer and `grow` build (the reader uses
/// `fs::bytes::Fields`, which checks bounds; these index trusted, sized buffers).
pub(in crate::fs::ext) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(in crate::fs::ext) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(in crate::fs::ext) fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(in crate::fs::ext) fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A directory being built: its parent and entries (name, inode, file type).
struct Dir {
    parent: u32,
    entries: Vec<(Vec<u8>, u32, u8)>,
}

/// Builds an inode's block map as logical blocks arrive in increasing order, writing each
/// indirect block once all of its entries are known.
struct BlockMap {
    i_block: [u32; 15],
    /// Open indirect nodes, top first: (root slot, index path of a block under it, the
    /// node's depth, entries).
    open: Vec<(usize, [u64; 3], usize, Vec<u32>)>,
    /// Indirect blocks written.
    meta_blocks: u64,
}

impl BlockMap {
    fn new() -> BlockMap {
        BlockMap {
            i_block: [0; 15],
            open: Vec::new(),
            meta_blocks: 0,
        }
    }

    /// The root slot (12, 13 or 14), index path and depth of logical block `n` (n >= 12).
    fn path(n: u64) -> Result<(usize, [u64; 3], usize)> {
        let per = BLOCK / 4;
        let mut n = n - 12;
        if n < per {
            return Ok((12, [n, 0, 0], 1));
        }
        n -= per;
        if n < per * per {
            return Ok((13, [n / per, n % per, 0], 2));
        }
        n -= per * per;
        if n < per * per * per {
            return Ok((14, [n / (per * per), n / per % per, n % per], 3));
        }
        Err(Error::unsupported(
            "a file beyond the triple-indirect block map's reach",
        ))
    }

    fn set(&mut self, w: &mut Writer<'_>, n: u64, phys: u32) -> Result<()> {
        if n < 12 {
            self.i_block[n as usize] = phys;
            return Ok(());
        }
        let (slot, path, depth) = BlockMap::path(n)?;
        // Keep the open nodes on this block's path, close the others (deepest first).
        let mut keep = 0;
        while keep < self.open.len()
            && self.open[keep].0 == slot
            && self.open[keep].1[..keep] == path[..keep]
        {
            keep += 1;
        }
        while self.open.len() > keep {
            self.close_deepest(w)?;
        }
        while self.open.len() < depth {
            let k = self.open.len();
            self.open
                .push((slot, path, k, vec![0u32; (BLOCK / 4) as usize]));
        }
        self.open[depth - 1].3[path[depth - 1] as usize] = phys;
        Ok(())
    }

    fn close_deepest(&mut self, w: &mut Writer<'_>) -> Result<()> {
        let Some((slot, path, depth, entries)) = self.open.pop() else {
            return Ok(());
        };
        let block = w.alloc_one()?;
        let mut bytes = vec![0u8; BLOCK as usize];
        for (i, e) in entries.iter().enumerate() {
            put32(&mut bytes, i * 4, *e);
        }
        w.put_block(block, &bytes)?;
        self.meta_blocks += 1;
        match self.open.last_mut() {
            Some(parent) => parent.3[path[depth - 1] as usize] = block as u32,
            None => self.i_block[slot] = block as u32,
        }
        Ok(())
    }

    fn finish(mut self, w: &mut Writer<'_>) -> Result<([u32; 15], u64)> {
        while !self.open.is_empty() {
            self.close_deepest(w)?;
        }
        Ok((self.i_block, self.meta_blocks))
    }
}

struct Writer<'f> {
    target: Target<'f>,
    layout: Layout,
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    time: i64,
    /// Inode records, inode 1 first.
    inodes: Vec<[u8; INODE_SIZE as usize]>,
    /// Allocation cursor: current group and next block in it.
    group: u64,
    next: u64,
    /// One past the last block allocated in each group.
    alloc_end: Vec<u64>,
    /// Directories by inode.
    dirs: HashMap<u32, Dir>,
    /// Inode of every path yielded (for parents and hard links).
    paths: HashMap<Vec<u8>, u32>,
    /// Pending metadata write: first block and bytes.
    batch: (u64, Vec<u8>),
    data_bytes: u64,
    /// Set when the filesystem ran out of blocks or inodes.
    full: Option<&'static str>,
    /// The file-content buffer, reused.
    buf: Vec<u8>,
}

impl<'f> Writer<'f> {
    fn new(target: Target<'f>, layout: Layout, options: &Ext3Options) -> Result<Writer<'f>> {
        let uuid = match options.uuid {
            Some(u) => u,
            None => {
                let mut u = random16()?;
                u[6] = (u[6] & 0x0F) | 0x40;
                u[8] = (u[8] & 0x3F) | 0x80;
                u
            }
        };
        let hash_seed = match options.hash_seed {
            Some(s) => s,
            None => random16()?,
        };
        let groups = layout.groups;
        let alloc_end = (0..groups).map(|g| layout.first_free(g)).collect();
        let mut w = Writer {
            target,
            uuid,
            hash_seed,
            time: options.time.unwrap_or_else(now),
            inodes: vec![[0u8; INODE_SIZE as usize]; LOST_FOUND_INO as usize],
            group: 0,
            next: layout.first_free(0),
            alloc_end,
            layout,
            dirs: HashMap::new(),
            paths: HashMap::new(),
            batch: (0, Vec::new()),
            data_bytes: 0,
            full: None,
            buf: Vec::new(),
        };
        w.write_journal()?;
        Ok(w)
    }

    fn no_space(&mut self, what: &'static str) -> Error {
        self.full = Some(what);
        Error::refused(format!(
            "the tree does not fit in a {} MiB ext3 filesystem (out of {what})",
            (self.layout.blocks * BLOCK) >> 20
        ))
    }

    /// Up to `want` contiguous free blocks: (first, count).
    fn alloc(&mut self, want: u64) -> Result<(u64, u64)> {
        while self.group < self.layout.groups {
            let end = self.layout.group_end(self.group);
            if self.next < end {
                let n = want.min(end - self.next);
                let first = self.next;
                self.next += n;
                self.alloc_end[self.group as usize] = self.next;
                return Ok((first, n));
            }
            self.group += 1;
            if self.group < self.layout.groups {
                self.next = self.layout.first_free(self.group);
            }
        }
        Err(self.no_space("blocks"))
    }

    fn alloc_one(&mut self) -> Result<u64> {
        Ok(self.alloc(1)?.0)
    }

    fn new_inode(&mut self) -> Result<u32> {
        if self.inodes.len() as u64 >= self.layout.inodes() {
            return Err(self.no_space("inodes"));
        }
        self.inodes.push([0u8; INODE_SIZE as usize]);
        Ok(self.inodes.len() as u32)
    }

    fn inode_mut(&mut self, ino: u32) -> &mut [u8; INODE_SIZE as usize] {
        &mut self.inodes[ino as usize - 1]
    }

    fn write_at(&self, bytes: &[u8], block: u64) -> Result<()> {
        self.target
            .write_all_at(bytes, block * BLOCK)
            .map_err(|e| Error::io("writing the ext3 filesystem", e))
    }

    /// Queue one metadata block (written in batches of contiguous blocks).
    fn put_block(&mut self, block: u64, bytes: &[u8]) -> Result<()> {
        let (first, buf) = &self.batch;
        if buf.is_empty() || *first + (buf.len() as u64 / BLOCK) != block || buf.len() >= BATCH {
            self.flush()?;
            self.batch.0 = block;
        }
        self.batch.1.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.batch.1.is_empty() {
            let (first, buf) = std::mem::take(&mut self.batch);
            self.write_at(&buf, first)?;
        }
        Ok(())
    }

    /// Fill the common fields of inode `ino`.
    fn init_inode(&mut self, ino: u32, mode: u16, meta: &Metadata, links: u16) {
        let (t, extra) = encode_time(meta.mtime, meta.mtime_nsec);
        let r = self.inode_mut(ino);
        put16(r, 0x00, mode);
        put16(r, 0x02, meta.uid as u16);
        put16(r, 0x78, (meta.uid >> 16) as u16);
        put16(r, 0x18, meta.gid as u16);
        put16(r, 0x7A, (meta.gid >> 16) as u16);
        for at in [0x08, 0x0C, 0x10] {
            put32(r, at, t); // atime, ctime, mtime
        }
        put32(r, 0x90, t); // crtime
        put16(r, 0x1A, links);
        put16(r, 0x80, EXTRA_ISIZE as u16);
        for at in [0x84, 0x88, 0x8C, 0x94] {
            put32(r, at, extra); // ctime, mtime, atime, crtime extra
        }
    }

    fn set_size(&mut self, ino: u32, size: u64) {
        let r = self.inode_mut(ino);
        put32(r, 0x04, size as u32);
        put32(r, 0x6C, (size >> 32) as u32);
    }

    fn add_sectors(&mut self, ino: u32, blocks: u64) {
        let r = self.inode_mut(ino);
        let sectors = get32(r, 0x1C) as u64 + blocks * (BLOCK / 512);
        put32(r, 0x1C, sectors as u32);
    }

    fn set_i_block(&mut self, ino: u32, i_block: &[u32; 15]) {
        let r = self.inode_mut(ino);
        for (i, &b) in i_block.iter().enumerate() {
            put32(r, 0x28 + 4 * i, b);
        }
    }

    fn add_link(&mut self, ino: u32, path: &[u8]) -> Result<()> {
        let r = self.inode_mut(ino);
        let links = get16(r, 0x1A);
        if links >= MAX_LINKS {
            return Err(Error::unsupported(format!(
                "{}: more than {MAX_LINKS} links to one inode",
                display_path(path)
            )));
        }
        put16(r, 0x1A, links + 1);
        Ok(())
    }

    fn write_xattrs(&mut self, ino: u32, meta: &Metadata) -> Result<()> {
        let inline_at = 128 + EXTRA_ISIZE;
        match xattr::place(
            &meta.xattrs,
            INODE_SIZE as usize - inline_at,
            BLOCK as usize,
        )? {
            xattr::Placement::None => {}
            xattr::Placement::Inline(area) => {
                self.inode_mut(ino)[inline_at..].copy_from_slice(&area);
            }
            xattr::Placement::Block(bytes) => {
                let block = self.alloc_one()?;
                self.put_block(block, &bytes)?;
                put32(self.inode_mut(ino), 0x68, block as u32);
                self.add_sectors(ino, 1);
            }
        }
        Ok(())
    }

    /// The journal: inode 8 mapping `journal_blocks` blocks; only its superblock is written.
    fn write_journal(&mut self) -> Result<()> {
        let n = self.layout.journal_blocks;
        let mut map = BlockMap::new();
        let mut logical = 0;
        let mut first_block = None;
        while logical < n {
            let (first, count) = self.alloc(n - logical)?;
            first_block.get_or_insert(first);
            for i in 0..count {
                map.set(self, logical + i, (first + i) as u32)?;
            }
            logical += count;
        }
        let (i_block, meta) = map.finish(self)?;
        let meta_data = Metadata {
            permissions: 0o600,
            mtime: self.time,
            ..Metadata::default()
        };
        self.init_inode(JOURNAL_INO, 0o100600, &meta_data, 1);
        self.set_size(JOURNAL_INO, n * BLOCK);
        self.set_i_block(JOURNAL_INO, &i_block);
        self.add_sectors(JOURNAL_INO, n + meta);
        let jsb = layout::journal_superblock(n, &self.uuid);
        self.put_block(first_block.unwrap_or(0), &jsb)
    }

    fn write_tree(&mut self, source: &mut dyn EntrySource) -> Result<()> {
        let Some(root) = source.next_entry()? else {
            return Err(Error::malformed("an empty tree (no root directory)"));
        };
        if !root.path.is_empty() || root.kind != EntryKind::Directory {
            return Err(Error::malformed(format!(
                "{}: the tree's first entry must be its root directory",
                root.display_path()
            )));
        }
        self.init_inode(
            ROOT_INO,
            0o040000 | (root.metadata.permissions & 0o7777) as u16,
            &root.metadata,
            2,
        );
        self.write_xattrs(ROOT_INO, &root.metadata)?;
        self.dirs.insert(
            ROOT_INO,
            Dir {
                parent: ROOT_INO,
                entries: Vec::new(),
            },
        );
        self.paths.insert(Vec::new(), ROOT_INO);
        while let Some(entry) = source.next_entry()? {
            self.add_entry(&entry, source)
                .map_err(|e| e.context(entry.display_path()))?;
        }
        if !self.paths.contains_key(&b"lost+found"[..]) {
            let meta = Metadata {
                permissions: 0o700,
                mtime: self.time,
                ..Metadata::default()
            };
            self.init_inode(LOST_FOUND_INO, 0o040700, &meta, 2);
            self.link_dir(LOST_FOUND_INO, ROOT_INO, b"lost+found")?;
        }
        Ok(())
    }

    /// Enter directory `ino` under `parent` as `name`.
    fn link_dir(&mut self, ino: u32, parent: u32, name: &[u8]) -> Result<()> {
        self.dirs.insert(
            ino,
            Dir {
                parent,
                entries: Vec::new(),
            },
        );
        // Its `..` links the parent.
        self.add_link(parent, name)?;
        self.dirs
            .get_mut(&parent)
            .ok_or_else(|| Error::malformed("parent is not a directory"))?
            .entries
            .push((name.to_vec(), ino, 2));
        Ok(())
    }

    fn add_entry(&mut self, entry: &Entry, source: &mut dyn EntrySource) -> Result<()> {
        let name = entry.name();
        if name.is_empty() || name.len() > 255 || name == b"." || name == b".." {
            return Err(Error::unsupported("the name is not valid in ext3"));
        }
        let parent = *self
            .paths
            .get(entry.parent())
            .filter(|ino| self.dirs.contains_key(ino))
            .ok_or_else(|| Error::malformed("its parent directory is not in the tree before it"))?;
        if self.paths.contains_key(&entry.path) {
            return Err(Error::malformed("the path occurs twice"));
        }
        if let EntryKind::HardLink { target } = &entry.kind {
            let ino = *self.paths.get(target).ok_or_else(|| {
                Error::malformed(format!(
                    "hard link to {}, which is not in the tree before it",
                    display_path(target)
                ))
            })?;
            if self.dirs.contains_key(&ino) {
                return Err(Error::malformed("a hard link to a directory"));
            }
            self.add_link(ino, &entry.path)?;
            let ftype = dirent_type(get16(&self.inodes[ino as usize - 1], 0));
            self.push_dirent(parent, name, ino, ftype);
            self.paths.insert(entry.path.clone(), ino);
            return Ok(());
        }
        let (type_bits, ftype) = type_bits(&entry.kind);
        let is_lost_found = entry.path == b"lost+found" && entry.kind == EntryKind::Directory;
        let ino = if is_lost_found {
            LOST_FOUND_INO
        } else {
            self.new_inode()?
        };
        let mode = type_bits | (entry.metadata.permissions & 0o7777) as u16;
        let links = if entry.kind == EntryKind::Directory {
            2
        } else {
            1
        };
        self.init_inode(ino, mode, &entry.metadata, links);
        self.write_xattrs(ino, &entry.metadata)?;
        match &entry.kind {
            EntryKind::Directory => {
                self.link_dir(ino, parent, name)?;
                self.paths.insert(entry.path.clone(), ino);
                return Ok(());
            }
            EntryKind::File { size } => {
                let mut content = source.read_content()?;
                self.write_file(ino, *size, &mut content)?;
            }
            EntryKind::Symlink { target } => self.write_symlink(ino, target)?,
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let (major, minor) = (*major, *minor);
                let r = self.inode_mut(ino);
                if major < 256 && minor < 256 {
                    put32(r, 0x28, major << 8 | minor);
                } else {
                    put32(
                        r,
                        0x2C,
                        (minor & 0xff) | (major & 0xfff) << 8 | (minor & !0xff) << 12,
                    );
                }
            }
            EntryKind::Fifo | EntryKind::Socket | EntryKind::HardLink { .. } => {}
        }
        self.push_dirent(parent, name, ino, ftype);
        self.paths.insert(entry.path.clone(), ino);
        Ok(())
    }

    fn push_dirent(&mut self, parent: u32, name: &[u8], ino: u32, ftype: u8) {
        if let Some(dir) = self.dirs.get_mut(&parent) {
            dir.entries.push((name.to_vec(), ino, ftype));
        }
    }

    fn write_symlink(&mut self, ino: u32, target: &[u8]) -> Result<()> {
        if target.is_empty() || target.len() >= BLOCK as usize {
            return Err(Error::unsupported(format!(
                "a symlink target of {} bytes (ext3 holds 1 to 4095)",
                target.len()
            )));
        }
        self.set_size(ino, target.len() as u64);
        if target.len() < 60 {
            // A fast symlink: the target in i_block, no data block.
            self.inode_mut(ino)[0x28..0x28 + target.len()].copy_from_slice(target);
            return Ok(());
        }
        let block = self.alloc_one()?;
        let mut bytes = vec![0u8; BLOCK as usize];
        bytes[..target.len()].copy_from_slice(target);
        self.put_block(block, &bytes)?;
        let mut i_block = [0u32; 15];
        i_block[0] = block as u32;
        self.set_i_block(ino, &i_block);
        self.add_sectors(ino, 1);
        Ok(())
    }

    /// Copy `size` bytes of content, leaving all-zero blocks as holes.
    fn write_file(&mut self, ino: u32, size: u64, content: &mut dyn Read) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(Error::unsupported(format!(
                "a file of {size} bytes (ext3 without huge_file holds up to 2 TiB)"
            )));
        }
        self.set_size(ino, size);
        let mut map = BlockMap::new();
        // One buffer for every file (most are small: allocating per file costs more than
        // copying them).
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(CHUNK, 0);
        let mut done = 0u64;
        let mut data_blocks = 0u64;
        // Physical block of each block of the chunk (0: hole).
        let mut phys = Vec::with_capacity(CHUNK / BLOCK as usize);
        while done < size {
            let n = (size - done).min(CHUNK as u64) as usize;
            let padded = n.next_multiple_of(BLOCK as usize);
            buf[n..padded].fill(0);
            content
                .read_exact(&mut buf[..n])
                .map_err(|e| Error::io("reading file content", e))?;
            phys.clear();
            for block in buf[..padded].chunks(BLOCK as usize) {
                let zero = block.iter().all(|&b| b == 0);
                phys.push(if zero { 0 } else { self.alloc_one()? });
            }
            // Write runs contiguous both in the buffer and on disk.
            let mut i = 0;
            while i < phys.len() {
                if phys[i] == 0 {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < phys.len() && phys[j] == phys[j - 1] + 1 {
                    j += 1;
                }
                let bs = BLOCK as usize;
                self.write_at(&buf[i * bs..j * bs], phys[i])?;
                i = j;
            }
            let first_logical = done / BLOCK;
            for (i, &p) in phys.iter().enumerate() {
                if p != 0 {
                    map.set(self, first_logical + i as u64, p as u32)?;
                    data_blocks += 1;
                }
            }
            done += n as u64;
        }
        self.buf = buf;
        let (i_block, meta) = map.finish(self)?;
        self.set_i_block(ino, &i_block);
        self.add_sectors(ino, data_blocks + meta);
        self.data_bytes += data_blocks * BLOCK;
        Ok(())
    }

    /// Write every directory's blocks, in inode order.
    fn write_dirs(&mut self) -> Result<()> {
        let mut inos: Vec<u32> = self.dirs.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(dir) = self.dirs.remove(&ino) else {
                continue;
            };
            let mut blocks = dir_blocks(ino, &dir);
            if ino == LOST_FOUND_INO {
                // mke2fs gives lost+found 16 KiB so e2fsck can reconnect files without
                // allocating.
                while blocks.len() < 4 {
                    blocks.push(empty_dir_block());
                }
            }
            let mut map = BlockMap::new();
            for (logical, bytes) in blocks.iter().enumerate() {
                let block = self.alloc_one()?;
                self.put_block(block, bytes)?;
                map.set(self, logical as u64, block as u32)?;
            }
            let (i_block, meta) = map.finish(self)?;
            self.set_i_block(ino, &i_block);
            self.set_size(ino, blocks.len() as u64 * BLOCK);
            self.add_sectors(ino, blocks.len() as u64 + meta);
        }
        Ok(())
    }

    /// Bitmaps, inode tables, descriptors and superblocks.
    fn finish(&mut self) -> Result<Ext3Summary> {
        self.write_dirs()?;
        self.flush()?;
        let layout = self.layout.clone();
        let ipg = layout.inodes_per_group;
        let used_inodes = self.inodes.len() as u64;
        let mut counts = Vec::with_capacity(layout.groups as usize);
        let mut bitmap = vec![0u8; BLOCK as usize];
        for g in 0..layout.groups {
            // Block bitmap: the group's metadata, what was allocated, padding past the end.
            bitmap.fill(0);
            let start = layout.group_start(g);
            let meta_end = layout.first_free(g) - start;
            let used_end = self.alloc_end[g as usize] - start;
            let group_len = layout.group_end(g) - start;
            set_bits(&mut bitmap, 0, meta_end);
            set_bits(&mut bitmap, meta_end, used_end);
            set_bits(&mut bitmap, group_len, BLOCK * 8);
            self.write_at(&bitmap, layout.block_bitmap(g))?;
            // Inode bitmap: inodes are handed out in order.
            bitmap.fill(0);
            let first = g * ipg;
            let in_use = used_inodes.saturating_sub(first).min(ipg);
            set_bits(&mut bitmap, 0, in_use);
            set_bits(&mut bitmap, ipg, BLOCK * 8);
            self.write_at(&bitmap, layout.inode_bitmap(g))?;
            // The inode table blocks that hold inodes in use; the rest stays zero.
            if in_use > 0 {
                let records = &self.inodes[first as usize..(first + in_use) as usize];
                let bytes = records.as_flattened();
                let mut padded = bytes.to_vec();
                padded.resize((bytes.len() as u64).next_multiple_of(BLOCK) as usize, 0);
                self.write_at(&padded, layout.inode_table(g))?;
            }
            let dirs = records_dirs(&self.inodes, first, in_use);
            counts.push(layout::GroupCounts {
                free_blocks: group_len - used_end,
                free_inodes: ipg - in_use,
                dirs,
            });
        }
        let free_blocks: u64 = counts.iter().map(|c| c.free_blocks).sum();
        let free_inodes: u64 = counts.iter().map(|c| c.free_inodes).sum();
        let journal = &self.inodes[JOURNAL_INO as usize - 1];
        let mut journal_i_block = [0u32; 15];
        for (i, b) in journal_i_block.iter_mut().enumerate() {
            *b = get32(journal, 0x28 + 4 * i);
        }
        let fields = layout::SuperblockFields {
            free_blocks,
            free_inodes,
            time: self.time as u32,
            uuid: self.uuid,
            hash_seed: self.hash_seed,
            journal_i_block,
            journal_size: layout.journal_blocks * BLOCK,
        };
        let gdt = layout::descriptors(&layout, &counts);
        for g in (0..layout.groups).filter(|&g| layout::has_superblock(g)) {
            let sb = layout::superblock(&layout, &fields, g);
            let start = layout.group_start(g);
            let mut head = vec![0u8; BLOCK as usize];
            if g == 0 {
                head[1024..2048].copy_from_slice(&sb);
            } else {
                head[..1024].copy_from_slice(&sb);
            }
            head.extend_from_slice(&gdt);
            self.write_at(&head, start)?;
        }
        Ok(Ext3Summary {
            size: layout.blocks * BLOCK,
            inodes_used: used_inodes,
            blocks_used: layout.blocks - free_blocks,
            data_bytes: self.data_bytes,
        })
    }
}

/// Directories among inode records `first..first + n` (0-based).
fn records_dirs(inodes: &[[u8; INODE_SIZE as usize]], first: u64, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    inodes[first as usize..(first + n) as usize]
        .iter()
        .filter(|r| get16(&r[..], 0) & 0o170000 == 0o040000)
        .count() as u64
}

/// Set bits `from..to` of a bitmap.
fn set_bits(bitmap: &mut [u8], from: u64, to: u64) {
    let mut i = from;
    while i < to {
        if i.is_multiple_of(8) && to - i >= 8 {
            let bytes = ((to - i) / 8) as usize;
            let at = (i / 8) as usize;
            bitmap[at..at + bytes].fill(0xFF);
            i += bytes as u64 * 8;
        } else {
            bitmap[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }
}

fn empty_dir_block() -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    put16(&mut b, 4, BLOCK as u16);
    b
}

/// A directory's linear blocks: `.`, `..`, then its entries, none crossing a block.
fn dir_blocks(ino: u32, dir: &Dir) -> Vec<Vec<u8>> {
    let bs = BLOCK as usize;
    let mut blocks = Vec::new();
    let mut block = vec![0u8; bs];
    let mut at = 0usize;
    // Offset of the last entry in the current block (its rec_len is stretched to the end).
    let mut last = 0usize;
    let dot = [(&b"."[..], ino, 2u8), (&b".."[..], dir.parent, 2u8)];
    let all = dot
        .into_iter()
        .chain(dir.entries.iter().map(|(n, i, t)| (&n[..], *i, *t)));
    for (name, child, ftype) in all {
        let len = (8 + name.len()).next_multiple_of(4);
        if at + len > bs {
            put16(&mut block, last + 4, (bs - last) as u16);
            blocks.push(std::mem::replace(&mut block, vec![0u8; bs]));
            at = 0;
        }
        put32(&mut block, at, child);
        put16(&mut block, at + 4, len as u16);
        block[at + 6] = name.len() as u8;
        block[at + 7] = ftype;
        block[at + 8..at + 8 + name.len()].copy_from_slice(name);
        last = at;
        at += len;
    }
    put16(&mut block, last + 4, (bs - last) as u16);
    blocks.push(block);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_their_epoch_bits_and_nanoseconds() {
        assert_eq!(encode_time(0, 0), (0, 0));
        assert_eq!(encode_time(-1, 5), (u32::MAX, 5 << 2));
        // 2100-01-01 is past 2038: low word wraps negative, epoch bit 1.
        let t = 4102444800i64;
        let (lo, extra) = encode_time(t, 0);
        assert_eq!((lo as i32 as i64) + (((extra & 3) as i64) << 32), t);
        let t = -315619200i64; // 1960
        let (lo, extra) = encode_time(t, 0);
        assert_eq!((lo as i32 as i64) + (((extra & 3) as i64) << 32), t);
    }

    #[test]
    fn bitmaps_set_exact_ranges() {
        let mut b = vec![0u8; 8];
        set_bits(&mut b, 3, 21);
        assert_eq!(b, vec![0xF8, 0xFF, 0x1F, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn directory_blocks_end_exactly_at_the_block_end() {
        let dir = Dir {
            parent: 2,
            entries: (0..400)
                .map(|i| (format!("entry-{i:05}").into_bytes(), 100 + i, 1))
                .collect(),
        };
        let blocks = dir_blocks(50, &dir);
        assert!(blocks.len() > 1);
        let mut names = 0;
        for b in &blocks {
            let mut at = 0;
            while at < b.len() {
                let rec = get16(b, at + 4) as usize;
                assert!(rec >= 8 && at + rec <= b.len());
                names += 1;
                at += rec;
            }
            assert_eq!(at, b.len());
        }
        assert_eq!(names, 402);
    }
}
