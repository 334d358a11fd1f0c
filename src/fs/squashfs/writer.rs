//! The squashfs writer. See the module documentation for the layout choices.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use super::compress::Compression;
use super::{
    METADATA_BLOCK, NO_FRAGMENT, NO_TABLE, NO_XATTR, SUPERBLOCK_LEN, UNCOMPRESSED_BLOCK,
    UNCOMPRESSED_METADATA, encode_dev, flags, inode_type,
};
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, Metadata, Xattr, display_path};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub compression: Compression,
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// The superblock's creation time; `None` for now. Fix it for reproducible images.
    pub mkfs_time: Option<u32>,
    /// Compression threads; 0 for one per core.
    pub threads: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compression: Compression::default(),
            block_size: 128 * 1024,
            mkfs_time: None,
            threads: 0,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct FileData {
    size: u64,
    blocks_start: u64,
    block_sizes: Vec<u32>,
    fragment: Option<(u32, u32)>,
    sparse: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir(Vec<usize>),
    File(FileData),
    Symlink(Vec<u8>),
    CharDev(u32),
    BlockDev(u32),
    Fifo,
    Socket,
    /// Another name of node `usize`.
    Link(usize),
}

#[derive(Debug, Clone)]
struct Node {
    name: Vec<u8>,
    kind: Kind,
    meta: Metadata,
    nlink: u32,
    inode_number: u32,
    inode_ref: u64,
}

/// Where a compressed block's size must be recorded once it is written.
#[derive(Debug, Clone, Copy)]
enum Dest {
    FileBlock { node: usize, index: usize },
    Fragment { index: usize },
}

struct Pipeline {
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    results: Receiver<(u64, Vec<u8>, bool)>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    ready: BTreeMap<u64, (Vec<u8>, bool)>,
    dests: BTreeMap<u64, Dest>,
}

impl Pipeline {
    fn new(compression: Compression, threads: usize) -> Pipeline {
        let (job_tx, job_rx) = sync_channel::<(u64, Vec<u8>)>(threads * 2);
        let (res_tx, res_rx) = channel();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = res_tx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = rx.lock().unwrap().recv();
                        let Ok((seq, raw)) = job else { return };
                        let result = if compression.clearly_incompressible(&raw) {
                            (seq, raw, false)
                        } else {
                            let packed = compression.compress(&raw);
                            if packed.len() < raw.len() {
                                (seq, packed, true)
                            } else {
                                (seq, raw, false)
                            }
                        };
                        if tx.send(result).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pipeline {
            jobs: Some(job_tx),
            results: res_rx,
            workers,
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            dests: BTreeMap::new(),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Accumulates a metadata table in 8 KiB blocks, compressed as they fill.
struct MetaWriter {
    compression: Compression,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Compressed start of every flushed block.
    starts: Vec<u64>,
}

impl MetaWriter {
    fn new(compression: Compression) -> MetaWriter {
        MetaWriter {
            compression,
            buf: Vec::with_capacity(METADATA_BLOCK),
            out: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Reference of the next byte: compressed block start << 16 | offset in the block.
    fn position(&self) -> (u64, u16) {
        (self.out.len() as u64, self.buf.len() as u16)
    }

    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (METADATA_BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == METADATA_BLOCK {
                self.flush_block();
            }
        }
    }

    /// Uncompressed bytes written so far.
    fn uncompressed_len(&self) -> u64 {
        self.starts.len() as u64 * METADATA_BLOCK as u64 + self.buf.len() as u64
    }

    /// Compressed start of uncompressed block `index` (the current one if not yet flushed).
    fn block_start(&self, index: usize) -> u64 {
        self.starts
            .get(index)
            .copied()
            .unwrap_or(self.out.len() as u64)
    }

    fn flush_block(&mut self) {
        self.starts.push(self.out.len() as u64);
        let packed = self.compression.compress(&self.buf);
        if packed.len() < self.buf.len() {
            self.out
                .extend_from_slice(&(packed.len() as u16).to_le_bytes());
            self.out.extend_from_slice(&packed);
        } else {
            self.out
                .extend_from_slice(&(self.buf.len() as u16 | UNCOMPRESSED_METADATA).to_le_bytes());
            self.out.extend_from_slice(&self.buf);
        }
        self.buf.clear();
    }

    fn finish(mut self) -> Vec<u8> {
        if !self.buf.is_empty() {
            self.flush_block();
        }
        self.out
    }
}

/// Writes a squashfs image into `file` at `offset`.
pub struct SquashfsWriter<'f> {
    file: &'f File,
    offset: u64,
    options: WriterOptions,
    /// Next write position, relative to the image start.
    pos: u64,
    high_water: u64,
    nodes: Vec<Node>,
    paths: HashMap<Vec<u8>, usize>,
    pipeline: Pipeline,
    fragment_buf: Vec<u8>,
    fragments: Vec<(u64, u32)>,
    fragment_dups: HashMap<(u64, [u8; 32]), (u32, u32)>,
    block_dups: HashMap<(u64, [u8; 32]), FileData>,
    error: Option<Error>,
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::io(format!("squashfs: {what}"), e)
}

impl<'f> SquashfsWriter<'f> {
    pub fn new(file: &'f File, offset: u64, options: WriterOptions) -> Result<SquashfsWriter<'f>> {
        let bs = options.block_size;
        if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
            return Err(Error::refused(format!(
                "squashfs block size {bs}: must be a power of two from 4 KiB to 1 MiB"
            )));
        }
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let mut pos = SUPERBLOCK_LEN as u64;
        if let Some(opts) = options.compression.options() {
            pos += 2 + opts.len() as u64;
        }
        let root = Node {
            name: Vec::new(),
            kind: Kind::Dir(Vec::new()),
            meta: Metadata {
                permissions: 0o755,
                mtime: options.mkfs_time.unwrap_or(0) as i64,
                ..Metadata::default()
            },
            nlink: 1,
            inode_number: 0,
            inode_ref: 0,
        };
        let mut paths = HashMap::new();
        paths.insert(Vec::new(), 0);
        Ok(SquashfsWriter {
            file,
            offset,
            pipeline: Pipeline::new(options.compression, threads),
            options,
            pos,
            high_water: pos,
            nodes: vec![root],
            paths,
            fragment_buf: Vec::new(),
            fragments: Vec::new(),
            fragment_dups: HashMap::new(),
            block_dups: HashMap::new(),
            error: None,
        })
    }

    fn write_at(&mut self, data: &[u8], at: u64) -> Result<()> {
        self.file
            .write_all_at(data, self.offset + at)
            .map_err(|e| io_err("writing", e))?;
        self.high_water = self.high_water.max(at + data.len() as u64);
        Ok(())
    }

    fn submit(&mut self, raw: Vec<u8>, dest: Dest) -> Result<()> {
        let seq = self.pipeline.next_seq;
        self.pipeline.next_seq += 1;
        self.pipeline.dests.insert(seq, dest);
        self.pipeline
            .jobs
            .as_ref()
            .expect("pipeline open")
            .send((seq, raw))
            .map_err(|_| {
                Error::io(
                    "squashfs: compression worker",
                    std::io::Error::other("stopped"),
                )
            })?;
        self.drain(false)
    }

    /// Write finished blocks in order; with `all`, wait until every submitted block is written.
    fn drain(&mut self, all: bool) -> Result<()> {
        loop {
            while let Ok((seq, data, compressed)) = self.pipeline.results.try_recv() {
                self.pipeline.ready.insert(seq, (data, compressed));
            }
            while let Some((data, compressed)) =
                self.pipeline.ready.remove(&self.pipeline.next_write)
            {
                let seq = self.pipeline.next_write;
                self.pipeline.next_write += 1;
                let at = self.pos;
                self.write_at(&data, at)?;
                self.pos += data.len() as u64;
                let size = data.len() as u32 | if compressed { 0 } else { UNCOMPRESSED_BLOCK };
                match self
                    .pipeline
                    .dests
                    .remove(&seq)
                    .expect("every block has a destination")
                {
                    Dest::FileBlock { node, index } => {
                        if let Kind::File(f) = &mut self.nodes[node].kind {
                            f.block_sizes[index] = size;
                        }
                    }
                    Dest::Fragment { index } => self.fragments[index] = (at, size),
                }
            }
            if !all || self.pipeline.next_write == self.pipeline.next_seq {
                return Ok(());
            }
            let (seq, data, compressed) = self.pipeline.results.recv().map_err(|_| {
                Error::io(
                    "squashfs: compression worker",
                    std::io::Error::other("stopped"),
                )
            })?;
            self.pipeline.ready.insert(seq, (data, compressed));
        }
    }

    fn flush_fragment(&mut self) -> Result<()> {
        if self.fragment_buf.is_empty() {
            return Ok(());
        }
        let index = self.fragments.len();
        self.fragments.push((0, 0));
        let raw = std::mem::take(&mut self.fragment_buf);
        self.submit(raw, Dest::Fragment { index })
    }

    fn add_file(
        &mut self,
        node: usize,
        size: u64,
        content: &mut dyn Read,
        path: &str,
    ) -> Result<FileData> {
        let bs = self.options.block_size as u64;
        let read_err =
            |e: std::io::Error| Error::io(format!("squashfs: reading the content of {path}"), e);
        let mut data = FileData {
            size,
            ..FileData::default()
        };
        if size == 0 {
            return Ok(data);
        }
        let mut hasher = Sha256::new();
        if size < bs {
            // Small file: packed into a fragment block (as mksquashfs does).
            let mut buf = vec![0u8; size as usize];
            content.read_exact(&mut buf).map_err(read_err)?;
            hasher.update(&buf);
            let key = (size, hasher.finalize().into());
            if let Some(&frag) = self.fragment_dups.get(&key) {
                data.fragment = Some(frag);
                return Ok(data);
            }
            if self.fragment_buf.len() + buf.len() > bs as usize {
                self.flush_fragment()?;
            }
            let frag = (self.fragments.len() as u32, self.fragment_buf.len() as u32);
            self.fragment_buf.extend_from_slice(&buf);
            self.fragment_dups.insert(key, frag);
            data.fragment = Some(frag);
            return Ok(data);
        }
        // Whole blocks: start at a known position so duplicates can be rewound.
        self.drain(true)?;
        let start = self.pos;
        data.blocks_start = start;
        let blocks = size.div_ceil(bs) as usize;
        if let Kind::File(f) = &mut self.nodes[node].kind {
            f.block_sizes = vec![0; blocks];
        }
        let mut sizes_sparse = vec![false; blocks];
        for (index, sparse_flag) in sizes_sparse.iter_mut().enumerate() {
            let n = (size - index as u64 * bs).min(bs) as usize;
            let mut buf = vec![0u8; n];
            content.read_exact(&mut buf).map_err(read_err)?;
            hasher.update(&buf);
            if buf.iter().all(|&b| b == 0) {
                *sparse_flag = true;
                data.sparse += n as u64;
                continue;
            }
            self.submit(buf, Dest::FileBlock { node, index })?;
        }
        self.drain(true)?;
        let Kind::File(f) = &self.nodes[node].kind else {
            unreachable!()
        };
        data.block_sizes = f.block_sizes.clone();
        let key = (size, hasher.finalize().into());
        if let Some(dup) = self.block_dups.get(&key) {
            // Same bytes already stored: drop what we just wrote and point at them.
            self.pos = start;
            return Ok(dup.clone());
        }
        self.block_dups.insert(key, data.clone());
        Ok(data)
    }

    fn insert(&mut self, entry: &Entry, kind: Kind) -> Result<usize> {
        let path = &entry.path;
        let parent_path = entry.parent();
        let parent = *self.paths.get(parent_path).ok_or_else(|| {
            Error::malformed(format!(
                "squashfs: {}: parent directory was not added first",
                display_path(path)
            ))
        })?;
        if let Some(&existing) = self.paths.get(path.as_slice()) {
            // A directory given again updates its metadata (tar semantics; the whiteout
            // conversion re-yields a directory that turns out to be opaque).
            if matches!(
                (&self.nodes[existing].kind, &kind),
                (Kind::Dir(_), Kind::Dir(_))
            ) {
                self.nodes[existing].meta = entry.metadata.clone();
                return Ok(existing);
            }
            return Err(Error::malformed(format!(
                "squashfs: {}: added twice",
                display_path(path)
            )));
        }
        let index = self.nodes.len();
        let Kind::Dir(children) = &mut self.nodes[parent].kind else {
            return Err(Error::malformed(format!(
                "squashfs: {}: parent is not a directory",
                display_path(path)
            )));
        };
        children.push(index);
        self.nodes.push(Node {
            name: entry.name().to_vec(),
            kind,
            meta: entry.metadata.clone(),
            nlink: 1,
            inode_number: 0,
            inode_ref: 0,
        });
        self.paths.insert(path.clone(), index);
        Ok(index)
    }

    /// Finish the image: tables, superblock, padding. Returns the padded length written.
    pub fn finish(mut self) -> Result<u64> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.flush_fragment()?;
        self.drain(true)?;
        let compression = self.options.compression;
        // Sort directories, number inodes in post-order (children first, root last).
        let order = self.post_order();
        let mut number = 0u32;
        for &n in &order {
            if !matches!(self.nodes[n].kind, Kind::Link(_)) {
                number += 1;
                self.nodes[n].inode_number = number;
            }
        }
        let inode_count = number;
        // Link counts: directories 2 + subdirectories; others count their names.
        for n in 0..self.nodes.len() {
            if let Kind::Link(target) = self.nodes[n].kind {
                self.nodes[target].nlink += 1;
            }
            if let Kind::Dir(children) = &self.nodes[n].kind {
                let subdirs = children
                    .iter()
                    .filter(|&&c| matches!(self.nodes[c].kind, Kind::Dir(_)))
                    .count();
                self.nodes[n].nlink = 2 + subdirs as u32;
            }
        }
        let mut ids: Vec<u32> = Vec::new();
        let mut id_index = |id: u32| -> u16 {
            match ids.iter().position(|&x| x == id) {
                Some(i) => i as u16,
                None => {
                    ids.push(id);
                    (ids.len() - 1) as u16
                }
            }
        };
        let mut xattr_sets: Vec<Vec<Xattr>> = Vec::new();
        let mut xattr_lookup: HashMap<Vec<Xattr>, u32> = HashMap::new();
        let mut inodes = MetaWriter::new(compression);
        let mut dirs = MetaWriter::new(compression);
        let mut parent_of = vec![0usize; self.nodes.len()];
        for n in 0..self.nodes.len() {
            if let Kind::Dir(children) = &self.nodes[n].kind {
                for &c in children {
                    parent_of[c] = n;
                }
            }
        }
        for &n in &order {
            if matches!(self.nodes[n].kind, Kind::Link(_)) {
                continue;
            }
            let node = &self.nodes[n];
            let xattrs: Vec<Xattr> = node
                .meta
                .xattrs
                .iter()
                .filter(|x| xattr_prefix(&x.name).is_some())
                .cloned()
                .collect();
            let xattr = if xattrs.is_empty() {
                NO_XATTR
            } else {
                *xattr_lookup.entry(xattrs.clone()).or_insert_with(|| {
                    xattr_sets.push(xattrs);
                    (xattr_sets.len() - 1) as u32
                })
            };
            let uid = id_index(node.meta.uid);
            let gid = id_index(node.meta.gid);
            // Squashfs times are unsigned 32-bit; wrap as mksquashfs does.
            let mtime = node.meta.mtime as u32;
            let (block, offset) = inodes.position();
            let mut body = Vec::new();
            let extended = xattr != NO_XATTR;
            let itype;
            match &node.kind {
                Kind::Dir(children) => {
                    // The listing goes to the directory table first.
                    let (dblock, doffset) = dirs.position();
                    let (listing, headers) = self.dir_listing(children);
                    let listing_start = dirs.uncompressed_len();
                    dirs.write(&listing);
                    let file_size = listing.len() as u64 + 3;
                    // Directory index: where each index point's header lies in the table.
                    let mut index = Vec::new();
                    for (offset, name) in headers {
                        let block = (listing_start + offset as u64) / METADATA_BLOCK as u64;
                        index.extend_from_slice(&offset.to_le_bytes());
                        index.extend_from_slice(
                            &(dirs.block_start(block as usize) as u32).to_le_bytes(),
                        );
                        index.extend_from_slice(&((name.len() - 1) as u32).to_le_bytes());
                        index.extend_from_slice(name);
                    }
                    let index_count = index_entries(&index);
                    let parent = if n == 0 {
                        inode_count + 1
                    } else {
                        self.nodes[parent_of[n]].inode_number
                    };
                    if extended || file_size > u16::MAX as u64 || index_count > 0 {
                        itype = inode_type::DIR + inode_type::EXTENDED;
                        body.extend_from_slice(&node.nlink.to_le_bytes());
                        body.extend_from_slice(&(file_size as u32).to_le_bytes());
                        body.extend_from_slice(&(dblock as u32).to_le_bytes());
                        body.extend_from_slice(&parent.to_le_bytes());
                        body.extend_from_slice(&(index_count as u16).to_le_bytes());
                        body.extend_from_slice(&doffset.to_le_bytes());
                        body.extend_from_slice(&xattr.to_le_bytes());
                        body.extend_from_slice(&index);
                    } else {
                        itype = inode_type::DIR;
                        body.extend_from_slice(&(dblock as u32).to_le_bytes());
                        body.extend_from_slice(&node.nlink.to_le_bytes());
                        body.extend_from_slice(&(file_size as u16).to_le_bytes());
                        body.extend_from_slice(&doffset.to_le_bytes());
                        body.extend_from_slice(&parent.to_le_bytes());
                    }
                }
                Kind::File(f) => {
                    let (frag, frag_off) = f.fragment.unwrap_or((NO_FRAGMENT, 0));
                    // As mksquashfs: a partly sparse file takes the extended form (which
                    // records the sparse bytes); a wholly zero file does not.
                    let basic = !extended
                        && node.nlink == 1
                        && (f.sparse == 0 || f.sparse >= f.size)
                        && f.size <= u32::MAX as u64
                        && f.blocks_start <= u32::MAX as u64;
                    if basic {
                        itype = inode_type::FILE;
                        body.extend_from_slice(&(f.blocks_start as u32).to_le_bytes());
                        body.extend_from_slice(&frag.to_le_bytes());
                        body.extend_from_slice(&frag_off.to_le_bytes());
                        body.extend_from_slice(&(f.size as u32).to_le_bytes());
                    } else {
                        itype = inode_type::FILE + inode_type::EXTENDED;
                        body.extend_from_slice(&f.blocks_start.to_le_bytes());
                        body.extend_from_slice(&f.size.to_le_bytes());
                        // mksquashfs never records a file as wholly sparse.
                        let sparse = if f.sparse >= f.size && f.size > 0 {
                            f.size - 1
                        } else {
                            f.sparse
                        };
                        body.extend_from_slice(&sparse.to_le_bytes());
                        body.extend_from_slice(&node.nlink.to_le_bytes());
                        body.extend_from_slice(&frag.to_le_bytes());
                        body.extend_from_slice(&frag_off.to_le_bytes());
                        body.extend_from_slice(&xattr.to_le_bytes());
                    }
                    for s in &f.block_sizes {
                        body.extend_from_slice(&s.to_le_bytes());
                    }
                }
                Kind::Symlink(target) => {
                    itype = inode_type::SYMLINK + if extended { inode_type::EXTENDED } else { 0 };
                    body.extend_from_slice(&node.nlink.to_le_bytes());
                    body.extend_from_slice(&(target.len() as u32).to_le_bytes());
                    body.extend_from_slice(target);
                    if extended {
                        body.extend_from_slice(&xattr.to_le_bytes());
                    }
                }
                Kind::CharDev(dev) | Kind::BlockDev(dev) => {
                    let base = if matches!(node.kind, Kind::CharDev(_)) {
                        inode_type::CHAR_DEV
                    } else {
                        inode_type::BLOCK_DEV
                    };
                    itype = base + if extended { inode_type::EXTENDED } else { 0 };
                    body.extend_from_slice(&node.nlink.to_le_bytes());
                    body.extend_from_slice(&dev.to_le_bytes());
                    if extended {
                        body.extend_from_slice(&xattr.to_le_bytes());
                    }
                }
                Kind::Fifo | Kind::Socket => {
                    let base = if matches!(node.kind, Kind::Fifo) {
                        inode_type::FIFO
                    } else {
                        inode_type::SOCKET
                    };
                    itype = base + if extended { inode_type::EXTENDED } else { 0 };
                    body.extend_from_slice(&node.nlink.to_le_bytes());
                    if extended {
                        body.extend_from_slice(&xattr.to_le_bytes());
                    }
                }
                Kind::Link(_) => unreachable!(),
            }
            let mut header = Vec::with_capacity(16 + body.len());
            header.extend_from_slice(&itype.to_le_bytes());
            header.extend_from_slice(&((node.meta.permissions & 0o7777) as u16).to_le_bytes());
            header.extend_from_slice(&uid.to_le_bytes());
            header.extend_from_slice(&gid.to_le_bytes());
            header.extend_from_slice(&mtime.to_le_bytes());
            header.extend_from_slice(&node.inode_number.to_le_bytes());
            header.extend_from_slice(&body);
            inodes.write(&header);
            self.nodes[n].inode_ref = block << 16 | offset as u64;
        }
        let root_ref = self.nodes[0].inode_ref;

        // Tables, in mksquashfs order: inodes, directories, fragments, ids, xattrs.
        let inode_table_start = self.pos;
        let table = inodes.finish();
        self.append(&table)?;
        let directory_table_start = self.pos;
        let table = dirs.finish();
        self.append(&table)?;
        let fragment_table_start = if self.fragments.is_empty() {
            NO_TABLE
        } else {
            let mut entries = Vec::with_capacity(self.fragments.len() * 16);
            for &(start, size) in &self.fragments {
                entries.extend_from_slice(&start.to_le_bytes());
                entries.extend_from_slice(&size.to_le_bytes());
                entries.extend_from_slice(&0u32.to_le_bytes());
            }
            self.write_lookup_table(&entries)?
        };
        let mut id_bytes = Vec::new();
        for id in &ids {
            id_bytes.extend_from_slice(&id.to_le_bytes());
        }
        let id_table_start = self.write_lookup_table(&id_bytes)?;
        let xattr_table_start = if xattr_sets.is_empty() {
            NO_TABLE
        } else {
            self.write_xattrs(&xattr_sets)?
        };
        let bytes_used = self.pos;

        let mut sb = Vec::with_capacity(SUPERBLOCK_LEN);
        let mkfs_time = self.options.mkfs_time.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32)
        });
        let mut sb_flags = flags::DUPLICATES;
        if xattr_sets.is_empty() {
            sb_flags |= flags::NO_XATTRS;
        }
        let options = compression.options();
        if options.is_some() {
            sb_flags |= flags::COMPRESSOR_OPTIONS;
        }
        sb.extend_from_slice(&super::MAGIC.to_le_bytes());
        sb.extend_from_slice(&inode_count.to_le_bytes());
        sb.extend_from_slice(&mkfs_time.to_le_bytes());
        sb.extend_from_slice(&self.options.block_size.to_le_bytes());
        sb.extend_from_slice(&(self.fragments.len() as u32).to_le_bytes());
        sb.extend_from_slice(&compression.id().to_le_bytes());
        sb.extend_from_slice(&(self.options.block_size.trailing_zeros() as u16).to_le_bytes());
        sb.extend_from_slice(&sb_flags.to_le_bytes());
        sb.extend_from_slice(&(ids.len() as u16).to_le_bytes());
        sb.extend_from_slice(&4u16.to_le_bytes());
        sb.extend_from_slice(&0u16.to_le_bytes());
        for v in [
            root_ref,
            bytes_used,
            id_table_start,
            xattr_table_start,
            inode_table_start,
            directory_table_start,
            fragment_table_start,
            NO_TABLE,
        ] {
            sb.extend_from_slice(&v.to_le_bytes());
        }
        self.write_at(&sb, 0)?;
        if let Some(opts) = options {
            // Compressor options: a metadata block, stored uncompressed.
            let mut block = (opts.len() as u16 | UNCOMPRESSED_METADATA)
                .to_le_bytes()
                .to_vec();
            block.extend_from_slice(&opts);
            self.write_at(&block, SUPERBLOCK_LEN as u64)?;
        }
        // Pad to 4 KiB with zeros, and zero anything a rewound duplicate left beyond.
        let padded = bytes_used.next_multiple_of(4096);
        let clear_to = padded.max(self.high_water);
        if clear_to > bytes_used {
            let zeros = vec![0u8; (clear_to - bytes_used).min(1 << 20) as usize];
            let mut at = bytes_used;
            while at < clear_to {
                let n = ((clear_to - at) as usize).min(zeros.len());
                self.write_at(&zeros[..n], at)?;
                at += n as u64;
            }
        }
        Ok(padded)
    }

    fn append(&mut self, data: &[u8]) -> Result<()> {
        let at = self.pos;
        self.write_at(data, at)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Write `entries` as metadata blocks followed by the array of their positions;
    /// returns where the array starts (what the superblock records).
    fn write_lookup_table(&mut self, entries: &[u8]) -> Result<u64> {
        let pointers = self.write_metadata_blocks(entries)?;
        let start = self.pos;
        let array: Vec<u8> = pointers.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.append(&array)?;
        Ok(start)
    }

    /// Write `entries` as separate metadata blocks; returns where each block starts.
    fn write_metadata_blocks(&mut self, entries: &[u8]) -> Result<Vec<u64>> {
        let mut pointers = Vec::new();
        for chunk in entries.chunks(METADATA_BLOCK) {
            pointers.push(self.pos);
            let mut w = MetaWriter::new(self.options.compression);
            w.write(chunk);
            let block = w.finish();
            self.append(&block)?;
        }
        Ok(pointers)
    }

    fn write_xattrs(&mut self, sets: &[Vec<Xattr>]) -> Result<u64> {
        let mut kv = MetaWriter::new(self.options.compression);
        let mut ids = Vec::new();
        for set in sets {
            let (block, offset) = kv.position();
            let mut size = 0u32;
            for x in set {
                let (kind, prefix_len) = xattr_prefix(&x.name).expect("filtered");
                let name = &x.name[prefix_len..];
                let mut entry = Vec::new();
                entry.extend_from_slice(&kind.to_le_bytes());
                entry.extend_from_slice(&(name.len() as u16).to_le_bytes());
                entry.extend_from_slice(name);
                entry.extend_from_slice(&(x.value.len() as u32).to_le_bytes());
                entry.extend_from_slice(&x.value);
                size += entry.len() as u32;
                kv.write(&entry);
            }
            ids.extend_from_slice(&(block << 16 | offset as u64).to_le_bytes());
            ids.extend_from_slice(&(set.len() as u32).to_le_bytes());
            ids.extend_from_slice(&size.to_le_bytes());
        }
        let kv_start = self.pos;
        let table = kv.finish();
        self.append(&table)?;
        let pointers = self.write_metadata_blocks(&ids)?;
        let start = self.pos;
        let mut header = Vec::new();
        header.extend_from_slice(&kv_start.to_le_bytes());
        header.extend_from_slice(&(sets.len() as u32).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        for p in pointers {
            header.extend_from_slice(&p.to_le_bytes());
        }
        self.append(&header)?;
        Ok(start)
    }

    /// Nodes in post-order (children before their directory), siblings by name.
    fn post_order(&mut self) -> Vec<usize> {
        for n in 0..self.nodes.len() {
            if let Kind::Dir(children) = &self.nodes[n].kind {
                let mut sorted = children.clone();
                sorted.sort_by(|&a, &b| self.nodes[a].name.cmp(&self.nodes[b].name));
                self.nodes[n].kind = Kind::Dir(sorted);
            }
        }
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![(0usize, false)];
        while let Some((n, expanded)) = stack.pop() {
            match &self.nodes[n].kind {
                Kind::Dir(children) if !expanded => {
                    stack.push((n, true));
                    for &c in children.iter().rev() {
                        stack.push((c, false));
                    }
                }
                _ => out.push(n),
            }
        }
        out
    }

    /// The directory table listing of a directory's (sorted) children, and its index
    /// points: (offset in the listing, first name) of every header that mksquashfs's rule
    /// starts because the entries since the previous index point would exceed a metadata
    /// block. Headers also restart at 256 entries, at a change of inode block, and when the
    /// inode number no longer fits the 16-bit delta.
    fn dir_listing(&self, children: &[usize]) -> (Vec<u8>, Vec<(u32, &[u8])>) {
        let mut out = Vec::new();
        let mut index = Vec::new();
        let mut header_at: Option<usize> = None;
        let (mut count, mut start, mut base) = (0u32, 0u64, 0u32);
        let mut index_point = 0usize;
        for &child in children {
            let node = self.target(child);
            let name = self.nodes[child].name.as_slice();
            let entry_bytes = 8 + name.len();
            let delta = node.inode_number as i64 - base as i64;
            let too_big =
                header_at.is_some() && out.len() + entry_bytes - index_point > METADATA_BLOCK;
            if header_at.is_none()
                || count == 256
                || node.inode_ref >> 16 != start
                || delta < i16::MIN as i64
                || delta > i16::MAX as i64
                || too_big
            {
                if let Some(h) = header_at {
                    out[h..h + 4].copy_from_slice(&(count - 1).to_le_bytes());
                }
                if too_big {
                    index.push((out.len() as u32, name));
                    index_point = out.len();
                }
                header_at = Some(out.len());
                count = 0;
                start = node.inode_ref >> 16;
                base = node.inode_number;
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&(start as u32).to_le_bytes());
                out.extend_from_slice(&base.to_le_bytes());
            }
            let delta = (node.inode_number as i64 - base as i64) as i16;
            out.extend_from_slice(&((node.inode_ref & 0xffff) as u16).to_le_bytes());
            out.extend_from_slice(&delta.to_le_bytes());
            out.extend_from_slice(&basic_type(&node.kind).to_le_bytes());
            out.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
            out.extend_from_slice(name);
            count += 1;
        }
        if let Some(h) = header_at {
            out[h..h + 4].copy_from_slice(&(count - 1).to_le_bytes());
        }
        (out, index)
    }

    /// The node that holds the inode of `n` (itself, or a hard link's target).
    fn target(&self, n: usize) -> &Node {
        match self.nodes[n].kind {
            Kind::Link(t) => &self.nodes[t],
            _ => &self.nodes[n],
        }
    }
}

/// Entries in an encoded directory index.
fn index_entries(mut index: &[u8]) -> usize {
    let mut count = 0;
    while index.len() >= 12 {
        let name_len = u32::from_le_bytes(index[8..12].try_into().unwrap()) as usize + 1;
        index = &index[12 + name_len..];
        count += 1;
    }
    count
}

fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir(_) => inode_type::DIR,
        Kind::File(_) => inode_type::FILE,
        Kind::Symlink(_) => inode_type::SYMLINK,
        Kind::BlockDev(_) => inode_type::BLOCK_DEV,
        Kind::CharDev(_) => inode_type::CHAR_DEV,
        Kind::Fifo => inode_type::FIFO,
        Kind::Socket => inode_type::SOCKET,
        Kind::Link(_) => unreachable!("links resolve to their target"),
    }
}

/// Squashfs stores only the user, trusted and security namespaces.
fn xattr_prefix(name: &[u8]) -> Option<(u16, usize)> {
    [
        (b"user.".as_slice(), 0u16),
        (b"trusted.", 1),
        (b"security.", 2),
    ]
    .into_iter()
    .find(|(p, _)| name.starts_with(p) && name.len() > p.len())
    .map(|(p, kind)| (kind, p.len()))
}

impl EntrySink for SquashfsWriter<'_> {
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
        let path = entry.display_path();
        if entry.path.is_empty() {
            if entry.kind != EntryKind::Directory {
                return Err(Error::malformed(
                    "squashfs: the root entry must be a directory",
                ));
            }
            self.nodes[0].meta = entry.metadata.clone();
            return Ok(());
        }
        let kind = match &entry.kind {
            EntryKind::Directory => Kind::Dir(Vec::new()),
            EntryKind::File { size } => {
                let index = self.insert(entry, Kind::File(FileData::default()))?;
                let content = content.ok_or_else(|| {
                    Error::malformed(format!("squashfs: {path}: no content given"))
                })?;
                let data = self.add_file(index, *size, content, &path)?;
                self.nodes[index].kind = Kind::File(data);
                return Ok(());
            }
            EntryKind::Symlink { target } => Kind::Symlink(target.clone()),
            EntryKind::CharDevice { major, minor } => Kind::CharDev(encode_dev(*major, *minor)),
            EntryKind::BlockDevice { major, minor } => Kind::BlockDev(encode_dev(*major, *minor)),
            EntryKind::Fifo => Kind::Fifo,
            EntryKind::Socket => Kind::Socket,
            EntryKind::HardLink { target } => {
                let t = *self.paths.get(target.as_slice()).ok_or_else(|| {
                    Error::malformed(format!(
                        "squashfs: {path}: hard link to {} which was not added",
                        display_path(target)
                    ))
                })?;
                let t = match self.nodes[t].kind {
                    Kind::Link(tt) => tt,
                    Kind::Dir(_) => {
                        return Err(Error::malformed(format!(
                            "squashfs: {path}: hard link to a directory"
                        )));
                    }
                    _ => t,
                };
                Kind::Link(t)
            }
        };
        self.insert(entry, kind)?;
        Ok(())
    }
}
