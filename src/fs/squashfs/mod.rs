//! Squashfs 4.0: a streaming writer with parallel compression, xattrs and hard links.
//!
//! The writer takes entries in any order in which a directory precedes its children (the
//! shared [`crate::fs::entry`] stream), writes file data as it arrives — data blocks are
//! compressed on all cores and written in order — and keeps only metadata in memory. At
//! [`SquashfsWriter::finish`] it writes the inode, directory, fragment, id and xattr tables.
//! Layout and defaults follow mksquashfs: 128 KiB blocks, gzip (zlib level 9, window 15),
//! files smaller than a block packed into fragments, all-zero blocks stored as sparse,
//! duplicate files stored once, image padded to 4 KiB.

mod compress;
mod reader;
mod writer;

pub use compress::Compression;
pub use reader::{Inode, SquashfsReader, SquashfsWalk, Superblock};
pub use writer::{SquashfsWriter, WriterOptions};

pub const MAGIC: u32 = 0x7371_7368;
pub const SUPERBLOCK_LEN: usize = 96;
pub const METADATA_BLOCK: usize = 8192;
/// Bit set in a data/fragment block size: the block is stored uncompressed.
pub const UNCOMPRESSED_BLOCK: u32 = 1 << 24;
/// Bit set in a metadata block header: the block is stored uncompressed.
pub const UNCOMPRESSED_METADATA: u16 = 1 << 15;
pub const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
pub const NO_XATTR: u32 = 0xFFFF_FFFF;
pub const NO_TABLE: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/// Inode type codes (basic; extended = basic + 7).
pub mod inode_type {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK_DEV: u16 = 4;
    pub const CHAR_DEV: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const SOCKET: u16 = 7;
    pub const EXTENDED: u16 = 7;
}

/// Superblock flags.
pub mod flags {
    pub const DUPLICATES: u16 = 0x0040;
    pub const NO_XATTRS: u16 = 0x0200;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
}

/// Linux `dev_t` encoding as squashfs stores device numbers.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major & 0xfff) << 8 | (minor & !0xff) << 12
}

/// The inverse of [`encode_dev`].
pub fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}
