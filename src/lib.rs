//! sifovl edits SIF container images, above all OCI-SIF files whose last layer is a
//! writable ext3 overlay, entirely in userspace: no mounts, no external programs.
//!
//! The crate is layered; each layer knows nothing of the ones above it:
//!
//! ```text
//!   cli (bin)   thin clap front end: parse, call an op, print, map errors to exit codes
//!   ops         add / reconcile / inspect / verify / seal as plain functions
//!   ocisif      the OCI image layout stored inside a SIF (blobs <-> OCI.Blob objects)
//!   oci         digests and order-preserving edits of index / manifest / config JSON
//!   sif         the SIF container: header, descriptors, objects (no OCI knowledge)
//!   fs          ext reader, squashfs and tar codecs, whiteouts (no SIF or OCI knowledge)
//! ```
//!
//! See `docs/architecture.md` for the data flow.

pub mod digest;
pub mod error;
pub mod fs;
pub mod journal;
pub mod oci;
pub(crate) mod ocisif;
pub mod ops;
pub mod progress;
pub mod sif;

pub use error::{Error, ErrorKind, Result};
