//! The filesystem-neutral entry model shared by every filesystem codec.
//!
//! Readers (ext, squashfs, tar) produce a stream of [`Entry`] values through
//! [`EntrySource`]; writers (squashfs, tar) consume one. Streaming is the point: sealing a
//! multi-gigabyte overlay must never unpack it to disk or hold file contents in memory.
//!
//! Conventions every codec follows:
//! - Paths are relative byte strings with `/` separators and no leading `/` or `./`;
//!   the root directory is the empty path and, where the format has one, comes first.
//! - Readers of real filesystems (ext, squashfs) yield a directory before its children
//!   (pre-order) and siblings in bytewise name order, so output is stable.
//! - A file with several names is yielded once as a regular entry; each later name is a
//!   [`EntryKind::HardLink`] whose target is the path yielded first (the tar model, which
//!   a single pass can produce and consume).
//! - Whiteouts are not special here: an OverlayFS deletion is a 0/0 character device, an
//!   opaque directory carries the `trusted.overlay.opaque` xattr, and an AUFS marker is a
//!   regular file named `.wh.*`. `fs::whiteout` converts between the forms.

use std::io::Read;

use crate::error::Result;

/// What kind of filesystem object an entry is, with the data that only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory; its children follow it in the stream.
    Directory,
    /// A regular file of `size` bytes; its bytes come from [`EntrySource::read_content`].
    File {
        /// Length in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as stored (not resolved, may be absolute).
        target: Vec<u8>,
    },
    /// A character device (an OverlayFS whiteout is the 0/0 one).
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// Another name for the entry previously yielded at `target`.
    HardLink {
        /// Path of the first name, as it was yielded.
        target: Vec<u8>,
    },
}

impl EntryKind {
    /// The kind in words, for messages ("a symlink").
    pub fn description(&self) -> &'static str {
        match self {
            EntryKind::Directory => "a directory",
            EntryKind::File { .. } => "a file",
            EntryKind::Symlink { .. } => "a symlink",
            EntryKind::CharDevice { .. } => "a character device",
            EntryKind::BlockDevice { .. } => "a block device",
            EntryKind::Fifo => "a fifo",
            EntryKind::Socket => "a socket",
            EntryKind::HardLink { .. } => "a hard link",
        }
    }
}

/// One extended attribute; the name includes its namespace (`user.foo`, `trusted.overlay.opaque`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    /// Full name, namespace prefix included.
    pub name: Vec<u8>,
    /// Value bytes (not necessarily text).
    pub value: Vec<u8>,
}

/// Metadata common to every kind. For a [`EntryKind::HardLink`] it repeats the target's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`); never the type bits.
    pub permissions: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the epoch (may be negative or beyond 2038).
    pub mtime: i64,
    /// Nanoseconds part of the modification time, where the format stores one.
    pub mtime_nsec: u32,
    /// Extended attributes sorted by name.
    pub xattrs: Vec<Xattr>,
}

/// One filesystem object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, `/`-separated, empty for the root (see the module conventions).
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permissions, owner, time and xattrs.
    pub metadata: Metadata,
}

impl Entry {
    /// The last path component (empty for the root).
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => &self.path,
        }
    }

    /// The parent directory's path (empty for top-level entries and the root).
    pub fn parent(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[..i],
            None => &[],
        }
    }

    /// The path for messages: lossy UTF-8, `/` for the root.
    pub fn display_path(&self) -> String {
        display_path(&self.path)
    }
}

/// A path for error messages and listings: lossy UTF-8 with a leading `/`.
pub fn display_path(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// A stream of entries, read one at a time.
///
/// Call [`next_entry`](Self::next_entry) to advance; while the current entry is a regular
/// file, [`read_content`](Self::read_content) gives its bytes. Content not read before the
/// next call to `next_entry` is skipped.
pub trait EntrySource {
    /// The next entry, or `None` after the last one.
    fn next_entry(&mut self) -> Result<Option<Entry>>;

    /// The content of the current entry, which must be a [`EntryKind::File`]. Exactly
    /// `size` bytes; a reader yields zeros for holes in sparse files.
    fn read_content(&mut self) -> Result<Box<dyn Read + '_>>;

    /// Whether the current entry, a file, is stored with holes in this source (fewer bytes
    /// allocated than its size), where the source can tell; `None` where it cannot (a tar
    /// stream). A squashfs writer counts a file's all-zero blocks as its sparse bytes
    /// (which `unsquashfs` restores as holes and `stat` leaves out of the block count)
    /// only when this is not `Some(false)`: mksquashfs's rule for a file it reads from disk.
    fn stored_with_holes(&self) -> Option<bool> {
        None
    }
}

/// A borrowed source is a source (so adaptors can wrap `&mut dyn EntrySource`).
impl<S: EntrySource + ?Sized> EntrySource for &mut S {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        (**self).next_entry()
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        (**self).read_content()
    }

    fn stored_with_holes(&self) -> Option<bool> {
        (**self).stored_with_holes()
    }
}

/// A sink that consumes entries, e.g. a squashfs or tar writer.
pub trait EntrySink {
    /// Add one entry; for a [`EntryKind::File`], `content` yields exactly `size` bytes.
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()>;

    /// Add a file entry, told whether its source stores it with holes (see
    /// [`EntrySource::stored_with_holes`]); sinks that do not record sparseness ignore it.
    fn add_file(
        &mut self,
        entry: &Entry,
        content: &mut dyn Read,
        holes: Option<bool>,
    ) -> Result<()> {
        let _ = holes;
        self.add_entry(entry, Some(content))
    }
}

/// Copy every entry of `source` into `sink`, in order.
pub fn copy_entries(source: &mut dyn EntrySource, sink: &mut dyn EntrySink) -> Result<u64> {
    let mut count = 0;
    while let Some(entry) = source.next_entry()? {
        if matches!(entry.kind, EntryKind::File { .. }) {
            let holes = source.stored_with_holes();
            let mut content = source.read_content()?;
            sink.add_file(&entry, &mut content, holes)?;
        } else {
            sink.add_entry(&entry, None)?;
        }
        count += 1;
    }
    Ok(count)
}

/// The content of a file of `size` bytes that a reader reads by position: `read_at(pos,
/// buf)` fills `buf` from byte `pos` on. Reads at most `chunk` bytes at a time; an error
/// becomes an [`std::io::ErrorKind::InvalidData`] I/O error with the same one-line message.
pub(crate) struct PositionedContent<F> {
    size: u64,
    pos: u64,
    chunk: u64,
    read_at: F,
}

impl<F: FnMut(u64, &mut [u8]) -> Result<()>> PositionedContent<F> {
    pub(crate) fn new(size: u64, chunk: u64, read_at: F) -> PositionedContent<F> {
        PositionedContent {
            size,
            pos: 0,
            chunk,
            read_at,
        }
    }
}

impl<F: FnMut(u64, &mut [u8]) -> Result<()>> Read for PositionedContent<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.size - self.pos).min(buf.len() as u64).min(self.chunk) as usize;
        if n == 0 {
            return Ok(0);
        }
        (self.read_at)(self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_parent_split_on_the_last_slash() {
        let e = Entry {
            path: b"a/b/c".to_vec(),
            kind: EntryKind::Directory,
            metadata: Metadata::default(),
        };
        assert_eq!(e.name(), b"c");
        assert_eq!(e.parent(), b"a/b");
        let root = Entry {
            path: vec![],
            ..e.clone()
        };
        assert_eq!(root.name(), b"");
        assert_eq!(root.parent(), b"");
        assert_eq!(root.display_path(), "/");
    }

    #[test]
    fn positioned_content_reads_in_chunks_and_reports_errors() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut largest = 0;
        let mut out = Vec::new();
        {
            let mut content = PositionedContent::new(100, 30, |pos, buf: &mut [u8]| {
                largest = largest.max(buf.len());
                buf.copy_from_slice(&data[pos as usize..pos as usize + buf.len()]);
                Ok(())
            });
            content.read_to_end(&mut out).unwrap();
        }
        assert_eq!(out, data);
        assert!(largest <= 30, "a read of {largest} bytes");
        let mut failing = PositionedContent::new(10, 30, |_, _: &mut [u8]| {
            Err(crate::error::Error::malformed(
                "squashfs: inode 3: data ends early",
            ))
        });
        let err = failing.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "squashfs: inode 3: data ends early");
    }
}
