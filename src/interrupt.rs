//! Stopping long work cleanly when the user asks (Ctrl-C, `kill`, a batch system's SIGTERM).
//!
//! The library installs no signal handler: the CLI does, and its handler only calls
//! [`request_stop`]. Long loops call [`check`] between units of work (an entry written, a
//! chunk copied or hashed) and return [`ErrorKind::Interrupted`] when a stop was asked. An
//! edit then ends the way every failed edit ends: before its commit point it is rolled back
//! (the file as it was, no journal, no temporary file), and a stop is never acted on once
//! the commit has begun (the edit completes).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};

static STOP: AtomicBool = AtomicBool::new(false);

/// Ask long work to stop at its next check. Async-signal-safe (one atomic store).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` when a stop was asked.
pub fn check() -> Result<()> {
    if stop_requested() {
        return Err(Error::new(
            ErrorKind::Interrupted,
            "interrupted by a signal before the edit was committed; nothing was changed",
        ));
    }
    Ok(())
}
