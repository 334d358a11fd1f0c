//! Squashfs 4.0: a streaming writer with parallel compression, xattrs and hard links, and a
//! reader for what it and other tools write.
//!
//! The writer takes entries in any order in which a directory precedes its children (the
//! shared [`crate::fs::entry`] stream), writes file data as it arrives — data blocks are
//! compressed on all cores and written in order — and keeps only metadata in memory. At
//! [`SquashfsWriter::finish`] it writes the inode, directory, fragment, id and xattr tables.
//! Layout and defaults follow mksquashfs: 128 KiB blocks, gzip (zlib level 9, window 15),
//! files smaller than a block packed into fragments, all-zero blocks stored as sparse,
//! duplicate files stored once, image padded to 4 KiB.
//!
//! Modules: `raw` holds the on-disk structures both sides share, `writer` and `reader` use
//! them, `compress` holds the block compressors.

mod compress;
mod raw;
mod reader;
mod writer;

pub use compress::Compression;
pub use raw::MAGIC;
pub use reader::{SquashfsReader, SquashfsWalk};
pub use writer::{SquashfsWriter, WriterOptions};
