//! `ls`: list the files of an overlay or a layer without mounting anything.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::Image;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::entry::{EntryKind, EntrySource, display_path};
use crate::fs::ext::ExtFs;
use crate::fs::squashfs::SquashfsReader;
use crate::fs::whiteout::{self, UpperMarker};
use crate::oci::MediaType;
use crate::sif::{FsType, PartType};

/// What a listed entry is (serialised in lower case: `file`, `dir`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListedKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device (a 0/0 one is an OverlayFS whiteout).
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// Another name of a file listed before it.
    Hardlink,
}

impl ListedKind {
    /// The kind of an entry.
    pub fn of(kind: &EntryKind) -> ListedKind {
        match kind {
            EntryKind::Directory => ListedKind::Dir,
            EntryKind::File { .. } => ListedKind::File,
            EntryKind::Symlink { .. } => ListedKind::Symlink,
            EntryKind::CharDevice { .. } => ListedKind::Char,
            EntryKind::BlockDevice { .. } => ListedKind::Block,
            EntryKind::Fifo => ListedKind::Fifo,
            EntryKind::Socket => ListedKind::Socket,
            EntryKind::HardLink { .. } => ListedKind::Hardlink,
        }
    }
}

/// One listed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Path inside the filesystem, from its root: `/`, `/upper/file`.
    pub path: String,
    /// What the entry is.
    pub kind: ListedKind,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes of a file, or length of a symlink target.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Symlink or hard-link target, or `major,minor` of a device.
    pub target: Option<String>,
    /// A deletion: an OverlayFS whiteout (0/0 character device) or an AUFS marker
    /// (empty `.wh.NAME` file, as fuse-overlayfs writes), or an opaque directory (xattr or
    /// `.wh..wh..opq` marker inside).
    pub whiteout: bool,
    /// A directory marked opaque (hides the layers below).
    pub opaque: bool,
    /// For an AUFS `.wh.NAME` marker, the path it deletes.
    pub deletes: Option<String>,
    /// A marker that is no entry of its own: `.wh..wh..opq` or fuse-overlayfs's dangling
    /// `.wh..opq` device.
    pub marker: bool,
    /// Names of its extended attributes.
    pub xattrs: Vec<String>,
    /// sha256 of a file's content (with `--hash`).
    pub sha256: Option<String>,
}

/// Which filesystem of the image to list.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The writable overlay (ext3), or else the last layer / overlay partition.
    Overlay,
    /// OCI layer by index.
    Layer(usize),
}

fn walk_all(source: &mut dyn EntrySource, hash: bool, out: &mut Vec<Listed>) -> Result<()> {
    let mut opaque_dirs = std::collections::HashSet::new();
    // A hard link's size is its file's: the first name's, listed before it.
    let mut file_sizes: std::collections::HashMap<Vec<u8>, u64> = Default::default();
    while let Some(e) = source.next_entry()? {
        let aufs = whiteout::upper_marker(&e);
        let (kind, size, target) = match &e.kind {
            EntryKind::Directory => (ListedKind::Dir, 0, None),
            EntryKind::File { size } => (ListedKind::File, *size, None),
            EntryKind::Symlink { target } => (
                ListedKind::Symlink,
                target.len() as u64,
                Some(String::from_utf8_lossy(target).into_owned()),
            ),
            EntryKind::CharDevice { major, minor } => {
                (ListedKind::Char, 0, Some(format!("{major},{minor}")))
            }
            EntryKind::BlockDevice { major, minor } => {
                (ListedKind::Block, 0, Some(format!("{major},{minor}")))
            }
            EntryKind::Fifo => (ListedKind::Fifo, 0, None),
            EntryKind::Socket => (ListedKind::Socket, 0, None),
            EntryKind::HardLink { target } => (
                ListedKind::Hardlink,
                file_sizes.get(target).copied().unwrap_or(0),
                Some(display_path(target)),
            ),
        };
        if let EntryKind::File { size } = e.kind {
            file_sizes.insert(e.path.clone(), size);
        }
        let sha256 = if hash && kind == ListedKind::File {
            let (d, _) = Digest::of_reader(&mut source.read_content()?)
                .map_err(|err| Error::io(format!("reading {}", e.display_path()), err))?;
            Some(d.to_string())
        } else {
            None
        };
        out.push(Listed {
            path: e.display_path(),
            kind,
            mode: e.metadata.permissions,
            uid: e.metadata.uid,
            gid: e.metadata.gid,
            size,
            mtime: e.metadata.mtime,
            whiteout: matches!(aufs, Some(UpperMarker::Whiteout(_)))
                || (aufs.is_none() && e.kind == EntryKind::CharDevice { major: 0, minor: 0 }),
            opaque: whiteout::is_opaque_upper(&e.metadata),
            deletes: match &aufs {
                Some(UpperMarker::Whiteout(p)) => Some(display_path(p)),
                _ => None,
            },
            marker: matches!(aufs, Some(UpperMarker::Opaque(_) | UpperMarker::Dangling)),
            target,
            xattrs: e
                .metadata
                .xattrs
                .iter()
                .map(|x| String::from_utf8_lossy(&x.name).into_owned())
                .collect(),
            sha256,
        });
        if let Some(UpperMarker::Opaque(dir)) = aufs {
            opaque_dirs.insert(display_path(&dir));
        }
    }
    for listed in out.iter_mut() {
        listed.opaque |= listed.kind == ListedKind::Dir && opaque_dirs.contains(&listed.path);
    }
    Ok(())
}

fn list_range(file: &File, offset: u64, size: u64, hash: bool) -> Result<Vec<Listed>> {
    let mut magic = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut magic, offset)
        .map_err(|e| Error::io("reading", e))?;
    let mut out = Vec::new();
    if magic == crate::fs::squashfs::MAGIC {
        let reader = SquashfsReader::open(file, offset, size)?;
        walk_all(&mut reader.walk()?, hash, &mut out)?;
    } else {
        let fs = ExtFs::open(file, offset, size)?;
        walk_all(&mut fs.walk()?, hash, &mut out)?;
    }
    Ok(out)
}

/// List a filesystem of the image at `path`.
pub fn list(path: &Path, target: Target, hash: bool) -> Result<Vec<Listed>> {
    let (file, offset, size) = locate(path, target)?;
    list_range(&file, offset, size, hash).map_err(|e| e.context(path.display()))
}

/// The open image and the byte range of the filesystem `target` names.
pub fn locate(path: &Path, target: Target) -> Result<(File, u64, u64)> {
    let opened = Image::open_read(path)?;
    let name = &opened.name;
    let (offset, size) = match &opened.oci {
        Some(image) => {
            let count = image.layers.len();
            if matches!(target, Target::Overlay) && image.overlay().is_none() && count > 0 {
                crate::progress::notice(&format!(
                    "{name}: no writable overlay; showing the top layer, layer {} (--layer N for another)",
                    count - 1
                ));
            }
            let layer = match target {
                Target::Overlay => image.layers.last(),
                Target::Layer(i) => image.layers.get(i),
            }
            .ok_or_else(|| match target {
                Target::Layer(i) if count > 0 => Error::not_found(format!(
                    "{name}: no layer {i}: layers are numbered 0 to {} (bottom first, as `sifovl inspect` lists them)",
                    count - 1
                )),
                _ => Error::not_found(format!("{name}: the image has no layers")),
            })?;
            if !matches!(
                layer.descriptor.media_type,
                MediaType::Ext3Layer | MediaType::SquashfsLayer
            ) {
                return Err(Error::unsupported(format!(
                    "{name}: layer is {}, not squashfs or ext3",
                    layer.descriptor.media_type
                )));
            }
            (layer.offset, layer.object_size)
        }
        None => {
            let partitions: Vec<_> = opened
                .container
                .partitions(|p| matches!(p.fs_type, FsType::Ext3 | FsType::Squashfs))
                .collect();
            let d = match target {
                Target::Overlay => partitions
                    .iter()
                    .rev()
                    .find(|d| {
                        d.partition()
                            .is_ok_and(|p| p.part_type == PartType::Overlay)
                    })
                    .or_else(|| {
                        let last = partitions.last()?;
                        crate::progress::notice(&format!(
                            "{name}: no writable overlay partition; showing partition {} (object {}; --layer N for another)",
                            partitions.len() - 1,
                            last.id
                        ));
                        Some(last)
                    }),
                Target::Layer(i) => partitions.get(i),
            }
            .ok_or_else(|| match target {
                Target::Layer(i) if !partitions.is_empty() => Error::not_found(format!(
                    "{name}: no partition {i}: ext3 and squashfs partitions are numbered 0 to {}",
                    partitions.len() - 1
                )),
                _ => Error::not_found(format!("{name}: no ext3 or squashfs partition")),
            })?;
            (d.offset, d.size)
        }
    };
    Ok((opened.file, offset, size))
}
