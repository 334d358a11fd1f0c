//! A SIF built and edited in memory with the reference library's non-transactional write
//! rules: tests rebuild reference images with it byte for byte, the property test drives
//! it, and small tools can create images without a journal.

use super::container::{Container, CreateOptions, ObjectSpec};
use crate::error::Result;

/// A whole SIF file in memory.
#[derive(Debug, Clone)]
pub struct MemoryImage {
    /// The image's metadata; edit it through the methods so the bytes stay in sync.
    pub container: Container,
    bytes: Vec<u8>,
}

impl MemoryImage {
    /// A new, empty image (header and descriptor table only, as `CreateContainer` writes).
    pub fn create(options: &CreateOptions) -> Result<MemoryImage> {
        let container = Container::new(options)?;
        let bytes = container.metadata_bytes();
        Ok(MemoryImage { container, bytes })
    }

    /// Load an existing image.
    pub fn load(bytes: Vec<u8>) -> Result<MemoryImage> {
        Ok(MemoryImage {
            container: Container::from_bytes(&bytes)?,
            bytes,
        })
    }

    /// Append an object; returns its id.
    pub fn add(&mut self, mut spec: ObjectSpec, data: &[u8], time: i64) -> Result<u32> {
        spec.size = data.len() as u64;
        let d = self.container.plan_add(spec, time)?;
        let end = (d.offset + d.size) as usize;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[d.offset as usize..end].copy_from_slice(data);
        self.sync_metadata();
        Ok(d.id)
    }

    /// Delete an object, optionally zeroing its data and compacting (truncating) the file.
    pub fn delete(&mut self, id: u32, zero: bool, compact: bool, time: i64) -> Result<()> {
        let d = self.container.delete(id, time)?;
        if zero {
            self.bytes[d.offset as usize..d.end() as usize].fill(0);
        }
        if compact {
            let len = self.container.compact();
            self.bytes.truncate(len as usize);
        }
        self.sync_metadata();
        Ok(())
    }

    /// Make a system partition the primary one (the reference's `SetPrimPart`).
    pub fn set_primary_partition(&mut self, id: u32, time: i64) -> Result<()> {
        self.container.set_primary_partition(id, time)?;
        self.sync_metadata();
        Ok(())
    }

    /// Overwrite an OCI object's digest (the reference's `SetOCIBlobDigest`).
    pub fn set_oci_digest(
        &mut self,
        id: u32,
        digest: &crate::digest::Digest,
        time: i64,
    ) -> Result<()> {
        self.container.set_oci_digest(id, digest, time)?;
        self.sync_metadata();
        Ok(())
    }

    fn sync_metadata(&mut self) {
        let meta = self.container.metadata_bytes();
        self.bytes[..meta.len()].copy_from_slice(&meta);
    }

    /// An object's bytes.
    pub fn object_data(&self, id: u32) -> Result<&[u8]> {
        let d = self.container.object(id)?;
        Ok(&self.bytes[d.offset as usize..d.end() as usize])
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole file, consuming the image.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
