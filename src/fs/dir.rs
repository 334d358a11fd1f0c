//! A real directory tree as an entry stream (for building layers from a directory, and as a
//! reference source in tests and benchmarks).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, ResultExt};
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr};

/// Walks a directory (lstat, never following symlinks) in pre-order, siblings sorted by
/// name bytes; the root comes first with the empty path.
pub struct DirSource {
    root: PathBuf,
    stack: Vec<Vec<u8>>,
    links: HashMap<(u64, u64), Vec<u8>>,
    current: Option<PathBuf>,
    /// Whether the current file has fewer bytes allocated than its size (see
    /// [`EntrySource::stored_with_holes`]).
    current_holes: Option<bool>,
    excluded: Vec<Vec<u8>>,
}

impl DirSource {
    /// A walk of the directory `root` (which must be a directory, not a link to one).
    pub fn new(root: &Path) -> Result<DirSource> {
        if !std::fs::symlink_metadata(root)
            .with_context(|| root.display())?
            .is_dir()
        {
            return Err(Error::refused(format!(
                "{}: not a directory",
                root.display()
            )));
        }
        Ok(DirSource {
            root: root.to_path_buf(),
            stack: vec![Vec::new()],
            links: HashMap::new(),
            current: None,
            current_holes: None,
            excluded: Vec::new(),
        })
    }

    /// Leave out `path` (a file inside the tree, as mksquashfs leaves out its own output);
    /// a path outside the tree, or not there, changes nothing.
    pub fn exclude(&mut self, path: &Path) {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let (Ok(root), Ok(parent)) = (self.root.canonicalize(), parent.canonicalize())
            && let Ok(rel) = parent.join(name).strip_prefix(&root)
        {
            self.excluded.push(rel.as_os_str().as_bytes().to_vec());
        }
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(std::ffi::OsStr::from_bytes(rel))
        }
    }
}

/// The xattrs of a path (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>> {
    let what = || format!("{}: xattrs", path.display());
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(what(), e.into())),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..])
            .map_err(|e| Error::io(what(), e.into()))?;
        value.truncate(len);
        out.push(Xattr {
            name: name.to_vec(),
            value,
        });
    }
    out.sort();
    Ok(out)
}

impl EntrySource for DirSource {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some(rel) = self.stack.pop() else {
            self.current = None;
            return Ok(None);
        };
        let path = self.full(&rel);
        let meta = std::fs::symlink_metadata(&path).with_context(|| path.display())?;
        let ft = meta.file_type();
        let (major, minor) = {
            let rdev = meta.rdev();
            (
                (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32,
                ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
            )
        };
        let kind = if ft.is_dir() {
            let mut names: Vec<Vec<u8>> = std::fs::read_dir(&path)
                .with_context(|| path.display())?
                .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
                .collect::<std::io::Result<_>>()
                .with_context(|| path.display())?;
            names.sort();
            for name in names.into_iter().rev() {
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(&name);
                if !self.excluded.contains(&child) {
                    self.stack.push(child);
                }
            }
            EntryKind::Directory
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: std::fs::read_link(&path)
                    .with_context(|| path.display())?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            }
        } else if ft.is_char_device() {
            EntryKind::CharDevice { major, minor }
        } else if ft.is_block_device() {
            EntryKind::BlockDevice { major, minor }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_socket() {
            EntryKind::Socket
        } else {
            match (meta.nlink() > 1)
                .then(|| self.links.get(&(meta.dev(), meta.ino())))
                .flatten()
            {
                Some(first) => EntryKind::HardLink {
                    target: first.clone(),
                },
                None => {
                    if meta.nlink() > 1 {
                        self.links.insert((meta.dev(), meta.ino()), rel.clone());
                    }
                    EntryKind::File { size: meta.len() }
                }
            }
        };
        let metadata = Metadata {
            permissions: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            xattrs: read_xattrs(&path)?,
        };
        self.current_holes = matches!(kind, EntryKind::File { .. })
            .then(|| meta.blocks().saturating_mul(512) < meta.len());
        self.current = Some(path);
        Ok(Some(Entry {
            path: rel,
            kind,
            metadata,
        }))
    }

    fn stored_with_holes(&self) -> Option<bool> {
        self.current_holes
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        let path = self
            .current
            .as_ref()
            .ok_or_else(|| Error::malformed("no current entry"))?;
        Ok(Box::new(File::open(path).with_context(|| path.display())?))
    }
}
