//! The squashfs reader: everything the writer writes (and what mksquashfs and tar2sqfs
//! write), from an offset inside any file, as an entry stream. Every offset, size and count
//! read from the image is checked against the image before use; the structures themselves
//! are decoded by [`super::raw`].

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::compress::Compression;
use super::raw::{
    self, DirEntry, DirHeader, DirInode, FileInode, FragmentEntry, Inode, InodeBody,
    METADATA_BLOCK, MetadataHeader, MetadataRead, NO_TABLE, NO_XATTR, SUPERBLOCK_LEN, Superblock,
    TableEntry, XattrEntry, XattrId, XattrTableHeader,
};
use crate::error::{Error, Result};
use crate::fs::bytes::Fields;
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, PositionedContent, Xattr};

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed(format!("squashfs: {}", msg.into()))
}

/// A decompressed metadata block and the position of the next one.
type MetadataBlock = (Rc<Vec<u8>>, u64);

/// A squashfs image inside a file.
pub struct SquashfsReader<'f> {
    file: &'f File,
    offset: u64,
    sb: Superblock,
    compression: Compression,
    ids: Vec<u32>,
    fragments: Vec<FragmentEntry>,
    xattr_ids: Vec<XattrId>,
    xattr_start: u64,
    cache: RefCell<HashMap<u64, MetadataBlock>>,
    /// The last few fragment blocks decompressed: small files share them, and without
    /// this every small file would decompress its whole fragment block again.
    fragment_cache: RefCell<Vec<(u32, Rc<Vec<u8>>)>>,
}

/// Bytes of decompressed fragment blocks kept: a walk visits files in name order, which
/// need not be the order their tails were packed in (a layer made from a tar stream), so
/// the cache must hold many blocks for small files not to decompress theirs again.
const FRAGMENT_CACHE_BYTES: usize = 16 << 20;

/// Read the superblock at `offset` and check what the rest of the reader relies on.
fn read_superblock(file: &File, offset: u64, len: u64) -> Result<(Superblock, Compression)> {
    let mut raw = [0u8; SUPERBLOCK_LEN];
    file.read_exact_at(&mut raw, offset)
        .map_err(|e| Error::io("squashfs: reading the superblock", e))?;
    let sb = Superblock::decode(&raw)?;
    if sb.version != (4, 0) {
        return Err(Error::unsupported(format!(
            "squashfs version {}.{}",
            sb.version.0, sb.version.1
        )));
    }
    let compression = Compression::from_id(sb.compression_id).ok_or_else(|| {
        Error::unsupported(format!("squashfs compressor id {}", sb.compression_id))
    })?;
    let block_size = sb.block_size;
    if !block_size.is_power_of_two()
        || !(4096..=1 << 20).contains(&block_size)
        || sb.block_log as u32 != block_size.trailing_zeros()
    {
        return Err(bad(format!("block size {block_size} is invalid")));
    }
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
    Ok((sb, compression))
}

impl<'f> SquashfsReader<'f> {
    /// Open the image at `offset`; `len` bounds it (the rest of the file if larger).
    pub fn open(file: &'f File, offset: u64, len: u64) -> Result<SquashfsReader<'f>> {
        let (sb, compression) = read_superblock(file, offset, len)?;
        let mut reader = SquashfsReader {
            file,
            offset,
            sb,
            compression,
            ids: Vec::new(),
            fragments: Vec::new(),
            xattr_ids: Vec::new(),
            xattr_start: 0,
            cache: RefCell::new(HashMap::new()),
            fragment_cache: RefCell::new(Vec::new()),
        };
        reader.ids = raw::decode_entries(&reader.read_lookup_table(
            reader.sb.id_table,
            reader.sb.id_count as u64 * 4,
            "id table",
        )?);
        if reader.sb.fragment_table != NO_TABLE && reader.sb.fragment_count > 0 {
            reader.fragments = raw::decode_entries(&reader.read_lookup_table(
                reader.sb.fragment_table,
                reader.sb.fragment_count as u64 * FragmentEntry::LEN as u64,
                "fragment table",
            )?);
        }
        if reader.sb.xattr_table != NO_TABLE {
            reader.read_xattr_ids()?;
        }
        Ok(reader)
    }

    /// The xattr id table: its header at the superblock's position, then the lookup table.
    fn read_xattr_ids(&mut self) -> Result<()> {
        let what = "xattr id table";
        let head = self.read_raw(self.sb.xattr_table, XattrTableHeader::LEN as u64, what)?;
        let head = XattrTableHeader::decode(&head).ok_or_else(|| bad(what))?;
        self.xattr_start = head.kv_start;
        let entries = self.read_lookup_table_at(
            self.sb.xattr_table + XattrTableHeader::LEN as u64,
            head.count as u64 * XattrId::LEN as u64,
            what,
        )?;
        self.xattr_ids = raw::decode_entries(&entries);
        Ok(())
    }

    fn read_raw(&self, at: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if at
            .checked_add(len)
            .is_none_or(|end| end > self.sb.bytes_used)
        {
            return Err(bad(format!(
                "{what}: bytes {at}..+{len} lie outside the image"
            )));
        }
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
        let header = self.read_raw(at, 2, what)?;
        let header = MetadataHeader::decode([header[0], header[1]]);
        let size = header.len as u64;
        if size == 0 || size > METADATA_BLOCK as u64 {
            return Err(bad(format!(
                "{what}: metadata block of {size} bytes at {at}"
            )));
        }
        let raw = self.read_raw(at + 2, size, what)?;
        let data = if header.compressed {
            self.compression.decompress(&raw, METADATA_BLOCK)?
        } else {
            raw
        };
        let entry = (Rc::new(data), at + 2 + size);
        let mut cache = self.cache.borrow_mut();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(at, entry.clone());
        Ok(entry)
    }

    /// A metadata table read from block `block` (from the image start), byte `offset` on.
    fn metadata_stream(
        &self,
        block: u64,
        offset: usize,
        what: &'static str,
    ) -> MetadataStream<'_, 'f> {
        MetadataStream {
            reader: self,
            block,
            offset,
            what,
        }
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
        let pointers: Vec<u64> = raw::decode_entries(&self.read_raw(at, blocks * 8, what)?);
        let mut out = Vec::with_capacity(len as usize);
        // Where the block before ends: writers store a table's blocks one after another, and
        // a pointer back into read bytes would let a small table of one block, named over
        // and over, pass for a huge one (up to 8 times the image's size in memory).
        let mut end = 0;
        for p in pointers {
            if p < end {
                return Err(bad(format!(
                    "{what}: metadata block at {p} overlaps the one before (which ends at {end})"
                )));
            }
            let (data, next) = self.metadata_block(p, what)?;
            end = next;
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
    fn inode(&self, r: u64) -> Result<Inode> {
        let (block, offset) = raw::split_metadata_ref(r);
        let mut src = self.metadata_stream(
            self.sb.inode_table.saturating_add(block),
            offset,
            "inode table",
        );
        Inode::decode(&mut src, &self.sb)
    }

    /// Entries of directory inode `number`: (name, inode reference).
    fn read_dir(&self, number: u32, dir: &DirInode) -> Result<Vec<(Vec<u8>, u64)>> {
        if dir.file_size < 3 {
            return Err(bad(format!(
                "directory inode {number}: size {}",
                dir.file_size
            )));
        }
        let len = dir.file_size as usize - 3;
        if len as u64 > self.sb.bytes_used.saturating_mul(8) {
            return Err(bad(format!(
                "directory inode {number}: listing of {len} bytes is absurd"
            )));
        }
        let data = self
            .metadata_stream(
                self.sb.directory_table + dir.start_block as u64,
                dir.offset as usize,
                "directory table",
            )
            .read_bytes(len)?;
        let mut f = Fields::new(&data);
        let mut out = Vec::new();
        while f.remaining() >= DirHeader::LEN {
            let Some(header) = DirHeader::decode(&mut f) else {
                break;
            };
            if header.count > raw::MAX_DIR_HEADER_ENTRIES {
                return Err(bad(format!(
                    "directory inode {number}: header of {} entries",
                    header.count
                )));
            }
            for _ in 0..header.count {
                if f.remaining() < DirEntry::FIXED_LEN {
                    return Err(bad(format!("directory inode {number}: truncated listing")));
                }
                let entry = DirEntry::decode(&mut f)
                    .ok_or_else(|| bad(format!("directory inode {number}: truncated name")))?;
                let name = entry.name;
                if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
                    return Err(bad(format!(
                        "directory inode {number}: invalid name {:?}",
                        String::from_utf8_lossy(name)
                    )));
                }
                out.push((
                    name.to_vec(),
                    raw::metadata_ref(header.start as u64, entry.offset),
                ));
            }
        }
        Ok(out)
    }

    /// The xattrs of set `index`.
    fn xattrs(&self, index: u32) -> Result<Vec<Xattr>> {
        if index == NO_XATTR {
            return Ok(Vec::new());
        }
        let id = self
            .xattr_ids
            .get(index as usize)
            .ok_or_else(|| bad(format!("xattr index {index} out of range")))?;
        if id.count > 65536 {
            return Err(bad(format!("xattr set of {} entries", id.count)));
        }
        let what = "xattr table";
        let at = |r: u64| {
            let (block, offset) = raw::split_metadata_ref(r);
            self.metadata_stream(self.xattr_start.saturating_add(block), offset, what)
        };
        let mut entries = at(id.xattr_ref);
        let mut out = Vec::new();
        for _ in 0..id.count {
            let entry = XattrEntry::decode(&mut entries)?;
            let value = if entry.out_of_line {
                // The stored value is a reference to the real value.
                let r: [u8; 8] = entry
                    .value
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("out-of-line xattr reference"))?;
                raw::decode_xattr_value(&mut at(u64::from_le_bytes(r)))?
            } else {
                entry.value
            };
            out.push(Xattr {
                name: entry.name,
                value,
            });
        }
        out.sort();
        Ok(out)
    }

    /// Read `buf.len()` bytes of a regular file at `pos`. `last` keeps the block the
    /// previous call ended in: callers read in pieces smaller than a block (`io::copy`
    /// reads 8 KiB), and without it each piece would decompress its whole block again
    /// (16 times per 128 KiB block; most of an export's time went there).
    fn read_file(
        &self,
        file: &FileLayout,
        last: &mut Option<(usize, Vec<u8>)>,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let bs = self.sb.block_size as u64;
        let mut done = 0;
        while done < buf.len() {
            let at = pos + done as u64;
            let index = (at / bs) as usize;
            let within = (at % bs) as usize;
            if last.as_ref().is_some_and(|(i, _)| *i != index) {
                *last = None;
            }
            let block = match last {
                Some((_, block)) => block,
                None => &last.insert((index, self.file_block(file, index)?)).1,
            };
            let n = (block.len().saturating_sub(within)).min(buf.len() - done);
            if n == 0 {
                return Err(bad(format!("inode {}: data ends early", file.number)));
            }
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// A data or fragment block's uncompressed bytes (at most a block).
    fn data_block(&self, at: u64, word: u32, what: &str) -> Result<Vec<u8>> {
        let (len, compressed) = raw::split_block_size_word(word);
        let raw = self.read_raw(at, len as u64, what)?;
        if compressed {
            self.compression
                .decompress(&raw, self.sb.block_size as usize)
        } else {
            Ok(raw)
        }
    }

    /// Fragment block `index`, from the cache when it was read recently.
    fn fragment_block(&self, index: u32, at: u64, word: u32) -> Result<Rc<Vec<u8>>> {
        if let Some((_, data)) = self
            .fragment_cache
            .borrow()
            .iter()
            .find(|(i, _)| *i == index)
        {
            return Ok(Rc::clone(data));
        }
        let data = Rc::new(self.data_block(at, word, "fragment")?);
        let mut cache = self.fragment_cache.borrow_mut();
        let mut held: usize = cache.iter().map(|(_, d)| d.len()).sum();
        while !cache.is_empty() && held + data.len() > FRAGMENT_CACHE_BYTES {
            held -= cache.remove(0).1.len();
        }
        cache.push((index, Rc::clone(&data)));
        Ok(data)
    }

    /// The uncompressed bytes of block `index` of a file (the fragment for the tail).
    fn file_block(&self, file: &FileLayout, index: usize) -> Result<Vec<u8>> {
        let bs = self.sb.block_size as u64;
        let inode = &file.inode;
        let expected = (inode.file_size - index as u64 * bs).min(bs) as usize;
        if let (Some(&word), Some(&at)) =
            (inode.block_sizes.get(index), file.block_starts.get(index))
        {
            if word == 0 {
                return Ok(vec![0; expected]);
            }
            let data = self.data_block(at, word, "file data")?;
            if data.len() < expected {
                return Err(bad(format!(
                    "inode {}: block {index} is short",
                    file.number
                )));
            }
            return Ok(data[..expected].to_vec());
        }
        let fragment = self.fragments.get(inode.fragment as usize).ok_or_else(|| {
            bad(format!(
                "inode {}: fragment {} out of range",
                file.number, inode.fragment
            ))
        })?;
        let data = self.fragment_block(inode.fragment, fragment.start, fragment.size)?;
        let off = inode.fragment_offset as usize;
        data.get(off..off + expected)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad(format!("inode {}: fragment too short", file.number)))
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

/// A metadata table read in order from a position, following its blocks.
struct MetadataStream<'r, 'f> {
    reader: &'r SquashfsReader<'f>,
    /// Position of the current block (from the image start).
    block: u64,
    /// Offset in the current block's uncompressed data.
    offset: usize,
    what: &'static str,
}

impl MetadataRead for MetadataStream<'_, '_> {
    fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(1 << 20));
        while out.len() < n {
            let (data, next) = self.reader.metadata_block(self.block, self.what)?;
            if self.offset > data.len() {
                return Err(bad(format!(
                    "{}: offset {} beyond a {}-byte metadata block",
                    self.what,
                    self.offset,
                    data.len()
                )));
            }
            let k = (data.len() - self.offset).min(n - out.len());
            out.extend_from_slice(&data[self.offset..self.offset + k]);
            self.offset += k;
            if self.offset == data.len() {
                self.block = next;
                self.offset = 0;
            }
        }
        Ok(out)
    }
}

/// Pre-order walk of a squashfs image (see [`SquashfsReader::walk`]).
pub struct SquashfsWalk<'a, 'f> {
    reader: &'a SquashfsReader<'f>,
    stack: Vec<(Vec<u8>, u64)>,
    seen: HashMap<u32, Vec<u8>>,
    dirs: HashSet<u32>,
    current: Option<Inode>,
}

impl SquashfsWalk<'_, '_> {
    /// Queue a directory's children, to come next in name order.
    fn push_children(&mut self, path: &[u8], number: u32, dir: &DirInode) -> Result<()> {
        if !self.dirs.insert(number) {
            return Err(bad(format!(
                "directory inode {number} is reached twice (loop)"
            )));
        }
        let mut children = self.reader.read_dir(number, dir)?;
        children.sort();
        for (name, child) in children.into_iter().rev() {
            let mut p = path.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&name);
            self.stack.push((p, child));
        }
        Ok(())
    }
}

impl EntrySource for SquashfsWalk<'_, '_> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some((path, r)) = self.stack.pop() else {
            self.current = None;
            return Ok(None);
        };
        let inode = self.reader.inode(r)?;
        let is_dir = matches!(inode.body, InodeBody::Dir(_));
        let first_name = if !is_dir && inode.nlink > 1 {
            self.seen.get(&inode.number).cloned()
        } else {
            None
        };
        let kind = if let Some(target) = first_name {
            EntryKind::HardLink { target }
        } else {
            if !is_dir && inode.nlink > 1 {
                self.seen.insert(inode.number, path.clone());
            }
            match &inode.body {
                InodeBody::Dir(dir) => {
                    self.push_children(&path, inode.number, dir)?;
                    EntryKind::Directory
                }
                InodeBody::File(f) => EntryKind::File { size: f.file_size },
                InodeBody::Symlink { target } => EntryKind::Symlink {
                    target: target.clone(),
                },
                InodeBody::BlockDevice { rdev } => {
                    let (major, minor) = raw::decode_dev(*rdev);
                    EntryKind::BlockDevice { major, minor }
                }
                InodeBody::CharDevice { rdev } => {
                    let (major, minor) = raw::decode_dev(*rdev);
                    EntryKind::CharDevice { major, minor }
                }
                InodeBody::Fifo => EntryKind::Fifo,
                InodeBody::Socket => EntryKind::Socket,
            }
        };
        let metadata = Metadata {
            permissions: inode.permissions as u32 & 0o7777,
            uid: self.reader.id(inode.uid_index)?,
            gid: self.reader.id(inode.gid_index)?,
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
            .as_ref()
            .ok_or_else(|| bad("no current entry"))?;
        let InodeBody::File(file) = &inode.body else {
            return Err(bad(format!(
                "inode {}: not a regular file, it has no content",
                inode.number
            )));
        };
        let reader = self.reader;
        let file = FileLayout::new(inode.number, file.clone());
        Ok(Box::new(PositionedContent::new(
            file.inode.file_size,
            reader.sb.block_size as u64,
            {
                let mut last = None;
                move |pos, buf: &mut [u8]| reader.read_file(&file, &mut last, pos, buf)
            },
        )))
    }
}

/// A regular file's inode and where each of its data blocks starts (computed once).
struct FileLayout {
    number: u32,
    inode: FileInode,
    block_starts: Vec<u64>,
}

impl FileLayout {
    fn new(number: u32, inode: FileInode) -> FileLayout {
        let mut at = inode.blocks_start;
        let block_starts = inode
            .block_sizes
            .iter()
            .map(|&word| {
                let here = at;
                at = at.saturating_add(raw::split_block_size_word(word).0 as u64);
                here
            })
            .collect();
        FileLayout {
            number,
            inode,
            block_starts,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use crate::fs::entry::{Entry, EntryKind, EntrySink, EntrySource, Metadata};
    use crate::fs::squashfs::{SquashfsWriter, WriterOptions};

    #[test]
    fn content_read_in_pieces_smaller_than_a_block_is_the_content() {
        // The last block read is kept between reads: pieces that cross block boundaries,
        // end inside a block or read a fragment tail must still give every byte once.
        let big: Vec<u8> = (0..3 * 4096 + 1234).map(|i| (i * 7 % 251) as u8).collect();
        let small: Vec<u8> = (0..3000).map(|i| (i % 13) as u8).collect();
        let file = tempfile::tempfile().unwrap();
        let options = WriterOptions {
            block_size: 4096,
            mkfs_time: Some(0),
            ..WriterOptions::default()
        };
        let mut w = SquashfsWriter::new(&file, 0, options).unwrap();
        for (name, data) in [("big", &big), ("small", &small)] {
            let entry = Entry {
                path: name.as_bytes().to_vec(),
                kind: EntryKind::File {
                    size: data.len() as u64,
                },
                metadata: Metadata::default(),
            };
            w.add_entry(&entry, Some(&mut &data[..])).unwrap();
        }
        let len = w.finish().unwrap();
        let reader = super::SquashfsReader::open(&file, 0, len).unwrap();
        for piece in [1000, 4096, 5000] {
            let mut walk = reader.walk().unwrap();
            let mut got = Vec::new();
            while let Some(entry) = walk.next_entry().unwrap() {
                if let EntryKind::File { .. } = entry.kind {
                    let mut content = walk.read_content().unwrap();
                    let mut data = Vec::new();
                    let mut buf = vec![0u8; piece];
                    loop {
                        let n = content.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        data.extend_from_slice(&buf[..n]);
                    }
                    got.push(data);
                }
            }
            assert_eq!(got, [big.clone(), small.clone()], "pieces of {piece} bytes");
        }
    }
}
