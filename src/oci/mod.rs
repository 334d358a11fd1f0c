//! OCI image content: digests and order-preserving edits of index, manifest and config JSON.
//! Knows nothing about SIF files or filesystems.

pub mod digest;
pub mod json;
pub mod model;

pub use digest::Digest;
pub use model::{Config, Descriptor, Index, IndexEntry, Manifest};
