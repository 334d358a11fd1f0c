//! SIF-level access for the siftool-compatible commands (`list`, `info`, `header`, `dump`):
//! the container alone, never the OCI image inside, so that these work on any SIF, even one
//! whose OCI content is broken.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result, ResultExt};
use crate::journal;
use crate::sif::Container;

/// Open a SIF to read its header and descriptors (shared lock, interrupted edits recovered).
pub fn open_container(path: &Path) -> Result<(File, Container)> {
    let file = journal::open_for_read(path)?;
    let container = read_container(path, &file)?;
    Ok((file, container))
}

/// The SIF metadata of the open `file`; errors name `path`.
pub(crate) fn read_container(path: &Path, file: &File) -> Result<Container> {
    let len = file.metadata().with_context(|| path.display())?.len();
    Container::read(file, len).map_err(|e| e.context(path.display()))
}

/// Copy object `id`'s bytes to `out`, in bounded memory; returns the bytes written. A
/// failed write is an I/O error of the kind the writer gave (a closed pipe stays one).
pub fn dump(path: &Path, id: u32, out: &mut dyn Write) -> Result<u64> {
    let (file, container) = open_container(path)?;
    let d = container
        .object(id)
        .map_err(|e| e.context(path.display()))?;
    let mut buf = vec![0u8; (1 << 20).min(d.size.max(1)) as usize];
    let mut done = 0u64;
    while done < d.size {
        let n = (d.size - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], d.offset + done)
            .with_context(|| format!("{}: object {id}", path.display()))?;
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("writing to standard output", e))?;
        done += n as u64;
    }
    out.flush()
        .map_err(|e| Error::io("writing to standard output", e))?;
    Ok(done)
}
