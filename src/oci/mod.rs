//! OCI image content: media types and order-preserving edits of index, manifest and config
//! JSON. Knows nothing about SIF files or filesystems.

pub(crate) mod json;
pub mod layout;
mod media_type;
mod model;
mod platform;

pub use crate::digest::Digest;
pub use media_type::MediaType;
pub use model::{
    Config, Descriptor, Index, IndexEntry, Manifest, REF_NAME, ZERO_TIME, rfc3339_utc,
};
pub use platform::Platform;
