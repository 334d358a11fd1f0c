//! Crash-safe in-place edits of a file, with a redo journal beside it.
//!
//! Editing an OCI-SIF in place means overwriting bytes that the old state needs (the
//! descriptor table, the JSON blobs after the overlay, the overlay itself when sealing).
//! No single write is atomic over several sectors, so an edit is done in three phases:
//!
//! 1. **Prepare.** A journal `<file>.sifovl-journal` records the file's length. Large new
//!    data (a new overlay, a sealed squashfs) is *staged* past that length, where no live
//!    byte lives. A crash now is rolled back by truncating to the recorded length.
//! 2. **Commit.** Every remaining change is recorded as an idempotent operation (copy a
//!    staged range to its place, write these bytes here, set the length) in a new journal,
//!    written to a temporary file, synced and renamed over the old one: the rename is the
//!    commit point. A crash after it is rolled forward by replaying the operations.
//! 3. **Apply.** The operations are applied, the file synced and the journal removed.
//!
//! Every sifovl command that opens a file first [`recover`]s an interrupted edit, so the
//! file is always seen either exactly as before the edit or exactly as after it.
//!
//! Fault injection: in debug builds (the test suite's) `SIFOVL_FAULT_AT=N` aborts the
//! process just before its N-th durable step (write, sync, rename, truncate, unlink), which
//! the crash tests use to stop an edit at every point. Release builds do not contain it, so
//! no environment variable can make a user's sifovl abort mid-edit. Likewise
//! `SIFOVL_RECORD_IO=PATH` appends every durable operation (write, length change, sync,
//! create, rename, unlink, directory sync) to `PATH`, which the power-loss tests replay cut
//! at each sync with the unsynced writes dropped (see [`record`]).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::digest::Digest;

use crate::error::{Error, ErrorKind, Result, ResultExt};

const MAGIC: &[u8; 16] = b"SIFOVL-JOURNAL1\n";
const STATE_PREPARED: u8 = 1;
const STATE_COMMITTED: u8 = 2;
const CHUNK: usize = 1 << 20;
/// Staged data starts on this boundary, so copies and holes line up with filesystem blocks.
const STAGE_ALIGN: u64 = 1 << 16;
/// A journal larger than this is not one of ours (ours hold only small JSON and tables).
const MAX_JOURNAL: u64 = 256 << 20;
/// How far the final layout may reach past the file and the bytes a journal carries:
/// alignment of new objects, generously.
const JOURNAL_SLACK: u64 = 16 << 20;

/// The journal path for `path`.
pub fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sifovl-journal");
    path.with_file_name(name)
}

// ---------------------------------------------------------------- fault injection

#[cfg(debug_assertions)]
fn fault_limit() -> u64 {
    use std::sync::OnceLock;
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("SIFOVL_FAULT_AT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// Called before every durable step; in debug builds, aborts the process at the step
/// `SIFOVL_FAULT_AT` names.
#[cfg(debug_assertions)]
fn step() {
    let n = STEPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if n == fault_limit() {
        eprintln!("sifovl: fault injection: aborting before durable step {n}");
        std::process::abort();
    }
}

/// Durable steps taken so far by this process.
#[cfg(debug_assertions)]
static STEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(not(debug_assertions))]
fn step() {}

/// The record of durable operations that `SIFOVL_RECORD_IO=PATH` keeps in debug builds (a
/// no-op in release builds). One entry per operation, a tab-separated header line naming
/// the operation and its file's absolute path, then for a write its bytes:
/// `write PATH OFFSET LEN\n<LEN bytes>`, `set_len PATH LEN`, `sync PATH`, `create PATH`,
/// `rename FROM TO`, `unlink PATH`, `sync_dir DIR`.
pub mod record {
    use std::fs::File;
    use std::path::Path;

    #[cfg(debug_assertions)]
    fn log() -> Option<&'static std::sync::Mutex<File>> {
        use std::sync::{Mutex, OnceLock};
        static LOG: OnceLock<Option<Mutex<File>>> = OnceLock::new();
        LOG.get_or_init(|| {
            let path = std::env::var_os("SIFOVL_RECORD_IO")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            Some(Mutex::new(file))
        })
        .as_ref()
    }

    /// Whether operations are being recorded.
    pub fn enabled() -> bool {
        #[cfg(debug_assertions)]
        return log().is_some();
        #[cfg(not(debug_assertions))]
        false
    }

    #[cfg(debug_assertions)]
    fn emit(fields: &[&str], bytes: &[u8]) {
        use std::io::Write;
        let Some(log) = log() else { return };
        let mut entry = fields.join("\t").into_bytes();
        entry.push(b'\n');
        entry.extend_from_slice(bytes);
        // One write per entry: a reader never sees half an entry.
        let _ = log.lock().map(|mut f| f.write_all(&entry));
    }

    #[cfg(not(debug_assertions))]
    fn emit(_: &[&str], _: &[u8]) {}

    fn file_path(file: &File) -> String {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    fn absolute(path: &Path) -> String {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        dir.join(path.file_name().unwrap_or_default())
            .display()
            .to_string()
    }

    pub(super) fn write(file: &File, offset: u64, bytes: &[u8]) {
        if enabled() {
            let (at, len) = (offset.to_string(), bytes.len().to_string());
            emit(&["write", &file_path(file), &at, &len], bytes);
        }
    }

    pub(super) fn zero(file: &File, offset: u64, len: u64) {
        if enabled() {
            emit(
                &[
                    "zero",
                    &file_path(file),
                    &offset.to_string(),
                    &len.to_string(),
                ],
                &[],
            );
        }
    }

    pub(super) fn set_len(file: &File, len: u64) {
        if enabled() {
            emit(&["set_len", &file_path(file), &len.to_string()], &[]);
        }
    }

    pub(super) fn sync(file: &File) {
        if enabled() {
            emit(&["sync", &file_path(file)], &[]);
        }
    }

    pub(super) fn create(path: &Path) {
        if enabled() {
            emit(&["create", &absolute(path)], &[]);
        }
    }

    pub(super) fn rename(from: &Path, to: &Path) {
        if enabled() {
            emit(&["rename", &absolute(from), &absolute(to)], &[]);
        }
    }

    pub(super) fn unlink(path: &Path) {
        if enabled() {
            emit(&["unlink", &absolute(path)], &[]);
        }
    }

    pub(super) fn sync_dir(dir: &Path) {
        if enabled() {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            emit(&["sync_dir", &dir.display().to_string()], &[]);
        }
    }
}

/// Make `len` bytes at `offset` read as zeros: a hole where the filesystem punches one (no
/// data written, the space freed), written zeros elsewhere. One durable step.
fn zero_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    step();
    record::zero(file, offset, len);
    if fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .is_ok()
    {
        return Ok(());
    }
    let zeros = vec![0u8; CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    step();
    record::write(file, offset, buf);
    file.write_all_at(buf, offset)
}

/// A durable write issued outside this module (a writer producing staged data, see
/// [`Edit::stage_with`]): a fault point, and recorded, like the journal's own writes.
pub fn staged_write(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    write_at(file, buf, offset)
}

/// A length change issued outside this module for staged data (a writer that sizes its
/// staging area first): a fault point, and recorded, like the journal's own.
pub fn staged_set_len(file: &File, len: u64) -> std::io::Result<()> {
    set_len(file, len)
}

fn sync(file: &File) -> std::io::Result<()> {
    step();
    record::sync(file);
    file.sync_all()
}

fn set_len(file: &File, len: u64) -> std::io::Result<()> {
    step();
    record::set_len(file, len);
    file.set_len(len)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    step();
    record::sync_dir(dir);
    File::open(dir)?.sync_all()
}

// ---------------------------------------------------------------- operations

/// One idempotent redo operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Write these bytes at `offset`.
    Write { offset: u64, bytes: Vec<u8> },
    /// Copy `len` staged bytes from `src` to `dst`. With `sparse`, all-zero chunks that land
    /// past the original end of the file are left as holes rather than written.
    Copy {
        src: u64,
        dst: u64,
        len: u64,
        sparse: bool,
    },
    /// Write `len` zero bytes at `offset` (deleted objects are zeroed, as the reference does).
    Zero { offset: u64, len: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    state: u8,
    dev: u64,
    ino: u64,
    old_len: u64,
    final_len: u64,
    ops: Vec<Op>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(self.state);
        for v in [
            self.dev,
            self.ino,
            self.old_len,
            self.final_len,
            self.ops.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for op in &self.ops {
            match op {
                Op::Write { offset, bytes } => {
                    out.push(1);
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
                Op::Copy {
                    src,
                    dst,
                    len,
                    sparse,
                } => {
                    out.push(2);
                    for v in [*src, *dst, *len] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    out.push(*sparse as u8);
                }
                Op::Zero { offset, len } => {
                    out.push(3);
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&len.to_le_bytes());
                }
            }
        }
        let sum = Digest::of(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    fn decode(data: &[u8]) -> Option<Record> {
        if data.len() < MAGIC.len() + 1 + 40 + 32 || &data[..16] != MAGIC {
            return None;
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if Digest::of(body).as_bytes() != sum {
            return None;
        }
        let mut cur = Cursor {
            data: body,
            pos: 16,
        };
        let state = cur.u8()?;
        let (dev, ino, old_len, final_len, count) =
            (cur.u64()?, cur.u64()?, cur.u64()?, cur.u64()?, cur.u64()?);
        let mut ops = Vec::new();
        for _ in 0..count {
            match cur.u8()? {
                1 => {
                    let offset = cur.u64()?;
                    let len = usize::try_from(cur.u64()?).ok()?;
                    ops.push(Op::Write {
                        offset,
                        bytes: cur.take(len)?.to_vec(),
                    });
                }
                2 => {
                    let (src, dst, len) = (cur.u64()?, cur.u64()?, cur.u64()?);
                    ops.push(Op::Copy {
                        src,
                        dst,
                        len,
                        sparse: cur.u8()? != 0,
                    });
                }
                3 => {
                    let (offset, len) = (cur.u64()?, cur.u64()?);
                    ops.push(Op::Zero { offset, len });
                }
                _ => return None,
            }
        }
        (cur.pos == body.len() && matches!(state, STATE_PREPARED | STATE_COMMITTED)).then_some(
            Record {
                state,
                dev,
                ino,
                old_len,
                final_len,
                ops,
            },
        )
    }
}

impl Record {
    /// Why this record cannot have been written by [`Edit::commit`] for a file now `len`
    /// bytes long, if it cannot. A checksum proves the journal is whole, not that its
    /// numbers are sane: a forged or buggy journal must not zero a petabyte or grow the
    /// image to a terabyte. Every bound holds for any state a crash or power loss leaves:
    /// staged data is synced before the commit, so copies read inside the file until the
    /// cut to the final length; the final layout grows past the file only by the bytes the
    /// journal itself carries (new JSON objects), plus alignment; a rollback only shrinks.
    fn implausible(&self, len: u64) -> Option<String> {
        if self.state != STATE_COMMITTED {
            return (self.old_len > len).then(|| {
                format!(
                    "rolling back would grow the file from {len} to {} bytes",
                    self.old_len
                )
            });
        }
        let carried: u64 = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Write { bytes, .. } => bytes.len() as u64,
                _ => 0,
            })
            .sum();
        let limit = len.saturating_add(carried).saturating_add(JOURNAL_SLACK);
        if self.final_len > limit {
            return Some(format!(
                "final length {} is beyond what the file ({len} bytes) and the journal can fill",
                self.final_len
            ));
        }
        let copies_done = len <= self.final_len;
        for op in &self.ops {
            let (what, end) = match op {
                Op::Write { offset, bytes } => ("write", offset.checked_add(bytes.len() as u64)),
                Op::Copy { dst, len, .. } => ("copy", dst.checked_add(*len)),
                Op::Zero { offset, len } => ("zeroing", offset.checked_add(*len)),
            };
            if end.is_none_or(|end| end > limit) {
                return Some(format!("a {what} reaches past {limit} bytes"));
            }
            if let Op::Copy { src, len: n, .. } = op
                && !copies_done
                && src.checked_add(*n).is_none_or(|end| end > len)
            {
                return Some(format!(
                    "a copy reads past the end of the file ({len} bytes)"
                ));
            }
        }
        None
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn write_journal(path: &Path, record: &Record) -> Result<()> {
    let journal = journal_path(path);
    let tmp = journal.with_extension("sifovl-journal-tmp");
    let what = || format!("{}: writing edit journal", path.display());
    // Creating the journal is where an unwritable directory shows: say which one, and why
    // sifovl needs it.
    let file = File::create(&tmp).with_context(|| {
        let dir = match journal.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
            _ => ".".to_string(),
        };
        // The image's name comes from the caller's context: not twice.
        format!(
            "creating the edit journal in {dir} (edits keep a crash-safety journal beside the image, so its directory must be writable)"
        )
    })?;
    record::create(&tmp);
    write_at(&file, &record.encode(), 0).with_context(what)?;
    sync(&file).with_context(what)?;
    drop(file);
    step();
    record::rename(&tmp, &journal);
    std::fs::rename(&tmp, &journal).with_context(what)?;
    sync_dir(&journal).with_context(what)
}

fn remove_journal(path: &Path) -> Result<()> {
    let journal = journal_path(path);
    step();
    record::unlink(&journal);
    std::fs::remove_file(&journal)
        .with_context(|| format!("{}: removing edit journal", path.display()))?;
    sync_dir(&journal).with_context(|| format!("{}: syncing directory", path.display()))
}

fn apply(file: &File, record: &Record) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    // Staged data always lies past the final length, so a file already cut to that length
    // means an earlier run of this journal finished every copy (and synced) before cutting.
    let copies_done = file.metadata()?.len() <= record.final_len;
    for op in &record.ops {
        match op {
            Op::Write { offset, bytes } => write_at(file, bytes, *offset)?,
            Op::Copy { .. } if copies_done => {}
            Op::Copy {
                src,
                dst,
                len,
                sparse,
            } => {
                // A sparse copy reads only the staged data regions: its holes (most of a new
                // overlay) stay holes past the old end and become zeros below it.
                let regions = if *sparse {
                    crate::digest::data_extents(file, *src, *len)
                } else {
                    vec![(0, *len)]
                };
                let mut pos = 0u64;
                for (start, end) in regions.into_iter().chain([(*len, *len)]) {
                    // The hole before this region: only the part below the old end needs zeros.
                    let below_old_end = record.old_len.saturating_sub(dst + pos);
                    let zero_to = start.min(pos + below_old_end);
                    if zero_to > pos {
                        zero_range(file, dst + pos, zero_to - pos)?;
                    }
                    pos = start;
                    while pos < end {
                        let n = (end - pos).min(CHUNK as u64) as usize;
                        file.read_exact_at(&mut buf[..n], src + pos)?;
                        let at = dst + pos;
                        let hole_ok = *sparse && at >= record.old_len;
                        if !(hole_ok && buf[..n].iter().all(|&b| b == 0)) {
                            write_at(file, &buf[..n], at)?;
                        }
                        pos += n as u64;
                    }
                }
            }
            Op::Zero { offset, len } => zero_range(file, *offset, *len)?,
        }
    }
    sync(file)?;
    set_len(file, record.final_len)?;
    sync(file)
}

/// Finish or roll back an interrupted edit of `path`, if its journal is there.
/// Returns whether there was anything to do. `file` must be open for writing and locked.
pub fn recover(path: &Path, file: &File) -> Result<bool> {
    let journal = journal_path(path);
    // A journal that was being written when the process died never became the journal.
    let _ = std::fs::remove_file(journal.with_extension("sifovl-journal-tmp"));
    let data = match std::fs::metadata(&journal) {
        Ok(meta) if meta.len() > MAX_JOURNAL => {
            return Err(Error::malformed(format!(
                "{}: not a sifovl journal (too large); remove it if no sifovl edit was interrupted",
                journal.display()
            )));
        }
        Ok(_) => std::fs::read(&journal)
            .with_context(|| format!("{}: reading edit journal", journal.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("{}: edit journal", journal.display()), e)),
    };
    let record = Record::decode(&data).ok_or_else(|| {
        Error::malformed(format!(
            "{}: damaged edit journal; the image may be mid-edit. Keep both files and report this",
            journal.display()
        ))
    })?;
    let meta = file.metadata().with_context(|| path.display())?;
    if (meta.dev(), meta.ino()) != (record.dev, record.ino) {
        return Err(Error::refused(format!(
            "{}: belongs to another file (it was copied or replaced); remove it to proceed",
            journal.display()
        )));
    }
    if let Some(why) = record.implausible(meta.len()) {
        return Err(Error::malformed(format!(
            "{}: not a journal sifovl could have written ({why}); the image may be mid-edit. Keep both files and report this",
            journal.display()
        )));
    }
    let what = || format!("{}: recovering interrupted edit", path.display());
    let done = if record.state == STATE_COMMITTED {
        apply(file, &record).with_context(what)?;
        "finished an interrupted edit (it had been committed)"
    } else {
        set_len(file, record.old_len).with_context(what)?;
        sync(file).with_context(what)?;
        "rolled back an interrupted edit (it had not been committed)"
    };
    remove_journal(path)?;
    crate::progress::notice(&format!("{}: {done}", path.display()));
    Ok(true)
}

/// Whether an interrupted edit is pending for `path`.
pub fn pending(path: &Path) -> bool {
    journal_path(path).exists()
}

// ---------------------------------------------------------------- the edit

/// How a process holds an image: readers share the lock, a writer holds it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Readers: no edit runs meanwhile.
    Shared,
    /// The one writer.
    Exclusive,
}

/// Take `lock` on an open file without waiting, or fail with [`ErrorKind::InUse`].
pub fn lock(path: &Path, file: &File, lock: Lock) -> Result<()> {
    use rustix::fs::{FlockOperation, flock};
    let (operation, holder) = match lock {
        Lock::Shared => (FlockOperation::NonBlockingLockShared, "an edit is running"),
        Lock::Exclusive => (
            FlockOperation::NonBlockingLockExclusive,
            "it holds the file's lock",
        ),
    };
    match flock(file, operation) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            return Err(Error::new(
                ErrorKind::InUse,
                format!("{}: in use by another process ({holder})", path.display()),
            ));
        }
        Err(e) => return Err(Error::io(format!("{}: locking", path.display()), e.into())),
    }
    record_lock(path, file, lock)
}

/// The lock a running container holds. SingularityCE places a POSIX record lock (`fcntl`)
/// on each ext3 partition of a native SIF it runs (pkg/image `lockSection`): a write lock
/// with `--writable`, a read lock otherwise; `flock` locks do not see those. So the file is
/// also record-locked, over its whole length: an editor's write lock conflicts with a
/// container running the image at all, a reader's read lock with one writing into it.
/// Filesystems without record locks (ENOLCK) are let through, as SingularityCE does.
fn record_lock(path: &Path, file: &File, lock: Lock) -> Result<()> {
    use rustix::fs::{FlockOperation, fcntl_lock};
    let (operation, holder) = match lock {
        Lock::Shared => (
            FlockOperation::NonBlockingLockShared,
            "a container writes into its overlay",
        ),
        Lock::Exclusive => (
            FlockOperation::NonBlockingLockExclusive,
            "a container runs it, or a program holds a lock on part of it",
        ),
    };
    match fcntl_lock(file, operation) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {
            Err(Error::new(
                ErrorKind::InUse,
                format!("{}: in use by another process ({holder})", path.display()),
            ))
        }
        Err(e) if e == rustix::io::Errno::NOLCK || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(Error::io(format!("{}: locking", path.display()), e.into())),
    }
}

/// Open `path` to read it: shared-locked so no edit runs meanwhile, with any interrupted
/// edit finished first (which needs write access to the file).
pub fn open_for_read(path: &Path) -> Result<File> {
    if pending(path) {
        let file = open_for_edit(path).map_err(|e| {
            if e.kind() == ErrorKind::Refused {
                Error::refused(format!(
                    "{}: an interrupted sifovl edit is pending and the file is read-only; run sifovl as its owner to recover it",
                    path.display()
                ))
            } else {
                e
            }
        })?;
        drop(file);
    }
    let file = File::open(path).with_context(|| path.display())?;
    lock(path, &file, Lock::Shared)?;
    Ok(file)
}

/// Open `path` for an edit: read-write, exclusively locked, any interrupted edit recovered.
pub fn open_for_edit(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
                ErrorKind::Refused
            } else {
                ErrorKind::Io
            };
            let mut err = Error::io(format!("{}: opening for writing", path.display()), e);
            if kind == ErrorKind::Refused {
                err = Error::refused(format!(
                    "{}: read-only file (sifovl edits it in place)",
                    path.display()
                ));
            }
            err
        })?;
    lock(path, &file, Lock::Exclusive)?;
    recover(path, &file)?;
    Ok(file)
}

/// An edit in progress. Dropping it without [`commit`](Edit::commit) rolls it back.
pub struct Edit<'a> {
    path: PathBuf,
    file: &'a File,
    record: Record,
    prepared: bool,
    stage_end: u64,
    staged: Vec<(u64, u64)>,
    /// Ranges written directly by the caller after [`place_directly`](Self::place_directly).
    #[cfg(debug_assertions)]
    direct: Vec<(u64, u64)>,
    done: bool,
}

impl<'a> Edit<'a> {
    /// Start an edit of `file` (opened with [`open_for_edit`]).
    pub fn begin(path: &Path, file: &'a File) -> Result<Edit<'a>> {
        let meta = file.metadata().with_context(|| path.display())?;
        Ok(Edit {
            path: path.to_path_buf(),
            file,
            record: Record {
                state: STATE_PREPARED,
                dev: meta.dev(),
                ino: meta.ino(),
                old_len: meta.len(),
                final_len: meta.len(),
                ops: Vec::new(),
            },
            prepared: false,
            stage_end: meta.len().next_multiple_of(STAGE_ALIGN),
            staged: Vec::new(),
            #[cfg(debug_assertions)]
            direct: Vec::new(),
            done: false,
        })
    }

    /// The file's length before the edit.
    pub fn old_len(&self) -> u64 {
        self.record.old_len
    }

    fn prepare(&mut self) -> Result<()> {
        if !self.prepared {
            write_journal(&self.path, &self.record)?;
            self.prepared = true;
        }
        Ok(())
    }

    /// Stage `len` bytes from `data` past the live end of the file (at or after
    /// `at_least`); returns where they are. With `sparse`, all-zero chunks become holes.
    pub fn stage(
        &mut self,
        data: &mut dyn Read,
        len: u64,
        at_least: u64,
        sparse: bool,
    ) -> Result<u64> {
        self.prepare()?;
        let start = self.stage_end.max(at_least).next_multiple_of(STAGE_ALIGN);
        self.copy_in(data, len, start, sparse, "staging new data")?;
        self.stage_end = start + len;
        self.staged.push((start, len));
        Ok(start)
    }

    /// Stage data produced by `produce`, which writes through a positioned writer starting at
    /// the returned offset and reports how many bytes it wrote (for writers that need to seek,
    /// like a squashfs writer). Returns (offset, length).
    pub fn stage_with(
        &mut self,
        produce: impl FnOnce(&File, u64) -> Result<u64>,
    ) -> Result<(u64, u64)> {
        self.stage_with_at(0, produce)
    }

    /// [`stage_with`](Self::stage_with) at or after `at_least`: a caller that knows how far
    /// the final layout will reach stages beyond it, so the commit never has to move the
    /// staged data out of the way.
    pub fn stage_with_at(
        &mut self,
        at_least: u64,
        produce: impl FnOnce(&File, u64) -> Result<u64>,
    ) -> Result<(u64, u64)> {
        self.prepare()?;
        let start = self.stage_end.max(at_least).next_multiple_of(STAGE_ALIGN);
        #[cfg(debug_assertions)]
        let steps_before = STEPS.load(std::sync::atomic::Ordering::SeqCst);
        let len = produce(self.file, start)?;
        // A producer that wrote to the file directly rather than through `staged_write` (the
        // ext3 writers) is recorded as if it had written its data now: still before the
        // commit's sync, which is all a power-loss replay needs.
        #[cfg(debug_assertions)]
        if record::enabled() && STEPS.load(std::sync::atomic::Ordering::SeqCst) == steps_before {
            self.record_staged(start, len)
                .with_context(|| self.path.display())?;
        }
        self.stage_end = start + len;
        self.staged.push((start, len));
        Ok((start, len))
    }

    /// Record the data regions of `len` staged bytes at `start` as writes (see
    /// [`stage_with_at`](Self::stage_with_at)).
    #[cfg(debug_assertions)]
    fn record_staged(&self, start: u64, len: u64) -> std::io::Result<()> {
        record::set_len(self.file, self.file.metadata()?.len());
        let mut buf = vec![0u8; CHUNK];
        for (from, to) in crate::digest::data_extents(self.file, start, len) {
            let mut pos = from;
            while pos < to {
                let n = (to - pos).min(CHUNK as u64) as usize;
                self.file.read_exact_at(&mut buf[..n], start + pos)?;
                record::write(self.file, start + pos, &buf[..n]);
                pos += n as u64;
            }
        }
        Ok(())
    }

    /// Reserve the final place `dst..dst + len` of new data that will be written there
    /// directly instead of being staged and copied: the part from the file's old end on holds
    /// nothing live and takes the data now; the part below it (the *head*, bytes the old
    /// state still needs until the commit) is staged apart, beyond where the edit will
    /// reach, for the caller to [`copy`](Self::copy) in at commit. Returns (head_at,
    /// head_len); head_len is 0 when all of `dst..` lies past the old end.
    pub fn place_directly(&mut self, dst: u64, len: u64) -> Result<(u64, u64)> {
        self.prepare()?;
        // The head ends on a 4 KiB boundary of the data, so filesystem blocks do not
        // straddle it.
        let head_len = self
            .record
            .old_len
            .saturating_sub(dst)
            .next_multiple_of(4096)
            .min(len);
        let head_at = self
            .stage_end
            .max(dst + len + (1 << 20))
            .next_multiple_of(STAGE_ALIGN);
        self.stage_end = head_at + head_len;
        if head_len > 0 {
            self.staged.push((head_at, head_len));
        }
        #[cfg(debug_assertions)]
        self.direct
            .extend([(head_at, head_len), (dst + head_len, len - head_len)]);
        Ok((head_at, head_len))
    }

    /// Make the file at least `len` bytes long now, with a hole, so that what the commit
    /// writes past the old end lands inside the file (a recovery never grows a file much
    /// past its length and the journal's bytes). A rollback cuts it off again.
    pub fn extend(&mut self, len: u64) -> Result<()> {
        self.prepare()?;
        let what = || format!("{}: extending the file", self.path.display());
        if self.file.metadata().with_context(what)?.len() < len {
            set_len(self.file, len).with_context(what)?;
        }
        self.stage_end = self.stage_end.max(len.next_multiple_of(STAGE_ALIGN));
        Ok(())
    }

    /// Read back bytes of the file as it is now (e.g. staged data).
    pub fn file(&self) -> &File {
        self.file
    }

    /// Copy a staged range to its final place.
    pub fn copy(&mut self, src: u64, dst: u64, len: u64, sparse: bool) {
        self.record.ops.push(Op::Copy {
            src,
            dst,
            len,
            sparse,
        });
    }

    /// Zero `len` bytes at `offset` at commit.
    pub fn zero(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.record.ops.push(Op::Zero { offset, len });
        }
    }

    /// Write new data directly at its final place, which must lie past the file's old end
    /// (so no live byte is touched and a rollback is a truncation).
    pub fn write_past_end(
        &mut self,
        offset: u64,
        data: &mut dyn Read,
        len: u64,
        sparse: bool,
    ) -> Result<()> {
        assert!(
            offset >= self.record.old_len,
            "write_past_end below the old end of file"
        );
        self.prepare()?;
        self.copy_in(data, len, offset, sparse, "writing new data")?;
        self.stage_end = self
            .stage_end
            .max((offset + len).next_multiple_of(STAGE_ALIGN));
        Ok(())
    }

    /// Copy `len` bytes of `data` to `at` (past the old end of the file) now, leaving
    /// all-zero chunks as holes when `sparse`, and make the file at least that long.
    fn copy_in(
        &mut self,
        data: &mut dyn Read,
        len: u64,
        at: u64,
        sparse: bool,
        doing: &str,
    ) -> Result<()> {
        let what = || format!("{}: {doing}", self.path.display());
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        let progress = crate::progress::task("writing", len);
        while done < len {
            crate::interrupt::check()?;
            let n = (len - done).min(CHUNK as u64) as usize;
            data.read_exact(&mut buf[..n]).with_context(what)?;
            if !(sparse && buf[..n].iter().all(|&b| b == 0)) {
                write_at(self.file, &buf[..n], at + done).with_context(what)?;
            }
            progress.advance(n as u64);
            done += n as u64;
        }
        if self.file.metadata().with_context(what)?.len() < at + len {
            set_len(self.file, at + len).with_context(what)?;
        }
        Ok(())
    }

    /// Write `bytes` at `offset` at commit.
    /// Write the 512-byte sectors of `new` (bytes from offset 0, e.g. a SIF's header and
    /// descriptor table) that differ from `old`; returns the bytes written.
    pub fn write_changed_sectors(&mut self, old: &[u8], new: &[u8]) -> u64 {
        const SECTOR: usize = 512;
        let mut written = 0;
        let mut start = None;
        let sectors = new.len().div_ceil(SECTOR);
        for s in 0..=sectors {
            let changed = s < sectors && {
                let range = s * SECTOR..((s + 1) * SECTOR).min(new.len());
                old.get(range.clone()) != Some(&new[range])
            };
            match (changed, start) {
                (true, None) => start = Some(s),
                (false, Some(first)) => {
                    let range = first * SECTOR..(s * SECTOR).min(new.len());
                    written += range.len() as u64;
                    self.write(range.start as u64, new[range].to_vec());
                    start = None;
                }
                _ => {}
            }
        }
        written
    }

    /// Write `bytes` at `offset` when the edit commits.
    pub fn write(&mut self, offset: u64, bytes: Vec<u8>) {
        self.record.ops.push(Op::Write { offset, bytes });
    }

    /// The file's length after the edit.
    pub fn set_final_len(&mut self, len: u64) {
        self.record.final_len = len;
    }

    /// Make the edit durable and apply it.
    pub fn commit(mut self) -> Result<()> {
        // The last moment a stop can be honoured: from here on the edit completes.
        crate::interrupt::check()?;
        let what = |p: &Path| format!("{}: committing edit", p.display());
        // What the caller wrote directly is recorded as if written now: still before the
        // commit's sync, which is all a power-loss replay needs.
        #[cfg(debug_assertions)]
        if record::enabled() {
            for &(start, len) in &self.direct {
                self.record_staged(start, len)
                    .with_context(|| what(&self.path))?;
            }
        }
        self.record.ops = disjoint_zeroes(std::mem::take(&mut self.record.ops));
        // Bytes past the final length are cut off at the end: zeroing them is wasted, and a
        // copy may read them (a shrink moves blocks from there), so they are left alone.
        let final_len = self.record.final_len;
        self.record.ops.retain_mut(|op| match op {
            Op::Zero { offset, len } if *offset < final_len => {
                *len = (*len).min(final_len - *offset);
                true
            }
            Op::Zero { .. } => false,
            _ => true,
        });
        self.check_copy_sources().map_err(|why| {
            Error::malformed(format!("{}: internal error: {why}", self.path.display()))
        })?;
        // Staged data must never be overwritten by the operations that read it, or a replay
        // after a crash would copy garbage. Move any staged range that the final layout
        // reaches further out first (rare: only when new data outgrows what it replaces).
        let mut reach = self.record.final_len;
        for op in &self.record.ops {
            let end = match op {
                Op::Write { offset, bytes } => offset + bytes.len() as u64,
                Op::Copy { dst, len, .. } => dst + len,
                Op::Zero { offset, len } => offset + len,
            };
            reach = reach.max(end);
        }
        let first_stage = self.staged.iter().map(|s| s.0).min();
        if first_stage.is_some_and(|s| s < reach) {
            self.relocate_staged(reach)
                .with_context(|| what(&self.path))?;
        }
        if self.prepared {
            sync(self.file).with_context(|| what(&self.path))?;
        }
        self.record.state = STATE_COMMITTED;
        write_journal(&self.path, &self.record)?;
        // Past the commit point the edit must complete, never roll back: live bytes may
        // be rewritten from here on. If applying fails (a full disk), the committed
        // journal stays for the next open to finish.
        self.done = true;
        apply(self.file, &self.record).map_err(|e| {
            Error::io(
                format!(
                    "{}: committing edit (it is committed: the next sifovl command on the image, or `sifovl recover`, completes it once the cause is fixed)",
                    self.path.display()
                ),
                e,
            )
        })?;
        remove_journal(&self.path)?;
        Ok(())
    }

    /// A copy that does not read staged data reads bytes of the file past its final length
    /// (the commit cuts them off only after every copy), which no operation overwrites: a
    /// replay after a crash must find them as they were.
    fn check_copy_sources(&self) -> std::result::Result<(), String> {
        let mut written: Vec<(u64, u64)> = self
            .record
            .ops
            .iter()
            .map(|op| match op {
                Op::Write { offset, bytes } => (*offset, offset + bytes.len() as u64),
                Op::Copy { dst, len, .. } => (*dst, dst + len),
                Op::Zero { offset, len } => (*offset, offset + len),
            })
            .collect();
        written.sort_unstable();
        // The furthest end among the ranges that start before each one.
        let mut reach = Vec::with_capacity(written.len());
        let mut furthest = 0;
        for &(_, end) in &written {
            furthest = end.max(furthest);
            reach.push(furthest);
        }
        for op in &self.record.ops {
            let Op::Copy { src, len, .. } = *op else {
                continue;
            };
            let staged = self
                .staged
                .iter()
                .any(|&(at, n)| at <= src && src + len <= at + n);
            if staged {
                continue;
            }
            if src < self.record.final_len {
                return Err(format!(
                    "a copy reads {len} bytes at {src}, before the final end {}",
                    self.record.final_len
                ));
            }
            // Ranges starting before the source's end must all end before its start.
            let before = written.partition_point(|&(start, _)| start < src + len);
            if before > 0 && reach[before - 1] > src {
                return Err(format!(
                    "a copy reads {len} bytes at {src}, which the edit overwrites"
                ));
            }
        }
        Ok(())
    }

    fn relocate_staged(&mut self, reach: u64) -> std::io::Result<()> {
        let mut next = self.stage_end.max(reach).next_multiple_of(STAGE_ALIGN);
        let mut buf = vec![0u8; CHUNK];
        let mut moves = Vec::new();
        for &(start, len) in &self.staged {
            // Only the data regions: the holes past the end read as zeros where they land.
            for (from, to) in crate::digest::data_extents(self.file, start, len) {
                let mut done = from;
                while done < to {
                    let n = (to - done).min(CHUNK as u64) as usize;
                    self.file.read_exact_at(&mut buf[..n], start + done)?;
                    write_at(self.file, &buf[..n], next + done)?;
                    done += n as u64;
                }
            }
            if self.file.metadata()?.len() < next + len {
                set_len(self.file, next + len)?;
            }
            moves.push((start, next, len));
            next = (next + len).next_multiple_of(STAGE_ALIGN);
        }
        for op in &mut self.record.ops {
            if let Op::Copy { src, .. } = op
                && let Some(&(from, to, _)) = moves.iter().find(|m| m.0 <= *src && *src < m.0 + m.2)
            {
                *src = to + (*src - from);
            }
        }
        Ok(())
    }
}

/// Cut every zeroed range around the bytes other operations write, so that no two
/// operations touch the same byte. A replay after a crash may skip copies whose staged source
/// is already gone (they completed); zeroes overlapping them would then wipe their result.
fn disjoint_zeroes(ops: Vec<Op>) -> Vec<Op> {
    let mut written: Vec<(u64, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Write { offset, bytes } => Some((*offset, offset + bytes.len() as u64)),
            Op::Copy { dst, len, .. } => Some((*dst, dst + len)),
            Op::Zero { .. } => None,
        })
        .collect();
    written.sort();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Zero { offset, len } = op else {
            out.push(op);
            continue;
        };
        let (mut start, end) = (offset, offset + len);
        for &(w_start, w_end) in &written {
            if w_end <= start || w_start >= end {
                continue;
            }
            if w_start > start {
                out.push(Op::Zero {
                    offset: start,
                    len: w_start - start,
                });
            }
            start = start.max(w_end);
            if start >= end {
                break;
            }
        }
        if start < end {
            out.push(Op::Zero {
                offset: start,
                len: end - start,
            });
        }
    }
    out
}

impl Drop for Edit<'_> {
    fn drop(&mut self) {
        if !self.done && self.prepared {
            // Roll back: nothing live was touched before the commit point.
            let _ = self.file.set_len(self.record.old_len);
            let _ = self.file.sync_all();
            let _ = std::fs::remove_file(journal_path(&self.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.sif");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn record_round_trips_and_detects_damage() {
        let record = Record {
            state: STATE_COMMITTED,
            dev: 1,
            ino: 2,
            old_len: 3,
            final_len: 4,
            ops: vec![
                Op::Write {
                    offset: 5,
                    bytes: b"abc".to_vec(),
                },
                Op::Copy {
                    src: 9,
                    dst: 1,
                    len: 7,
                    sparse: true,
                },
                Op::Zero { offset: 2, len: 3 },
            ],
        };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record));
        for i in [0, 17, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(Record::decode(&bad), None, "flip at {i} accepted");
        }
        assert_eq!(Record::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn commit_applies_staged_copy_writes_and_length() {
        let (_dir, path) = image(b"0123456789");
        let file = open_for_edit(&path).unwrap();
        let mut edit = Edit::begin(&path, &file).unwrap();
        let at = edit.stage(&mut &b"NEWDATA"[..], 7, 0, false).unwrap();
        assert!(at >= 10);
        edit.copy(at, 2, 7, false);
        edit.write(0, b"AB".to_vec());
        edit.set_final_len(9);
        edit.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ABNEWDATA");
        assert!(!pending(&path));
    }

    #[test]
    fn copies_from_past_the_final_end_apply_and_any_other_in_file_copy_is_refused() {
        // A shrink in place: bytes past the final end move below it; a zeroing there is
        // dropped (the cut removes those bytes anyway, after the copies read them).
        let (_dir, path) = image(b"0123456789abcdef");
        let file = open_for_edit(&path).unwrap();
        let mut edit = Edit::begin(&path, &file).unwrap();
        edit.copy(12, 2, 4, false);
        edit.zero(8, 8);
        edit.set_final_len(10);
        edit.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"01cdef67\0\0");
        // A copy reading bytes the final file keeps, or bytes the edit overwrites: an
        // internal error before anything is committed, the file as it was.
        for (final_len, overwrite) in [(14, None), (10, Some(13))] {
            let (_dir, path) = image(b"0123456789abcdef");
            let file = open_for_edit(&path).unwrap();
            let mut edit = Edit::begin(&path, &file).unwrap();
            edit.copy(12, 2, 4, false);
            if let Some(at) = overwrite {
                edit.write(at, b"X".to_vec());
            }
            edit.set_final_len(final_len);
            let err = edit.commit().unwrap_err().to_string();
            assert!(err.contains("internal error"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdef");
            assert!(!pending(&path));
        }
    }

    #[test]
    fn dropping_an_uncommitted_edit_restores_the_file() {
        let (_dir, path) = image(b"original");
        let file = open_for_edit(&path).unwrap();
        let mut edit = Edit::begin(&path, &file).unwrap();
        edit.stage(&mut &[1u8; 5000][..], 5000, 0, false).unwrap();
        edit.write(0, b"XX".to_vec());
        drop(edit);
        assert_eq!(std::fs::read(&path).unwrap(), b"original");
        assert!(!pending(&path));
    }

    #[test]
    fn staged_data_that_the_layout_outgrows_is_moved_first() {
        // New data longer than the whole file: its final place overlaps its staging place.
        let (_dir, path) = image(&[b'o'; 100]);
        let file = open_for_edit(&path).unwrap();
        let mut edit = Edit::begin(&path, &file).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let at = edit
            .stage(&mut &big[..], big.len() as u64, 0, false)
            .unwrap();
        edit.copy(at, 50, big.len() as u64, false);
        edit.set_final_len(50 + big.len() as u64);
        edit.commit().unwrap();
        let out = std::fs::read(&path).unwrap();
        assert_eq!(&out[..50], &[b'o'; 50]);
        assert_eq!(&out[50..], &big[..]);
    }

    #[test]
    fn a_committed_journal_is_replayed_and_a_prepared_one_rolled_back() {
        let (_dir, path) = image(b"hello world");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let meta = file.metadata().unwrap();
        // Prepared: the file grew with staged bytes, then the process died.
        let prepared = Record {
            state: STATE_PREPARED,
            dev: meta.dev(),
            ino: meta.ino(),
            old_len: 11,
            final_len: 11,
            ops: vec![],
        };
        std::fs::write(journal_path(&path), prepared.encode()).unwrap();
        file.write_all_at(b"staged junk", 4096).unwrap();
        assert!(recover(&path, &file).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        // Committed: half applied, then the process died.
        let committed = Record {
            state: STATE_COMMITTED,
            ops: vec![Op::Write {
                offset: 0,
                bytes: b"HELLO".to_vec(),
            }],
            final_len: 5,
            ..prepared
        };
        std::fs::write(journal_path(&path), committed.encode()).unwrap();
        assert!(recover(&path, &file).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"HELLO");
        assert!(!recover(&path, &file).unwrap());
    }

    #[test]
    fn a_journal_of_another_file_is_refused() {
        let (_dir, path) = image(b"abc");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let record = Record {
            state: STATE_COMMITTED,
            dev: 0,
            ino: 0,
            old_len: 3,
            final_len: 0,
            ops: vec![],
        };
        std::fs::write(journal_path(&path), record.encode()).unwrap();
        let err = recover(&path, &file).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }

    #[test]
    fn a_journal_with_absurd_numbers_is_refused_and_nothing_is_touched() {
        let (_dir, path) = image(&[7u8; 4096]);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let meta = file.metadata().unwrap();
        let base = Record {
            state: STATE_COMMITTED,
            dev: meta.dev(),
            ino: meta.ino(),
            old_len: 4096,
            final_len: 4096,
            ops: vec![],
        };
        const PETABYTE: u64 = 1 << 50;
        let absurd = [
            // A zeroing of a petabyte.
            Record {
                ops: vec![Op::Zero {
                    offset: 0,
                    len: PETABYTE,
                }],
                ..base.clone()
            },
            // A final length of a terabyte.
            Record {
                final_len: 1 << 40,
                ..base.clone()
            },
            // A copy from far past the end of the file (into a file still longer than its
            // final length: the copies are not done yet).
            Record {
                final_len: 2048,
                ops: vec![Op::Copy {
                    src: PETABYTE,
                    dst: 0,
                    len: 4096,
                    sparse: false,
                }],
                ..base.clone()
            },
            // A write whose end overflows.
            Record {
                ops: vec![Op::Write {
                    offset: u64::MAX - 1,
                    bytes: vec![1; 4],
                }],
                ..base.clone()
            },
            // A rollback that would grow the file.
            Record {
                state: STATE_PREPARED,
                old_len: PETABYTE,
                ..base.clone()
            },
        ];
        for record in absurd {
            std::fs::write(journal_path(&path), record.encode()).unwrap();
            let err = recover(&path, &file).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Malformed, "{record:?}");
            assert!(
                err.to_string()
                    .contains("not a journal sifovl could have written")
            );
            assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 4096], "{record:?}");
            assert!(
                pending(&path),
                "the journal is kept for a human: {record:?}"
            );
        }
        // The same shapes with sane numbers are carried out: JSON objects appended past the
        // end, a deleted object zeroed.
        let sane = Record {
            final_len: 4096 + 100,
            ops: vec![
                Op::Zero {
                    offset: 1000,
                    len: 96,
                },
                Op::Write {
                    offset: 4096,
                    bytes: vec![9; 100],
                },
            ],
            ..base
        };
        std::fs::write(journal_path(&path), sane.encode()).unwrap();
        assert!(recover(&path, &file).unwrap());
        let out = std::fs::read(&path).unwrap();
        assert_eq!(out.len(), 4196);
        assert_eq!(&out[1000..1096], &[0u8; 96]);
        assert_eq!(&out[4096..], &[9u8; 100]);
    }

    #[test]
    fn zeroed_ranges_never_overlap_written_ones() {
        let ops = vec![
            Op::Zero {
                offset: 0,
                len: 100,
            },
            Op::Copy {
                src: 1000,
                dst: 10,
                len: 20,
                sparse: false,
            },
            Op::Write {
                offset: 50,
                bytes: vec![1; 10],
            },
            Op::Zero {
                offset: 200,
                len: 5,
            },
        ];
        let out = disjoint_zeroes(ops);
        let zeros: Vec<(u64, u64)> = out
            .iter()
            .filter_map(|op| match op {
                Op::Zero { offset, len } => Some((*offset, *len)),
                _ => None,
            })
            .collect();
        assert_eq!(zeros, [(0, 10), (30, 20), (60, 40), (200, 5)]);
    }

    #[test]
    fn second_writer_gets_in_use() {
        let (_dir, path) = image(b"abc");
        let _first = open_for_edit(&path).unwrap();
        let err = open_for_edit(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InUse);
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
