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

/// The name prefix of an AUFS whiteout: `.wh.NAME` deletes `NAME`.
pub const AUFS_PREFIX: &[u8] = b".wh.";
/// The AUFS opaque marker: an empty file by this name makes its directory opaque.
pub const AUFS_OPAQUE: &[u8] = b".wh..wh..opq";
/// fuse-overlayfs's dangling 0/0 device in opaque directories (means nothing to either form).
pub const FUSE_OPAQUE_MARKER: &[u8] = b".wh..opq";
/// The xattr (value `y`) that makes a directory opaque to the kernel's overlayfs.
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

/// Whether a directory of an overlay's `upper/` is opaque for fuse-overlayfs: the OverlayFS
/// xattrs or its private `user.fuseoverlayfs.opaque` (what it sets when it may not set
/// `trusted.*`). An empty `.wh..wh..opq` inside makes it opaque too ([`upper_marker`]).
pub fn is_opaque_upper(metadata: &Metadata) -> bool {
    is_opaque(metadata)
        || metadata
            .xattrs
            .iter()
            .any(|x| x.name == FUSE_OPAQUE_XATTR && x.value == b"y")
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
    /// Convert the entries of `inner`.
    pub fn new(inner: S) -> ToAufs<S> {
        ToAufs {
            inner,
            pending: VecDeque::new(),
            marked: HashSet::new(),
            synthetic: false,
        }
    }

    /// The wrapped stream back.
    pub fn into_inner(self) -> S {
        self.inner
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

    fn stored_with_holes(&self) -> Option<bool> {
        (!self.synthetic)
            .then(|| self.inner.stored_with_holes())
            .flatten()
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
    /// Convert the entries of `inner`.
    pub fn new(inner: S) -> ToOverlayfs<S> {
        ToOverlayfs {
            inner,
            dirs: HashMap::new(),
            peeked: None,
            synthetic: false,
        }
    }

    fn opaque(metadata: Metadata) -> Metadata {
        with_xattrs_set_to_y(metadata, &[OPAQUE_XATTR])
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

    fn stored_with_holes(&self) -> Option<bool> {
        (!self.synthetic)
            .then(|| self.inner.stored_with_holes())
            .flatten()
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

/// fuse-overlayfs's private xattrs (`user.fuseoverlayfs.origin`, `.opaque`, ...): never
/// visible through it, so never part of the job's view.
pub const FUSE_XATTR_PREFIX: &[u8] = b"user.fuseoverlayfs.";
const FUSE_OPAQUE_XATTR: &[u8] = b"user.fuseoverlayfs.opaque";

/// What an entry of an overlay's `upper/` is as an AUFS-style marker, the form
/// fuse-overlayfs writes when it does not create 0/0 devices (see [`UpperToOverlayfs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpperMarker {
    /// An empty regular file `.wh.NAME`: NAME (this path) is deleted.
    Whiteout(Vec<u8>),
    /// An empty regular file `.wh..wh..opq`: its directory (this path) is opaque.
    Opaque(Vec<u8>),
    /// fuse-overlayfs's dangling 0/0 device `.wh..opq`: means nothing.
    Dangling,
    /// A `.wh.` name that is not an empty regular file (what it is instead): kept as it is.
    Odd(&'static str),
}

fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::File { .. } => "a non-empty file",
        other => other.description(),
    }
}

/// Classify an entry of an overlay's `upper/` by the rules of [`UpperToOverlayfs`];
/// `None` for an ordinary entry (0/0 devices other than `.wh..opq` are ordinary OverlayFS
/// whiteouts).
pub fn upper_marker(entry: &Entry) -> Option<UpperMarker> {
    let name = entry.name();
    if !name.starts_with(AUFS_PREFIX) || entry.path.is_empty() {
        return None;
    }
    let empty_file = entry.kind == EntryKind::File { size: 0 };
    if name == FUSE_OPAQUE_MARKER && entry.kind == (EntryKind::CharDevice { major: 0, minor: 0 }) {
        return Some(UpperMarker::Dangling);
    }
    if name == AUFS_OPAQUE && empty_file {
        return Some(UpperMarker::Opaque(entry.parent().to_vec()));
    }
    let target = &name[AUFS_PREFIX.len()..];
    if target.is_empty() {
        return Some(UpperMarker::Odd("named only .wh."));
    }
    if empty_file {
        return Some(UpperMarker::Whiteout(join(entry.parent(), target)));
    }
    Some(UpperMarker::Odd(kind_name(&entry.kind)))
}

/// What [`UpperToOverlayfs`] changed, and what it could not decide cleanly.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpperConversion {
    /// Empty `.wh.NAME` files turned into 0/0 character devices `NAME`.
    pub whiteouts: u64,
    /// Empty `.wh..wh..opq` files dropped (their directory carries `trusted.overlay.opaque=y`).
    pub opaque_markers: u64,
    /// Dangling `.wh..opq` 0/0 devices dropped.
    pub dangling_markers: u64,
    /// `user.fuseoverlayfs.*` xattrs dropped.
    pub private_xattrs: u64,
    /// One line per entry handled by a fallback rule (paths relative to `upper/`).
    pub warnings: Vec<String>,
}

struct Frame {
    path: Vec<u8>,
    /// The directory entry as yielded (None when the source never yielded it).
    dir: Option<Entry>,
    opaque: bool,
    /// Names of the ordinary entries seen in this directory.
    seen: HashSet<Vec<u8>>,
    /// Deletion markers waiting for the directory to end: deleted name -> marker.
    pending: BTreeMap<Vec<u8>, Entry>,
}

/// An overlay's `upper/` as fuse-overlayfs may leave it -> the OverlayFS form both the
/// kernel's overlayfs and fuse-overlayfs honour in a lower layer. Streaming; the source
/// must be in pre-order (a directory before its contents, contents contiguous), as the
/// ext, squashfs and directory readers are.
///
/// Rules (docs/whiteouts.md):
/// * an empty regular file `.wh.NAME` becomes a 0/0 character device `NAME` with the
///   marker's permissions, owner and times (no xattrs); it is yielded when its directory
///   ends, because `NAME` may still come;
/// * an empty regular file `.wh..wh..opq` is dropped and its directory made opaque (the
///   directory is yielded again when it was not: sinks treat a repeated directory as an
///   update);
/// * every opaque directory carries both `trusted.overlay.opaque=y` and
///   `user.overlay.opaque=y` (see `with_opaque` for who reads which);
/// * fuse-overlayfs's dangling 0/0 device `.wh..opq` is dropped;
/// * `user.fuseoverlayfs.*` xattrs are dropped; `user.fuseoverlayfs.opaque=y` makes the
///   directory opaque as above;
/// * a `.wh.` name that is not an empty regular file is kept as it is (it cannot come from
///   fuse-overlayfs, which refuses to create such names, so the kernel's overlayfs wrote it
///   and showed it as an ordinary entry), with a warning;
/// * a marker beside an ordinary entry of the same name: the entry is kept and the marker
///   dropped (fuse-overlayfs removes the marker whenever it creates the name, so the entry
///   is the newer change), with a warning.
pub struct UpperToOverlayfs<S> {
    inner: S,
    out: VecDeque<(Entry, bool)>,
    frames: Vec<Frame>,
    /// Paths of markers taken out of the stream, for hard links to them.
    removed: HashMap<Vec<u8>, Metadata>,
    /// Marker path -> the hard link that took its place.
    relinked: HashMap<Vec<u8>, Vec<u8>>,
    current_real: bool,
    done: bool,
    report: UpperConversion,
    repeated: u64,
}

fn ancestor_or_self(dir: &[u8], path: &[u8]) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// Mark a directory opaque for every reader of a lower layer: `trusted.overlay.opaque=y`
/// for the kernel's overlayfs (and fuse-overlayfs), and `user.overlay.opaque=y` for the
/// kernel's overlayfs mounted with `userxattr` (rootless) and for fuse-overlayfs on a
/// squashfuse older than 0.5, which reports `trusted.*` xattrs as `security.*`.
fn with_opaque(metadata: Metadata) -> Metadata {
    with_xattrs_set_to_y(metadata, &OPAQUE_XATTRS)
}

/// `metadata` with each xattr of `names` present once with the value `y`, xattrs sorted.
fn with_xattrs_set_to_y(mut metadata: Metadata, names: &[&[u8]]) -> Metadata {
    for &name in names {
        metadata.xattrs.retain(|x| x.name != name);
        metadata.xattrs.push(Xattr {
            name: name.to_vec(),
            value: b"y".to_vec(),
        });
    }
    metadata.xattrs.sort();
    metadata
}

impl<S: EntrySource> UpperToOverlayfs<S> {
    /// Convert the entries of `inner`, the walk of an overlay's `upper/`.
    pub fn new(inner: S) -> UpperToOverlayfs<S> {
        UpperToOverlayfs {
            inner,
            out: VecDeque::new(),
            frames: Vec::new(),
            removed: HashMap::new(),
            relinked: HashMap::new(),
            current_real: false,
            done: false,
            report: UpperConversion::default(),
            repeated: 0,
        }
    }

    /// What was converted so far (complete once the stream has ended).
    pub fn report(&self) -> &UpperConversion {
        &self.report
    }

    /// How many directories were yielded a second time (made opaque by a later marker).
    pub fn repeated_dirs(&self) -> u64 {
        self.repeated
    }

    /// The complete report, once the stream has ended.
    pub fn into_report(self) -> UpperConversion {
        self.report
    }

    fn warn(&mut self, path: &[u8], what: String) {
        self.report
            .warnings
            .push(format!("{}: {what}", crate::fs::entry::display_path(path)));
    }

    /// The directory ended: its deletion markers become whiteouts.
    fn close(&mut self, frame: Frame) {
        for (name, marker) in frame.pending {
            let mut metadata = marker.metadata;
            metadata.xattrs.clear();
            self.report.whiteouts += 1;
            self.out.push_back((
                Entry {
                    path: join(&frame.path, &name),
                    kind: EntryKind::CharDevice { major: 0, minor: 0 },
                    metadata,
                },
                false,
            ));
        }
    }

    /// Make the innermost open directory opaque (yielding it again if it was not).
    fn make_opaque(&mut self) {
        let frame = self.frames.last_mut().expect("a directory is open");
        if frame.opaque {
            return;
        }
        frame.opaque = true;
        if let Some(dir) = &frame.dir {
            let again = Entry {
                metadata: with_opaque(dir.metadata.clone()),
                ..dir.clone()
            };
            self.out.push_back((again, false));
            self.repeated += 1;
        }
    }

    fn process(&mut self, mut entry: Entry) {
        // Private xattrs of fuse-overlayfs.
        let before = entry.metadata.xattrs.len();
        let fuse_opaque = entry
            .metadata
            .xattrs
            .iter()
            .any(|x| x.name == FUSE_OPAQUE_XATTR && x.value == b"y");
        entry
            .metadata
            .xattrs
            .retain(|x| !x.name.starts_with(FUSE_XATTR_PREFIX));
        self.report.private_xattrs += (before - entry.metadata.xattrs.len()) as u64;
        if entry.kind == EntryKind::Directory && (fuse_opaque || is_opaque(&entry.metadata)) {
            entry.metadata = with_opaque(entry.metadata);
        }

        if entry.path.is_empty() {
            while let Some(frame) = self.frames.pop() {
                self.close(frame);
            }
        } else {
            let parent = entry.parent().to_vec();
            while let Some(top) = self.frames.last() {
                if ancestor_or_self(&top.path, &parent) {
                    break;
                }
                let frame = self.frames.pop().expect("checked");
                self.close(frame);
            }
            if self.frames.last().is_none_or(|f| f.path != parent) {
                // The source did not yield this directory (not pre-order): track it anyway.
                self.frames.push(Frame {
                    path: parent,
                    dir: None,
                    opaque: false,
                    seen: HashSet::new(),
                    pending: BTreeMap::new(),
                });
            }
            let name = entry.name().to_vec();
            match upper_marker(&entry) {
                Some(UpperMarker::Dangling) => {
                    self.report.dangling_markers += 1;
                    self.removed.insert(entry.path, entry.metadata);
                    return;
                }
                Some(UpperMarker::Opaque(_)) => {
                    self.report.opaque_markers += 1;
                    self.make_opaque();
                    self.removed.insert(entry.path, entry.metadata);
                    return;
                }
                Some(UpperMarker::Whiteout(deleted)) => {
                    let target = name[AUFS_PREFIX.len()..].to_vec();
                    let frame = self.frames.last_mut().expect("pushed above");
                    if frame.seen.contains(&target) {
                        self.warn(
                            &entry.path,
                            format!(
                                "deletion marker beside {}: kept that entry, dropped the marker",
                                crate::fs::entry::display_path(&deleted)
                            ),
                        );
                    } else {
                        frame.pending.insert(target, entry.clone());
                    }
                    self.removed.insert(entry.path, entry.metadata);
                    return;
                }
                Some(UpperMarker::Odd(kind)) => {
                    self.warn(
                        &entry.path,
                        format!(
                            "a .wh. name that is not an empty regular file ({kind}): kept as it \
                             is (fuse-overlayfs would hide it and /{})",
                            String::from_utf8_lossy(&join(
                                entry.parent(),
                                &name[AUFS_PREFIX.len()..]
                            ))
                        ),
                    );
                }
                None => {}
            }
            let frame = self.frames.last_mut().expect("pushed above");
            if let Some(marker) = frame.pending.remove(&name) {
                let marker_path = marker.path;
                self.warn(
                    &marker_path,
                    format!(
                        "deletion marker beside {}: kept that entry, dropped the marker",
                        entry.display_path()
                    ),
                );
            }
            let frame = self.frames.last_mut().expect("pushed above");
            frame.seen.insert(name);
            // A hard link to a marker that was taken out: the first becomes the (empty)
            // file itself, the next ones links to it.
            if let EntryKind::HardLink { target } = &entry.kind {
                if let Some(first) = self.relinked.get(target) {
                    entry.kind = EntryKind::HardLink {
                        target: first.clone(),
                    };
                } else if let Some(metadata) = self.removed.remove(target) {
                    self.relinked.insert(target.clone(), entry.path.clone());
                    entry.kind = EntryKind::File { size: 0 };
                    entry.metadata = metadata;
                    self.out.push_back((entry, false));
                    return;
                }
            }
        }
        if entry.kind == EntryKind::Directory {
            self.frames.push(Frame {
                path: entry.path.clone(),
                dir: Some(entry.clone()),
                opaque: is_opaque(&entry.metadata),
                seen: HashSet::new(),
                pending: BTreeMap::new(),
            });
        }
        let real = matches!(entry.kind, EntryKind::File { .. });
        self.out.push_back((entry, real));
    }
}

impl<S: EntrySource> EntrySource for UpperToOverlayfs<S> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some((entry, real)) = self.out.pop_front() {
                self.current_real = real;
                return Ok(Some(entry));
            }
            if self.done {
                return Ok(None);
            }
            match self.inner.next_entry()? {
                Some(entry) => self.process(entry),
                None => {
                    self.done = true;
                    while let Some(frame) = self.frames.pop() {
                        self.close(frame);
                    }
                }
            }
        }
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        if !self.current_real {
            return Ok(Box::new(std::io::empty()));
        }
        self.inner.read_content()
    }

    fn stored_with_holes(&self) -> Option<bool> {
        self.current_real
            .then(|| self.inner.stored_with_holes())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory entry stream; file contents are the path repeated to `size` bytes.
    struct Mem {
        entries: std::vec::IntoIter<Entry>,
        current: Vec<u8>,
    }

    fn mem(entries: Vec<Entry>) -> Mem {
        Mem {
            entries: entries.into_iter(),
            current: Vec::new(),
        }
    }

    impl EntrySource for Mem {
        fn next_entry(&mut self) -> Result<Option<Entry>> {
            Ok(self.entries.next().inspect(|e| {
                self.current = match e.kind {
                    EntryKind::File { size } => {
                        e.path.iter().copied().cycle().take(size as usize).collect()
                    }
                    _ => Vec::new(),
                }
            }))
        }
        fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
            Ok(Box::new(&self.current[..]))
        }
    }

    fn entry(path: &str, kind: EntryKind, permissions: u32, xattrs: &[(&str, &str)]) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            metadata: Metadata {
                permissions,
                uid: 1000,
                gid: 100,
                mtime: 1_700_000_000 + path.len() as i64,
                mtime_nsec: 7,
                xattrs: xattrs
                    .iter()
                    .map(|(n, v)| Xattr {
                        name: n.as_bytes().to_vec(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            },
        }
    }
    fn dir(path: &str, xattrs: &[(&str, &str)]) -> Entry {
        entry(path, EntryKind::Directory, 0o755, xattrs)
    }
    fn file(path: &str, size: u64) -> Entry {
        entry(path, EntryKind::File { size }, 0o644, &[])
    }
    fn marker(path: &str) -> Entry {
        entry(path, EntryKind::File { size: 0 }, 0o700, &[])
    }
    fn dev00(path: &str) -> Entry {
        entry(
            path,
            EntryKind::CharDevice { major: 0, minor: 0 },
            0o700,
            &[],
        )
    }

    /// Drain a stream: (path, kind letter, opaque, content) in yield order, with the
    /// content of every file read (and checked against its size).
    fn drain(source: &mut dyn EntrySource) -> Vec<(String, char, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(e) = source.next_entry().unwrap() {
            let mut content = Vec::new();
            let kind = match &e.kind {
                EntryKind::Directory => 'd',
                EntryKind::File { size } => {
                    source
                        .read_content()
                        .unwrap()
                        .read_to_end(&mut content)
                        .unwrap();
                    assert_eq!(content.len() as u64, *size, "{}", e.display_path());
                    '-'
                }
                EntryKind::CharDevice { major: 0, minor: 0 } => 'w',
                EntryKind::HardLink { .. } => 'h',
                EntryKind::Symlink { .. } => 'l',
                _ => '?',
            };
            assert!(
                !e.metadata
                    .xattrs
                    .iter()
                    .any(|x| x.name.starts_with(FUSE_XATTR_PREFIX)),
                "{}: private xattr left",
                e.display_path()
            );
            let opaque = is_opaque(&e.metadata);
            if opaque {
                for name in OPAQUE_XATTRS {
                    assert!(
                        e.metadata
                            .xattrs
                            .iter()
                            .any(|x| x.name == name && x.value == b"y"),
                        "{}: opaque without {}",
                        e.display_path(),
                        String::from_utf8_lossy(name)
                    );
                }
            }
            out.push((
                String::from_utf8(e.path.clone()).unwrap(),
                kind,
                opaque,
                content,
            ));
        }
        out
    }

    fn names(out: &[(String, char, bool, Vec<u8>)]) -> Vec<String> {
        out.iter()
            .map(|(p, k, o, _)| format!("{k}{}{p}", if *o { "*" } else { " " }))
            .collect()
    }

    /// The upper/ fuse-overlayfs 1.10 left on fuse2fs (as root) after `rm hello.txt;
    /// rm -r bin; rm -rf etc; mkdir etc; mkdir etc2`, plus a copied-up file.
    #[test]
    fn fuse_overlayfs_upper_becomes_overlayfs_form() {
        let upper = vec![
            dir("", &[]),
            marker(".wh.bin"),
            marker(".wh.hello.txt"),
            dir("etc", &[("trusted.overlay.opaque", "y")]),
            dev00("etc/.wh..opq"),
            marker("etc/.wh..wh..opq"),
            file("etc/x", 4),
            dir("etc2", &[]),
            dev00("etc2/.wh..opq"),
            marker("etc2/.wh..wh..opq"),
            entry(
                "etc2/y",
                EntryKind::File { size: 300 },
                0o600,
                &[("user.fuseoverlayfs.origin", "etc2/y"), ("user.keep", "1")],
            ),
            dir("rootless", &[("user.fuseoverlayfs.opaque", "y")]),
            marker("rootless/.wh..wh..opq"),
            file("zz", 10),
        ];
        let mut conv = UpperToOverlayfs::new(mem(upper));
        let out = drain(&mut conv);
        assert_eq!(
            names(&out),
            [
                "d ",
                "d*etc",
                "- etc/x",
                "d etc2",
                "d*etc2",
                "- etc2/y",
                "d*rootless",
                "- zz",
                "w bin",
                "w hello.txt"
            ],
            "top-level whiteouts come when the root ends"
        );
        for (path, _, _, content) in &out {
            if !content.is_empty() {
                let expected: Vec<u8> = path.bytes().cycle().take(content.len()).collect();
                assert_eq!(content, &expected, "{path}: content from the inner stream");
            }
        }
        assert_eq!(conv.repeated_dirs(), 1, "etc2 yielded again, opaque");
        let report = conv.into_report();
        assert_eq!(
            report,
            UpperConversion {
                whiteouts: 2,
                opaque_markers: 3,
                dangling_markers: 2,
                private_xattrs: 2,
                warnings: vec![],
            }
        );
    }

    #[test]
    fn whiteout_keeps_the_markers_owner_mode_and_times_and_comes_once() {
        let mut m = marker("a/.wh.gone");
        m.metadata.xattrs.push(Xattr {
            name: b"system.posix_acl_access".to_vec(),
            value: b"x".to_vec(),
        });
        let mut conv = UpperToOverlayfs::new(mem(vec![
            dir("", &[]),
            dir("a", &[]),
            m.clone(),
            dir("a/sub", &[]),
            marker("a/sub/.wh.deep"),
            file("a/sub/f", 3),
            file("b", 2),
        ]));
        let mut all = Vec::new();
        while let Some(e) = conv.next_entry().unwrap() {
            all.push(e);
        }
        let paths: Vec<String> = all.iter().map(|e| e.display_path()).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/a",
                "/a/sub",
                "/a/sub/f",
                "/a/sub/deep",
                "/a/gone",
                "/b"
            ],
            "a whiteout comes when its directory ends, before the next entry outside it"
        );
        let gone = &all[5];
        assert_eq!(gone.kind, EntryKind::CharDevice { major: 0, minor: 0 });
        let expected = Metadata {
            xattrs: vec![],
            ..m.metadata
        };
        assert_eq!(gone.metadata, expected);
    }

    #[test]
    fn a_marker_beside_a_real_entry_keeps_the_entry_and_warns() {
        // `.a` sorts before `.wh..a`; `.wh.foo` before `foo`.
        let mut conv = UpperToOverlayfs::new(mem(vec![
            dir("", &[]),
            file(".a", 1),
            marker(".wh..a"),
            marker(".wh.foo"),
            dir("foo", &[]),
            file("foo/in", 2),
        ]));
        let out = drain(&mut conv);
        assert_eq!(names(&out), ["d ", "- .a", "d foo", "- foo/in"]);
        let report = conv.into_report();
        assert_eq!(report.whiteouts, 0);
        assert_eq!(
            report.warnings,
            [
                "/.wh..a: deletion marker beside /.a: kept that entry, dropped the marker",
                "/.wh.foo: deletion marker beside /foo: kept that entry, dropped the marker",
            ]
        );
    }

    #[test]
    fn odd_wh_names_are_kept_with_a_warning() {
        let mut conv = UpperToOverlayfs::new(mem(vec![
            dir("", &[]),
            marker(".wh."),
            file(".wh.data", 5),
            dir(".wh.dir", &[]),
            entry(
                ".wh.link",
                EntryKind::Symlink {
                    target: b"x".to_vec(),
                },
                0o777,
                &[],
            ),
            dev00(".wh.wh-device"),
            file("d/.wh..wh..opq", 1),
        ]));
        let out = drain(&mut conv);
        assert_eq!(
            names(&out),
            [
                "d ",
                "- .wh.",
                "- .wh.data",
                "d .wh.dir",
                "l .wh.link",
                "w .wh.wh-device",
                "- d/.wh..wh..opq"
            ]
        );
        let report = conv.into_report();
        assert_eq!(report.warnings.len(), 6, "{:?}", report.warnings);
        assert_eq!(
            report.warnings[1],
            "/.wh.data: a .wh. name that is not an empty regular file (a non-empty file): \
             kept as it is (fuse-overlayfs would hide it and /data)"
        );
        assert!(report.warnings[0].contains("named only .wh."));
    }

    #[test]
    fn a_hard_link_to_a_marker_becomes_an_empty_file() {
        let mut conv = UpperToOverlayfs::new(mem(vec![
            dir("", &[]),
            marker(".wh.a"),
            entry(
                "y",
                EntryKind::HardLink {
                    target: b".wh.a".to_vec(),
                },
                0o700,
                &[],
            ),
            entry(
                "z",
                EntryKind::HardLink {
                    target: b".wh.a".to_vec(),
                },
                0o700,
                &[],
            ),
        ]));
        let mut all = Vec::new();
        while let Some(e) = conv.next_entry().unwrap() {
            all.push((e.display_path(), e.kind));
        }
        assert_eq!(
            all,
            [
                ("/".to_string(), EntryKind::Directory),
                ("/y".to_string(), EntryKind::File { size: 0 }),
                (
                    "/z".to_string(),
                    EntryKind::HardLink {
                        target: b"y".to_vec()
                    }
                ),
                (
                    "/a".to_string(),
                    EntryKind::CharDevice { major: 0, minor: 0 }
                ),
            ]
        );
    }

    #[test]
    fn upper_marker_classifies_what_ls_shows() {
        assert_eq!(
            upper_marker(&marker("d/.wh.x")),
            Some(UpperMarker::Whiteout(b"d/x".to_vec()))
        );
        assert_eq!(
            upper_marker(&marker("d/.wh..wh..opq")),
            Some(UpperMarker::Opaque(b"d".to_vec()))
        );
        assert_eq!(
            upper_marker(&dev00("d/.wh..opq")),
            Some(UpperMarker::Dangling)
        );
        assert_eq!(
            upper_marker(&marker("d/.wh..opq")),
            Some(UpperMarker::Whiteout(b"d/.opq".to_vec())),
            "fuse-overlayfs's deletion of a lower `.opq`"
        );
        assert_eq!(upper_marker(&dev00("d/x")), None);
        assert_eq!(upper_marker(&file("d/x", 0)), None);
        assert_eq!(
            upper_marker(&file("d/.wh.x", 1)),
            Some(UpperMarker::Odd("a non-empty file"))
        );
    }
}
