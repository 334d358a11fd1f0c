//! Whiteouts: how a layer says "this was deleted" and "this directory replaces the one
//! below", in the two forms images use, and conversions between them on entry streams.
//!
//! * OverlayFS form (OCI-SIF squashfs layers, ext3 overlays): a deleted entry is a 0/0
//!   character device with its name; an opaque directory carries `trusted.overlay.opaque=y`
//!   (`user.overlay.opaque=y` from a rootless overlay). Newer kernels can also mark a
//!   whiteout with a `*.overlay.whiteout` xattr on a regular file.
//! * AUFS form (tar layers): a deleted `NAME` is an empty regular file `.wh.NAME`; an opaque
//!   directory contains an empty file `.wh..wh..opq`.
//! * fuse-overlayfs also leaves a dangling 0/0 device named `.wh..opq` in opaque
//!   directories: it means nothing to either form and is dropped by both conversions.
//!
//! Difference from the reference (oci-tools `whiteoutsToAUFS`): converting to AUFS removes
//! the opaque xattr from the directory instead of keeping both markers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;

use crate::error::Result;
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr};

pub const AUFS_PREFIX: &[u8] = b".wh.";
pub const AUFS_OPAQUE: &[u8] = b".wh..wh..opq";
pub const FUSE_OPAQUE_MARKER: &[u8] = b".wh..opq";
pub const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
const OPAQUE_XATTRS: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];
const WHITEOUT_XATTRS: [&[u8]; 2] = [b"trusted.overlay.whiteout", b"user.overlay.whiteout"];

/// What an entry means as a change to the layers below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An ordinary entry (added or replaced).
    Plain,
    /// Deletes this path (and everything under it) from the layers below.
    Whiteout(Vec<u8>),
    /// This directory hides everything below it in the layers below.
    Opaque(Vec<u8>),
    /// fuse-overlayfs's dangling marker: means nothing.
    Marker,
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Whether a directory's metadata marks it opaque.
pub fn is_opaque(metadata: &Metadata) -> bool {
    metadata
        .xattrs
        .iter()
        .any(|x| OPAQUE_XATTRS.contains(&x.name.as_slice()) && x.value == b"y")
}

/// Classify an entry in either form.
pub fn classify(entry: &Entry) -> Change {
    let name = entry.name();
    match &entry.kind {
        EntryKind::CharDevice { major: 0, minor: 0 } if name == FUSE_OPAQUE_MARKER => {
            Change::Marker
        }
        EntryKind::CharDevice { major: 0, minor: 0 } => Change::Whiteout(entry.path.clone()),
        EntryKind::File { .. } if name == AUFS_OPAQUE => Change::Opaque(entry.parent().to_vec()),
        EntryKind::File { .. } if name.starts_with(AUFS_PREFIX) => {
            Change::Whiteout(join(entry.parent(), &name[AUFS_PREFIX.len()..]))
        }
        EntryKind::File { .. }
            if entry
                .metadata
                .xattrs
                .iter()
                .any(|x| WHITEOUT_XATTRS.contains(&x.name.as_slice())) =>
        {
            Change::Whiteout(entry.path.clone())
        }
        EntryKind::Directory if is_opaque(&entry.metadata) => Change::Opaque(entry.path.clone()),
        _ => Change::Plain,
    }
}

fn marker(path: Vec<u8>, like: &Metadata, mtime: i64) -> Entry {
    Entry {
        path,
        kind: EntryKind::File { size: 0 },
        metadata: Metadata {
            permissions: 0o600,
            uid: like.uid,
            gid: like.gid,
            mtime,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        },
    }
}

/// OverlayFS form -> AUFS form, streaming.
pub struct ToAufs<S> {
    inner: S,
    pending: VecDeque<Entry>,
    marked: HashSet<Vec<u8>>,
    synthetic: bool,
}

impl<S: EntrySource> ToAufs<S> {
    pub fn new(inner: S) -> ToAufs<S> {
        ToAufs {
            inner,
            pending: VecDeque::new(),
            marked: HashSet::new(),
            synthetic: false,
        }
    }
}

impl<S: EntrySource> EntrySource for ToAufs<S> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        if let Some(e) = self.pending.pop_front() {
            self.synthetic = true;
            return Ok(Some(e));
        }
        self.synthetic = false;
        loop {
            let Some(mut entry) = self.inner.next_entry()? else {
                return Ok(None);
            };
            match classify(&entry) {
                Change::Marker => continue,
                Change::Whiteout(path)
                    if !matches!(entry.kind, EntryKind::File { .. })
                        || !entry.name().starts_with(AUFS_PREFIX) =>
                {
                    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                        Some(i) => (path[..i].to_vec(), path[i + 1..].to_vec()),
                        None => (Vec::new(), path.clone()),
                    };
                    let mut wh = AUFS_PREFIX.to_vec();
                    wh.extend_from_slice(&name);
                    let mut m = marker(join(&parent, &wh), &entry.metadata, entry.metadata.mtime);
                    m.metadata.xattrs.clear();
                    self.synthetic = true;
                    return Ok(Some(m));
                }
                Change::Opaque(dir) if matches!(entry.kind, EntryKind::Directory) => {
                    entry
                        .metadata
                        .xattrs
                        .retain(|x| !OPAQUE_XATTRS.contains(&x.name.as_slice()));
                    if self.marked.insert(dir.clone()) {
                        self.pending
                            .push_back(marker(join(&dir, AUFS_OPAQUE), &entry.metadata, 0));
                    }
                    return Ok(Some(entry));
                }
                // An AUFS opaque marker already present (fuse-overlayfs writes both forms):
                // keep one only.
                Change::Opaque(dir) => {
                    if self.marked.insert(dir) {
                        return Ok(Some(entry));
                    }
                    continue;
                }
                _ => return Ok(Some(entry)),
            }
        }
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        if self.synthetic {
            return Ok(Box::new(std::io::empty()));
        }
        self.inner.read_content()
    }
}

/// AUFS form -> OverlayFS form, streaming. An opaque marker that arrives after other
/// entries of its directory makes the directory be yielded again with the opaque xattr
/// (sinks treat a repeated directory as an update of its metadata).
pub struct ToOverlayfs<S> {
    inner: S,
    dirs: HashMap<Vec<u8>, Metadata>,
    peeked: Option<Entry>,
    synthetic: bool,
}

impl<S: EntrySource> ToOverlayfs<S> {
    pub fn new(inner: S) -> ToOverlayfs<S> {
        ToOverlayfs {
            inner,
            dirs: HashMap::new(),
            peeked: None,
            synthetic: false,
        }
    }

    fn opaque(mut metadata: Metadata) -> Metadata {
        metadata.xattrs.retain(|x| x.name != OPAQUE_XATTR);
        metadata.xattrs.push(Xattr {
            name: OPAQUE_XATTR.to_vec(),
            value: b"y".to_vec(),
        });
        metadata.xattrs.sort();
        metadata
    }
}

impl<S: EntrySource> EntrySource for ToOverlayfs<S> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            let entry = match self.peeked.take() {
                Some(e) => e,
                None => match self.inner.next_entry()? {
                    Some(e) => e,
                    None => return Ok(None),
                },
            };
            self.synthetic = false;
            match (&entry.kind, classify(&entry)) {
                (_, Change::Marker) => continue,
                (EntryKind::Directory, _) => {
                    // Look one entry ahead: Docker and GNU tar put the opaque marker first.
                    let mut entry = entry;
                    if let Some(next) = self.inner.next_entry()? {
                        if classify(&next) == Change::Opaque(entry.path.clone())
                            && matches!(next.kind, EntryKind::File { .. })
                        {
                            entry.metadata = Self::opaque(entry.metadata);
                        } else {
                            self.peeked = Some(next);
                        }
                    }
                    self.dirs.insert(entry.path.clone(), entry.metadata.clone());
                    return Ok(Some(entry));
                }
                (EntryKind::File { .. }, Change::Opaque(dir)) => {
                    let metadata = self.dirs.get(&dir).cloned().unwrap_or(Metadata {
                        permissions: 0o755,
                        ..entry.metadata.clone()
                    });
                    let metadata = Self::opaque(metadata);
                    self.dirs.insert(dir.clone(), metadata.clone());
                    return Ok(Some(Entry {
                        path: dir,
                        kind: EntryKind::Directory,
                        metadata,
                    }));
                }
                (EntryKind::File { .. }, Change::Whiteout(path))
                    if entry.name().starts_with(AUFS_PREFIX) =>
                {
                    let mut metadata = entry.metadata.clone();
                    metadata.xattrs.clear();
                    self.synthetic = true;
                    return Ok(Some(Entry {
                        path,
                        kind: EntryKind::CharDevice { major: 0, minor: 0 },
                        metadata,
                    }));
                }
                _ => return Ok(Some(entry)),
            }
        }
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        if self.synthetic {
            return Ok(Box::new(std::io::empty()));
        }
        self.inner.read_content()
    }
}

/// Apply a stack of layers (lowest first) by the OCI image spec's changeset rules and
/// return the surviving entries, each with the index of the layer that provides it, in
/// path order. Whiteouts and opaque markers apply to lower layers only; an entry replaces
/// the same path below (a non-directory replacing a directory removes its contents).
pub fn apply_layers(layers: &[Vec<Entry>]) -> Vec<(usize, Entry)> {
    let mut state: BTreeMap<Vec<u8>, (usize, Entry)> = BTreeMap::new();
    let under = |dir: &[u8], path: &[u8]| {
        dir.is_empty()
            || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
    };
    for (index, layer) in layers.iter().enumerate() {
        // Deletions first, against the layers below only.
        for entry in layer {
            match classify(entry) {
                Change::Whiteout(path) => state.retain(|p, _| p != &path && !under(&path, p)),
                Change::Opaque(dir) => state.retain(|p, _| !under(&dir, p)),
                _ => {}
            }
        }
        for entry in layer {
            match classify(entry) {
                Change::Plain => {}
                Change::Opaque(_) if matches!(entry.kind, EntryKind::Directory) => {}
                _ => continue,
            }
            let mut entry = entry.clone();
            entry
                .metadata
                .xattrs
                .retain(|x| !OPAQUE_XATTRS.contains(&x.name.as_slice()));
            if !matches!(entry.kind, EntryKind::Directory) {
                let path = entry.path.clone();
                state.retain(|p, _| !under(&path, p) || path.is_empty());
            }
            state.insert(entry.path.clone(), (index, entry));
        }
    }
    state.into_values().collect()
}
