//! The squashfs 4.0 on-disk format, written down once: the superblock, the inode kinds
//! (basic and extended), directory headers, entries and index, the id, fragment and xattr
//! tables, metadata-block headers and data-block size words. The writer encodes these
//! structures and the reader decodes them; neither spells out a byte offset itself.
//!
//! Field names follow the kernel's `squashfs_fs.h`. Every number is little-endian. Decoding
//! never panics: a short or implausible structure is a [`ErrorKind::Malformed`] error.
//!
//! [`ErrorKind::Malformed`]: crate::error::ErrorKind::Malformed

use crate::error::{Error, Result};
use crate::fs::bytes::{Fields, Put};

/// The four bytes every squashfs image starts with.
pub const MAGIC: [u8; 4] = *b"hsqs";
/// Length of the superblock in bytes.
pub(crate) const SUPERBLOCK_LEN: usize = 96;
/// Uncompressed size of a metadata block (the inode, directory, id, fragment and xattr
/// tables are sequences of them): 8 KiB.
pub(crate) const METADATA_BLOCK: usize = 8192;
/// Bit set in a data/fragment block size word: the block is stored uncompressed.
pub(crate) const UNCOMPRESSED_BLOCK: u32 = 1 << 24;
/// Bit set in a metadata block header: the block is stored uncompressed.
pub(crate) const UNCOMPRESSED_METADATA: u16 = 1 << 15;
/// A file's fragment index when its tail is not in a fragment.
pub(crate) const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
/// An inode's xattr index when it has no xattrs.
pub(crate) const NO_XATTR: u32 = 0xFFFF_FFFF;
/// A superblock table position when the table is absent.
pub(crate) const NO_TABLE: u64 = 0xFFFF_FFFF_FFFF_FFFF;
/// Entries one directory header may cover.
pub(crate) const MAX_DIR_HEADER_ENTRIES: u32 = 256;
/// Longest symlink target we accept when reading.
const MAX_SYMLINK: u32 = 65536;
/// Longest xattr value we accept when reading: 1 MiB.
pub(crate) const MAX_XATTR_VALUE: u32 = 1 << 20;
/// Longest file name in a directory or directory index.
const MAX_NAME: u32 = 256;

/// Superblock flags.
pub(crate) mod flags {
    /// Duplicate files were detected (and stored once).
    pub(crate) const DUPLICATES: u16 = 0x0040;
    /// The image has no xattr table.
    pub(crate) const NO_XATTRS: u16 = 0x0200;
    /// Compressor options follow the superblock.
    pub(crate) const COMPRESSOR_OPTIONS: u16 = 0x0400;
}

/// Basic inode type codes; an extended inode's code is the basic one plus
/// [`EXTENDED`](inode_type::EXTENDED).
pub(crate) mod inode_type {
    pub(crate) const DIR: u16 = 1;
    pub(crate) const FILE: u16 = 2;
    pub(crate) const SYMLINK: u16 = 3;
    pub(crate) const BLOCK_DEV: u16 = 4;
    pub(crate) const CHAR_DEV: u16 = 5;
    pub(crate) const FIFO: u16 = 6;
    pub(crate) const SOCKET: u16 = 7;
    /// Added to a basic code for the extended form.
    pub(crate) const EXTENDED: u16 = 7;
}

fn bad(msg: impl Into<String>) -> Error {
    Error::malformed(format!("squashfs: {}", msg.into()))
}

/// Linux `dev_t` encoding as squashfs stores device numbers.
pub(crate) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major & 0xfff) << 8 | (minor & !0xff) << 12
}

/// The inverse of [`encode_dev`].
pub(crate) fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// A reference to a position in a metadata table: the start of the (compressed) metadata
/// block relative to the table, and the byte offset inside its uncompressed data.
pub(crate) fn metadata_ref(block: u64, offset: u16) -> u64 {
    block << 16 | offset as u64
}

/// The inverse of [`metadata_ref`].
pub(crate) fn split_metadata_ref(r: u64) -> (u64, usize) {
    (r >> 16, (r & 0xffff) as usize)
}

/// The size word of a data or fragment block: its stored length, and whether it is stored
/// uncompressed. A word of 0 is a sparse (all-zero) block.
pub(crate) fn block_size_word(len: u32, compressed: bool) -> u32 {
    len | if compressed { 0 } else { UNCOMPRESSED_BLOCK }
}

/// The inverse of [`block_size_word`]: (stored length, compressed).
pub(crate) fn split_block_size_word(word: u32) -> (u32, bool) {
    (word & !UNCOMPRESSED_BLOCK, word & UNCOMPRESSED_BLOCK == 0)
}

/// The two-byte header before every metadata block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetadataHeader {
    /// Stored length of the block that follows.
    pub(crate) len: u16,
    pub(crate) compressed: bool,
}

impl MetadataHeader {
    pub(crate) fn encode(self) -> [u8; 2] {
        let word = if self.compressed {
            self.len
        } else {
            self.len | UNCOMPRESSED_METADATA
        };
        word.to_le_bytes()
    }

    pub(crate) fn decode(bytes: [u8; 2]) -> MetadataHeader {
        let word = u16::from_le_bytes(bytes);
        MetadataHeader {
            len: word & !UNCOMPRESSED_METADATA,
            compressed: word & UNCOMPRESSED_METADATA == 0,
        }
    }
}

/// Bytes read in order from a metadata table, across block boundaries.
pub(crate) trait MetadataRead {
    /// The next `n` bytes, or an error if the table ends first.
    fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>>;
}

/// Read `n` bytes from `src` and decode them with `decode`.
fn fields<T>(
    src: &mut dyn MetadataRead,
    n: usize,
    decode: impl FnOnce(&mut Fields<'_>) -> Option<T>,
) -> Result<T> {
    let bytes = src.read_bytes(n)?;
    decode(&mut Fields::new(&bytes)).ok_or_else(|| bad("metadata shorter than its fields"))
}

/// The superblock at the start of every image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) inode_count: u32,
    /// Creation time, seconds since the epoch.
    pub(crate) mkfs_time: u32,
    /// Data block size in bytes.
    pub(crate) block_size: u32,
    pub(crate) fragment_count: u32,
    /// Compressor id (see `Compression::id`).
    pub(crate) compression_id: u16,
    /// log2 of `block_size`.
    pub(crate) block_log: u16,
    pub(crate) flags: u16,
    pub(crate) id_count: u16,
    /// (major, minor); 4.0 is the only version.
    pub(crate) version: (u16, u16),
    /// Metadata reference of the root directory's inode.
    pub(crate) root_inode: u64,
    /// Length of the image without padding.
    pub(crate) bytes_used: u64,
    /// Positions (from the image start) of the tables, [`NO_TABLE`] when absent.
    pub(crate) id_table: u64,
    pub(crate) xattr_table: u64,
    pub(crate) inode_table: u64,
    pub(crate) directory_table: u64,
    pub(crate) fragment_table: u64,
    pub(crate) export_table: u64,
}

impl Superblock {
    pub(crate) fn encode(&self) -> [u8; SUPERBLOCK_LEN] {
        let mut out = Vec::with_capacity(SUPERBLOCK_LEN);
        out.extend_from_slice(&MAGIC);
        out.put_u32(self.inode_count);
        out.put_u32(self.mkfs_time);
        out.put_u32(self.block_size);
        out.put_u32(self.fragment_count);
        out.put_u16(self.compression_id);
        out.put_u16(self.block_log);
        out.put_u16(self.flags);
        out.put_u16(self.id_count);
        out.put_u16(self.version.0);
        out.put_u16(self.version.1);
        for table in [
            self.root_inode,
            self.bytes_used,
            self.id_table,
            self.xattr_table,
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            self.export_table,
        ] {
            out.put_u64(table);
        }
        let mut sb = [0u8; SUPERBLOCK_LEN];
        sb.copy_from_slice(&out);
        sb
    }

    /// Decode a superblock; only the magic is checked here.
    pub(crate) fn decode(raw: &[u8; SUPERBLOCK_LEN]) -> Result<Superblock> {
        if raw[..4] != MAGIC {
            return Err(bad("no squashfs magic (hsqs)"));
        }
        let mut f = Fields::at(raw, 4);
        let sb = (|| {
            Some(Superblock {
                inode_count: f.u32()?,
                mkfs_time: f.u32()?,
                block_size: f.u32()?,
                fragment_count: f.u32()?,
                compression_id: f.u16()?,
                block_log: f.u16()?,
                flags: f.u16()?,
                id_count: f.u16()?,
                version: (f.u16()?, f.u16()?),
                root_inode: f.u64()?,
                bytes_used: f.u64()?,
                id_table: f.u64()?,
                xattr_table: f.u64()?,
                inode_table: f.u64()?,
                directory_table: f.u64()?,
                fragment_table: f.u64()?,
                export_table: f.u64()?,
            })
        })();
        sb.ok_or_else(|| bad("superblock shorter than its fields"))
    }
}

/// An inode as stored in the inode table: the common header and the kind's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    /// Stored in the extended form (type code + 7).
    pub(crate) extended: bool,
    /// Permission bits (`mode & 0o7777`).
    pub(crate) permissions: u16,
    /// Indexes into the id table.
    pub(crate) uid_index: u16,
    pub(crate) gid_index: u16,
    pub(crate) mtime: u32,
    /// Inode number, from 1.
    pub(crate) number: u32,
    /// Link count; not stored in a basic file inode (1).
    pub(crate) nlink: u32,
    /// Xattr set index, [`NO_XATTR`] for none; stored only in the extended forms.
    pub(crate) xattr: u32,
    pub(crate) body: InodeBody,
}

/// What only one kind of inode stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InodeBody {
    Dir(DirInode),
    File(FileInode),
    Symlink { target: Vec<u8> },
    BlockDevice { rdev: u32 },
    CharDevice { rdev: u32 },
    Fifo,
    Socket,
}

/// A directory inode's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirInode {
    /// Start of the listing's metadata block, relative to the directory table.
    pub(crate) start_block: u32,
    /// Offset of the listing in that block's uncompressed data.
    pub(crate) offset: u16,
    /// Listing length + 3 (for `.` and `..`); at most 65535 in the basic form.
    pub(crate) file_size: u32,
    /// Inode number of the parent (the root's is the inode count + 1).
    pub(crate) parent: u32,
    /// Directory index (extended form only).
    pub(crate) index: Vec<DirIndex>,
}

/// A regular file inode's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileInode {
    /// Position of the first data block (from the image start); 32-bit in the basic form.
    pub(crate) blocks_start: u64,
    /// 32-bit in the basic form.
    pub(crate) file_size: u64,
    /// Bytes of sparse blocks (extended form only).
    pub(crate) sparse: u64,
    /// Fragment holding the tail, or [`NO_FRAGMENT`].
    pub(crate) fragment: u32,
    pub(crate) fragment_offset: u32,
    /// One size word per full data block (see [`block_size_word`]).
    pub(crate) block_sizes: Vec<u32>,
}

impl FileInode {
    /// Data blocks a file of `file_size` bytes has with this block size and fragment.
    fn block_count(file_size: u64, block_size: u32, fragment: u32) -> u64 {
        let bs = block_size as u64;
        if fragment == NO_FRAGMENT {
            file_size.div_ceil(bs)
        } else {
            file_size / bs
        }
    }
}

impl Inode {
    /// The stored type code.
    pub(crate) fn type_code(&self) -> u16 {
        self.body.basic_type()
            + if self.extended {
                inode_type::EXTENDED
            } else {
                0
            }
    }

    /// Append the inode's bytes. The basic forms drop what they cannot store (link count of
    /// a file, xattr index); the caller chooses the form that holds what it needs.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.type_code());
        out.put_u16(self.permissions);
        out.put_u16(self.uid_index);
        out.put_u16(self.gid_index);
        out.put_u32(self.mtime);
        out.put_u32(self.number);
        let extended = self.extended;
        match &self.body {
            InodeBody::Dir(d) if extended => {
                out.put_u32(self.nlink);
                out.put_u32(d.file_size);
                out.put_u32(d.start_block);
                out.put_u32(d.parent);
                out.put_u16(d.index.len() as u16);
                out.put_u16(d.offset);
                out.put_u32(self.xattr);
                for i in &d.index {
                    i.encode(out);
                }
            }
            InodeBody::Dir(d) => {
                out.put_u32(d.start_block);
                out.put_u32(self.nlink);
                out.put_u16(d.file_size as u16);
                out.put_u16(d.offset);
                out.put_u32(d.parent);
            }
            InodeBody::File(f) => {
                if extended {
                    out.put_u64(f.blocks_start);
                    out.put_u64(f.file_size);
                    out.put_u64(f.sparse);
                    out.put_u32(self.nlink);
                    out.put_u32(f.fragment);
                    out.put_u32(f.fragment_offset);
                    out.put_u32(self.xattr);
                } else {
                    out.put_u32(f.blocks_start as u32);
                    out.put_u32(f.fragment);
                    out.put_u32(f.fragment_offset);
                    out.put_u32(f.file_size as u32);
                }
                for &s in &f.block_sizes {
                    out.put_u32(s);
                }
            }
            InodeBody::Symlink { target } => {
                out.put_u32(self.nlink);
                out.put_u32(target.len() as u32);
                out.extend_from_slice(target);
                if extended {
                    out.put_u32(self.xattr);
                }
            }
            InodeBody::BlockDevice { rdev } | InodeBody::CharDevice { rdev } => {
                out.put_u32(self.nlink);
                out.put_u32(*rdev);
                if extended {
                    out.put_u32(self.xattr);
                }
            }
            InodeBody::Fifo | InodeBody::Socket => {
                out.put_u32(self.nlink);
                if extended {
                    out.put_u32(self.xattr);
                }
            }
        }
    }

    /// Read one inode from the inode table. `sb` bounds what is plausible (a file's size
    /// and block count against the image size).
    pub(crate) fn decode(src: &mut dyn MetadataRead, sb: &Superblock) -> Result<Inode> {
        let (code, permissions, uid_index, gid_index, mtime, number) = fields(src, 16, |f| {
            Some((f.u16()?, f.u16()?, f.u16()?, f.u16()?, f.u32()?, f.u32()?))
        })?;
        let mut inode = Inode {
            extended: code > inode_type::EXTENDED,
            permissions,
            uid_index,
            gid_index,
            mtime,
            number,
            nlink: 1,
            xattr: NO_XATTR,
            body: InodeBody::Fifo,
        };
        let extended = inode.extended;
        inode.body = match code {
            1 => {
                let (start_block, nlink, file_size, offset, parent) = fields(src, 16, |f| {
                    Some((f.u32()?, f.u32()?, f.u16()?, f.u16()?, f.u32()?))
                })?;
                inode.nlink = nlink;
                InodeBody::Dir(DirInode {
                    start_block,
                    offset,
                    file_size: file_size as u32,
                    parent,
                    index: Vec::new(),
                })
            }
            8 => {
                let (nlink, file_size, start_block, parent, index_count, offset, xattr) =
                    fields(src, 24, |f| {
                        Some((
                            f.u32()?,
                            f.u32()?,
                            f.u32()?,
                            f.u32()?,
                            f.u16()?,
                            f.u16()?,
                            f.u32()?,
                        ))
                    })?;
                inode.nlink = nlink;
                inode.xattr = xattr;
                let index = (0..index_count)
                    .map(|_| DirIndex::decode(src))
                    .collect::<Result<_>>()
                    .map_err(|e| e.context(format!("inode {number}: directory index")))?;
                InodeBody::Dir(DirInode {
                    start_block,
                    offset,
                    file_size,
                    parent,
                    index,
                })
            }
            2 | 9 => {
                let mut file = if code == 2 {
                    fields(src, 16, |f| {
                        Some(FileInode {
                            blocks_start: f.u32()? as u64,
                            fragment: f.u32()?,
                            fragment_offset: f.u32()?,
                            file_size: f.u32()? as u64,
                            sparse: 0,
                            block_sizes: Vec::new(),
                        })
                    })?
                } else {
                    let (blocks_start, file_size, sparse, nlink, fragment, fragment_offset, xattr) =
                        fields(src, 40, |f| {
                            Some((
                                f.u64()?,
                                f.u64()?,
                                f.u64()?,
                                f.u32()?,
                                f.u32()?,
                                f.u32()?,
                                f.u32()?,
                            ))
                        })?;
                    inode.nlink = nlink;
                    inode.xattr = xattr;
                    FileInode {
                        blocks_start,
                        file_size,
                        sparse,
                        fragment,
                        fragment_offset,
                        block_sizes: Vec::new(),
                    }
                };
                // The block list (4 bytes a block) lies in metadata blocks, each at most
                // 8 KiB of data and at least 3 bytes in the image (a 2-byte header and one
                // of payload): a list longer than the image could hold is a lie. Sparse
                // files have long lists of zeros that compress to next to nothing (a
                // 200 MiB hole is 6,400 bytes of list in a few hundred of image), so the
                // bound is that, not the image's size. The list is read as it is found,
                // so a lying count fails at the end of the metadata, not in an allocation.
                let size = file.file_size;
                let max_blocks = (sb.bytes_used / 3 + 1).saturating_mul(METADATA_BLOCK as u64 / 4);
                let blocks = FileInode::block_count(size, sb.block_size, file.fragment);
                if blocks > max_blocks {
                    return Err(bad(format!(
                        "inode {number}: size {size} ({blocks} blocks) is absurd"
                    )));
                }
                let words = src.read_bytes(blocks as usize * 4)?;
                file.block_sizes = words
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                InodeBody::File(file)
            }
            3 | 10 => {
                let (nlink, len) = fields(src, 8, |f| Some((f.u32()?, f.u32()?)))?;
                inode.nlink = nlink;
                if len > MAX_SYMLINK {
                    return Err(bad(format!("inode {number}: symlink of {len} bytes")));
                }
                let target = src.read_bytes(len as usize)?;
                if extended {
                    inode.xattr = fields(src, 4, |f| f.u32())?;
                }
                InodeBody::Symlink { target }
            }
            4 | 5 | 11 | 12 => {
                let (nlink, rdev) = fields(src, 8, |f| Some((f.u32()?, f.u32()?)))?;
                inode.nlink = nlink;
                if extended {
                    inode.xattr = fields(src, 4, |f| f.u32())?;
                }
                if code == 4 || code == 11 {
                    InodeBody::BlockDevice { rdev }
                } else {
                    InodeBody::CharDevice { rdev }
                }
            }
            6 | 7 | 13 | 14 => {
                inode.nlink = fields(src, 4, |f| f.u32())?;
                if extended {
                    inode.xattr = fields(src, 4, |f| f.u32())?;
                }
                if code == 6 || code == 13 {
                    InodeBody::Fifo
                } else {
                    InodeBody::Socket
                }
            }
            other => return Err(bad(format!("inode {number}: unknown type {other}"))),
        };
        Ok(inode)
    }
}

impl InodeBody {
    /// The basic type code of this kind (directory entries record it).
    pub(crate) fn basic_type(&self) -> u16 {
        match self {
            InodeBody::Dir(_) => inode_type::DIR,
            InodeBody::File(_) => inode_type::FILE,
            InodeBody::Symlink { .. } => inode_type::SYMLINK,
            InodeBody::BlockDevice { .. } => inode_type::BLOCK_DEV,
            InodeBody::CharDevice { .. } => inode_type::CHAR_DEV,
            InodeBody::Fifo => inode_type::FIFO,
            InodeBody::Socket => inode_type::SOCKET,
        }
    }
}

/// The header of a run of directory entries: all of them have their inodes in the same
/// inode-table block, and inode numbers within ±32767 of `inode_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirHeader {
    /// Entries that follow, 1 to 256 (stored minus one).
    pub(crate) count: u32,
    /// Inode-table block (relative) of the entries' inodes.
    pub(crate) start: u32,
    /// Base of the entries' inode number deltas.
    pub(crate) inode_number: u32,
}

impl DirHeader {
    pub(crate) const LEN: usize = 12;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.count.wrapping_sub(1));
        out.put_u32(self.start);
        out.put_u32(self.inode_number);
    }

    pub(crate) fn decode(f: &mut Fields<'_>) -> Option<DirHeader> {
        Some(DirHeader {
            // Saturating: a corrupt u32::MAX must stay too large, not wrap to 0.
            count: f.u32()?.saturating_add(1),
            start: f.u32()?,
            inode_number: f.u32()?,
        })
    }
}

/// One name in a directory listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirEntry<'a> {
    /// Offset of the inode in its inode-table block.
    pub(crate) offset: u16,
    /// Inode number minus the header's.
    pub(crate) inode_delta: i16,
    /// Basic type code of the inode.
    pub(crate) kind: u16,
    /// 1 to 256 bytes (the length is stored minus one).
    pub(crate) name: &'a [u8],
}

impl<'a> DirEntry<'a> {
    /// Bytes before the name.
    pub(crate) const FIXED_LEN: usize = 8;

    /// Encoded length.
    pub(crate) fn len(&self) -> usize {
        Self::FIXED_LEN + self.name.len()
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.offset);
        out.put_i16(self.inode_delta);
        out.put_u16(self.kind);
        out.put_u16((self.name.len() as u16).wrapping_sub(1));
        out.extend_from_slice(self.name);
    }

    /// `None` when the bytes end first (callers that need to tell a cut name from a cut
    /// entry check for [`Self::FIXED_LEN`] bytes first).
    pub(crate) fn decode(f: &mut Fields<'a>) -> Option<DirEntry<'a>> {
        let offset = f.u16()?;
        let inode_delta = f.i16()?;
        let kind = f.u16()?;
        let name_len = f.u16()? as usize + 1;
        Some(DirEntry {
            offset,
            inode_delta,
            kind,
            name: f.bytes(name_len)?,
        })
    }
}

/// An entry of an extended directory inode's index: where a directory header starts, so a
/// lookup can skip to the metadata block holding a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirIndex {
    /// Offset of the header in the directory's listing.
    pub(crate) index: u32,
    /// Directory-table block (relative) the header lies in.
    pub(crate) start: u32,
    /// The header's first name.
    pub(crate) name: Vec<u8>,
}

impl DirIndex {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.index);
        out.put_u32(self.start);
        out.put_u32((self.name.len() as u32).wrapping_sub(1));
        out.extend_from_slice(&self.name);
    }

    fn decode(src: &mut dyn MetadataRead) -> Result<DirIndex> {
        let (index, start, name_size) = fields(src, 12, |f| Some((f.u32()?, f.u32()?, f.u32()?)))?;
        let len = name_size.saturating_add(1);
        if len > MAX_NAME {
            return Err(bad(format!("name of {len} bytes")));
        }
        Ok(DirIndex {
            index,
            start,
            name: src.read_bytes(len as usize)?,
        })
    }
}

/// A fixed-size record of a lookup table (id, fragment and xattr id tables).
pub(crate) trait TableEntry: Sized {
    /// Encoded length in bytes.
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(f: &mut Fields<'_>) -> Option<Self>;
}

/// Encode a whole table's entries.
pub(crate) fn encode_entries<T: TableEntry>(entries: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * T::LEN);
    for e in entries {
        e.encode(&mut out);
    }
    out
}

/// Decode a whole table's entries (a trailing partial entry is ignored).
pub(crate) fn decode_entries<T: TableEntry>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(T::LEN)
        .filter_map(|c| T::decode(&mut Fields::new(c)))
        .collect()
}

/// The id table holds every distinct uid and gid; inodes store indexes into it.
impl TableEntry for u32 {
    const LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(*self);
    }
    fn decode(f: &mut Fields<'_>) -> Option<u32> {
        f.u32()
    }
}

/// The positions of a lookup table's metadata blocks, stored after them.
impl TableEntry for u64 {
    const LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(*self);
    }
    fn decode(f: &mut Fields<'_>) -> Option<u64> {
        f.u64()
    }
}

/// Where a fragment block is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentEntry {
    pub(crate) start: u64,
    /// Size word (see [`block_size_word`]).
    pub(crate) size: u32,
}

impl TableEntry for FragmentEntry {
    const LEN: usize = 16;
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.start);
        out.put_u32(self.size);
        out.put_u32(0);
    }
    fn decode(f: &mut Fields<'_>) -> Option<FragmentEntry> {
        Some(FragmentEntry {
            start: f.u64()?,
            size: f.u32()?,
        })
    }
}

/// One xattr set: where its entries start in the key/value table, how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct XattrId {
    /// Metadata reference into the key/value table.
    pub(crate) xattr_ref: u64,
    pub(crate) count: u32,
    /// Encoded bytes of the set's entries.
    pub(crate) size: u32,
}

impl TableEntry for XattrId {
    const LEN: usize = 16;
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.xattr_ref);
        out.put_u32(self.count);
        out.put_u32(self.size);
    }
    fn decode(f: &mut Fields<'_>) -> Option<XattrId> {
        Some(XattrId {
            xattr_ref: f.u64()?,
            count: f.u32()?,
            size: f.u32()?,
        })
    }
}

/// What the superblock's xattr table position points at: the key/value table's start and
/// the number of sets; the positions of the xattr id table's metadata blocks follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct XattrTableHeader {
    pub(crate) kv_start: u64,
    pub(crate) count: u32,
}

impl XattrTableHeader {
    pub(crate) const LEN: usize = 16;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.kv_start);
        out.put_u32(self.count);
        out.put_u32(0);
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<XattrTableHeader> {
        let mut f = Fields::new(bytes);
        Some(XattrTableHeader {
            kv_start: f.u64()?,
            count: f.u32()?,
        })
    }
}

/// Bit set in an xattr key's type: the value is stored out of line (the stored value is a
/// metadata reference to it).
pub(crate) const XATTR_OUT_OF_LINE: u16 = 0x100;

/// The namespaces squashfs can store, by their type code.
const XATTR_PREFIXES: [(&[u8], u16); 3] = [(b"user.", 0), (b"trusted.", 1), (b"security.", 2)];

/// Split an xattr name into its namespace type code and the rest, if squashfs can store it
/// (only the user, trusted and security namespaces).
pub(crate) fn split_xattr_name(name: &[u8]) -> Option<(u16, &[u8])> {
    XATTR_PREFIXES
        .iter()
        .find(|(p, _)| name.starts_with(p) && name.len() > p.len())
        .map(|&(p, kind)| (kind, &name[p.len()..]))
}

/// The namespace prefix of an xattr key's type code.
fn xattr_prefix(kind: u16) -> Option<&'static [u8]> {
    XATTR_PREFIXES
        .iter()
        .find(|&&(_, k)| k == kind & 0xff)
        .map(|&(p, _)| p)
}

/// An entry of the xattr key/value table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XattrEntry {
    /// Full name, namespace included.
    pub(crate) name: Vec<u8>,
    /// The value, or (out of line) the 8-byte metadata reference to it.
    pub(crate) value: Vec<u8>,
    pub(crate) out_of_line: bool,
}

impl XattrEntry {
    /// Append an entry stored inline: the key (namespace code `kind` and the rest of the
    /// name, see [`split_xattr_name`]) and the value.
    pub(crate) fn encode(kind: u16, rest: &[u8], value: &[u8], out: &mut Vec<u8>) {
        out.put_u16(kind);
        out.put_u16(rest.len() as u16);
        out.extend_from_slice(rest);
        out.put_u32(value.len() as u32);
        out.extend_from_slice(value);
    }

    pub(crate) fn decode(src: &mut dyn MetadataRead) -> Result<XattrEntry> {
        let (kind, name_len) = fields(src, 4, |f| Some((f.u16()?, f.u16()?)))?;
        let rest = src.read_bytes(name_len as usize)?;
        let prefix =
            xattr_prefix(kind).ok_or_else(|| bad(format!("xattr prefix {}", kind & 0xff)))?;
        let mut name = prefix.to_vec();
        name.extend_from_slice(&rest);
        let value = decode_xattr_value(src)?;
        Ok(XattrEntry {
            name,
            value,
            out_of_line: kind & XATTR_OUT_OF_LINE != 0,
        })
    }
}

/// A stored xattr value: its length, then its bytes (capped at [`MAX_XATTR_VALUE`]).
pub(crate) fn decode_xattr_value(src: &mut dyn MetadataRead) -> Result<Vec<u8>> {
    let len = fields(src, 4, |f| f.u32())?;
    if len > MAX_XATTR_VALUE {
        return Err(bad(format!("xattr value of {len} bytes")));
    }
    src.read_bytes(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metadata table held in memory.
    struct Slice<'a>(&'a [u8]);

    impl MetadataRead for Slice<'_> {
        fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>> {
            if n > self.0.len() {
                return Err(bad("table ends"));
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Ok(head.to_vec())
        }
    }

    fn sb() -> Superblock {
        Superblock {
            inode_count: 3,
            mkfs_time: 1_700_000_000,
            block_size: 131072,
            fragment_count: 1,
            compression_id: 1,
            block_log: 17,
            flags: flags::DUPLICATES,
            id_count: 1,
            version: (4, 0),
            root_inode: 0x20,
            bytes_used: 1 << 20,
            id_table: 1000,
            xattr_table: NO_TABLE,
            inode_table: 96,
            directory_table: 500,
            fragment_table: 900,
            export_table: NO_TABLE,
        }
    }

    #[test]
    fn superblock_round_trips_and_its_magic_is_checked() {
        let raw = sb().encode();
        assert_eq!(&raw[..4], b"hsqs");
        assert_eq!(u16::from_le_bytes([raw[28], raw[29]]), 4, "version at 28");
        assert_eq!(
            u64::from_le_bytes(raw[40..48].try_into().unwrap()),
            1 << 20,
            "bytes_used at 40"
        );
        assert_eq!(Superblock::decode(&raw).unwrap(), sb());
        let mut bad = raw;
        bad[0] = b'x';
        assert!(Superblock::decode(&bad).is_err());
    }

    #[test]
    fn every_inode_kind_round_trips_in_both_forms() {
        let body = [
            InodeBody::Dir(DirInode {
                start_block: 7,
                offset: 9,
                file_size: 300,
                parent: 4,
                index: Vec::new(),
            }),
            InodeBody::File(FileInode {
                blocks_start: 96,
                file_size: 200_000,
                sparse: 0,
                fragment: 0,
                fragment_offset: 12,
                block_sizes: vec![block_size_word(5000, true)],
            }),
            InodeBody::Symlink {
                target: b"target".to_vec(),
            },
            InodeBody::BlockDevice {
                rdev: encode_dev(8, 1),
            },
            InodeBody::CharDevice {
                rdev: encode_dev(1, 3),
            },
            InodeBody::Fifo,
            InodeBody::Socket,
        ];
        for (i, body) in body.into_iter().enumerate() {
            for extended in [false, true] {
                let mut body = body.clone();
                if let (InodeBody::Dir(d), true) = (&mut body, extended) {
                    d.index.push(DirIndex {
                        index: 0,
                        start: 0,
                        name: b"first".to_vec(),
                    });
                }
                let basic_file = !extended && matches!(body, InodeBody::File(_));
                let inode = Inode {
                    extended,
                    permissions: 0o4755,
                    uid_index: 0,
                    gid_index: 1,
                    mtime: 5,
                    number: i as u32 + 1,
                    nlink: if basic_file { 1 } else { 2 },
                    xattr: if extended { 3 } else { NO_XATTR },
                    body,
                };
                let mut out = Vec::new();
                inode.encode(&mut out);
                assert_eq!(
                    u16::from_le_bytes([out[0], out[1]]),
                    i as u16 + 1 + if extended { 7 } else { 0 }
                );
                let mut src = Slice(&out);
                assert_eq!(Inode::decode(&mut src, &sb()).unwrap(), inode, "{i}");
                assert!(src.0.is_empty(), "{i}: decoding read every byte");
                assert!(
                    Inode::decode(&mut Slice(&out[..out.len() - 1]), &sb()).is_err(),
                    "{i}: a cut inode decodes"
                );
            }
        }
    }

    #[test]
    fn implausible_inodes_are_refused() {
        let mut out = Vec::new();
        Inode {
            extended: false,
            permissions: 0,
            uid_index: 0,
            gid_index: 0,
            mtime: 0,
            number: 1,
            nlink: 1,
            xattr: NO_XATTR,
            body: InodeBody::Symlink {
                target: vec![b'x'; 70000],
            },
        }
        .encode(&mut out);
        assert!(Inode::decode(&mut Slice(&out), &sb()).is_err());
        out[0] = 99;
        assert!(Inode::decode(&mut Slice(&out), &sb()).is_err());

        // A file whose block list could not fit in the image's metadata (each metadata
        // block holds at most 8 KiB and takes at least 3 bytes), and one whose list could
        // but is not there: both refused, neither by allocating the declared list.
        let file = |file_size: u64| {
            let mut out = Vec::new();
            Inode {
                extended: true,
                permissions: 0o644,
                uid_index: 0,
                gid_index: 0,
                mtime: 0,
                number: 1,
                nlink: 1,
                xattr: NO_XATTR,
                body: InodeBody::File(FileInode {
                    blocks_start: 96,
                    file_size,
                    sparse: file_size - 1,
                    fragment: NO_FRAGMENT,
                    fragment_offset: 0,
                    block_sizes: vec![0; 2],
                }),
            }
            .encode(&mut out);
            out
        };
        let small = Superblock {
            bytes_used: 3000,
            ..sb()
        };
        let max_blocks = (3000 / 3 + 1) * 2048u64;
        let err = Inode::decode(&mut Slice(&file((max_blocks + 1) << 17)), &small).unwrap_err();
        assert!(err.to_string().contains("is absurd"), "{err}");
        let err = Inode::decode(&mut Slice(&file(max_blocks << 17)), &small).unwrap_err();
        assert!(err.to_string().contains("table ends"), "{err}");
        // A list of that length that is there (a long hole) is read.
        let mut long = file(3 << 17);
        long.truncate(long.len() - 8);
        long.extend_from_slice(&[0; 12]);
        let inode = Inode::decode(&mut Slice(&long), &small).unwrap();
        assert!(matches!(inode.body, InodeBody::File(f) if f.block_sizes == [0, 0, 0]));
    }

    #[test]
    fn directory_records_and_tables_round_trip() {
        let mut out = Vec::new();
        let h = DirHeader {
            count: 256,
            start: 3,
            inode_number: 10,
        };
        h.encode(&mut out);
        assert_eq!(&out[..4], &255u32.to_le_bytes(), "count stored minus one");
        let e = DirEntry {
            offset: 4,
            inode_delta: -3,
            kind: inode_type::FILE,
            name: b"name",
        };
        e.encode(&mut out);
        assert_eq!(out.len(), DirHeader::LEN + e.len());
        let mut f = Fields::new(&out);
        assert_eq!(DirHeader::decode(&mut f), Some(h));
        assert_eq!(DirEntry::decode(&mut f), Some(e));
        assert_eq!(DirEntry::decode(&mut Fields::new(&out[12..20])), None);

        let frags = [FragmentEntry {
            start: 1 << 33,
            size: block_size_word(100, false),
        }];
        let bytes = encode_entries(&frags);
        assert_eq!(bytes.len(), 16);
        assert_eq!(decode_entries::<FragmentEntry>(&bytes), frags);
        assert_eq!(split_block_size_word(frags[0].size), (100, false));
        let ids = [0u32, 1000, 70000];
        assert_eq!(decode_entries::<u32>(&encode_entries(&ids)), ids);
        let xids = [XattrId {
            xattr_ref: metadata_ref(3, 8),
            count: 2,
            size: 40,
        }];
        assert_eq!(decode_entries::<XattrId>(&encode_entries(&xids)), xids);
        assert_eq!(split_metadata_ref(xids[0].xattr_ref), (3, 8));
        let mut head = Vec::new();
        XattrTableHeader {
            kv_start: 5,
            count: 1,
        }
        .encode(&mut head);
        assert_eq!(
            XattrTableHeader::decode(&head),
            Some(XattrTableHeader {
                kv_start: 5,
                count: 1
            })
        );
        let m = MetadataHeader {
            len: 8192,
            compressed: false,
        };
        assert_eq!(MetadataHeader::decode(m.encode()), m);
        assert_eq!(decode_dev(encode_dev(259, 70000)), (259, 70000));
    }

    #[test]
    fn xattr_entries_round_trip_and_unknown_namespaces_are_refused() {
        assert_eq!(split_xattr_name(b"system.posix_acl_access"), None);
        assert_eq!(split_xattr_name(b"user."), None);
        let (kind, rest) = split_xattr_name(b"trusted.overlay.opaque").unwrap();
        assert_eq!((kind, rest), (1, b"overlay.opaque".as_slice()));
        let mut out = Vec::new();
        XattrEntry::encode(kind, rest, b"y", &mut out);
        let e = XattrEntry::decode(&mut Slice(&out)).unwrap();
        assert_eq!(e.name, b"trusted.overlay.opaque");
        assert_eq!(e.value, b"y");
        assert!(!e.out_of_line);
        out[0] = 7;
        assert!(XattrEntry::decode(&mut Slice(&out)).is_err());
    }
}
