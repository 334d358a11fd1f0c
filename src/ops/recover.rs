//! `recover`: finish or roll back an interrupted edit, and nothing else (every command
//! does it on its own before it reads or edits an image).

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::journal;

/// What `recover` found.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    /// The image path.
    pub image: String,
    /// Whether an interrupted edit was pending (and is now finished or rolled back).
    pub recovered: bool,
}

/// Recover the image at `path`.
pub fn recover(path: &Path) -> Result<RecoverReport> {
    let pending = journal::pending(path);
    journal::open_for_edit(path)?;
    Ok(RecoverReport {
        image: path.display().to_string(),
        recovered: pending,
    })
}
