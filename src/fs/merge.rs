//! Layers merged into one filesystem in two streaming passes, without unpacking anything.
//!
//! Pass 1 ([`LayerMerge::observe`]) reads every layer's entries (metadata only) and applies
//! the OCI changeset rules to a tree of paths: whiteouts and opaque directories remove what
//! the layers below provided, a later entry replaces an earlier one, a hard link names the
//! file its target names at that moment (so it survives the target's later deletion, as
//! it does when `umoci` or Docker unpack the layers one by one). What survives is a
//! [`MergePlan`]: the contentless entries, and for each surviving file the layer and
//! position of the entry whose content it has.
//!
//! Pass 2 writes the plan into a sink: the structure first (parents before children, as
//! writers need), then each layer streamed again, copying only the contents that survived,
//! and the extra names of hard-linked files last. Layers none of whose contents survive are
//! not read again.
//!
//! With `keep_whiteouts` a single layer is normalised instead: its whiteouts are kept, in
//! the OverlayFS form (0/0 character devices and the opaque xattr), which is what an
//! OCI-SIF squashfs layer holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, EntrySource, Metadata, Xattr, display_path};
use crate::fs::whiteout::{Change, OPAQUE_XATTR, ToOverlayfs, classify};

/// Keep mode in one pass, for the usual layer: AUFS whiteouts converted to the OverlayFS
/// form on the way, missing parent directories made, everything else copied as it comes.
/// Returns `Ok(None)`, having written an incomplete image, when the layer needs the
/// two-pass [`LayerMerge`] (a path given twice, a hard link to a file of a layer below, a
/// path under a non-directory); otherwise the number of entries written.
pub fn copy_layer_directly(
    source: &mut dyn EntrySource,
    sink: &mut dyn EntrySink,
) -> Result<Option<u64>> {
    let mut source = ToOverlayfs::new(source);
    let mut dirs: HashSet<Vec<u8>> = HashSet::from([Vec::new()]);
    let mut others: HashSet<Vec<u8>> = HashSet::new();
    let mut count = 1u64;
    while let Some(entry) = source.next_entry()? {
        if entry.path.is_empty() {
            if entry.kind == EntryKind::Directory {
                sink.add_entry(&entry, None)?;
            }
            continue;
        }
        let mut end = 0;
        while let Some(i) = entry.path[end..].iter().position(|&b| b == b'/') {
            let ancestor = &entry.path[..end + i];
            if !dirs.contains(ancestor) {
                if others.contains(ancestor) {
                    return Ok(None);
                }
                sink.add_entry(&implicit_dir(ancestor.to_vec()), None)?;
                dirs.insert(ancestor.to_vec());
                count += 1;
            }
            end += i + 1;
        }
        match &entry.kind {
            EntryKind::Directory => {
                if others.contains(&entry.path) {
                    return Ok(None);
                }
                if dirs.insert(entry.path.clone()) {
                    count += 1;
                }
                sink.add_entry(&entry, None)?;
                continue;
            }
            EntryKind::HardLink { target } if !others.contains(target) => return Ok(None),
            _ if others.contains(&entry.path) || dirs.contains(&entry.path) => return Ok(None),
            _ => {}
        }
        if matches!(entry.kind, EntryKind::File { .. }) {
            let mut content = source.read_content()?;
            sink.add_entry(&entry, Some(&mut content))?;
        } else {
            sink.add_entry(&entry, None)?;
        }
        others.insert(entry.path);
        count += 1;
    }
    Ok(Some(count))
}

/// Where a file's content comes from: the layer, and the position of its entry in that
/// layer's stream (counting every entry the source yields, from 0).
pub type Origin = (usize, u64);

#[derive(Debug, Clone)]
struct Node {
    /// The layer that put this name here.
    layer: usize,
    /// The entry (for a hard-link name: its target's kind and metadata).
    entry: Entry,
    /// Identity of the file: names that share it are hard links of one another.
    inode: Origin,
}

/// Pass 1: the merged tree being built.
pub struct LayerMerge {
    state: BTreeMap<Vec<u8>, Node>,
    keep_whiteouts: bool,
    layer: usize,
    seq: u64,
    /// Keep mode: hard links whose target a lower layer provides, to be resolved by
    /// [`resolve_lower_links`](LayerMerge::resolve_lower_links).
    lower_links: Vec<Entry>,
}

fn is_under(dir: &[u8], path: &[u8]) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

fn implicit_dir(path: Vec<u8>) -> Entry {
    Entry {
        path,
        kind: EntryKind::Directory,
        metadata: Metadata {
            permissions: 0o755,
            ..Metadata::default()
        },
    }
}

fn without_opaque(mut metadata: Metadata) -> Metadata {
    metadata
        .xattrs
        .retain(|x| !x.name.ends_with(b".overlay.opaque"));
    metadata
}

fn with_opaque(mut metadata: Metadata) -> Metadata {
    metadata = without_opaque(metadata);
    metadata.xattrs.push(Xattr {
        name: OPAQUE_XATTR.to_vec(),
        value: b"y".to_vec(),
    });
    metadata.xattrs.sort();
    metadata
}

impl LayerMerge {
    /// An empty tree (just a root directory, mode 0755, owned by root, time 0). With
    /// `keep_whiteouts`, whiteouts are kept in the OverlayFS form instead of applied.
    pub fn new(keep_whiteouts: bool) -> LayerMerge {
        let mut state = BTreeMap::new();
        state.insert(
            Vec::new(),
            Node {
                layer: 0,
                entry: implicit_dir(Vec::new()),
                inode: (usize::MAX, 0),
            },
        );
        LayerMerge {
            state,
            keep_whiteouts,
            layer: 0,
            seq: 0,
            lower_links: Vec::new(),
        }
    }

    /// Start layer `layer` (layers in increasing order, bottom first). Errors do not name
    /// the layer: callers add that context.
    pub fn begin_layer(&mut self, layer: usize) {
        self.layer = layer;
        self.seq = 0;
    }

    /// Keep mode: hard links of this layer to files of the layers below, which a layer on
    /// its own cannot express.
    pub fn has_lower_links(&self) -> bool {
        !self.lower_links.is_empty()
    }

    /// Keep mode: turn each hard link to a lower layer's file into a copy of that file,
    /// taking its content from where `lower` (the layers below, merged) has it. Pass 2 must
    /// then also read those lower layers ([`MergePlan::needs_layer`]).
    pub fn resolve_lower_links(&mut self, lower: &LayerMerge) -> Result<()> {
        for link in std::mem::take(&mut self.lower_links) {
            let EntryKind::HardLink { target } = &link.kind else {
                continue;
            };
            let node = lower
                .state
                .get(target)
                .filter(|n| n.entry.kind != EntryKind::Directory)
                .ok_or_else(|| {
                    Error::malformed(format!(
                        "hard link {} to {}, which no layer so far provides",
                        link.display_path(),
                        display_path(target)
                    ))
                })?;
            let entry = Entry {
                path: link.path.clone(),
                kind: node.entry.kind.clone(),
                metadata: node.entry.metadata.clone(),
            };
            self.state.insert(
                link.path.clone(),
                Node {
                    layer: self.layer,
                    entry,
                    inode: node.inode,
                },
            );
        }
        Ok(())
    }

    /// Remove `path` (with `itself`) and everything under it that a layer below this one
    /// provided (`lower_only`), or that any layer provided.
    fn remove(&mut self, path: &[u8], itself: bool, lower_only: bool) {
        let layer = self.layer;
        let doomed: Vec<Vec<u8>> = self
            .state
            .range(path.to_vec()..)
            .take_while(|(p, _)| p.as_slice() == path || p.starts_with(path))
            .filter(|(p, n)| {
                ((itself && p.as_slice() == path) || is_under(path, p))
                    && !p.is_empty()
                    && (!lower_only || n.layer < layer)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.state.remove(&p);
        }
    }

    /// Make sure every ancestor of `path` is a directory: missing ones are created (tar
    /// layers may omit them); a non-directory one is refused, since writing through a
    /// symlink of a lower layer could land anywhere.
    fn ensure_parents(&mut self, path: &[u8]) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|&b| b == b'/') {
            let ancestor = &path[..end + i];
            match self.state.get(ancestor) {
                Some(node) if node.entry.kind == EntryKind::Directory => {}
                Some(node) => {
                    return Err(Error::refused(format!(
                        "{} would be written through {}, which is not a directory ({})",
                        display_path(path),
                        display_path(ancestor),
                        node.entry.kind.description()
                    )));
                }
                None => {
                    let layer = self.layer;
                    let inode = (layer, u64::MAX - self.state.len() as u64);
                    self.state.insert(
                        ancestor.to_vec(),
                        Node {
                            layer,
                            entry: implicit_dir(ancestor.to_vec()),
                            inode,
                        },
                    );
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Pass 1: the next entry of the current layer (every entry the source yields, in order).
    pub fn observe(&mut self, entry: &Entry) -> Result<()> {
        crate::interrupt::check()?;
        let seq = self.seq;
        self.seq += 1;
        match classify(entry) {
            Change::Marker => Ok(()),
            Change::Whiteout(path) => {
                if self.keep_whiteouts {
                    // Keep it, unless the layer itself re-creates the path (AUFS lets a
                    // layer delete the lower entry and add a new one; OverlayFS has only
                    // the new one, which hides the lower one anyway).
                    if self
                        .state
                        .get(&path)
                        .is_some_and(|n| n.layer == self.layer && !is_whiteout(&n.entry))
                    {
                        return Ok(());
                    }
                    let mut metadata = entry.metadata.clone();
                    metadata.xattrs.clear();
                    let whiteout = Entry {
                        path: path.clone(),
                        kind: EntryKind::CharDevice { major: 0, minor: 0 },
                        metadata,
                    };
                    return self.insert(whiteout, (self.layer, seq));
                }
                self.remove(&path, true, true);
                Ok(())
            }
            Change::Opaque(dir) if !matches!(entry.kind, EntryKind::Directory) => {
                // The AUFS marker file `.wh..wh..opq`.
                if self.keep_whiteouts {
                    self.ensure_parents(&entry.path)?;
                    if let Some(node) = self.state.get_mut(&dir) {
                        node.entry.metadata = with_opaque(node.entry.metadata.clone());
                    }
                    return Ok(());
                }
                self.remove(&dir, false, true);
                Ok(())
            }
            Change::Opaque(dir) => {
                let mut entry = entry.clone();
                if self.keep_whiteouts {
                    entry.metadata = with_opaque(entry.metadata);
                } else {
                    self.remove(&dir, false, true);
                    entry.metadata = without_opaque(entry.metadata);
                }
                self.insert(entry, (self.layer, seq))
            }
            Change::Plain => {
                let mut entry = entry.clone();
                if !self.keep_whiteouts {
                    entry.metadata = without_opaque(entry.metadata);
                }
                self.insert(entry, (self.layer, seq))
            }
        }
    }

    fn insert(&mut self, mut entry: Entry, origin: Origin) -> Result<()> {
        let layer = self.layer;
        if entry.path.is_empty() {
            // The layer's root directory: its metadata becomes the root's.
            if entry.kind == EntryKind::Directory
                && let Some(root) = self.state.get_mut(&Vec::new())
            {
                root.entry.metadata = entry.metadata;
            }
            return Ok(());
        }
        self.ensure_parents(&entry.path)?;
        let mut inode = origin;
        if let EntryKind::HardLink { target } = &entry.kind {
            if self.keep_whiteouts && !self.state.contains_key(target) {
                // Its target is in a layer below: resolved later, as a copy.
                self.lower_links.push(entry);
                return Ok(());
            }
            let node = self.state.get(target).ok_or_else(|| {
                Error::malformed(format!(
                    "hard link {} to {}, which no layer so far provides",
                    entry.display_path(),
                    display_path(target)
                ))
            })?;
            if node.entry.kind == EntryKind::Directory {
                return Err(Error::malformed(format!(
                    "hard link {} to the directory {}",
                    entry.display_path(),
                    display_path(target)
                )));
            }
            inode = node.inode;
            entry.kind = node.entry.kind.clone();
            entry.metadata = node.entry.metadata.clone();
        }
        match self.state.get_mut(&entry.path) {
            Some(existing)
                if existing.entry.kind == EntryKind::Directory
                    && entry.kind == EntryKind::Directory =>
            {
                // A directory given again: new metadata, children kept.
                existing.entry.metadata = entry.metadata;
                existing.layer = layer;
                return Ok(());
            }
            Some(_) => self.remove(&entry.path.clone(), true, false),
            None => {}
        }
        self.state.insert(
            entry.path.clone(),
            Node {
                layer,
                entry,
                inode,
            },
        );
        Ok(())
    }

    /// The plan for pass 2.
    pub fn finish(self) -> MergePlan {
        let mut structure = Vec::new();
        let mut others = Vec::new();
        let mut files = HashMap::new();
        let mut links = Vec::new();
        let mut canonical: HashMap<Origin, Vec<u8>> = HashMap::new();
        let mut file_entries = 0u64;
        for (path, node) in self.state {
            if node.entry.kind == EntryKind::Directory {
                structure.push(node.entry);
                continue;
            }
            if let Some(first) = canonical.get(&node.inode) {
                links.push(Entry {
                    path,
                    kind: EntryKind::HardLink {
                        target: first.clone(),
                    },
                    metadata: node.entry.metadata,
                });
                continue;
            }
            canonical.insert(node.inode, path);
            if matches!(node.entry.kind, EntryKind::File { .. }) {
                files.insert(node.inode, node.entry);
                file_entries += 1;
            } else {
                others.push(node.entry);
            }
        }
        structure.extend(others);
        MergePlan {
            structure,
            files,
            links,
            file_entries,
        }
    }
}

fn is_whiteout(entry: &Entry) -> bool {
    matches!(entry.kind, EntryKind::CharDevice { major: 0, minor: 0 })
}

/// The merged filesystem, ready to be written (pass 2).
#[derive(Debug)]
pub struct MergePlan {
    /// Directories (parents first), then the other contentless entries.
    structure: Vec<Entry>,
    /// Surviving file contents by origin, with the entry to write them as.
    files: HashMap<Origin, Entry>,
    /// Further names of hard-linked entries.
    links: Vec<Entry>,
    file_entries: u64,
}

impl MergePlan {
    /// Whether pass 2 must read layer `layer` again (some of its file contents survive).
    pub fn needs_layer(&self, layer: usize) -> bool {
        self.files.keys().any(|(l, _)| *l == layer)
    }

    /// Entries the merged filesystem has (every name, hard links included, root too).
    pub fn entry_count(&self) -> u64 {
        self.structure.len() as u64 + self.file_entries + self.links.len() as u64
    }

    /// Pass 2, first step: every contentless entry, parents before children.
    pub fn write_structure(&self, sink: &mut dyn EntrySink) -> Result<()> {
        for entry in &self.structure {
            sink.add_entry(entry, None)?;
        }
        Ok(())
    }

    /// Pass 2, once per layer that [`needs_layer`](Self::needs_layer): stream the layer
    /// again (the same entries pass 1 saw, in the same order) and copy the contents that
    /// survived.
    pub fn write_layer(
        &self,
        layer: usize,
        source: &mut dyn EntrySource,
        sink: &mut dyn EntrySink,
    ) -> Result<()> {
        let mut seq = 0u64;
        while let Some(entry) = source.next_entry()? {
            if let Some(out) = self.files.get(&(layer, seq)) {
                let (EntryKind::File { size: want }, EntryKind::File { size: have }) =
                    (&out.kind, &entry.kind)
                else {
                    return Err(changed(&entry));
                };
                if want != have {
                    return Err(changed(&entry));
                }
                let mut content = source.read_content()?;
                sink.add_entry(out, Some(&mut content))?;
            }
            seq += 1;
        }
        Ok(())
    }

    /// Every name of the merged filesystem, with the origin of its content for the file
    /// names pass 2 writes with content (hard-link names come as [`EntryKind::HardLink`]).
    pub fn entries(&self) -> impl Iterator<Item = (&Entry, Option<Origin>)> {
        self.structure
            .iter()
            .map(|e| (e, None))
            .chain(self.files.iter().map(|(origin, e)| (e, Some(*origin))))
            .chain(self.links.iter().map(|e| (e, None)))
    }

    /// Pass 2, last step: the further names of hard-linked entries.
    pub fn write_links(&self, sink: &mut dyn EntrySink) -> Result<()> {
        for entry in &self.links {
            sink.add_entry(entry, None)?;
        }
        Ok(())
    }
}

fn changed(entry: &Entry) -> Error {
    Error::malformed(format!(
        "{}: the layer changed between the two passes",
        entry.display_path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::whiteout::is_opaque;
    use std::io::Read;

    fn meta(permissions: u32) -> Metadata {
        Metadata {
            permissions,
            ..Metadata::default()
        }
    }

    fn file(path: &str, content: &str) -> (Entry, Vec<u8>) {
        (
            Entry {
                path: path.as_bytes().to_vec(),
                kind: EntryKind::File {
                    size: content.len() as u64,
                },
                metadata: meta(0o644),
            },
            content.as_bytes().to_vec(),
        )
    }

    fn other(path: &str, kind: EntryKind) -> (Entry, Vec<u8>) {
        (
            Entry {
                path: path.as_bytes().to_vec(),
                kind,
                metadata: meta(0o755),
            },
            Vec::new(),
        )
    }

    struct VecSource {
        entries: Vec<(Entry, Vec<u8>)>,
        at: usize,
    }

    impl EntrySource for VecSource {
        fn next_entry(&mut self) -> Result<Option<Entry>> {
            self.at += 1;
            Ok(self.entries.get(self.at - 1).map(|(e, _)| e.clone()))
        }
        fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
            Ok(Box::new(&self.entries[self.at - 1].1[..]))
        }
    }

    #[derive(Default)]
    struct Collect(Vec<(String, EntryKind, Vec<u8>)>);

    impl EntrySink for Collect {
        fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
            let mut data = Vec::new();
            if let Some(c) = content {
                c.read_to_end(&mut data).unwrap();
            }
            self.0
                .push((entry.display_path(), entry.kind.clone(), data));
            Ok(())
        }
    }

    fn merge(layers: &[Vec<(Entry, Vec<u8>)>], keep: bool) -> Vec<(String, EntryKind, Vec<u8>)> {
        let mut m = LayerMerge::new(keep);
        for (i, layer) in layers.iter().enumerate() {
            m.begin_layer(i);
            for (e, _) in layer {
                m.observe(e).unwrap();
            }
        }
        let plan = m.finish();
        let mut sink = Collect::default();
        plan.write_structure(&mut sink).unwrap();
        for (i, layer) in layers.iter().enumerate() {
            if plan.needs_layer(i) {
                let mut src = VecSource {
                    entries: layer.clone(),
                    at: 0,
                };
                plan.write_layer(i, &mut src, &mut sink).unwrap();
            }
        }
        plan.write_links(&mut sink).unwrap();
        sink.0
    }

    fn paths(out: &[(String, EntryKind, Vec<u8>)]) -> Vec<&str> {
        out.iter().map(|(p, _, _)| p.as_str()).collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_replacements_apply_to_lower_layers_only() {
        let lower = vec![
            other("a", EntryKind::Directory),
            file("a/old", "1"),
            file("a/kept", "2"),
            other("d", EntryKind::Directory),
            file("d/x", "3"),
            file("f", "4"),
        ];
        let upper = vec![
            // The same layer re-creates what it whites out: the new file stays.
            file("a/old", "new"),
            file("a/.wh.old", ""),
            file("d/.wh..wh..opq", ""),
            file("d/y", "5"),
            file(".wh.f", ""),
            file("g/h", "6"),
        ];
        let out = merge(&[lower, upper], false);
        assert_eq!(
            paths(&out),
            ["/", "/a", "/d", "/g", "/a/kept", "/a/old", "/d/y", "/g/h"]
        );
        let content = |p: &str| out.iter().find(|(q, _, _)| q == p).unwrap().2.clone();
        assert_eq!(content("/a/old"), b"new");
        assert_eq!(content("/g/h"), b"6");
    }

    #[test]
    fn a_hard_link_keeps_the_content_its_target_had_when_it_was_made() {
        // hard-link-delete-4 of oci-tools: foo + bar(->foo); baz(->bar); bar whited out.
        let l0 = vec![
            file("a/b/foo", "abc"),
            other(
                "a/b/bar",
                EntryKind::HardLink {
                    target: b"a/b/foo".to_vec(),
                },
            ),
        ];
        let l1 = vec![other(
            "a/b/baz",
            EntryKind::HardLink {
                target: b"a/b/bar".to_vec(),
            },
        )];
        let l2 = vec![file("a/b/.wh.bar", ""), file("a/b/foo", "zz")];
        let out = merge(&[l0.clone(), l1.clone(), l2], false);
        // foo was replaced: baz keeps the old content, alone.
        let baz = out.iter().find(|(p, _, _)| p == "/a/b/baz").unwrap();
        assert_eq!(baz.2, b"abc");
        let foo = out.iter().find(|(p, _, _)| p == "/a/b/foo").unwrap();
        assert_eq!(foo.2, b"zz");
        // Without the replacement, baz and foo are one file: one content, one link.
        let out = merge(&[l0, l1, vec![file("a/b/.wh.bar", "")]], false);
        assert_eq!(paths(&out), ["/", "/a", "/a/b", "/a/b/baz", "/a/b/foo"]);
        assert_eq!(
            out[4].1,
            EntryKind::HardLink {
                target: b"a/b/baz".to_vec()
            }
        );
    }

    #[test]
    fn kept_whiteouts_become_overlayfs_markers() {
        let layer = vec![
            other("d", EntryKind::Directory),
            file("d/.wh..wh..opq", ""),
            file(".wh.gone", ""),
        ];
        let out = merge(&[layer], true);
        assert_eq!(paths(&out), ["/", "/d", "/gone"]);
        assert_eq!(out[2].1, EntryKind::CharDevice { major: 0, minor: 0 });
        let mut m = LayerMerge::new(true);
        m.begin_layer(0);
        m.observe(&other("d", EntryKind::Directory).0).unwrap();
        m.observe(&file("d/.wh..wh..opq", "").0).unwrap();
        let plan = m.finish();
        assert!(is_opaque(&plan.structure[1].metadata));
    }

    #[test]
    fn one_pass_conversion_handles_the_usual_layer_and_hands_back_the_rest() {
        let usual = vec![
            file("d/x", "1"),
            file("d/.wh..wh..opq", ""),
            file(".wh.gone", ""),
        ];
        let mut sink = Collect::default();
        let mut src = VecSource {
            entries: usual,
            at: 0,
        };
        let n = copy_layer_directly(&mut src, &mut sink).unwrap();
        assert_eq!(n, Some(4), "root, the implied d, d/x, the whiteout");
        let paths: Vec<&str> = sink.0.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, ["/d", "/d/x", "/d", "/gone"]);
        assert_eq!(sink.0[3].1, EntryKind::CharDevice { major: 0, minor: 0 });
        for unusual in [
            vec![file("a", "1"), file("a", "2")],
            vec![file("a", "1"), file(".wh.a", "")],
            vec![other(
                "l",
                EntryKind::HardLink {
                    target: b"below".to_vec(),
                },
            )],
        ] {
            let mut src = VecSource {
                entries: unusual,
                at: 0,
            };
            let n = copy_layer_directly(&mut src, &mut Collect::default()).unwrap();
            assert_eq!(n, None);
        }
    }

    #[test]
    fn writing_through_a_lower_symlink_is_refused() {
        let mut m = LayerMerge::new(false);
        m.begin_layer(0);
        m.observe(
            &other(
                "etc",
                EntryKind::Symlink {
                    target: b"/host/etc".to_vec(),
                },
            )
            .0,
        )
        .unwrap();
        m.begin_layer(1);
        let err = m.observe(&file("etc/passwd", "x").0).unwrap_err();
        assert!(
            err.to_string()
                .contains("/etc/passwd would be written through /etc, which is not a directory"),
            "{err}"
        );
        let err = m
            .observe(
                &other(
                    "l",
                    EntryKind::HardLink {
                        target: b"missing".to_vec(),
                    },
                )
                .0,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("which no layer so far provides"),
            "{err}"
        );
    }
}
