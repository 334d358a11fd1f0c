//! One error type for the whole crate.
//!
//! Every error renders as a single line that names what it is about (the file, the SIF
//! object id, the OCI digest, the path inside a filesystem), because users see it in a
//! terminal or a batch-job log and must be able to act on it without a backtrace.

use std::fmt;
use std::io;

/// What went wrong, by phase, so callers (the CLI's exit codes, tests) can tell a broken
/// input from a refused operation or a failing disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing the underlying file failed.
    Io,
    /// The input is not what it claims to be: bad magic, offsets out of range, broken JSON...
    Malformed,
    /// The input is well formed but uses something we do not support.
    Unsupported,
    /// The operation is refused as asked (overlay already present, signed image, ...).
    Refused,
    /// Another process holds the file's write lock.
    InUse,
    /// The object, digest or path asked for does not exist.
    NotFound,
    /// The user asked the work to stop (a signal); nothing was changed.
    Interrupted,
}

impl ErrorKind {
    /// A short stable name, for JSON reports: `io`, `malformed`, `unsupported`, `refused`,
    /// `in-use`, `not-found`, `interrupted`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Refused => "refused",
            ErrorKind::InUse => "in-use",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

/// A one-line error: `context: context: message[: io error]`.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a one-line message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The input is not what it claims to be.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, message)
    }

    /// The input uses something sifovl does not support.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// The operation is refused as asked.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message)
    }

    /// What was asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// An I/O failure while doing `what` (e.g. "reading descriptor table").
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            message: what.into(),
            source: Some(source),
        }
    }

    /// What went wrong, by phase.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Prefix the message with where it happened: a file path, `object 3`, a digest.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The message without the I/O cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is a write to a closed pipe (`sifovl ls IMAGE | head -1`): the reader
    /// chose to stop, which is not a failure of the command.
    pub fn is_broken_pipe(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {}", self.message, source),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        // An unexpected EOF while decoding means the input is shorter than it says.
        let kind = if source.kind() == io::ErrorKind::UnexpectedEof {
            ErrorKind::Malformed
        } else {
            ErrorKind::Io
        };
        Error {
            kind,
            message: "i/o".into(),
            source: Some(source),
        }
    }
}

/// Add context to any `Result<_, Error>`.
pub trait ResultExt<T> {
    /// Prefix the error with where it happened.
    fn context(self, context: impl fmt::Display) -> Result<T>;
    /// Prefix the error with where it happened, computed only on error.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}
