//! The SIF container codec: header, descriptors and objects, with the layout rules of the
//! reference library (sylabs/sif). Knows nothing about OCI or filesystems.

mod container;
mod memory;
mod raw;
pub mod siftool;
pub mod signature;
mod types;

pub use container::{Container, CreateOptions, ObjectSpec};
pub use memory::MemoryImage;
pub use raw::{Descriptor, GO_ZERO_TIME, Header, Link, Partition};
pub use types::{Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat};
