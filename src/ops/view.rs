//! `cat`, `extract` and `diff`: the image's files as a running container sees them (its
//! layers stacked, the overlay's `upper/` on top, whiteouts and opaque directories applied),
//! or one layer's own files, read straight from the SIF without mounting anything.
//!
//! The merged view is [`crate::fs::merge`]'s pass 1 over the layers, bottom first; a file's
//! content is then read from the layer that provides it by streaming that layer again to the
//! file's position. The writable overlay contributes its `upper/` (with fuse-overlayfs's AUFS
//! markers converted), a sealed overlay partition its whole tree.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;

use super::Image;
use super::browse::ListedKind;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, EntrySource, Metadata, display_path};
use crate::fs::ext::ExtFs;
use crate::fs::merge::{LayerMerge, MergePlan, Origin};
use crate::fs::squashfs::SquashfsReader;
use crate::fs::unpack::{DirWriter, UnpackOptions, UnpackReport};
use crate::fs::whiteout::{Change, UpperToOverlayfs, classify};
use crate::oci::MediaType;
use crate::sif::{FsType, PartType};

/// Symlinks followed while resolving one path, as the kernel's limit.
const MAX_SYMLINK_HOPS: usize = 40;

/// How a layer's filesystem holds its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// A squashfs (OCI layer, root filesystem, sealed overlay partition): the whole tree.
    Squashfs,
    /// A writable ext3 overlay: its `upper/` is the layer.
    OverlayUpper,
    /// An ext3 root filesystem partition: the whole tree.
    Ext,
}

/// One layer of the image, bottom first.
#[derive(Debug, Clone)]
struct ViewLayer {
    /// Its number as `ls --layer` counts (OCI layer, or ext3/squashfs partition).
    number: usize,
    offset: u64,
    size: u64,
    holds: Holds,
    /// Part of the filesystem the container sees (native: root and overlay partitions).
    stacked: bool,
}

/// The layers of the image at `path`, bottom first.
fn layers_of(image: &Image) -> Result<Vec<ViewLayer>> {
    let name = &image.name;
    let mut out = Vec::new();
    match &image.oci {
        Some(oci) => {
            for (number, layer) in oci.layers.iter().enumerate() {
                let holds = match layer.descriptor.media_type {
                    MediaType::SquashfsLayer => Holds::Squashfs,
                    MediaType::Ext3Layer => Holds::OverlayUpper,
                    ref other => {
                        return Err(Error::unsupported(format!(
                            "{name}: layer {number} is {other}, not squashfs or ext3"
                        )));
                    }
                };
                out.push(ViewLayer {
                    number,
                    offset: layer.offset,
                    size: layer.object_size,
                    holds,
                    stacked: true,
                });
            }
        }
        None => {
            let partitions = image
                .container
                .partitions(|p| matches!(p.fs_type, FsType::Ext3 | FsType::Squashfs));
            for (number, d) in partitions.enumerate() {
                let p = d.partition()?;
                let holds = match (p.fs_type, p.part_type) {
                    (FsType::Squashfs, _) => Holds::Squashfs,
                    (_, PartType::Overlay) => Holds::OverlayUpper,
                    _ => Holds::Ext,
                };
                out.push(ViewLayer {
                    number,
                    offset: d.offset,
                    size: d.size,
                    holds,
                    stacked: matches!(p.part_type, PartType::PrimSys | PartType::Overlay),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::not_found(format!(
            "{name}: no squashfs or ext3 layer or partition"
        )));
    }
    Ok(out)
}

/// Run `f` over the entry stream of `layer` (the same stream every time: positions count
/// in it).
fn with_source<T>(
    file: &File,
    layer: &ViewLayer,
    f: impl FnOnce(&mut dyn EntrySource) -> Result<T>,
) -> Result<T> {
    let context = |e: Error| e.context(format!("layer {}", layer.number));
    match layer.holds {
        Holds::Squashfs => {
            let reader = SquashfsReader::open(file, layer.offset, layer.size).map_err(context)?;
            let mut walk = reader.walk().map_err(context)?;
            f(&mut walk).map_err(context)
        }
        Holds::OverlayUpper => {
            let ext = ExtFs::open(file, layer.offset, layer.size).map_err(context)?;
            let upper = ext
                .walk_dir(b"upper")
                .map_err(|e| context(e.context("overlay upper/")))?;
            f(&mut UpperToOverlayfs::new(upper)).map_err(context)
        }
        Holds::Ext => {
            let ext = ExtFs::open(file, layer.offset, layer.size).map_err(context)?;
            let mut walk = ext.walk().map_err(context)?;
            f(&mut walk).map_err(context)
        }
    }
}

/// Which files to read: the stacked layers merged, or one layer on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every stacked layer with the overlay on top, as the container sees them.
    Merged,
    /// Layer N (as `ls --layer` numbers them) alone, its whiteouts kept as 0/0 devices.
    Layer(usize),
}

/// The merged plan of `scope` and the layers it reads.
fn plan(image: &Image, scope: Scope) -> Result<(Vec<ViewLayer>, MergePlan)> {
    let all = layers_of(image)?;
    let layers: Vec<ViewLayer> = match scope {
        Scope::Merged => all.into_iter().filter(|l| l.stacked).collect(),
        Scope::Layer(n) => {
            let count = all.len();
            let layer = all.into_iter().nth(n).ok_or_else(|| {
                Error::not_found(format!(
                    "{}: no layer {n}: layers are numbered 0 to {} (bottom first, as `sifovl ls --layer` counts)",
                    image.name,
                    count - 1
                ))
            })?;
            vec![layer]
        }
    };
    let mut merge = LayerMerge::new(matches!(scope, Scope::Layer(_)));
    for (i, layer) in layers.iter().enumerate() {
        merge.begin_layer(i);
        with_source(&image.file, layer, |source| {
            while let Some(entry) = source.next_entry()? {
                merge.observe(&entry)?;
            }
            Ok(())
        })
        .map_err(|e| e.context(&image.name))?;
    }
    Ok((layers, merge.finish()))
}

/// Every name of a plan, by path.
type Names<'p> = HashMap<&'p [u8], (&'p Entry, Option<Origin>)>;

fn names(plan: &MergePlan) -> Names<'_> {
    plan.entries()
        .map(|(e, origin)| (e.path.as_slice(), (e, origin)))
        .collect()
}

/// A path given on the command line as a path of the tree: no leading or trailing `/`,
/// the root as the empty path.
fn tree_path(text: &str) -> Vec<u8> {
    text.trim_matches('/').as_bytes().to_vec()
}

/// Resolve `path` in the tree the way the kernel would inside the container: `..` stops at
/// the root, symlinks in directories are followed (and the last one too with
/// `follow_last`), absolute targets start again at the root.
fn resolve(names: &Names<'_>, path: &[u8], follow_last: bool) -> Result<Vec<u8>> {
    let mut todo: std::collections::VecDeque<Vec<u8>> =
        path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(component) = todo.pop_front() {
        match component.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = done.join(&b'/');
        if !candidate.is_empty() {
            candidate.push(b'/');
        }
        candidate.extend_from_slice(&component);
        let Some((entry, _)) = names.get(candidate.as_slice()) else {
            return Err(Error::not_found(format!(
                "{}: no such file or directory",
                display_path(&candidate)
            )));
        };
        let last = todo.iter().all(|c| c.is_empty() || c == b".");
        match &entry.kind {
            EntryKind::Symlink { target } if !last || follow_last => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::malformed(format!(
                        "{}: too many levels of symbolic links",
                        display_path(path)
                    )));
                }
                if target.starts_with(b"/") {
                    done.clear();
                }
                for c in target.split(|&b| b == b'/').rev() {
                    todo.push_front(c.to_vec());
                }
            }
            EntryKind::Directory => done.push(component),
            _ if !last => {
                return Err(Error::not_found(format!(
                    "{}: not a directory",
                    display_path(&candidate)
                )));
            }
            _ => done.push(component),
        }
    }
    Ok(done.join(&b'/'))
}

/// The entry a resolved name stands for: a hard-link name is its target.
fn file_behind<'p>(names: &Names<'p>, path: &[u8]) -> Option<(&'p Entry, Option<Origin>)> {
    let (entry, origin) = *names.get(path)?;
    match &entry.kind {
        EntryKind::HardLink { target } => names.get(target.as_slice()).copied(),
        _ => Some((entry, origin)),
    }
}

/// Stream `layer` to the entry at position `position` and hand its content to `f`.
fn with_content<T>(
    file: &File,
    layer: &ViewLayer,
    position: u64,
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    with_source(file, layer, |source| {
        let mut seq = 0u64;
        while let Some(entry) = source.next_entry()? {
            if seq == position {
                if !matches!(entry.kind, EntryKind::File { .. }) {
                    break;
                }
                let mut content = source.read_content()?;
                return f(&mut content);
            }
            seq += 1;
        }
        Err(Error::malformed(
            "the layer changed while it was read (a file is no longer where it was)",
        ))
    })
}

/// Write the content of file `inside` (resolved through symlinks) of the image at `path`
/// to `out`. Returns the bytes written.
pub fn cat(path: &Path, inside: &str, scope: Scope, out: &mut dyn Write) -> Result<u64> {
    let image = Image::open_read(path)?;
    let (layers, plan) = plan(&image, scope)?;
    let names = names(&plan);
    let ctx = |e: Error| e.context(&image.name);
    let resolved = resolve(&names, &tree_path(inside), true).map_err(ctx)?;
    let (entry, origin) = file_behind(&names, &resolved).ok_or_else(|| {
        ctx(Error::not_found(format!(
            "{}: no such file",
            display_path(&resolved)
        )))
    })?;
    let (EntryKind::File { size }, Some((layer, position))) = (&entry.kind, origin) else {
        return Err(ctx(Error::refused(format!(
            "{}: {}, not a file",
            display_path(&resolved),
            entry.kind.description()
        ))));
    };
    let written = with_content(&image.file, &layers[layer], position, |content| {
        std::io::copy(content, out).map_err(|e| Error::io("writing the file's content", e))
    })
    .map_err(ctx)?;
    if written != *size {
        return Err(ctx(Error::malformed(format!(
            "{}: {written} bytes read for a file of {size}",
            display_path(&resolved)
        ))));
    }
    Ok(written)
}

/// Options of `extract`.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Which files to read.
    pub scope: Scope,
    /// Restore owners (needs root).
    pub same_owner: bool,
    /// Restore extended attributes.
    pub xattrs: bool,
}

/// What `extract` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    /// The image.
    pub image: String,
    /// The path extracted, as resolved in the image.
    pub path: String,
    /// Where it went.
    pub destination: String,
    /// Names written, bytes, and what was skipped.
    #[serde(flatten)]
    pub written: UnpackReport,
}

/// Passes on the entries under `prefix`, re-rooted at the destination; a hard link inside
/// whose file lies outside gets that file's content under the link's first name.
struct Subtree<'s> {
    prefix: Vec<u8>,
    inner: &'s mut dyn EntrySink,
    /// Files outside the subtree with names inside: the first inside name of each.
    adopted: HashMap<Vec<u8>, Vec<u8>>,
    /// Extracting one non-directory: its new name.
    single: Option<Vec<u8>>,
}

impl Subtree<'_> {
    /// The path under the destination, or `None` outside the subtree.
    fn rebase(&self, path: &[u8]) -> Option<Vec<u8>> {
        if let Some(name) = &self.single {
            return (path == self.prefix.as_slice()).then(|| name.clone());
        }
        if self.prefix.is_empty() {
            return Some(path.to_vec());
        }
        if path == self.prefix.as_slice() {
            return Some(Vec::new());
        }
        path.strip_prefix(self.prefix.as_slice())
            .and_then(|rest| rest.strip_prefix(b"/"))
            .map(<[u8]>::to_vec)
    }
}

impl EntrySink for Subtree<'_> {
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
        let path = match (self.rebase(&entry.path), self.adopted.get(&entry.path)) {
            (Some(p), _) => p,
            (None, Some(first)) => self.rebase(first).expect("adopted names are inside"),
            (None, None) => return Ok(()),
        };
        let mut out = Entry {
            path,
            kind: entry.kind.clone(),
            metadata: entry.metadata.clone(),
        };
        if let EntryKind::HardLink { target } = &entry.kind {
            let target = match self.adopted.get(target) {
                Some(first) if first == &entry.path => return Ok(()),
                Some(first) => first.clone(),
                None => target.clone(),
            };
            match self.rebase(&target) {
                Some(t) => out.kind = EntryKind::HardLink { target: t },
                // Extracting a single name of a hard-linked file: handled by `adopted`.
                None => return Ok(()),
            }
        }
        self.inner.add_entry(&out, content)
    }
}

/// Extract `inside` (a file, or a directory with everything under it) of the image at
/// `path` into `dest`. A directory's contents go into `dest` (created if missing, else it
/// must be empty); anything else becomes `dest` itself (which must not exist), or
/// `dest/NAME` when `dest` is an existing directory.
pub fn extract(
    path: &Path,
    inside: &str,
    dest: &Path,
    options: ExtractOptions,
) -> Result<ExtractReport> {
    let image = Image::open_read(path)?;
    let (layers, plan) = plan(&image, options.scope)?;
    let names = names(&plan);
    let ctx = |e: Error| e.context(&image.name);
    let resolved = resolve(&names, &tree_path(inside), false).map_err(ctx)?;
    let (entry, _) = names[resolved.as_slice()];
    let is_dir = entry.kind == EntryKind::Directory;
    let dest_meta = std::fs::symlink_metadata(dest).ok();
    let (root, single) = if is_dir {
        match &dest_meta {
            None => {
                std::fs::create_dir(dest)
                    .map_err(|e| Error::io(format!("{}: creating", dest.display()), e))?;
            }
            Some(m) if m.is_dir() => {
                let mut listing = std::fs::read_dir(dest)
                    .map_err(|e| Error::io(format!("{}: listing", dest.display()), e))?;
                if listing.next().is_some() {
                    return Err(Error::refused(format!(
                        "{}: not empty; extract a directory into a new or empty directory",
                        dest.display()
                    )));
                }
            }
            Some(_) => {
                return Err(Error::refused(format!(
                    "{}: exists and is not a directory",
                    dest.display()
                )));
            }
        }
        (dest.to_path_buf(), None)
    } else {
        let name = entry.name().to_vec();
        match &dest_meta {
            Some(m) if m.is_dir() => (dest.to_path_buf(), Some(name)),
            Some(_) => {
                return Err(Error::refused(format!(
                    "{}: exists; sifovl never overwrites a file",
                    dest.display()
                )));
            }
            None => {
                let parent = match dest.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => Path::new(".").to_path_buf(),
                };
                let file_name = dest.file_name().ok_or_else(|| {
                    Error::refused(format!("{}: not a file name", dest.display()))
                })?;
                use std::os::unix::ffi::OsStrExt;
                (parent, Some(file_name.as_bytes().to_vec()))
            }
        }
    };
    // Hard-linked files whose names lie both inside and outside the subtree.
    let inside_of = |p: &[u8]| {
        if single.is_some() {
            p == resolved.as_slice()
        } else {
            resolved.is_empty()
                || p == resolved.as_slice()
                || (p.starts_with(&resolved) && p.get(resolved.len()) == Some(&b'/'))
        }
    };
    let mut adopted: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut links: Vec<&Entry> = plan
        .entries()
        .map(|(e, _)| e)
        .filter(|e| matches!(e.kind, EntryKind::HardLink { .. }))
        .collect();
    links.sort_by(|a, b| a.path.cmp(&b.path));
    for link in links {
        if let EntryKind::HardLink { target } = &link.kind
            && inside_of(&link.path)
            && !inside_of(target)
        {
            adopted
                .entry(target.clone())
                .or_insert_with(|| link.path.clone());
        }
    }
    let mut writer = DirWriter::new(
        &root,
        UnpackOptions {
            same_owner: options.same_owner,
            xattrs: options.xattrs,
        },
    )?;
    {
        let mut sink = Subtree {
            prefix: resolved.clone(),
            inner: &mut writer,
            adopted: adopted.clone(),
            single: single.clone(),
        };
        plan.write_structure(&mut sink).map_err(ctx)?;
        for (i, layer) in layers.iter().enumerate() {
            if plan.needs_layer(i) {
                with_source(&image.file, layer, |source| {
                    plan.write_layer(i, source, &mut sink)
                })
                .map_err(ctx)?;
            }
        }
        plan.write_links(&mut sink).map_err(ctx)?;
    }
    let written = writer.finish().map_err(ctx)?;
    Ok(ExtractReport {
        image: image.name.clone(),
        path: display_path(&resolved),
        destination: match &single {
            Some(name) => {
                use std::os::unix::ffi::OsStrExt;
                root.join(std::ffi::OsStr::from_bytes(name))
                    .display()
                    .to_string()
            }
            None => root.display().to_string(),
        },
        written,
    })
}

/// What happened to a path, as the overlay (or layer) says against the layers below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Not in the layers below.
    Added,
    /// In the layers below, with other content or metadata here.
    Modified,
    /// Deleted by a whiteout.
    Deleted,
    /// A directory that hides what the layers below have under it (replaced as a whole).
    Opaque,
}

impl ChangeKind {
    /// The one-letter code of the text listing.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Deleted => 'D',
            ChangeKind::Opaque => 'O',
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, Serialize)]
pub struct PathChange {
    /// The path in the container (`/etc/os-release`).
    pub path: String,
    /// What happened.
    pub change: ChangeKind,
    /// What the entry is now, or was (deleted): `file`, `dir`, `symlink`...
    pub kind: ListedKind,
    /// For a modification (and an opaque directory): what differs, among `type`, `content`,
    /// `target`, `device`, `mode`, `owner`, `xattrs`, `mtime`.
    pub fields: Vec<&'static str>,
}

/// What `diff` found.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The image.
    pub image: String,
    /// The layer compared with those below it (as `ls --layer` numbers them).
    pub layer: usize,
    /// Paths added.
    pub added: usize,
    /// Paths modified.
    pub modified: usize,
    /// Paths deleted.
    pub deleted: usize,
    /// Opaque directories.
    pub opaque: usize,
    /// Every change, in path order.
    pub changes: Vec<PathChange>,
}

/// Overlay bookkeeping xattrs: never part of what a container sees.
fn visible_xattrs(m: &Metadata) -> Vec<&crate::fs::entry::Xattr> {
    const PRIVATE: [&[u8]; 4] = [
        b"trusted.overlay.",
        b"user.overlay.",
        b"security.overlay.",
        crate::fs::whiteout::FUSE_XATTR_PREFIX,
    ];
    m.xattrs
        .iter()
        .filter(|x| !PRIVATE.iter().any(|p| x.name.starts_with(p)))
        .collect()
}

/// How metadata differs (content aside); directories' times are not compared, since any
/// change inside a directory changes its time.
fn metadata_fields(upper: &Entry, lower: &Entry) -> Vec<&'static str> {
    let (u, l) = (&upper.metadata, &lower.metadata);
    let mut fields = Vec::new();
    if u.permissions != l.permissions {
        fields.push("mode");
    }
    if (u.uid, u.gid) != (l.uid, l.gid) {
        fields.push("owner");
    }
    if visible_xattrs(u) != visible_xattrs(l) {
        fields.push("xattrs");
    }
    // Squashfs keeps whole seconds only.
    if upper.kind != EntryKind::Directory && u.mtime != l.mtime {
        fields.push("mtime");
    }
    fields
}

/// A file whose content must be compared by hash: (upper position, lower origin, index of
/// its change in the list being built).
struct PendingContent {
    upper: u64,
    lower: Origin,
    change: usize,
}

/// Hash the contents at `positions` of `layer` (one streaming pass).
fn hash_contents(
    file: &File,
    layer: &ViewLayer,
    positions: &HashSet<u64>,
) -> Result<HashMap<u64, Digest>> {
    let mut out = HashMap::new();
    if positions.is_empty() {
        return Ok(out);
    }
    with_source(file, layer, |source| {
        let mut seq = 0u64;
        while let Some(entry) = source.next_entry()? {
            if positions.contains(&seq) && matches!(entry.kind, EntryKind::File { .. }) {
                let (digest, _) = Digest::of_reader(&mut source.read_content()?)
                    .map_err(|e| Error::io(format!("reading {}", entry.display_path()), e))?;
                out.insert(seq, digest);
            }
            seq += 1;
        }
        Ok(())
    })?;
    Ok(out)
}

/// What layer `layer` (default: the writable overlay) of the image at `path` changes
/// against the stacked layers below it.
pub fn diff(path: &Path, layer: Option<usize>) -> Result<DiffReport> {
    let image = Image::open_read(path)?;
    let ctx = |e: Error| e.context(&image.name);
    let all = layers_of(&image)?;
    let top = match layer {
        Some(n) => all.get(n).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "{}: no layer {n}: layers are numbered 0 to {} (bottom first, as `sifovl ls --layer` counts)",
                image.name,
                all.len() - 1
            ))
        })?,
        None => image
            .writable_overlay()
            .and_then(|o| all.iter().find(|l| l.offset == o.offset).cloned())
            .ok_or_else(|| {
                Error::refused(format!(
                    "{}: no writable overlay; name a layer to compare with the layers below it (--layer N)",
                    image.name
                ))
            })?,
    };
    let lower_layers: Vec<ViewLayer> = all
        .iter()
        .filter(|l| l.stacked && l.number < top.number)
        .cloned()
        .collect();
    let mut merge = LayerMerge::new(false);
    for (i, layer) in lower_layers.iter().enumerate() {
        merge.begin_layer(i);
        with_source(&image.file, layer, |source| {
            while let Some(entry) = source.next_entry()? {
                merge.observe(&entry)?;
            }
            Ok(())
        })
        .map_err(ctx)?;
    }
    let lower_plan = merge.finish();
    let lower = names(&lower_plan);

    let mut changes: Vec<PathChange> = Vec::new();
    let mut pending: Vec<PendingContent> = Vec::new();
    // Files of this layer by path (position, size), for its hard-link names.
    let mut upper_files: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    with_source(&image.file, &top, |source| {
        let mut seq = 0u64;
        while let Some(entry) = source.next_entry()? {
            let position = seq;
            seq += 1;
            if entry.path.is_empty() {
                continue;
            }
            let below = file_behind(&lower, &entry.path);
            let change = match classify(&entry) {
                Change::Marker => continue,
                Change::Whiteout(gone) => {
                    // A whiteout of nothing changes nothing.
                    let Some((was, _)) = lower.get(gone.as_slice()) else {
                        continue;
                    };
                    PathChange {
                        path: display_path(&gone),
                        change: ChangeKind::Deleted,
                        kind: ListedKind::of(&was.kind),
                        fields: Vec::new(),
                    }
                }
                Change::Opaque(dir) => match below {
                    Some((was, _)) if was.kind == EntryKind::Directory => PathChange {
                        path: display_path(&dir),
                        change: ChangeKind::Opaque,
                        kind: ListedKind::of(&entry.kind),
                        fields: metadata_fields(&entry, was),
                    },
                    Some(_) => PathChange {
                        path: display_path(&dir),
                        change: ChangeKind::Modified,
                        kind: ListedKind::of(&entry.kind),
                        fields: vec!["type"],
                    },
                    None => PathChange {
                        path: display_path(&dir),
                        change: ChangeKind::Added,
                        kind: ListedKind::of(&entry.kind),
                        fields: Vec::new(),
                    },
                },
                Change::Plain => {
                    // A further name of a file of this layer compares as that file.
                    let (kind, content_at) = match &entry.kind {
                        EntryKind::HardLink { target } => match upper_files.get(target) {
                            Some(&(at, size)) => (EntryKind::File { size }, Some(at)),
                            None => continue,
                        },
                        EntryKind::File { size } => {
                            upper_files.insert(entry.path.clone(), (position, *size));
                            (entry.kind.clone(), Some(position))
                        }
                        other => (other.clone(), None),
                    };
                    let description = ListedKind::of(&kind);
                    let Some((was, was_origin)) = below else {
                        changes.push(PathChange {
                            path: entry.display_path(),
                            change: ChangeKind::Added,
                            kind: description,
                            fields: Vec::new(),
                        });
                        continue;
                    };
                    let mut fields = Vec::new();
                    let mut compare_content = None;
                    match (&kind, &was.kind) {
                        (EntryKind::File { size: a }, EntryKind::File { size: b }) => {
                            if a != b {
                                fields.push("content");
                            } else if let (Some(at), Some(origin)) = (content_at, was_origin) {
                                compare_content = Some((at, origin));
                            }
                        }
                        (EntryKind::Symlink { target: a }, EntryKind::Symlink { target: b })
                            if a != b =>
                        {
                            fields.push("target");
                        }
                        (
                            EntryKind::CharDevice { major: a, minor: b },
                            EntryKind::CharDevice { major: c, minor: d },
                        )
                        | (
                            EntryKind::BlockDevice { major: a, minor: b },
                            EntryKind::BlockDevice { major: c, minor: d },
                        ) if (a, b) != (c, d) => {
                            fields.push("device");
                        }
                        (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => {
                            fields.push("type");
                        }
                        _ => {}
                    }
                    if fields != ["type"] {
                        let normalised = Entry {
                            path: entry.path.clone(),
                            kind: kind.clone(),
                            metadata: entry.metadata.clone(),
                        };
                        fields.extend(metadata_fields(&normalised, was));
                    }
                    if let Some((at, origin)) = compare_content {
                        pending.push(PendingContent {
                            upper: at,
                            lower: origin,
                            change: changes.len(),
                        });
                    }
                    PathChange {
                        path: entry.display_path(),
                        change: ChangeKind::Modified,
                        kind: description,
                        fields,
                    }
                }
            };
            changes.push(change);
        }
        Ok(())
    })
    .map_err(ctx)?;

    // Same-size files: compare contents, one pass per layer that holds some.
    let upper_positions: HashSet<u64> = pending.iter().map(|p| p.upper).collect();
    let upper_hashes = hash_contents(&image.file, &top, &upper_positions).map_err(ctx)?;
    let mut lower_hashes: HashMap<Origin, Digest> = HashMap::new();
    for (i, layer) in lower_layers.iter().enumerate() {
        let positions: HashSet<u64> = pending
            .iter()
            .filter(|p| p.lower.0 == i)
            .map(|p| p.lower.1)
            .collect();
        for (position, digest) in hash_contents(&image.file, layer, &positions).map_err(ctx)? {
            lower_hashes.insert((i, position), digest);
        }
    }
    for p in &pending {
        if upper_hashes.get(&p.upper) != lower_hashes.get(&p.lower) {
            changes[p.change].fields.insert(0, "content");
        }
    }
    // A directory copied up only because something inside it changed is no change.
    changes.retain(|c| c.change != ChangeKind::Modified || !c.fields.is_empty());
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    // fuse-overlayfs's opaque marker makes its directory come twice: one change per path,
    // the opaque one.
    changes.dedup_by(|later, earlier| {
        if later.path != earlier.path {
            return false;
        }
        if later.change == ChangeKind::Opaque {
            std::mem::swap(later, earlier);
        }
        for field in std::mem::take(&mut later.fields) {
            if !earlier.fields.contains(&field) {
                earlier.fields.push(field);
            }
        }
        true
    });
    let count = |k: ChangeKind| changes.iter().filter(|c| c.change == k).count();
    Ok(DiffReport {
        image: image.name.clone(),
        layer: top.number,
        added: count(ChangeKind::Added),
        modified: count(ChangeKind::Modified),
        deleted: count(ChangeKind::Deleted),
        opaque: count(ChangeKind::Opaque),
        changes,
    })
}
