//! The tree of an ext filesystem as an entry stream.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use super::{ExtFs, Inode};
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySource, PositionedContent, display_path};

/// Deepest directory nesting we follow (a loop in a corrupted image stops here).
const MAX_DEPTH: usize = 4096;

/// Pre-order walk with siblings in name order, hard links after their first name (see
/// [`ExtFs::walk_dir`]).
pub struct ExtWalk<'a, 'f> {
    fs: &'a ExtFs<'f>,
    /// (path, inode, depth) still to visit, last first.
    stack: Vec<(Vec<u8>, u32, usize)>,
    /// Inodes of files already yielded with several links: inode -> first path.
    seen: HashMap<u32, Vec<u8>>,
    current: Option<Inode>,
    /// Directory inodes already walked (loop detection).
    visited_dirs: HashSet<u32>,
}

impl<'a, 'f> ExtWalk<'a, 'f> {
    /// A walk from directory inode `root`, which comes first with the empty path.
    pub(super) fn new(fs: &'a ExtFs<'f>, root: u32) -> ExtWalk<'a, 'f> {
        ExtWalk {
            fs,
            stack: vec![(Vec::new(), root, 0)],
            seen: HashMap::new(),
            current: None,
            visited_dirs: HashSet::new(),
        }
    }

    /// The inode of the entry last returned (tests compare inode numbers with debugfs).
    pub fn current_inode(&self) -> Option<&Inode> {
        self.current.as_ref()
    }

    /// The entry kind of `inode` at `path`: a hard link if an earlier name of it was
    /// yielded.
    fn kind(&mut self, path: &[u8], inode: &Inode) -> Result<EntryKind> {
        if inode.is_dir() || inode.links <= 1 {
            return self.fs.kind(inode);
        }
        match self.seen.get(&inode.number) {
            Some(first) => Ok(EntryKind::HardLink {
                target: first.clone(),
            }),
            None => {
                self.seen.insert(inode.number, path.to_vec());
                self.fs.kind(inode)
            }
        }
    }

    /// Queue a directory's children, to come next in name order.
    fn push_children(&mut self, path: &[u8], inode: &Inode, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::malformed(
                "ext filesystem: directories nested too deep (a loop?)",
            ));
        }
        // A directory reached twice (a loop, or a hard-linked directory in a corrupted
        // image) would make the walk repeat or never end.
        if !self.visited_dirs.insert(inode.number) {
            return Err(Error::malformed(format!(
                "ext filesystem: directory inode {} is reached twice (loop)",
                inode.number
            )));
        }
        let children = self.fs.read_dir(inode)?;
        for (name, child) in children.into_iter().rev() {
            let mut child_path = path.to_vec();
            if !child_path.is_empty() {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&name);
            self.stack.push((child_path, child, depth + 1));
        }
        Ok(())
    }
}

impl EntrySource for ExtWalk<'_, '_> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some((path, ino, depth)) = self.stack.pop() else {
            self.current = None;
            return Ok(None);
        };
        let inode = self.fs.inode(ino)?;
        let metadata = self
            .fs
            .metadata(&inode)
            .map_err(|e| e.context(display_path(&path)))?;
        let kind = self.kind(&path, &inode)?;
        if inode.is_dir() {
            self.push_children(&path, &inode, depth)?;
        }
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
            .ok_or_else(|| Error::malformed("no current entry"))?;
        let fs = self.fs;
        Ok(Box::new(PositionedContent::new(
            inode.size,
            1 << 20,
            move |pos, buf: &mut [u8]| fs.read_data(&inode, pos, buf),
        )))
    }

    /// As `stat` reports it through a mount (fuse2fs, the kernel): fewer 512-byte sectors
    /// allocated (indirect and xattr blocks included) than the size needs.
    fn stored_with_holes(&self) -> Option<bool> {
        let inode = self.current.as_ref()?;
        Some(inode.sectors.saturating_mul(512) < inode.size)
    }
}
