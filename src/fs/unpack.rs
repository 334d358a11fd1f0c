//! A host directory as an entry sink: writes a tree into a destination directory and never
//! outside it.
//!
//! Every path is resolved one component at a time from a descriptor of the destination,
//! opening each directory with `O_NOFOLLOW`: a symlink in the tree (or one planted in the
//! destination while we write) is never followed, and a path with an empty, `.` or `..`
//! component is refused. New names are created exclusively (`O_EXCL`, `mkdirat`,
//! `symlinkat`...), so an existing file is never overwritten through a name we did not make.
//!
//! Directories are created `0700` and get their own mode, owner, xattrs and time when the
//! tree is complete ([`DirWriter::finish`]): a read-only directory of the image must not stop
//! its children from being written, and writing children changes a directory's mtime.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, Metadata, display_path};

/// How much of an entry's metadata to restore.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Give entries their owners from the image (as `tar --same-owner`; needs root).
    pub same_owner: bool,
    /// Restore extended attributes (`trusted.*` and `security.*` need root; failures are
    /// reported, not fatal).
    pub xattrs: bool,
}

/// What was written, and what could not be restored.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UnpackReport {
    /// Entries written (every name, directories and hard links included).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries or attributes skipped, one line each (devices without the right to make
    /// them, sockets, xattrs the filesystem or our privileges refuse).
    pub skipped: Vec<String>,
}

/// Writes entries under a destination directory (see the module documentation).
pub struct DirWriter {
    root: OwnedFd,
    root_path: PathBuf,
    options: UnpackOptions,
    /// Directories in creation order, with the metadata they get at the end.
    dirs: Vec<(Vec<u8>, Metadata)>,
    dir_index: HashMap<Vec<u8>, usize>,
    /// The last parent directory opened, reused while entries stay in one directory.
    cached_parent: Option<(Vec<u8>, OwnedFd)>,
    report: UnpackReport,
}

/// The largest number of skipped entries listed one by one; the rest are counted.
const MAX_SKIPPED_LISTED: usize = 100;

impl DirWriter {
    /// A writer into `dest`, which must be an existing directory (it may be reached
    /// through a symlink: the user named it; nothing below it is).
    pub fn new(dest: &Path, options: UnpackOptions) -> Result<DirWriter> {
        let root = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::io(
                format!("{}: opening the destination", dest.display()),
                e.into(),
            )
        })?;
        Ok(DirWriter {
            root,
            root_path: dest.to_path_buf(),
            options,
            dirs: Vec::new(),
            dir_index: HashMap::new(),
            cached_parent: None,
            report: UnpackReport::default(),
        })
    }

    fn host_path(&self, path: &[u8]) -> String {
        format!("{}{}", self.root_path.display(), display_path(path))
    }

    fn io_error(&self, path: &[u8], what: &str, e: Errno) -> Error {
        Error::io(format!("{}: {what}", self.host_path(path)), e.into())
    }

    fn skip(&mut self, line: String) {
        if self.report.skipped.len() < MAX_SKIPPED_LISTED {
            self.report.skipped.push(line);
        } else if self.report.skipped.len() == MAX_SKIPPED_LISTED {
            self.report
                .skipped
                .push("(further skipped entries not listed)".into());
        }
    }

    /// Open the directory `dir` (a path of the tree) without following any symlink.
    fn open_dir(&self, dir: &[u8]) -> Result<OwnedFd> {
        let mut fd = rustix::io::dup(&self.root)
            .map_err(|e| self.io_error(dir, "duplicating a descriptor", e))?;
        if dir.is_empty() {
            return Ok(fd);
        }
        for component in dir.split(|&b| b == b'/') {
            check_component(dir, component)?;
            fd = rustix::fs::openat(
                &fd,
                component,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => Error::refused(format!(
                    "{}: a component of the path is not a directory (a symlink is never followed out of the destination)",
                    self.host_path(dir)
                )),
                e => self.io_error(dir, "opening the directory", e),
            })?;
        }
        Ok(fd)
    }

    /// The parent directory of `path` (opened) and the last component.
    fn parent_of<'p>(&mut self, path: &'p [u8]) -> Result<(OwnedFd, &'p [u8])> {
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        check_component(path, name)?;
        if let Some((cached, fd)) = &self.cached_parent
            && cached == parent
        {
            let fd = rustix::io::dup(fd).map_err(|e| self.io_error(path, "duplicating", e))?;
            return Ok((fd, name));
        }
        let fd = self.open_dir(parent)?;
        let copy = rustix::io::dup(&fd).map_err(|e| self.io_error(path, "duplicating", e))?;
        self.cached_parent = Some((parent.to_vec(), copy));
        Ok((fd, name))
    }

    fn write_file(
        &mut self,
        entry: &Entry,
        size: u64,
        content: Option<&mut dyn Read>,
    ) -> Result<()> {
        let (parent, name) = self.parent_of(&entry.path)?;
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.io_error(&entry.path, "creating the file", e))?;
        let mut file = File::from(fd);
        if let Some(content) = content {
            let written = copy_sparse(content, &mut file, size)
                .map_err(|e| Error::io(format!("{}: writing", self.host_path(&entry.path)), e))?;
            if written != size {
                return Err(Error::malformed(format!(
                    "{}: the image gave {written} bytes for a file of {size}",
                    entry.display_path()
                )));
            }
            self.report.bytes += written;
        }
        self.set_metadata(&entry.path, file.as_fd(), &entry.metadata)
    }

    /// Owner, permissions, xattrs and times of an open entry (a file or a directory).
    fn set_metadata(
        &mut self,
        path: &[u8],
        fd: rustix::fd::BorrowedFd<'_>,
        m: &Metadata,
    ) -> Result<()> {
        if self.options.same_owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
            )
            .map_err(|e| self.io_error(path, "setting the owner", e))?;
        }
        // After chown, which clears setuid and setgid.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m.permissions & 0o7777))
            .map_err(|e| self.io_error(path, "setting the mode", e))?;
        if self.options.xattrs {
            for x in &m.xattrs {
                if let Err(e) =
                    rustix::fs::fsetxattr(fd, x.name.as_slice(), &x.value, XattrFlags::empty())
                {
                    let line = format!(
                        "{}: xattr {} not restored ({e})",
                        display_path(path),
                        String::from_utf8_lossy(&x.name)
                    );
                    self.skip(line);
                }
            }
        }
        rustix::fs::futimens(fd, &times(m))
            .map_err(|e| self.io_error(path, "setting the time", e))?;
        Ok(())
    }

    /// Owner and time of a name that cannot be opened (symlinks, devices, fifos).
    fn set_metadata_at(
        &mut self,
        path: &[u8],
        parent: &OwnedFd,
        name: &[u8],
        m: &Metadata,
        symlink: bool,
    ) -> Result<()> {
        if self.options.same_owner {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::fs::Uid::from_raw(m.uid)),
                Some(rustix::fs::Gid::from_raw(m.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io_error(path, "setting the owner", e))?;
        }
        if !symlink {
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(m.permissions & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| self.io_error(path, "setting the mode", e))?;
        }
        rustix::fs::utimensat(parent, name, &times(m), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io_error(path, "setting the time", e))?;
        Ok(())
    }

    fn make_dir(&mut self, entry: &Entry) -> Result<()> {
        if !entry.path.is_empty() {
            let (parent, name) = self.parent_of(&entry.path)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                // A directory given again updates its metadata (the stream convention).
                Err(Errno::EXIST) if self.dir_index.contains_key(&entry.path) => {}
                Err(e) => return Err(self.io_error(&entry.path, "creating the directory", e)),
            }
        }
        match self.dir_index.get(&entry.path) {
            Some(&i) => self.dirs[i].1 = entry.metadata.clone(),
            None => {
                self.dir_index.insert(entry.path.clone(), self.dirs.len());
                self.dirs.push((entry.path.clone(), entry.metadata.clone()));
            }
        }
        Ok(())
    }

    fn make_node(
        &mut self,
        entry: &Entry,
        file_type: FileType,
        dev: rustix::fs::Dev,
    ) -> Result<()> {
        let (parent, name) = self.parent_of(&entry.path)?;
        match rustix::fs::mknodat(&parent, name, file_type, Mode::from_raw_mode(0o600), dev) {
            Ok(()) => self.set_metadata_at(&entry.path, &parent, name, &entry.metadata, false),
            Err(Errno::PERM) => {
                let line = format!(
                    "{}: {} not created (making devices needs root)",
                    entry.display_path(),
                    entry.kind.description()
                );
                self.skip(line);
                Ok(())
            }
            Err(e) => Err(self.io_error(&entry.path, "creating the node", e)),
        }
    }

    /// Apply the directories' own metadata, deepest first, and report.
    pub fn finish(mut self) -> Result<UnpackReport> {
        self.cached_parent = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, metadata) in dirs.iter().rev() {
            let fd = self.open_dir(path)?;
            self.set_metadata(path, fd.as_fd(), metadata)?;
        }
        Ok(self.report)
    }
}

impl EntrySink for DirWriter {
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
        // Between entries, a stop asked by a signal is honoured.
        crate::interrupt::check()?;
        match &entry.kind {
            EntryKind::Directory => self.make_dir(entry)?,
            EntryKind::File { size } => self.write_file(entry, *size, content)?,
            EntryKind::Symlink { target } => {
                let (parent, name) = self.parent_of(&entry.path)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, name)
                    .map_err(|e| self.io_error(&entry.path, "creating the symlink", e))?;
                self.set_metadata_at(&entry.path, &parent, name, &entry.metadata, true)?;
            }
            EntryKind::CharDevice { major, minor } => self.make_node(
                entry,
                FileType::CharacterDevice,
                rustix::fs::makedev(*major, *minor),
            )?,
            EntryKind::BlockDevice { major, minor } => self.make_node(
                entry,
                FileType::BlockDevice,
                rustix::fs::makedev(*major, *minor),
            )?,
            EntryKind::Fifo => self.make_node(entry, FileType::Fifo, 0)?,
            EntryKind::Socket => {
                self.skip(format!("{}: a socket, not recreated", entry.display_path()));
                return Ok(());
            }
            EntryKind::HardLink { target } => {
                let (target_parent, target_name) = self.parent_of(target)?;
                let (parent, name) = self.parent_of(&entry.path)?;
                rustix::fs::linkat(&target_parent, target_name, &parent, name, AtFlags::empty())
                    .map_err(|e| self.io_error(&entry.path, "creating the hard link", e))?;
            }
        }
        self.report.entries += 1;
        Ok(())
    }
}

/// Refuse a component that could leave the destination or name nothing.
fn check_component(path: &[u8], component: &[u8]) -> Result<()> {
    if component.is_empty() || component == b"." || component == b".." || component.contains(&0) {
        return Err(Error::refused(format!(
            "{}: a path with an empty, `.` or `..` component is never written",
            display_path(path)
        )));
    }
    Ok(())
}

fn times(m: &Metadata) -> Timestamps {
    let at = Timespec {
        tv_sec: m.mtime,
        tv_nsec: m.mtime_nsec.min(999_999_999) as _,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// Copy `content` into `out`, leaving holes where whole 64 KiB blocks are zero; the file's
/// length is set at the end so a trailing hole still counts. Returns the bytes copied.
fn copy_sparse(content: &mut dyn Read, out: &mut File, size: u64) -> std::io::Result<u64> {
    const BLOCK: usize = 64 << 10;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            let n = content.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if filled == BLOCK && buf.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(BLOCK as i64))?;
        } else {
            out.write_all(&buf[..filled])?;
        }
        total += filled as u64;
        if total > size {
            break;
        }
    }
    out.set_len(total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::entry::Xattr;

    fn entry(path: &str, kind: EntryKind, permissions: u32) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            metadata: Metadata {
                permissions,
                mtime: 1_000_000,
                ..Metadata::default()
            },
        }
    }

    fn options() -> UnpackOptions {
        UnpackOptions {
            same_owner: false,
            xattrs: true,
        }
    }

    #[test]
    fn writes_a_tree_and_applies_directory_modes_last() {
        let dest = tempfile::tempdir().unwrap();
        let mut w = DirWriter::new(dest.path(), options()).unwrap();
        w.add_entry(&entry("ro", EntryKind::Directory, 0o555), None)
            .unwrap();
        let mut data: &[u8] = b"hello";
        let mut file = entry("ro/f", EntryKind::File { size: 5 }, 0o640);
        file.metadata.xattrs.push(Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        });
        w.add_entry(&file, Some(&mut data)).unwrap();
        w.add_entry(
            &entry(
                "ro/l",
                EntryKind::HardLink {
                    target: b"ro/f".to_vec(),
                },
                0o640,
            ),
            None,
        )
        .unwrap();
        w.add_entry(
            &entry(
                "s",
                EntryKind::Symlink {
                    target: b"/etc/passwd".to_vec(),
                },
                0o777,
            ),
            None,
        )
        .unwrap();
        w.add_entry(&entry("p", EntryKind::Fifo, 0o644), None)
            .unwrap();
        let report = w.finish().unwrap();
        assert_eq!(report.entries, 5);
        assert_eq!(report.bytes, 5);
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let ro = std::fs::metadata(dest.path().join("ro")).unwrap();
        assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
        assert_eq!(ro.mtime(), 1_000_000);
        let f = std::fs::metadata(dest.path().join("ro/f")).unwrap();
        assert_eq!((f.permissions().mode() & 0o7777, f.nlink()), (0o640, 2));
        assert_eq!(std::fs::read(dest.path().join("ro/l")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dest.path().join("s")).unwrap(),
            Path::new("/etc/passwd")
        );
        // Make the tree removable again.
        std::fs::set_permissions(
            dest.path().join("ro"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn never_writes_through_a_symlink_or_dotdot() {
        let outside = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let mut w = DirWriter::new(dest.path(), options()).unwrap();
        w.add_entry(
            &entry(
                "escape",
                EntryKind::Symlink {
                    target: outside.path().as_os_str().as_encoded_bytes().to_vec(),
                },
                0o777,
            ),
            None,
        )
        .unwrap();
        let mut data: &[u8] = b"x";
        let through = w.add_entry(
            &entry("escape/owned", EntryKind::File { size: 1 }, 0o644),
            Some(&mut data),
        );
        assert!(through.is_err());
        let mut data: &[u8] = b"x";
        let dotdot = w.add_entry(
            &entry("../owned", EntryKind::File { size: 1 }, 0o644),
            Some(&mut data),
        );
        assert!(dotdot.is_err());
        // A symlink cannot be replaced by a file either.
        let mut data: &[u8] = b"x";
        assert!(
            w.add_entry(
                &entry("escape", EntryKind::File { size: 1 }, 0o644),
                Some(&mut data)
            )
            .is_err()
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(!dest.path().parent().unwrap().join("owned").exists());
    }

    #[test]
    fn zero_blocks_become_holes() {
        let dest = tempfile::tempdir().unwrap();
        let mut w = DirWriter::new(dest.path(), options()).unwrap();
        let size = 4u64 << 20;
        let mut content = std::io::repeat(0).take(size - 4).chain(&b"tail"[..]);
        w.add_entry(
            &entry("sparse", EntryKind::File { size }, 0o644),
            Some(&mut content),
        )
        .unwrap();
        w.finish().unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dest.path().join("sparse")).unwrap();
        assert_eq!(m.len(), size);
        assert!(m.blocks() * 512 < 1 << 20, "allocated {}", m.blocks() * 512);
    }
}
