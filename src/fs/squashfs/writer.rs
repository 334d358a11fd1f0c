//! The squashfs writer. See the module documentation for the layout choices; the on-disk
//! structures it fills in are in [`super::raw`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::compress::{BlockCompressor, Compression};
use super::raw::{
    self, DirEntry, DirHeader, DirIndex, DirInode, FileInode, FragmentEntry, Inode, InodeBody,
    METADATA_BLOCK, MetadataHeader, NO_FRAGMENT, NO_TABLE, NO_XATTR, SUPERBLOCK_LEN, Superblock,
    XattrEntry, XattrId, XattrTableHeader, encode_dev, flags, inode_type,
};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, Metadata, display_path};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Compressor of data and metadata blocks.
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
    /// Same content as the file of node `usize`, whose blocks it shares; its own fields
    /// are filled in from that file's once every block is written (see `resolve_dups`).
    dup_of: Option<usize>,
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
    /// An empty marker in the block order: the file of `node` starts here. Its position is
    /// known only when every earlier block is written (blocks are written in order), and
    /// does not depend on how fast the workers are, so the image stays deterministic.
    FileStart {
        node: usize,
    },
    FileBlock {
        node: usize,
        index: usize,
    },
    /// An empty marker after the last block of the file of `node`: every block of it is
    /// written, so whether it duplicates an earlier file can be decided (see `file_end`).
    FileEnd {
        node: usize,
    },
    Fragment {
        index: usize,
    },
}

/// A block as a worker hands it back.
struct Block {
    /// The compressed block, or the raw one if compressing did not shrink it.
    data: Vec<u8>,
    compressed: bool,
    /// Hash of the raw block, for the blocks of files (duplicate detection): computed
    /// on the workers, in parallel, rather than on the thread that reads the files.
    digest: Option<ContentHash>,
}

/// A finished block, or why the worker could not produce it.
type Compressed = Result<Block>;

/// Data blocks compressed on worker threads, handed back in submission order.
struct Pipeline {
    /// (sequence number, raw block, whether its digest is wanted).
    jobs: Option<SyncSender<(u64, Vec<u8>, bool)>>,
    results: Receiver<(u64, Compressed)>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    ready: BTreeMap<u64, Block>,
    dests: BTreeMap<u64, Dest>,
    /// The first failure of a worker: every later call fails the same way (the failed
    /// block will never arrive, so waiting for it would hang).
    failed: Option<(ErrorKind, String)>,
    /// Test hook: the worker that takes block `fail_at` panics.
    #[cfg(test)]
    fail_at: Arc<std::sync::atomic::AtomicU64>,
}

/// What identifies content for duplicate detection: its BLAKE3 hash. A cryptographic hash,
/// so that a crafted file cannot pass for another (a layer's author could otherwise make a
/// file of another layer show its content), and about three times as fast as SHA-256 on
/// this work, which hashes every byte of every file. The image never records it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct ContentHash([u8; 32]);

impl ContentHash {
    fn of(data: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(data).as_bytes())
    }
}

/// Compress one data block as the worker threads do: compressed if that makes it smaller
/// (as the compressor itself decides, with no guess from samples), raw otherwise.
fn compress_block(compressor: &mut BlockCompressor, raw: Vec<u8>, digest: bool) -> Compressed {
    let digest = digest.then(|| ContentHash::of(&raw));
    let packed = compressor.compress(&raw)?;
    let (data, compressed) = if packed.len() < raw.len() {
        (packed, true)
    } else {
        (raw, false)
    };
    Ok(Block {
        data,
        compressed,
        digest,
    })
}

/// Whether every byte of `data` is zero. An OR over 4 KiB at a time, which the compiler
/// vectorizes (a byte loop that stops at the first non-zero byte does not); large holes
/// are read at memory speed.
fn all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// A panic's message as one line.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    text.replace('\n', " ")
}

impl Pipeline {
    fn new(compression: Compression, block_size: u32, threads: usize) -> Pipeline {
        let (job_tx, job_rx) = sync_channel::<(u64, Vec<u8>, bool)>(threads * 2);
        let (res_tx, res_rx) = channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        #[cfg(test)]
        let fail_at = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = res_tx.clone();
                #[cfg(test)]
                let fail_at = fail_at.clone();
                std::thread::spawn(move || {
                    // One compressor per thread, kept for every block it compresses. A
                    // compressor that cannot be made (a level it lacks) fails each block.
                    let mut compressor = compression
                        .compressor(block_size)
                        .map_err(|e| (e.kind(), e.to_string()));
                    loop {
                        // The lock is never held across a panic (only around `recv`), so
                        // it cannot be poisoned; if it were, stop like a closed channel.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, raw, digest)) = job else { return };
                        // A panicking compressor must not leave the writer waiting for a
                        // block that never comes: it becomes this block's error.
                        // After a panic the compressor is not used for this block again: the
                        // block's error stops the writer.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            #[cfg(test)]
                            if seq == fail_at.load(std::sync::atomic::Ordering::Relaxed) {
                                panic!("injected compressor failure at block {seq}");
                            }
                            match &mut compressor {
                                Ok(c) => compress_block(c, raw, digest),
                                Err((kind, message)) => Err(Error::new(*kind, message.clone())),
                            }
                        }))
                        .unwrap_or_else(|payload| {
                            Err(Error::io(
                                "squashfs: compression worker",
                                std::io::Error::other(format!(
                                    "panicked: {}",
                                    panic_message(payload.as_ref())
                                )),
                            ))
                        });
                        if tx.send((seq, result)).is_err() {
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
            failed: None,
            #[cfg(test)]
            fail_at,
        }
    }

    /// Fails if a worker failed before.
    fn check(&self) -> Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Record a finished block (or the worker's failure, which is returned).
    fn receive(&mut self, seq: u64, result: Compressed) -> Result<()> {
        match result {
            Ok(block) => {
                self.ready.insert(seq, block);
                Ok(())
            }
            Err(e) => {
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

fn stopped() -> Error {
    Error::io(
        "squashfs: compression worker",
        std::io::Error::other("stopped"),
    )
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
    compressor: BlockCompressor,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Compressed start of every flushed block.
    starts: Vec<u64>,
}

impl MetaWriter {
    fn new(options: &WriterOptions) -> Result<MetaWriter> {
        Ok(MetaWriter {
            compressor: options.compression.compressor(options.block_size)?,
            buf: Vec::with_capacity(METADATA_BLOCK),
            out: Vec::new(),
            starts: Vec::new(),
        })
    }

    /// Position of the next byte: (compressed block start, offset in the block).
    fn position(&self) -> (u64, u16) {
        (self.out.len() as u64, self.buf.len() as u16)
    }

    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = (METADATA_BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == METADATA_BLOCK {
                self.flush_block()?;
            }
        }
        Ok(())
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

    fn flush_block(&mut self) -> Result<()> {
        self.starts.push(self.out.len() as u64);
        let packed = self.compressor.compress(&self.buf)?;
        let (data, compressed) = if packed.len() < self.buf.len() {
            (&packed, true)
        } else {
            (&self.buf, false)
        };
        let header = MetadataHeader {
            len: data.len() as u16,
            compressed,
        };
        self.out.extend_from_slice(&header.encode());
        self.out.extend_from_slice(data);
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        if !self.buf.is_empty() {
            self.flush_block()?;
        }
        Ok(self.out)
    }
}

/// Every distinct uid and gid, in order of first use; inodes store indexes.
#[derive(Default)]
struct IdTable {
    ids: Vec<u32>,
    index_of: HashMap<u32, u16>,
}

impl IdTable {
    /// The index of `id`, added if new. Squashfs counts ids in 16 bits: a tree with more
    /// than 65,535 distinct uids and gids cannot be written (an error, never a silently
    /// wrapped index).
    fn index(&mut self, id: u32) -> Result<u16> {
        if let Some(&i) = self.index_of.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.ids.len())
            .ok()
            .filter(|&i| i < u16::MAX)
            .ok_or_else(|| {
                Error::unsupported(
                    "squashfs: more than 65,535 distinct owners and groups (the format's id table limit)",
                )
            })?;
        self.ids.push(id);
        self.index_of.insert(id, i);
        Ok(i)
    }
}

/// A node's xattrs that squashfs can store: (namespace code, rest of the name, value).
type XattrSet = Vec<(u16, Vec<u8>, Vec<u8>)>;

/// Distinct xattr sets, in order of first use; inodes store indexes.
#[derive(Default)]
struct XattrSets {
    sets: Vec<XattrSet>,
    lookup: HashMap<XattrSet, u32>,
}

impl XattrSets {
    /// The index of a node's set, [`NO_XATTR`] if none of its xattrs can be stored.
    fn index(&mut self, meta: &Metadata) -> u32 {
        let set: XattrSet = meta
            .xattrs
            .iter()
            .filter_map(|x| {
                raw::split_xattr_name(&x.name)
                    .map(|(kind, rest)| (kind, rest.to_vec(), x.value.clone()))
            })
            .collect();
        if set.is_empty() {
            return NO_XATTR;
        }
        *self.lookup.entry(set.clone()).or_insert_with(|| {
            self.sets.push(set);
            (self.sets.len() - 1) as u32
        })
    }
}

/// The encoded inode and directory tables, and what the later tables need.
struct MetadataTables {
    inodes: Vec<u8>,
    directories: Vec<u8>,
    ids: IdTable,
    xattrs: XattrSets,
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
    fragments: Vec<FragmentEntry>,
    /// Small files already stored, by (size, digest): (fragment, offset in it).
    fragment_dups: HashMap<(u64, ContentHash), (u32, u32)>,
    /// Files of whole blocks already stored, by (size, digest of the block digests): the
    /// node holding them.
    block_dups: HashMap<(u64, ContentHash), usize>,
    /// The digests of the blocks written so far of the file being written (by index;
    /// `None` for sparse blocks), for duplicate detection at its end marker.
    block_digests: Vec<Option<ContentHash>>,
    /// The buffer blocks are read into (see `store_file`).
    read_buf: Vec<u8>,
    /// Issues every write, when set (see [`with_write_hook`](Self::with_write_hook)).
    write_hook: Option<WriteHook>,
}

/// A positioned write through which a caller routes the writer's writes.
pub use crate::fs::target::WriteHook;

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::io(format!("squashfs: {what}"), e)
}

impl<'f> SquashfsWriter<'f> {
    /// Start an image at `offset` in `file`. Data is written as entries arrive; the tables
    /// and the superblock at [`finish`](Self::finish).
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
            pipeline: Pipeline::new(options.compression, options.block_size, threads),
            options,
            pos,
            high_water: pos,
            nodes: vec![root],
            paths,
            fragment_buf: Vec::new(),
            fragments: Vec::new(),
            fragment_dups: HashMap::new(),
            block_dups: HashMap::new(),
            block_digests: Vec::new(),
            read_buf: Vec::new(),
            write_hook: None,
        })
    }

    /// Issue every write through `hook` (an edit's journal makes each one a fault point and
    /// records it for its crash tests).
    pub fn with_write_hook(mut self, hook: WriteHook) -> Self {
        self.write_hook = Some(hook);
        self
    }

    fn write_at(&mut self, data: &[u8], at: u64) -> Result<()> {
        match self.write_hook {
            Some(hook) => hook(self.file, data, self.offset + at),
            None => self.file.write_all_at(data, self.offset + at),
        }
        .map_err(|e| io_err("writing", e))?;
        self.high_water = self.high_water.max(at + data.len() as u64);
        Ok(())
    }

    /// Blocks submitted but not yet written at most, per compression thread: bounds the
    /// memory that blocks waiting behind a slow one can take, whatever the tree.
    const IN_FLIGHT_PER_THREAD: u64 = 4;

    fn submit(&mut self, raw: Vec<u8>, dest: Dest) -> Result<()> {
        self.pipeline.check()?;
        let seq = self.pipeline.next_seq;
        self.pipeline.next_seq += 1;
        self.pipeline.dests.insert(seq, dest);
        self.pipeline
            .jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send((seq, raw, matches!(dest, Dest::FileBlock { .. })))
            .map_err(|_| stopped())?;
        let limit = Self::IN_FLIGHT_PER_THREAD * self.pipeline.workers.len() as u64;
        self.drain_until(self.pipeline.next_seq.saturating_sub(limit))
    }

    /// Put an empty marker in the block order (no compression needed).
    fn mark(&mut self, dest: Dest) -> Result<()> {
        self.pipeline.check()?;
        let seq = self.pipeline.next_seq;
        self.pipeline.next_seq += 1;
        self.pipeline.dests.insert(seq, dest);
        self.pipeline.ready.insert(
            seq,
            Block {
                data: Vec::new(),
                compressed: false,
                digest: None,
            },
        );
        Ok(())
    }

    /// Wait until every submitted block is written.
    fn drain_all(&mut self) -> Result<()> {
        self.drain_until(self.pipeline.next_seq)
    }

    /// Write finished blocks in order, waiting until every block before `target` is
    /// written.
    fn drain_until(&mut self, target: u64) -> Result<()> {
        self.pipeline.check()?;
        loop {
            while let Ok((seq, result)) = self.pipeline.results.try_recv() {
                self.pipeline.receive(seq, result)?;
            }
            while let Some(Block {
                data,
                compressed,
                digest,
            }) = self.pipeline.ready.remove(&self.pipeline.next_write)
            {
                let seq = self.pipeline.next_write;
                self.pipeline.next_write += 1;
                let dest = self.pipeline.dests.remove(&seq);
                let at = self.pos;
                self.write_at(&data, at)?;
                self.pos += data.len() as u64;
                let size = raw::block_size_word(data.len() as u32, compressed);
                match dest {
                    Some(Dest::FileStart { node }) => {
                        if let Kind::File(f) = &mut self.nodes[node].kind {
                            f.blocks_start = at;
                        }
                    }
                    Some(Dest::FileBlock { node, index }) => {
                        if let Kind::File(f) = &mut self.nodes[node].kind
                            && let Some(word) = f.block_sizes.get_mut(index)
                        {
                            *word = size;
                        }
                        if self.block_digests.len() <= index {
                            self.block_digests.resize(index + 1, None);
                        }
                        self.block_digests[index] = digest;
                    }
                    Some(Dest::FileEnd { node }) => self.file_end(node),
                    Some(Dest::Fragment { index }) => {
                        if let Some(fragment) = self.fragments.get_mut(index) {
                            *fragment = FragmentEntry { start: at, size };
                        }
                    }
                    // Cannot happen: `submit` and `mark` record a destination for every
                    // block.
                    None => {}
                }
            }
            if self.pipeline.next_write >= target {
                return Ok(());
            }
            let (seq, result) = self.pipeline.results.recv().map_err(|_| stopped())?;
            self.pipeline.receive(seq, result)?;
        }
    }

    fn flush_fragment(&mut self) -> Result<()> {
        if self.fragment_buf.is_empty() {
            return Ok(());
        }
        let index = self.fragments.len();
        self.fragments.push(FragmentEntry { start: 0, size: 0 });
        let raw = std::mem::take(&mut self.fragment_buf);
        self.submit(raw, Dest::Fragment { index })
    }

    /// Store the content of the file of `node`. Blocks of a file larger than a block are
    /// submitted as they are read, without waiting for earlier files' blocks, so the
    /// compression threads never run dry between files; the block sizes and the start
    /// are filled in as the blocks are written (see `drain_until`), and a duplicate is
    /// found when its last block is (see `file_end`).
    fn store_file(
        &mut self,
        node: usize,
        size: u64,
        content: &mut dyn Read,
        path: &str,
        holes: Option<bool>,
    ) -> Result<()> {
        // Zero blocks are always stored as sparse blocks (no data); they count as the
        // file's sparse bytes only when its source stores it with holes, or cannot tell.
        let count_sparse = holes != Some(false);
        let bs = self.options.block_size as u64;
        let read_err =
            |e: std::io::Error| Error::io(format!("squashfs: reading the content of {path}"), e);
        self.nodes[node].kind = Kind::File(FileData {
            size,
            ..FileData::default()
        });
        if size == 0 {
            return Ok(());
        }
        if size < bs {
            // Small file: packed into a fragment block (as mksquashfs does); the digest of
            // the content identifies duplicates.
            let mut buf = vec![0u8; size as usize];
            content.read_exact(&mut buf).map_err(read_err)?;
            let key = (size, ContentHash::of(&buf));
            let frag = match self.fragment_dups.get(&key) {
                Some(&frag) => frag,
                None => {
                    if self.fragment_buf.len() + buf.len() > bs as usize {
                        self.flush_fragment()?;
                    }
                    let frag = (self.fragments.len() as u32, self.fragment_buf.len() as u32);
                    self.fragment_buf.extend_from_slice(&buf);
                    self.fragment_dups.insert(key, frag);
                    frag
                }
            };
            if let Kind::File(f) = &mut self.nodes[node].kind {
                f.fragment = Some(frag);
            }
            return Ok(());
        }
        self.mark(Dest::FileStart { node })?;
        // Blocks are read into one buffer, kept from file to file: a sparse block (all
        // zeros, as in holes) then costs no allocation, and no buffer is zeroed before it
        // is read into. A block to compress is copied out of it.
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.resize(bs as usize, 0);
        // The block size words grow as blocks are read: a size the content does not have
        // ends in a read error, never in a huge allocation.
        for index in 0..size.div_ceil(bs) {
            let n = (size - index * bs).min(bs) as usize;
            let block = &mut buf[..n];
            content.read_exact(block).map_err(read_err)?;
            let sparse = all_zero(block);
            if let Kind::File(f) = &mut self.nodes[node].kind {
                // Sparse blocks keep 0; others get theirs when written.
                f.block_sizes.push(0);
                if sparse && count_sparse {
                    f.sparse += n as u64;
                }
            }
            if !sparse {
                let index = index as usize;
                let block = block.to_vec();
                self.submit(block, Dest::FileBlock { node, index })?;
            }
        }
        self.read_buf = buf;
        self.mark(Dest::FileEnd { node })
    }

    /// Every block of the file of `node` is written (and nothing after it): if its
    /// content is that of an earlier file, rewind over its blocks and point it at the
    /// earlier file's. The content is identified by the size and the hashes of
    /// the blocks (a marker for each sparse one), which the workers computed.
    fn file_end(&mut self, node: usize) {
        let Kind::File(f) = &self.nodes[node].kind else {
            return;
        };
        let mut material = Vec::with_capacity(8 + f.block_sizes.len() * 33);
        material.extend_from_slice(&f.size.to_le_bytes());
        for index in 0..f.block_sizes.len() {
            match self.block_digests.get(index).copied().flatten() {
                Some(digest) => {
                    material.push(1);
                    material.extend_from_slice(&digest.0);
                }
                None => material.push(0),
            }
        }
        self.block_digests.clear();
        let key = (f.size, ContentHash::of(&material));
        match self.block_dups.get(&key) {
            None => {
                self.block_dups.insert(key, node);
            }
            Some(&original) => {
                self.pos = f.blocks_start;
                self.nodes[node].kind = Kind::File(FileData {
                    size: f.size,
                    dup_of: Some(original),
                    ..FileData::default()
                });
            }
        }
    }

    /// Give every duplicate file its original's blocks, once all blocks are written.
    fn resolve_dups(&mut self) {
        for n in 0..self.nodes.len() {
            if let Kind::File(FileData {
                dup_of: Some(original),
                ..
            }) = self.nodes[n].kind
                && let Kind::File(data) = &self.nodes[original].kind
            {
                // The original's sparse bytes too, whether or not the copy's source has
                // holes: mksquashfs gives a duplicate the original's file record.
                let data = FileData {
                    dup_of: None,
                    ..data.clone()
                };
                self.nodes[n].kind = Kind::File(data);
            }
        }
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
        self.flush_fragment()?;
        self.drain_all()?;
        self.resolve_dups();
        let post_order = self.post_order();
        let order = self.inode_order(&post_order);
        let inode_count = self.number_inodes(&order);
        self.count_links();
        let tables = self.encode_inodes(&order, inode_count)?;
        // Tables, in mksquashfs order: inodes, directories, fragments, ids, xattrs.
        let inode_table = self.append(&tables.inodes)?;
        let directory_table = self.append(&tables.directories)?;
        let fragment_table = self.write_fragment_table()?;
        let id_table = self.write_lookup_table(&raw::encode_entries(&tables.ids.ids))?;
        let xattr_table = self.write_xattr_table(&tables.xattrs.sets)?;
        let bytes_used = self.pos;
        let mut sb_flags = flags::DUPLICATES;
        if tables.xattrs.sets.is_empty() {
            sb_flags |= flags::NO_XATTRS;
        }
        if self.options.compression.options().is_some() {
            sb_flags |= flags::COMPRESSOR_OPTIONS;
        }
        let sb = Superblock {
            inode_count,
            mkfs_time: self.options.mkfs_time.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as u32)
            }),
            block_size: self.options.block_size,
            fragment_count: self.fragments.len() as u32,
            compression_id: self.options.compression.id(),
            block_log: self.options.block_size.trailing_zeros() as u16,
            flags: sb_flags,
            id_count: tables.ids.ids.len() as u16,
            version: (4, 0),
            root_inode: self.nodes[0].inode_ref,
            bytes_used,
            id_table,
            xattr_table,
            inode_table,
            directory_table,
            fragment_table,
            export_table: NO_TABLE,
        };
        self.write_superblock(&sb)?;
        self.pad(bytes_used)
    }

    /// The order inodes are numbered and written in: `post_order` with every hard-link
    /// group's inode moved to its first name in that order (where mksquashfs, which scans
    /// in that order, meets it) and the other names left out. A directory's listing is
    /// encoded when its inode is, and must then know where each child's inode lies: a
    /// name linking to a file that sorts later (a tar layer gives entries in any order)
    /// would otherwise point at an inode not yet written.
    fn inode_order(&self, post_order: &[usize]) -> Vec<usize> {
        let mut placed = vec![false; self.nodes.len()];
        let mut out = Vec::with_capacity(post_order.len());
        for &n in post_order {
            let inode = match self.nodes[n].kind {
                Kind::Link(target) => target,
                _ => n,
            };
            if !placed[inode] {
                placed[inode] = true;
                out.push(inode);
            }
        }
        out
    }

    /// Number the inodes of `order` (see `inode_order`: post-order, children first, root
    /// last, as mksquashfs does; no hard-link names) from 1; returns the inode count.
    fn number_inodes(&mut self, order: &[usize]) -> u32 {
        let mut number = 0u32;
        for &n in order {
            number += 1;
            self.nodes[n].inode_number = number;
        }
        number
    }

    /// Link counts: directories 2 + subdirectories; others count their names.
    fn count_links(&mut self) {
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
    }

    /// Encode every inode in `order` (see `inode_order`; a hard-link name there is an
    /// internal error, from `inode_body`) into the inode table, each directory's listing into
    /// the directory table first; records each node's inode reference.
    fn encode_inodes(&mut self, order: &[usize], inode_count: u32) -> Result<MetadataTables> {
        let mut ids = IdTable::default();
        let mut xattrs = XattrSets::default();
        let mut inodes = MetaWriter::new(&self.options)?;
        let mut dirs = MetaWriter::new(&self.options)?;
        let mut parent_of = vec![0usize; self.nodes.len()];
        for n in 0..self.nodes.len() {
            if let Kind::Dir(children) = &self.nodes[n].kind {
                for &c in children {
                    parent_of[c] = n;
                }
            }
        }
        let mut bytes = Vec::new();
        for &n in order {
            let node = &self.nodes[n];
            let xattr = xattrs.index(&node.meta);
            let uid_index = ids.index(node.meta.uid)?;
            let gid_index = ids.index(node.meta.gid)?;
            let parent = if n == 0 {
                inode_count + 1
            } else {
                self.nodes[parent_of[n]].inode_number
            };
            let (block, offset) = inodes.position();
            let (extended, body) = self.inode_body(n, xattr, parent, &mut dirs)?;
            let node = &self.nodes[n];
            let inode = Inode {
                extended,
                permissions: (node.meta.permissions & 0o7777) as u16,
                uid_index,
                gid_index,
                // Squashfs times are unsigned 32-bit; wrap as mksquashfs does.
                mtime: node.meta.mtime as u32,
                number: node.inode_number,
                nlink: node.nlink,
                xattr,
                body,
            };
            bytes.clear();
            inode.encode(&mut bytes);
            inodes.write(&bytes)?;
            self.nodes[n].inode_ref = raw::metadata_ref(block, offset);
        }
        Ok(MetadataTables {
            inodes: inodes.finish()?,
            directories: dirs.finish()?,
            ids,
            xattrs,
        })
    }

    /// The inode form (extended or not) and body of node `n`, choosing the basic form
    /// wherever mksquashfs does. A directory's listing is written to `dirs` here.
    fn inode_body(
        &self,
        n: usize,
        xattr: u32,
        parent: u32,
        dirs: &mut MetaWriter,
    ) -> Result<(bool, InodeBody)> {
        let node = &self.nodes[n];
        let has_xattrs = xattr != NO_XATTR;
        Ok(match &node.kind {
            Kind::Dir(children) => {
                let (start_block, offset) = dirs.position();
                let (listing, index_points) = self.dir_listing(children);
                let listing_start = dirs.uncompressed_len();
                dirs.write(&listing)?;
                let file_size = listing.len() as u64 + 3;
                // Directory index: where each index point's header lies in the table.
                let index: Vec<DirIndex> = index_points
                    .into_iter()
                    .map(|(offset, name)| {
                        let block = (listing_start + offset as u64) / METADATA_BLOCK as u64;
                        DirIndex {
                            index: offset,
                            start: dirs.block_start(block as usize) as u32,
                            name: name.to_vec(),
                        }
                    })
                    .collect();
                // mksquashfs's rule (sort_directory, create_inode): the extended form for
                // xattrs, more than 256 entries, or entries whose names plus 8 bytes each
                // reach a metadata block; the basic form (which has no index) otherwise,
                // even when the headers push the listing over a block.
                let entry_bytes: usize =
                    children.iter().map(|&c| 8 + self.nodes[c].name.len()).sum();
                let extended = has_xattrs
                    || children.len() > 256
                    || entry_bytes >= METADATA_BLOCK
                    || file_size > u16::MAX as u64;
                let index = if extended { index } else { Vec::new() };
                let dir = DirInode {
                    start_block: start_block as u32,
                    offset,
                    file_size: file_size as u32,
                    parent,
                    index,
                };
                (extended, InodeBody::Dir(dir))
            }
            Kind::File(f) => {
                let (fragment, fragment_offset) = f.fragment.unwrap_or((NO_FRAGMENT, 0));
                // A file with sparse blocks takes the extended form, which records the
                // sparse bytes: unsquashfs restores holes only for such an inode (as
                // mksquashfs writes a file that is sparse on disk, wholly a hole too).
                let basic = !has_xattrs
                    && node.nlink == 1
                    && f.sparse == 0
                    && f.size <= u32::MAX as u64
                    && f.blocks_start <= u32::MAX as u64;
                // mksquashfs never records a file as wholly sparse.
                let sparse = if f.sparse >= f.size && f.size > 0 {
                    f.size - 1
                } else {
                    f.sparse
                };
                let file = FileInode {
                    blocks_start: f.blocks_start,
                    file_size: f.size,
                    sparse,
                    fragment,
                    fragment_offset,
                    block_sizes: f.block_sizes.clone(),
                };
                (!basic, InodeBody::File(file))
            }
            Kind::Symlink(target) => (
                has_xattrs,
                InodeBody::Symlink {
                    target: target.clone(),
                },
            ),
            Kind::CharDev(rdev) => (has_xattrs, InodeBody::CharDevice { rdev: *rdev }),
            Kind::BlockDev(rdev) => (has_xattrs, InodeBody::BlockDevice { rdev: *rdev }),
            Kind::Fifo => (has_xattrs, InodeBody::Fifo),
            Kind::Socket => (has_xattrs, InodeBody::Socket),
            Kind::Link(_) => {
                return Err(Error::malformed(format!(
                    "squashfs: node {n}: a hard link has no inode of its own"
                )));
            }
        })
    }

    /// Append `data` at the current position; returns where it starts.
    fn append(&mut self, data: &[u8]) -> Result<u64> {
        let at = self.pos;
        self.write_at(data, at)?;
        self.pos += data.len() as u64;
        Ok(at)
    }

    /// The fragment table, or [`NO_TABLE`] without fragments.
    fn write_fragment_table(&mut self) -> Result<u64> {
        if self.fragments.is_empty() {
            return Ok(NO_TABLE);
        }
        let entries = raw::encode_entries(&self.fragments);
        self.write_lookup_table(&entries)
    }

    /// Write `entries` as metadata blocks followed by the array of their positions;
    /// returns where the array starts (what the superblock records).
    fn write_lookup_table(&mut self, entries: &[u8]) -> Result<u64> {
        let pointers = self.write_metadata_blocks(entries)?;
        self.append(&raw::encode_entries(&pointers))
    }

    /// Write `entries` as separate metadata blocks; returns where each block starts.
    fn write_metadata_blocks(&mut self, entries: &[u8]) -> Result<Vec<u64>> {
        let mut pointers = Vec::new();
        for chunk in entries.chunks(METADATA_BLOCK) {
            let mut w = MetaWriter::new(&self.options)?;
            w.write(chunk)?;
            let block = w.finish()?;
            pointers.push(self.append(&block)?);
        }
        Ok(pointers)
    }

    /// The xattr key/value table, the xattr id table and its header; returns where the
    /// header starts, or [`NO_TABLE`] without xattrs.
    fn write_xattr_table(&mut self, sets: &[XattrSet]) -> Result<u64> {
        if sets.is_empty() {
            return Ok(NO_TABLE);
        }
        let mut kv = MetaWriter::new(&self.options)?;
        let mut ids = Vec::with_capacity(sets.len());
        let mut entries = Vec::new();
        for set in sets {
            let (block, offset) = kv.position();
            entries.clear();
            for (kind, name, value) in set {
                XattrEntry::encode(*kind, name, value, &mut entries);
            }
            kv.write(&entries)?;
            ids.push(XattrId {
                xattr_ref: raw::metadata_ref(block, offset),
                count: set.len() as u32,
                size: entries.len() as u32,
            });
        }
        let kv_start = self.pos;
        let table = kv.finish()?;
        self.append(&table)?;
        let pointers = self.write_metadata_blocks(&raw::encode_entries(&ids))?;
        let mut header = Vec::new();
        XattrTableHeader {
            kv_start,
            count: sets.len() as u32,
        }
        .encode(&mut header);
        header.extend_from_slice(&raw::encode_entries(&pointers));
        self.append(&header)
    }

    /// The superblock and, when the compressor has them, its options (a metadata block
    /// stored uncompressed) right after it.
    fn write_superblock(&mut self, sb: &Superblock) -> Result<()> {
        self.write_at(&sb.encode(), 0)?;
        if let Some(opts) = self.options.compression.options() {
            let header = MetadataHeader {
                len: opts.len() as u16,
                compressed: false,
            };
            let mut block = header.encode().to_vec();
            block.extend_from_slice(&opts);
            self.write_at(&block, SUPERBLOCK_LEN as u64)?;
        }
        Ok(())
    }

    /// Pad to 4 KiB with zeros, and zero anything a rewound duplicate left beyond; returns
    /// the padded length.
    fn pad(&mut self, bytes_used: u64) -> Result<u64> {
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
        // Runs of entries under one header; `start` kept whole for the comparison.
        let mut runs: Vec<(DirHeader, u64, Vec<DirEntry<'_>>)> = Vec::new();
        let mut index = Vec::new();
        let mut len = 0usize;
        let mut index_point = 0usize;
        for &child in children {
            let node = self.target(child);
            let name = self.nodes[child].name.as_slice();
            let entry = |base: u32| DirEntry {
                offset: (node.inode_ref & 0xffff) as u16,
                inode_delta: (node.inode_number as i64 - base as i64) as i16,
                kind: basic_type(&node.kind),
                name,
            };
            let entry_len = entry(0).len();
            let too_big = !runs.is_empty() && len + entry_len - index_point > METADATA_BLOCK;
            let new_run = match runs.last() {
                None => true,
                Some((header, start, _)) => {
                    let delta = node.inode_number as i64 - header.inode_number as i64;
                    header.count == raw::MAX_DIR_HEADER_ENTRIES
                        || node.inode_ref >> 16 != *start
                        || delta < i16::MIN as i64
                        || delta > i16::MAX as i64
                        || too_big
                }
            };
            if new_run {
                if too_big {
                    index.push((len as u32, name));
                    index_point = len;
                }
                let start = node.inode_ref >> 16;
                let header = DirHeader {
                    count: 0,
                    start: start as u32,
                    inode_number: node.inode_number,
                };
                runs.push((header, start, Vec::new()));
                len += DirHeader::LEN;
            }
            if let Some((header, _, entries)) = runs.last_mut() {
                entries.push(entry(header.inode_number));
                header.count += 1;
                len += entry_len;
            }
        }
        let mut out = Vec::with_capacity(len);
        for (header, _, entries) in &runs {
            header.encode(&mut out);
            for e in entries {
                e.encode(&mut out);
            }
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

/// The basic inode type a directory entry records for a node (a link's target's).
fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir(_) => inode_type::DIR,
        Kind::File(_) => inode_type::FILE,
        Kind::Symlink(_) => inode_type::SYMLINK,
        Kind::BlockDev(_) => inode_type::BLOCK_DEV,
        Kind::CharDev(_) => inode_type::CHAR_DEV,
        Kind::Fifo => inode_type::FIFO,
        Kind::Socket => inode_type::SOCKET,
        // An invariant, not input: a link is resolved to its target before it is listed
        // (see `target`), and `add_entry` never makes a link point at a link.
        Kind::Link(_) => unreachable!("links resolve to their target"),
    }
}
impl SquashfsWriter<'_> {
    /// Add one entry; `holes` as [`EntrySink::add_file`] takes it.
    fn add(
        &mut self,
        entry: &Entry,
        content: Option<&mut dyn Read>,
        holes: Option<bool>,
    ) -> Result<()> {
        // Between entries, a stop asked by a signal is honoured.
        crate::interrupt::check()?;
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
                return self.store_file(index, *size, content, &path, holes);
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

impl EntrySink for SquashfsWriter<'_> {
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
        self.add(entry, content, None)
    }

    fn add_file(
        &mut self,
        entry: &Entry,
        content: &mut dyn Read,
        holes: Option<bool>,
    ) -> Result<()> {
        self.add(entry, Some(content), holes)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn more_owners_than_the_id_table_holds_is_an_error() {
        let mut ids = IdTable::default();
        for id in 0..65_535u32 {
            assert_eq!(ids.index(id * 7).unwrap(), id as u16);
        }
        // Known ids still resolve; one more distinct id does not fit.
        assert_eq!(ids.index(7).unwrap(), 1);
        let err = ids.index(1_000_000).unwrap_err();
        assert!(err.to_string().contains("65,535"), "{err}");
    }

    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;

    fn file_entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File { size },
            metadata: Metadata::default(),
        }
    }

    /// Runs `f` on its own thread; the test fails if `f` has not returned within a minute
    /// (the writer hung).
    fn without_hanging(f: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the writer hung"),
            // The thread panicked: its assertion failed (the message is printed above).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("assertion failed"),
        }
    }

    /// Data that compresses well, `blocks` blocks of 4 KiB.
    fn compressible(blocks: usize) -> Vec<u8> {
        (0..blocks * 4096).map(|i| (i % 251) as u8).collect()
    }

    /// Write `files` (name, content) with 4 KiB blocks on `threads` threads; returns the
    /// image's length and what our reader reads back, by name.
    fn write_and_read(
        files: &[(&str, &[u8])],
        threads: usize,
    ) -> (u64, std::collections::BTreeMap<String, Vec<u8>>) {
        use crate::fs::entry::EntrySource;
        let file = tempfile::tempfile().unwrap();
        let options = WriterOptions {
            block_size: 4096,
            threads,
            mkfs_time: Some(0),
            ..WriterOptions::default()
        };
        let mut w = SquashfsWriter::new(&file, 0, options).unwrap();
        for (name, data) in files {
            w.add_entry(&file_entry(name, data.len() as u64), Some(&mut &data[..]))
                .unwrap();
        }
        let len = w.finish().unwrap();
        let reader = super::super::SquashfsReader::open(&file, 0, len).unwrap();
        let mut walk = reader.walk().unwrap();
        let mut got = std::collections::BTreeMap::new();
        while let Some(entry) = walk.next_entry().unwrap() {
            if let EntryKind::File { .. } = entry.kind {
                let mut data = Vec::new();
                walk.read_content().unwrap().read_to_end(&mut data).unwrap();
                got.insert(entry.display_path(), data);
            }
        }
        (len, got)
    }

    #[test]
    fn a_duplicate_file_is_stored_once_even_when_its_blocks_were_already_written() {
        // 200 blocks, far more than the blocks in flight: the copy's blocks are written
        // before its block digests show it is a copy; they must be rewound, and the copy
        // point at the original's blocks. Sparse blocks count in the identity too.
        let a: Vec<u8> = (0..200 * 4096u32)
            .map(|i| (i / 7 % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let mut c = a.clone();
        c[123_456] ^= 1;
        let sparse_then_data: Vec<u8> = (0..3 * 4096u32)
            .map(|i| if i < 8192 { 0 } else { i as u8 })
            .collect();
        for threads in [1, 3] {
            let (with_copy, got) = write_and_read(
                &[
                    ("a", &a),
                    ("b", &a),
                    ("c", &c),
                    ("s", &sparse_then_data),
                    ("t", &sparse_then_data),
                ],
                threads,
            );
            assert_eq!(got["/a"], a);
            assert_eq!(got["/b"], a);
            assert_eq!(got["/c"], c);
            assert_eq!(got["/s"], sparse_then_data);
            assert_eq!(got["/t"], sparse_then_data);
            let (without, _) =
                write_and_read(&[("a", &a), ("c", &c), ("s", &sparse_then_data)], threads);
            assert!(
                with_copy <= without + 4096,
                "{threads} threads: {with_copy} bytes with copies, {without} without"
            );
        }
    }

    #[test]
    fn the_image_does_not_depend_on_the_number_of_threads() {
        let a: Vec<u8> = (0..50 * 4096u32).map(|i| (i % 253) as u8).collect();
        let files: [(&str, &[u8]); 4] = [("a", &a), ("b", &a[..5000]), ("c", &a), ("d", b"x")];
        let image = |threads| {
            let file = tempfile::tempfile().unwrap();
            let options = WriterOptions {
                block_size: 4096,
                threads,
                mkfs_time: Some(0),
                ..WriterOptions::default()
            };
            let mut w = SquashfsWriter::new(&file, 0, options).unwrap();
            for (name, data) in files {
                w.add_entry(&file_entry(name, data.len() as u64), Some(&mut &data[..]))
                    .unwrap();
            }
            let len = w.finish().unwrap();
            let mut bytes = vec![0u8; len as usize];
            file.read_exact_at(&mut bytes, 0).unwrap();
            bytes
        };
        let one = image(1);
        assert_eq!(image(2), one);
        assert_eq!(image(5), one);
    }

    #[test]
    fn a_block_is_sparse_only_when_every_byte_is_zero() {
        let mut block = vec![0u8; 131072 + 100];
        assert!(all_zero(&block));
        assert!(all_zero(&[]));
        for at in [0, 1, 4095, 4096, 70_000, 131072, 131072 + 99] {
            block[at] = 0x80;
            assert!(!all_zero(&block), "a non-zero byte at {at} missed");
            block[at] = 0;
        }
    }

    #[test]
    fn a_panicking_compressor_worker_is_an_error_not_a_hang() {
        without_hanging(|| {
            let file = tempfile::tempfile().unwrap();
            let options = WriterOptions {
                block_size: 4096,
                threads: 3,
                ..WriterOptions::default()
            };
            let mut w = SquashfsWriter::new(&file, 0, options).unwrap();
            w.pipeline.fail_at.store(5, Ordering::Relaxed);
            let data = compressible(64);
            let err = w
                .add_entry(&file_entry("f", data.len() as u64), Some(&mut &data[..]))
                .expect_err("a lost block went unnoticed");
            let text = err.to_string();
            assert!(
                text.contains(
                    "compression worker: panicked: injected compressor failure at block 5"
                ),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
            // The lost block never comes: later calls fail the same way, without waiting.
            let err = w
                .add_entry(&file_entry("g", data.len() as u64), Some(&mut &data[..]))
                .expect_err("writing went on after a lost block");
            assert_eq!(err.to_string(), text);
            assert_eq!(
                w.finish()
                    .expect_err("finished after a lost block")
                    .to_string(),
                text
            );
        });
    }

    #[test]
    fn a_panic_compressing_the_last_fragment_fails_finish() {
        without_hanging(|| {
            let file = tempfile::tempfile().unwrap();
            let mut w = SquashfsWriter::new(&file, 0, WriterOptions::default()).unwrap();
            w.pipeline.fail_at.store(0, Ordering::Relaxed);
            // A small file goes into a fragment, compressed only at `finish`.
            w.add_entry(&file_entry("small", 5), Some(&mut &b"hello"[..]))
                .unwrap();
            let err = w.finish().expect_err("a lost fragment went unnoticed");
            assert!(err.to_string().contains("panicked"), "{err}");
        });
    }

    #[test]
    fn a_level_the_compressor_lacks_is_an_error_not_a_hang() {
        without_hanging(|| {
            let file = tempfile::tempfile().unwrap();
            let options = WriterOptions {
                compression: Compression::Gzip { level: 99 },
                block_size: 4096,
                ..WriterOptions::default()
            };
            let mut w = SquashfsWriter::new(&file, 0, options).unwrap();
            let data = compressible(8);
            let err = w
                .add_entry(&file_entry("f", data.len() as u64), Some(&mut &data[..]))
                .expect_err("level 99 accepted");
            assert!(err.to_string().contains("no such level"), "{err}");
        });
    }

    #[test]
    fn a_file_shorter_than_its_size_is_an_error_without_a_huge_allocation() {
        let file = tempfile::tempfile().unwrap();
        let mut w = SquashfsWriter::new(&file, 0, WriterOptions::default()).unwrap();
        let err = w
            .add_entry(&file_entry("f", 1 << 62), Some(&mut &b"short"[..]))
            .expect_err("a short file accepted");
        assert!(
            err.to_string().contains("reading the content of /f"),
            "{err}"
        );
    }

    #[test]
    fn hard_links_given_in_any_order_name_their_file() {
        // A tar layer lists directories and files in any order: here the link's directory
        // sorts before the target's, and the target is not the first file of its directory.
        use crate::fs::entry::EntrySource;
        let file = tempfile::tempfile().unwrap();
        let mut w = SquashfsWriter::new(&file, 0, WriterOptions::default()).unwrap();
        let dir = |path: &str| Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::Directory,
            metadata: Metadata::default(),
        };
        let link = |path: &str, target: &str| Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::HardLink {
                target: target.as_bytes().to_vec(),
            },
            metadata: Metadata::default(),
        };
        w.add_entry(&dir("b"), None).unwrap();
        for (name, data) in [("b/f1", &b"one"[..]), ("b/f0", &b"zero"[..])] {
            w.add_entry(&file_entry(name, data.len() as u64), Some(&mut &data[..]))
                .unwrap();
        }
        w.add_entry(&dir("a"), None).unwrap();
        w.add_entry(&link("a/f0", "b/f0"), None).unwrap();
        w.add_entry(&dir("c"), None).unwrap();
        w.add_entry(&link("c/f0", "b/f0"), None).unwrap();
        let len = w.finish().unwrap();
        let reader = super::super::SquashfsReader::open(&file, 0, len).unwrap();
        let mut walk = reader.walk().unwrap();
        let mut got = Vec::new();
        while let Some(entry) = walk.next_entry().unwrap() {
            let content = match &entry.kind {
                EntryKind::File { .. } => {
                    let mut data = Vec::new();
                    walk.read_content().unwrap().read_to_end(&mut data).unwrap();
                    String::from_utf8(data).unwrap()
                }
                other => format!("{other:?}"),
            };
            got.push(format!("{} {content}", entry.display_path()));
        }
        assert_eq!(
            got,
            [
                "/ Directory",
                "/a Directory",
                "/a/f0 zero",
                "/b Directory",
                "/b/f0 HardLink { target: [97, 47, 102, 48] }",
                "/b/f1 one",
                "/c Directory",
                "/c/f0 HardLink { target: [97, 47, 102, 48] }",
            ]
        );
    }

    #[test]
    fn a_long_all_zero_file_in_a_tiny_image_reads_back() {
        // 16 MiB of zeros in 4 KiB blocks: a 16 KiB block list of zeros that compresses to
        // a few dozen bytes, in an image of about a kilobyte. The reader once took such a
        // list for a lie ("4096 blocks is absurd") and refused what we wrote.
        use crate::fs::entry::EntrySource;
        let file = tempfile::tempfile().unwrap();
        let options = WriterOptions {
            block_size: 4096,
            mkfs_time: Some(0),
            ..WriterOptions::default()
        };
        let mut w = SquashfsWriter::new(&file, 0, options).unwrap();
        let size = 16u64 << 20;
        w.add_entry(
            &file_entry("zeros", size),
            Some(&mut std::io::Read::take(std::io::repeat(0), size)),
        )
        .unwrap();
        let len = w.finish().unwrap();
        assert!(len <= 8192, "image of {len} bytes");
        let reader = super::super::SquashfsReader::open(&file, 0, len).unwrap();
        let mut walk = reader.walk().unwrap();
        walk.next_entry().unwrap().unwrap();
        let entry = walk.next_entry().unwrap().unwrap();
        assert_eq!(entry.kind, EntryKind::File { size });
        let mut content = Vec::new();
        walk.read_content()
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(content.len() as u64, size);
        assert!(content.iter().all(|&b| b == 0));
    }
}
