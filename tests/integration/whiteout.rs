//! Integration tests: whiteout conversion goldens (both directions), round trips, and the
//! changeset rules for stacking layers.

use std::io::Read;

use sifovl::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr};
use sifovl::fs::whiteout::{ToAufs, ToOverlayfs, apply_layers};

/// An in-memory entry stream.
pub struct VecSource {
    entries: std::vec::IntoIter<(Entry, Vec<u8>)>,
    current: Vec<u8>,
}

impl VecSource {
    pub fn new(entries: Vec<(Entry, Vec<u8>)>) -> VecSource {
        VecSource {
            entries: entries.into_iter(),
            current: Vec::new(),
        }
    }
}

impl EntrySource for VecSource {
    fn next_entry(&mut self) -> sifovl::Result<Option<Entry>> {
        Ok(self.entries.next().map(|(e, c)| {
            self.current = c;
            e
        }))
    }
    fn read_content(&mut self) -> sifovl::Result<Box<dyn Read + '_>> {
        Ok(Box::new(&self.current[..]))
    }
}

fn meta(xattrs: &[(&str, &str)]) -> Metadata {
    Metadata {
        permissions: 0o755,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        xattrs: xattrs
            .iter()
            .map(|(n, v)| Xattr {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
    }
}

fn e(path: &str, kind: EntryKind, xattrs: &[(&str, &str)]) -> (Entry, Vec<u8>) {
    let content = match kind {
        EntryKind::File { size } => vec![b'x'; size as usize],
        _ => vec![],
    };
    (
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            metadata: meta(xattrs),
        },
        content,
    )
}

fn dir(path: &str) -> (Entry, Vec<u8>) {
    e(path, EntryKind::Directory, &[])
}
fn file(path: &str, size: u64) -> (Entry, Vec<u8>) {
    e(path, EntryKind::File { size }, &[])
}
fn whiteout(path: &str) -> (Entry, Vec<u8>) {
    e(path, EntryKind::CharDevice { major: 0, minor: 0 }, &[])
}

/// (path, short kind, opaque?) of a stream, with content lengths checked.
fn summary(source: &mut dyn EntrySource) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(entry) = source.next_entry().unwrap() {
        let kind = match &entry.kind {
            EntryKind::Directory => "dir".to_string(),
            EntryKind::File { size } => {
                let mut c = Vec::new();
                source.read_content().unwrap().read_to_end(&mut c).unwrap();
                assert_eq!(c.len() as u64, *size);
                format!("file{size}")
            }
            EntryKind::CharDevice { major, minor } => format!("chr{major},{minor}"),
            EntryKind::HardLink { target } => format!("link>{}", String::from_utf8_lossy(target)),
            other => format!("{other:?}"),
        };
        let opaque = if sifovl::fs::whiteout::is_opaque(&entry.metadata) {
            " opaque"
        } else {
            ""
        };
        out.push(format!(
            "{} {kind}{opaque}",
            String::from_utf8_lossy(&entry.path)
        ));
    }
    out
}

/// The OverlayFS form of a layer exercising every case.
fn overlayfs_layer() -> Vec<(Entry, Vec<u8>)> {
    vec![
        dir(""),
        whiteout("deleted-file"),
        whiteout("deleted-dir"),
        e(
            "opaque",
            EntryKind::Directory,
            &[("trusted.overlay.opaque", "y")],
        ),
        whiteout("opaque/.wh..opq"),
        file("opaque/new", 3),
        e(
            "rootless",
            EntryKind::Directory,
            &[("user.overlay.opaque", "y"), ("user.keep", "1")],
        ),
        file("data/a", 4),
        (
            Entry {
                path: b"data/b".to_vec(),
                kind: EntryKind::HardLink {
                    target: b"data/a".to_vec(),
                },
                metadata: meta(&[]),
            },
            vec![],
        ),
        whiteout("data/c"),
    ]
}

#[test]
fn overlayfs_to_aufs_golden() {
    let got = summary(&mut ToAufs::new(VecSource::new(overlayfs_layer())));
    assert_eq!(
        got,
        [
            " dir",
            ".wh.deleted-file file0",
            ".wh.deleted-dir file0",
            "opaque dir",
            "opaque/.wh..wh..opq file0",
            "opaque/new file3",
            "rootless dir",
            "rootless/.wh..wh..opq file0",
            "data/a file4",
            "data/b link>data/a",
            "data/.wh.c file0",
        ]
    );
}

#[test]
fn aufs_markers_written_by_fuse_overlayfs_are_not_duplicated() {
    // fuse-overlayfs writes the xattr, an AUFS marker and a dangling .wh..opq device.
    let layer = vec![
        e(
            "o",
            EntryKind::Directory,
            &[("trusted.overlay.opaque", "y")],
        ),
        file("o/.wh..wh..opq", 0),
        whiteout("o/.wh..opq"),
        file("o/x", 1),
    ];
    let got = summary(&mut ToAufs::new(VecSource::new(layer)));
    assert_eq!(got, ["o dir", "o/.wh..wh..opq file0", "o/x file1"]);
}

#[test]
fn aufs_to_overlayfs_golden_and_round_trip() {
    let aufs = vec![
        dir(""),
        file(".wh.deleted-file", 0),
        file(".wh.deleted-dir", 0),
        dir("opaque"),
        file("opaque/.wh..wh..opq", 0),
        file("opaque/new", 3),
        dir("late"),
        file("late/first", 2),
        file("late/.wh..wh..opq", 0),
        file("data/a", 4),
        (
            Entry {
                path: b"data/b".to_vec(),
                kind: EntryKind::HardLink {
                    target: b"data/a".to_vec(),
                },
                metadata: meta(&[]),
            },
            vec![],
        ),
        file("data/.wh.c", 0),
    ];
    let got = summary(&mut ToOverlayfs::new(VecSource::new(aufs.clone())));
    assert_eq!(
        got,
        [
            " dir",
            "deleted-file chr0,0",
            "deleted-dir chr0,0",
            "opaque dir opaque",
            "opaque/new file3",
            "late dir",
            "late/first file2",
            // A marker after other entries: the directory is yielded again, now opaque.
            "late dir opaque",
            "data/a file4",
            "data/b link>data/a",
            "data/c chr0,0",
        ]
    );
    // OverlayFS -> AUFS -> OverlayFS gives the same tree.
    let there = summary(&mut ToOverlayfs::new(ToAufs::new(VecSource::new(
        overlayfs_layer(),
    ))));
    let direct: Vec<String> = summary(&mut VecSource::new(overlayfs_layer()))
        .into_iter()
        .filter(|l| !l.starts_with("opaque/.wh..opq"))
        .collect();
    assert_eq!(there, direct);
}

#[test]
fn stacking_layers_follows_the_changeset_rules() {
    let strip = |v: Vec<(Entry, Vec<u8>)>| v.into_iter().map(|(e, _)| e).collect::<Vec<_>>();
    let base = strip(vec![
        dir("a"),
        file("a/1", 1),
        file("a/2", 1),
        dir("b"),
        file("b/x", 1),
        file("keep", 1),
        dir("gone"),
        file("gone/y", 1),
    ]);
    let upper = strip(vec![
        e(
            "a",
            EntryKind::Directory,
            &[("trusted.overlay.opaque", "y")],
        ),
        file("a/3", 1),
        whiteout("gone"),
        file("b", 2),
        file(".wh.keep", 0),
        file("keep", 5),
    ]);
    let result: Vec<String> = apply_layers(&[base, upper])
        .into_iter()
        .map(|(layer, e)| {
            format!(
                "{}@{layer}{}",
                String::from_utf8_lossy(&e.path),
                if sifovl::fs::whiteout::is_opaque(&e.metadata) {
                    " opaque"
                } else {
                    ""
                }
            )
        })
        .collect();
    // `a` opaque: only the upper a/3; `gone` and its child removed; `b` replaced by a file
    // (its contents removed); `keep` whited out below and added in the same layer (kept).
    assert_eq!(result, ["a@1", "a/3@1", "b@1", "keep@1"]);
}
