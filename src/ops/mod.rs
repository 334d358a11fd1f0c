//! Operations as plain functions: each takes a path and options, returns a report, and
//! leaves the image either fully edited or untouched.

pub mod add;
pub mod browse;
pub mod inspect;
pub mod reconcile;
pub mod seal;
pub mod verify;

use std::fs::File;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::journal;
use crate::sif::Container;

/// Open an image to read it: shared-locked so no edit runs meanwhile, and with any
/// interrupted edit finished first (which needs write access).
pub fn open_for_read(path: &Path) -> Result<(File, Container)> {
    if journal::pending(path) {
        // An interrupted edit: complete or roll it back before anyone reads the file.
        let file = journal::open_for_edit(path).map_err(|e| {
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
    lock_shared(path, &file)?;
    let container = load(path, &file)?;
    Ok((file, container))
}

/// Open an image to edit it: exclusively locked, interrupted edits recovered.
pub fn open_for_edit(path: &Path) -> Result<(File, Container)> {
    let file = journal::open_for_edit(path)?;
    let container = load(path, &file)?;
    Ok((file, container))
}

fn load(path: &Path, file: &File) -> Result<Container> {
    let len = file.metadata().with_context(|| path.display())?.len();
    Container::read(file, len).map_err(|e| e.context(path.display()))
}

fn lock_shared(path: &Path, file: &File) -> Result<()> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(Error::new(
            ErrorKind::InUse,
            format!(
                "{}: in use by another process (an edit is running)",
                path.display()
            ),
        )),
        Err(e) => Err(Error::io(format!("{}: locking", path.display()), e.into())),
    }
}

/// SIF signature objects in the image (their ids).
pub fn signature_objects(container: &Container) -> Vec<u32> {
    container
        .objects()
        .filter(|d| d.data_type == crate::sif::DataType::Signature)
        .map(|d| d.id)
        .collect()
}
