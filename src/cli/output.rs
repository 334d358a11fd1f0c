//! Standard output for every command. Writes go through here so that a closed pipe
//! (`sifovl ls IMAGE | head -1`) surfaces as an error `run` can tell apart: the reader
//! stopped reading, and the command ends quietly with success, as ripgrep does.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use sifovl::Result;
use sifovl::error::Error;

/// Write `text` to standard output.
pub fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing to standard output", e))
}

/// Print a report as pretty JSON on standard output (or hand it to the combined report of
/// several images).
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    if let Ok(v) = serde_json::to_value(value)
        && super::batch::collect(&v)
    {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::io("encoding the JSON report", e.into()))?;
    write_out(&format!("{text}\n"))
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q`: reports in text form, notes and progress bars are left out (errors, warnings,
/// `--json` reports and the data a command exists to print stay).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Print `report` as JSON, or else the text `render` makes of it (one line is added;
/// nothing under `-q`).
pub fn emit<T: serde::Serialize>(
    json: bool,
    report: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        print_json(report)
    } else if quiet() {
        Ok(())
    } else {
        write_out(&format!("{}\n", render(report)))
    }
}

/// `println!` to standard output, returning the write's result.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_out(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
