//! Progress of long work (hashing, staging, sealing), reported to whoever listens.
//!
//! The library never draws anything: the CLI installs a [`Reporter`] (a progress bar on a
//! terminal) and long loops call [`task`]. Without a reporter every call is a no-op.

use std::sync::OnceLock;

/// Something that shows progress, e.g. a terminal progress bar.
pub trait Reporter: Send + Sync {
    /// Start showing `total_bytes` of work called `label`.
    fn start(&self, label: &str, total_bytes: u64) -> Box<dyn Task>;

    /// Tell the user something they did not ask about but should know (an interrupted
    /// edit finished or rolled back on the way). Silent by default.
    fn notice(&self, _text: &str) {}
}

/// One piece of long work in progress; finished when dropped.
pub trait Task: Send + Sync {
    /// `bytes` more of the work are done.
    fn advance(&self, bytes: u64);
}

struct Silent;

impl Task for Silent {
    fn advance(&self, _: u64) {}
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Install the process-wide reporter (once; later calls are ignored).
pub fn set_reporter(reporter: Box<dyn Reporter>) {
    let _ = REPORTER.set(reporter);
}

/// Start reporting `total_bytes` of work labelled `label`.
pub fn task(label: &str, total_bytes: u64) -> Box<dyn Task> {
    match REPORTER.get() {
        Some(r) => r.start(label, total_bytes),
        None => Box::new(Silent),
    }
}

/// Pass `text` to the reporter's [`Reporter::notice`] (nothing happens without one).
pub fn notice(text: &str) {
    if let Some(r) = REPORTER.get() {
        r.notice(text);
    }
}
