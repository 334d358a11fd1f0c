//! Writable ext3 overlay images as SingularityCE uses them: the header rule its runtime
//! applies before mounting one, and creation of a fresh one with `upper/` and `work/`.
//!
//! Creation uses our own ext3 writer ([`crate::fs::ext::write`]), no mke2fs: the tree
//! `singularity overlay create` makes (root 0755 0:0, `upper/` and `work/` owned by the
//! caller, `--create-dir` directories), optionally with a host directory's tree in `upper/`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, ResultExt};
use crate::fs::dir::DirSource;
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata};
use crate::fs::ext::superblock::{self, Superblock};
use crate::fs::ext::{Ext3Options, Outcome, TreeNeeds, write_ext3};
use crate::fs::target::Target;

/// What the runtime reads of an overlay before trusting it: the boot block and the
/// superblock.
pub const HEADER_LEN: usize = superblock::OFFSET + superblock::LEN;
/// Incompatible features ext3 may have: filetype, recover, meta_bg.
const INCOMPAT_ALLOWED: u32 =
    superblock::INCOMPAT_FILETYPE | superblock::INCOMPAT_RECOVER | superblock::INCOMPAT_META_BG;
/// Read-only-compatible features ext3 may have: sparse_super, large_file, btree_dir.
const RO_COMPAT_ALLOWED: u32 = superblock::RO_COMPAT_SPARSE_SUPER
    | superblock::RO_COMPAT_LARGE_FILE
    | superblock::RO_COMPAT_BTREE_DIR;

/// Facts from an overlay's superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext3Header {
    /// The journal needs recovery: the job that wrote it was killed.
    pub needs_recovery: bool,
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// Filesystem size in blocks.
    pub blocks: u64,
}

/// Apply SingularityCE's `CheckExt3Header` rule to the first 2048 bytes of an overlay:
/// an ext2/3/4 magic, a journal, and no feature beyond ext3's.
pub fn check_ext3_header(header: &[u8]) -> Result<Ext3Header> {
    let sb = header
        .get(superblock::OFFSET..HEADER_LEN)
        .and_then(Superblock::decode)
        .ok_or_else(|| {
            Error::malformed(format!(
                "ext3 overlay: {} bytes, shorter than the 2048-byte header",
                header.len()
            ))
        })?;
    if !sb.has_magic() {
        return Err(Error::malformed(
            "ext3 overlay: no ext2/3/4 superblock magic at byte 1080",
        ));
    }
    if sb.feature_compat & superblock::COMPAT_HAS_JOURNAL == 0 {
        return Err(Error::unsupported(
            "ext3 overlay: the filesystem has no journal (ext2); SingularityCE needs ext3",
        ));
    }
    let incompat = sb.feature_incompat;
    if incompat & !INCOMPAT_ALLOWED != 0 {
        return Err(Error::unsupported(format!(
            "ext3 overlay: incompatible features {:#x} beyond ext3's (an ext4 image?); SingularityCE refuses it",
            incompat & !INCOMPAT_ALLOWED
        )));
    }
    let ro_compat = sb.feature_ro_compat;
    if ro_compat & !RO_COMPAT_ALLOWED != 0 {
        return Err(Error::unsupported(format!(
            "ext3 overlay: read-only-compatible features {:#x} beyond ext3's; SingularityCE refuses it",
            ro_compat & !RO_COMPAT_ALLOWED
        )));
    }
    let block_size = sb.block_size().ok_or_else(|| {
        Error::malformed(format!(
            "ext3 overlay: block size 2^(10+{}) is absurd",
            sb.log_block_size
        ))
    })?;
    Ok(Ext3Header {
        needs_recovery: sb.needs_recovery(),
        block_size,
        blocks: sb.blocks(),
    })
}

/// Read and check the header of an overlay stored at `offset` in `file`.
pub fn read_ext3_header(file: &File, offset: u64, size: u64) -> Result<Ext3Header> {
    if size < HEADER_LEN as u64 {
        return Err(Error::malformed(format!(
            "ext3 overlay: {size} bytes, shorter than 2048"
        )));
    }
    let mut buf = [0u8; HEADER_LEN];
    file.read_exact_at(&mut buf, offset)
        .context("reading the ext3 overlay header")?;
    check_ext3_header(&buf)
}

/// Options for a new overlay image.
#[derive(Debug, Clone, Default)]
pub struct CreateOverlay {
    /// Size of the image in MiB, at least [`MIN_OVERLAY_MIB`].
    pub size_mib: u64,
    /// Directories to create inside `upper/` (as `--create-dir` does), relative or absolute.
    pub create_dirs: Vec<String>,
    /// Owner of `upper/` and `work/` (the user who will write into the overlay).
    pub uid: u32,
    /// Group of `upper/` and `work/`.
    pub gid: u32,
    /// A host directory whose tree goes into `upper/` (`--from-dir`).
    pub from_dir: Option<PathBuf>,
    /// Fixed UUID, hash seed and time (tests and reproducible builds); random and now when
    /// `None`.
    pub fixed: Option<Fixed>,
}

/// Fixed values for a reproducible overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// Time of the root, `upper/`, `work/` and the superblock (seconds since the epoch).
    pub time: i64,
}

impl Fixed {
    /// The values for a reproducible build at `epoch` (`SOURCE_DATE_EPOCH`): that time, and
    /// a UUID (version 4 bits set) and hash seed derived from it, so the same inputs give
    /// the same bytes.
    pub fn from_epoch(epoch: i64) -> Fixed {
        let derive = |what: &str| -> [u8; 16] {
            let digest = crate::digest::Digest::of(format!("sifovl {what} {epoch}").as_bytes());
            let mut out = [0u8; 16];
            out.copy_from_slice(&digest.as_bytes()[..16]);
            out
        };
        let mut uuid = derive("overlay uuid");
        uuid[6] = (uuid[6] & 0x0F) | 0x40;
        uuid[8] = (uuid[8] & 0x3F) | 0x80;
        Fixed {
            uuid,
            hash_seed: derive("overlay hash seed"),
            time: epoch,
        }
    }
}

/// The smallest overlay `overlay create` accepts.
pub const MIN_OVERLAY_MIB: u64 = 64;

/// Mode of `upper/`, `work/` and `--create-dir` directories, as the reference: 0755, or
/// 0777 when the owner's ids do not fit in 16 bits.
fn overlay_dir_mode(uid: u32, gid: u32) -> u32 {
    if uid > 65535 || gid > 65535 {
        0o777
    } else {
        0o755
    }
}

/// The `--create-dir` paths, each with its parents, under `upper/`.
fn create_dir_paths(create_dirs: &[String]) -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for d in create_dirs {
        let rel = d.trim_start_matches('/');
        if rel.split('/').any(|c| c == ".." || c == ".") {
            return Err(Error::refused(format!(
                "--create-dir {d:?}: `.` and `..` are not allowed"
            )));
        }
        let mut path = b"upper".to_vec();
        for component in rel.split('/').filter(|c| !c.is_empty()) {
            path.push(b'/');
            path.extend_from_slice(component.as_bytes());
            if !out.contains(&path) {
                out.push(path.clone());
            }
        }
    }
    Ok(out)
}

/// The tree of a new overlay: the root (0755, 0:0), `upper/` holding `contents` (if any)
/// and the `--create-dir` directories, and `work/`; `lost+found` comes from the writer.
struct OverlayTree<'a> {
    /// Entries still to come before or after the contents, in order.
    head: Vec<Entry>,
    tail: Vec<Entry>,
    contents: Option<&'a mut dyn EntrySource>,
    /// Paths of the contents, to skip `--create-dir` directories they already have.
    seen: std::collections::HashSet<Vec<u8>>,
    track: bool,
}

impl<'a> OverlayTree<'a> {
    fn new(
        options: &CreateOverlay,
        time: i64,
        contents: Option<&'a mut dyn EntrySource>,
    ) -> Result<OverlayTree<'a>> {
        let dir = |path: &[u8], permissions: u32, uid: u32, gid: u32| Entry {
            path: path.to_vec(),
            kind: EntryKind::Directory,
            metadata: Metadata {
                permissions,
                uid,
                gid,
                mtime: time,
                ..Metadata::default()
            },
        };
        let mode = overlay_dir_mode(options.uid, options.gid);
        let (uid, gid) = (options.uid, options.gid);
        let head = vec![dir(b"", 0o755, 0, 0), dir(b"upper", mode, uid, gid)];
        let mut tail: Vec<Entry> = create_dir_paths(&options.create_dirs)?
            .iter()
            .map(|p| dir(p, mode, uid, gid))
            .collect();
        tail.push(dir(b"work", mode, uid, gid));
        let track = contents.is_some() && !options.create_dirs.is_empty();
        Ok(OverlayTree {
            head: head.into_iter().rev().collect(),
            tail: tail.into_iter().rev().collect(),
            contents,
            seen: Default::default(),
            track,
        })
    }
}

impl EntrySource for OverlayTree<'_> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        if let Some(e) = self.head.pop() {
            if self.head.is_empty()
                && let Some(inner) = self.contents.as_deref_mut()
            {
                // The contents' root is upper/ itself, whose metadata the overlay fixes.
                match inner.next_entry()? {
                    Some(root) if root.path.is_empty() => {}
                    _ => return Err(Error::malformed("the source tree has no root directory")),
                }
            }
            return Ok(Some(e));
        }
        if let Some(inner) = self.contents.as_deref_mut() {
            match inner.next_entry()? {
                Some(mut e) => {
                    let mut path = b"upper/".to_vec();
                    path.extend_from_slice(&e.path);
                    e.path = path;
                    if let EntryKind::HardLink { target } = &mut e.kind {
                        let mut t = b"upper/".to_vec();
                        t.extend_from_slice(target);
                        *target = t;
                    }
                    if self.track {
                        self.seen.insert(e.path.clone());
                    }
                    return Ok(Some(e));
                }
                None => self.contents = None,
            }
        }
        while let Some(e) = self.tail.pop() {
            if !self.seen.contains(&e.path) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        match self.contents.as_deref_mut() {
            Some(inner) => inner.read_content(),
            None => Err(Error::malformed("no current file")),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Write a new overlay filesystem of `options.size_mib` MiB to `target` (ranges that read as
/// zeros, e.g. past the end of the file, which is extended to cover them): the root, `upper/`
/// (holding `--from-dir`'s tree) and `work/` owned by the caller. Only metadata and file
/// data are written; the rest stays holes. Returns the size in bytes.
pub fn write_overlay(target: Target<'_>, options: &CreateOverlay) -> Result<u64> {
    if options.size_mib < MIN_OVERLAY_MIB {
        return Err(Error::refused(format!(
            "overlay size {} MiB: must be at least {MIN_OVERLAY_MIB} MiB",
            options.size_mib
        )));
    }
    let size = options
        .size_mib
        .checked_mul(1 << 20)
        .filter(|&s| s <= EXT3_MAX_BYTES)
        .ok_or_else(|| {
            Error::refused(format!(
                "an overlay of {} MiB is beyond ext3's 16 TiB limit",
                options.size_mib
            ))
        })?;
    let time = options.fixed.map_or_else(now, |f| f.time);
    let open_dir = || -> Result<Option<DirSource>> {
        options.from_dir.as_deref().map(DirSource::new).transpose()
    };
    let mut contents = open_dir()?;
    let write = |contents: Option<&mut dyn EntrySource>, min_inodes: u64| -> Result<Outcome> {
        let mut tree = OverlayTree::new(options, time, contents)?;
        target
            .set_len_at_least(size)
            .map_err(|e| Error::io("extending the file for the ext3 overlay", e))?;
        write_ext3(
            target,
            &Ext3Options {
                size,
                uuid: options.fixed.map(|f| f.uuid),
                hash_seed: options.fixed.map(|f| f.hash_seed),
                time: Some(time),
                min_inodes,
            },
            &mut tree,
        )
    };
    let first = write(contents.as_mut().map(|c| c as &mut dyn EntrySource), 0)?;
    let Outcome::Full { .. } = first else {
        return Ok(size);
    };
    // Out of room: find what the tree needs; more inodes may be all it takes.
    let mut scan_contents = open_dir()?;
    let needs = TreeNeeds::scan(&mut OverlayTree::new(
        options,
        time,
        scan_contents.as_mut().map(|c| c as &mut dyn EntrySource),
    )?)?;
    let need_mib = needs.min_size_mib().max(MIN_OVERLAY_MIB);
    if need_mib <= options.size_mib {
        // Start from zeros again: punch out what the first attempt wrote.
        target
            .zero(0, size)
            .map_err(|e| Error::io("zeroing the ext3 overlay", e))?;
        let mut contents = open_dir()?;
        if let Outcome::Written(_) = write(
            contents.as_mut().map(|c| c as &mut dyn EntrySource),
            needs.inodes,
        )? {
            return Ok(size);
        }
    }
    Err(too_small(options.size_mib, need_mib))
}

/// The refusal of an overlay too small for its tree.
pub fn too_small(size_mib: u64, need_mib: u64) -> Error {
    Error::refused(format!(
        "the tree does not fit in a {size_mib} MiB overlay; it needs --size {} or more",
        need_mib.max(size_mib + 1)
    ))
}

/// The largest ext3 filesystem without the 64bit feature: 2^32 - 1 blocks of 4 KiB.
pub const EXT3_MAX_BYTES: u64 = (u32::MAX as u64) * 4096;

/// Build an ext3 overlay image at `dest` (created or truncated, sparse) with `upper/` and
/// `work/`.
pub fn create_ext3_overlay(dest: &Path, options: &CreateOverlay) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .with_context(|| dest.display())?;
    let size =
        write_overlay(Target::at(&file, 0), options).map_err(|e| e.context(dest.display()))?;
    // Refuse to hand back anything the runtime would not mount.
    read_ext3_header(&file, 0, size).map_err(|e| e.context(dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(compat: u32, incompat: u32, ro: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[1080] = 0x53;
        h[1081] = 0xEF;
        h[1024 + 0x5C..1024 + 0x60].copy_from_slice(&compat.to_le_bytes());
        h[1024 + 0x60..1024 + 0x64].copy_from_slice(&incompat.to_le_bytes());
        h[1024 + 0x64..1024 + 0x68].copy_from_slice(&ro.to_le_bytes());
        h
    }

    #[test]
    fn header_rule_matches_the_runtime() {
        assert!(check_ext3_header(&superblock(0x4, 0x2, 0x3)).is_ok());
        let r = check_ext3_header(&superblock(0x4, 0x2 | 0x4, 0x3)).unwrap();
        assert!(r.needs_recovery);
        assert!(
            check_ext3_header(&superblock(0x0, 0x2, 0x3)).is_err(),
            "ext2 accepted"
        );
        assert!(
            check_ext3_header(&superblock(0x4, 0x2 | 0x40, 0x3)).is_err(),
            "extents accepted"
        );
        assert!(
            check_ext3_header(&superblock(0x4, 0x2, 0x400)).is_err(),
            "metadata_csum accepted"
        );
        assert!(check_ext3_header(&[0u8; 100]).is_err());
        assert!(check_ext3_header(&[0u8; 2048]).is_err());
    }
}
