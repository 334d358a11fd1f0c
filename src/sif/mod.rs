//! The SIF container codec: header, descriptors and objects, with the layout rules of the
//! reference library (sylabs/sif). Knows nothing about OCI or filesystems.

pub mod container;
pub mod memory;
pub mod raw;
pub mod siftool;
pub mod types;

pub use container::{Container, CreateOptions, ObjectSpec};
pub use memory::MemoryImage;
pub use raw::{Descriptor, GO_ZERO_TIME, Header, Link, Partition};
pub use types::{Arch, DataType, FsType, HashType, PartType};
