//! sifovl edits SIF container images, above all OCI-SIF files whose last layer is a
//! writable ext3 overlay, entirely in userspace: no mounts, no external programs.
//!
//! The crate is layered; each layer knows nothing of the ones above it (a test enforces it):
//!
//! ```text
//!   cli (bin, feature "cli")  parse, fill an op's options, render its report, exit codes
//!   ops         add / reconcile / seal / inspect / verify / ls / pack: plain functions
//!   ocisif      the OCI image layout stored inside a SIF; the update engine as a plan
//!   sif | oci | fs   the SIF container | OCI media types and JSON | ext, squashfs, tar
//!   error, digest, progress, interrupt, journal   one-line errors, SHA-256, progress,
//!               stopping on a signal, crash-safe edits
//! ```
//!
//! See `docs/architecture.md` for the rules each layer keeps and the data flow.

#![warn(missing_docs)]

pub mod digest;
pub mod error;
pub mod fs;
pub mod interrupt;
pub mod journal;
pub mod oci;
pub(crate) mod ocisif;
pub mod ops;
pub mod progress;
pub mod registry;
pub mod sif;
pub mod time;

pub use error::{Error, ErrorKind, Result};
