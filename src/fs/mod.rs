//! Filesystem codecs: read ext2/3/4 overlays, read and write squashfs and tar layers, and
//! convert whiteouts between the OverlayFS and AUFS forms.
//!
//! Nothing here knows about SIF or OCI: every reader takes a file and a byte offset, every
//! writer a file and an offset, and they exchange [`entry::Entry`] streams.

mod bytes;
pub mod dir;
pub mod entry;
pub mod ext;
pub mod merge;
pub mod overlay;
pub mod squashfs;
pub mod tar;
pub mod target;
pub mod unpack;
pub mod whiteout;
