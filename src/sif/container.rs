//! The SIF metadata (header and every descriptor slot) as a value, with the editing rules
//! of the reference library (sylabs/sif ≥ 2.18) as pure functions. No I/O happens here
//! except [`Container::read`]: callers decide how the changed bytes reach the disk (the
//! journal does it crash-safely), which is why every edit reports where data must go.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::raw::{
    DESCRIPTOR_LEN, Descriptor, EXTRA_LEN, GO_ZERO_TIME, GROUP_MASK, HEADER_LEN, Header, NAME_LEN,
    Partition,
};
use super::types::{Arch, DataType, FsType, PartType};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// What to add: the descriptor fields a caller chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The object's data type.
    pub data_type: DataType,
    /// Object group number (stored with the group mask); `None` for no group.
    pub group: Option<u32>,
    /// Raw linked id (0, an object id, or `GROUP_MASK | group`).
    pub linked_id: u32,
    /// Object name, at most 128 bytes; empty for none.
    pub name: Vec<u8>,
    /// Type-specific metadata, at most 384 bytes; zero-padded when stored.
    pub extra: Vec<u8>,
    /// Alignment of the object's offset from the start of the file; 0 or 1 for none.
    pub alignment: u64,
    /// Length of the object's data in bytes.
    pub size: u64,
}

impl ObjectSpec {
    /// An OCI object as the reference writes it: group 1, no link, no name, unaligned.
    pub fn oci_blob(data_type: DataType, digest: &Digest, size: u64) -> ObjectSpec {
        ObjectSpec {
            data_type,
            group: Some(1),
            linked_id: 0,
            name: Vec::new(),
            extra: digest.to_string().into_bytes(),
            alignment: 0,
            size,
        }
    }

    /// A partition with the library's defaults: 4096-aligned, no name.
    pub fn partition(
        fs_type: FsType,
        part_type: PartType,
        arch: Arch,
        group: u32,
        size: u64,
    ) -> ObjectSpec {
        ObjectSpec {
            data_type: DataType::Partition,
            group: Some(group),
            linked_id: 0,
            name: Vec::new(),
            extra: Partition {
                fs_type,
                part_type,
                arch,
            }
            .to_extra(),
            alignment: 4096,
            size,
        }
    }
}

/// How to create a new image.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Number of descriptor slots, i.e. the most objects the image can hold (default 48).
    pub capacity: u32,
    /// Nil UUID and Go zero time, ignoring `id` and `time`.
    pub deterministic: bool,
    /// Image UUID (RFC 4122 byte order) when not deterministic.
    pub id: [u8; 16],
    /// Creation and modification time, Unix seconds, when not deterministic.
    pub time: i64,
    /// Shebang line for the header, shorter than 32 bytes; empty for none.
    pub launch_script: Vec<u8>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            capacity: 48,
            deterministic: true,
            id: [0; 16],
            time: GO_ZERO_TIME,
            launch_script: Vec::new(),
        }
    }
}

/// Header plus every descriptor slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    header: Header,
    /// All slots, used and unused, in slot order.
    slots: Vec<Descriptor>,
}

/// The most slots we accept; the table of a real image is at most a few hundred.
const MAX_SLOTS: i64 = 1 << 20;

impl Container {
    /// The global header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Read and validate the metadata of a SIF of `file_len` bytes.
    pub fn read(file: &File, file_len: u64) -> Result<Container> {
        Self::read_with(|buf, offset| file.read_exact_at(buf, offset), file_len)
    }

    /// Read and validate the metadata of a SIF held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Container> {
        let read = |buf: &mut [u8], offset: u64| -> std::io::Result<()> {
            let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
            let src = bytes
                .get(start..start.saturating_add(buf.len()))
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        };
        Self::read_with(read, bytes.len() as u64)
    }

    fn read_with(
        read_exact_at: impl Fn(&mut [u8], u64) -> std::io::Result<()>,
        file_len: u64,
    ) -> Result<Container> {
        if file_len == 0 {
            return Err(Error::malformed("reading global header: EOF (empty file)"));
        }
        if file_len < HEADER_LEN as u64 {
            return Err(Error::malformed(format!(
                "reading global header: unexpected EOF ({file_len} bytes, a SIF header is 128)"
            )));
        }
        let mut raw = [0u8; HEADER_LEN];
        read_exact_at(&mut raw, 0).map_err(|e| Error::io("reading global header", e))?;
        let header = Header::parse(&raw)?;
        let total = header.descriptors_total;
        if !(0..=MAX_SLOTS).contains(&total) {
            return Err(Error::malformed(format!(
                "descriptor count {total} is out of range"
            )));
        }
        let table_len = total as u64 * DESCRIPTOR_LEN as u64;
        let table_offset = u64::try_from(header.descriptors_offset)
            .ok()
            .filter(|&o| o >= HEADER_LEN as u64)
            .ok_or_else(|| {
                Error::malformed(format!(
                    "descriptor table offset {} is out of range",
                    header.descriptors_offset
                ))
            })?;
        if header.descriptors_size < table_len as i64 {
            return Err(Error::malformed(format!(
                "descriptor table size {} is smaller than {total} descriptors",
                header.descriptors_size
            )));
        }
        let table_end = table_offset
            .checked_add(table_len)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| Error::malformed(format!("reading descriptors: unexpected EOF (table of {total} runs past the end of the {file_len}-byte file)")))?;
        let data_offset = u64::try_from(header.data_offset)
            .ok()
            .filter(|&d| d >= table_end && d <= file_len)
            .ok_or_else(|| {
                Error::malformed(format!(
                    "data offset {} is out of range",
                    header.data_offset
                ))
            })?;
        if header.data_size < 0 {
            return Err(Error::malformed(format!(
                "data size {} is negative",
                header.data_size
            )));
        }
        let mut table = vec![0u8; table_len as usize];
        read_exact_at(&mut table, table_offset).map_err(|e| Error::io("reading descriptors", e))?;
        let mut slots = Vec::with_capacity(total as usize);
        for (i, chunk) in table.chunks_exact(DESCRIPTOR_LEN).enumerate() {
            let d = Descriptor::parse(chunk.try_into().unwrap())
                .map_err(|e| e.context(format!("descriptor slot {i}")))?;
            slots.push(d);
        }
        let container = Container { header, slots };
        container.validate(data_offset, file_len)?;
        Ok(container)
    }

    fn validate(&self, data_offset: u64, file_len: u64) -> Result<()> {
        let used = self.objects().count() as i64;
        if self.header.descriptors_free != self.header.descriptors_total - used {
            return Err(Error::malformed(format!(
                "header says {} free descriptors but {} of {} are unused",
                self.header.descriptors_free,
                self.header.descriptors_total - used,
                self.header.descriptors_total
            )));
        }
        let mut ranges = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for d in self.objects() {
            let what = format!("object {}", d.id);
            if d.id == 0 {
                return Err(Error::malformed("an object has the invalid id 0"));
            }
            if !ids.insert(d.id) {
                return Err(Error::malformed(format!("{what}: id used twice")));
            }
            if let DataType::Unknown(code) = d.data_type {
                return Err(Error::unsupported(format!(
                    "{what}: unknown data type {code:#x}"
                )));
            }
            let end = d
                .offset
                .checked_add(d.size)
                .filter(|&e| e <= file_len)
                .ok_or_else(|| {
                    Error::malformed(format!(
                        "{what}: bytes {}..+{} lie past the end of the {file_len}-byte file",
                        d.offset, d.size
                    ))
                })?;
            if d.offset < data_offset && d.size > 0 {
                return Err(Error::malformed(format!(
                    "{what}: offset {} lies before the data section at {data_offset}",
                    d.offset
                )));
            }
            if d.name.len() > NAME_LEN {
                return Err(Error::malformed(format!("{what}: name too long")));
            }
            ranges.push((d.offset, end, d.id));
        }
        ranges.sort();
        for pair in ranges.windows(2) {
            if pair[1].0 < pair[0].1 && pair[0].0 < pair[0].1 && pair[1].0 < pair[1].1 {
                return Err(Error::malformed(format!(
                    "objects {} and {} overlap (bytes {}..{} and {}..{})",
                    pair[0].2, pair[1].2, pair[0].0, pair[0].1, pair[1].0, pair[1].1
                )));
            }
        }
        Ok(())
    }

    /// A new, empty image.
    pub fn new(options: &CreateOptions) -> Result<Container> {
        if options.launch_script.len() >= 32 {
            return Err(Error::refused("launch script too large"));
        }
        let mut launch_script = [0u8; 32];
        launch_script[..options.launch_script.len()].copy_from_slice(&options.launch_script);
        let (id, time) = if options.deterministic {
            ([0; 16], GO_ZERO_TIME)
        } else {
            (options.id, options.time)
        };
        let total = options.capacity as i64;
        let header = Header {
            launch_script,
            arch: Arch::Unknown,
            arch_raw: Arch::Unknown.to_bytes(),
            id,
            created_at: time,
            modified_at: time,
            descriptors_free: total,
            descriptors_total: total,
            descriptors_offset: 4096,
            descriptors_size: total * DESCRIPTOR_LEN as i64,
            data_offset: 4096 + total * DESCRIPTOR_LEN as i64,
            data_size: 0,
        };
        Ok(Container {
            header,
            slots: vec![Descriptor::unused(); options.capacity as usize],
        })
    }

    /// Used descriptors, in slot order.
    pub fn objects(&self) -> impl Iterator<Item = &Descriptor> {
        self.slots.iter().filter(|d| d.used)
    }

    /// The used descriptor with object ID `id`; fails for ID 0 or when there is none.
    pub fn object(&self, id: u32) -> Result<&Descriptor> {
        if id == 0 {
            return Err(Error::refused("invalid object ID 0"));
        }
        self.objects()
            .find(|d| d.id == id)
            .ok_or_else(|| Error::not_found(format!("object {id} not found")))
    }

    fn object_mut(&mut self, id: u32) -> Result<&mut Descriptor> {
        self.slots
            .iter_mut()
            .find(|d| d.used && d.id == id)
            .ok_or_else(|| Error::not_found(format!("object {id} not found")))
    }

    /// Byte offset of the data section from the start of the file (header `DataOffset`).
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset as u64
    }

    /// End of the last live object (or the data offset when there is none): where the
    /// next object goes and where a compacted file ends.
    pub fn data_end(&self) -> u64 {
        self.objects()
            .map(Descriptor::end)
            .max()
            .unwrap_or(0)
            .max(self.data_offset())
    }

    /// The time the reference library would stamp on an edit: Go's zero time for a
    /// deterministic image (they stay deterministic), otherwise now.
    pub fn time_for_edit(&self) -> i64 {
        if self.header.is_deterministic() {
            GO_ZERO_TIME
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }
    }

    /// Add an object's descriptor by the reference rules; the caller writes `spec.size`
    /// bytes at the returned descriptor's offset.
    pub fn plan_add(&mut self, spec: ObjectSpec, time: i64) -> Result<Descriptor> {
        if spec.name.len() > NAME_LEN {
            return Err(Error::refused("name value too large"));
        }
        if spec.extra.len() > EXTRA_LEN {
            return Err(Error::refused("extra value too large"));
        }
        let slot = self.slots.iter().position(|d| !d.used).ok_or_else(|| {
            Error::refused(format!(
                "insufficient descriptor capacity to add data object(s) to image (all {} descriptor slots are in use)",
                self.slots.len()
            ))
        })?;
        let mut extra = spec.extra.clone();
        extra.resize(EXTRA_LEN, 0);
        let mut d = Descriptor::unused();
        d.data_type = spec.data_type;
        d.used = true;
        d.id = slot as u32 + 1;
        d.group_id = GROUP_MASK | spec.group.unwrap_or(0);
        d.linked_id = spec.linked_id;
        d.extra = extra;
        d.name = spec.name;
        if d.data_type == DataType::Partition {
            let p = d.partition()?;
            if p.part_type == PartType::PrimSys {
                if self.primary_partition().is_some() {
                    return Err(Error::refused("image already contains a primary partition"));
                }
                self.header.set_arch(p.arch);
            }
        }
        let end = self.data_end();
        self.header.data_size = (end - self.data_offset()) as i64;
        let offset = if spec.alignment > 1 {
            end.next_multiple_of(spec.alignment)
        } else {
            end
        };
        d.offset = offset;
        d.size = spec.size;
        d.size_with_padding = offset - end + spec.size;
        d.created_at = time;
        d.modified_at = time;
        self.header.descriptors_free -= 1;
        self.header.data_size += d.size_with_padding as i64;
        self.header.modified_at = time;
        self.slots[slot] = d.clone();
        Ok(d)
    }

    /// Change the size of the object that ends the data section (a partition grown in
    /// place): its descriptor and the header's `DataSize` follow; its id and offset stay.
    pub fn resize_last(&mut self, id: u32, size: u64, time: i64) -> Result<()> {
        let end = self.data_end();
        let d = self.object_mut(id)?;
        if d.end() != end {
            return Err(Error::refused(format!(
                "object {id}: not the last object of the data section"
            )));
        }
        let padding = d.size_with_padding - d.size;
        d.size = size;
        d.size_with_padding = padding + size;
        d.modified_at = time;
        let end = self.data_end();
        self.header.data_size = (end - self.data_offset()) as i64;
        self.header.modified_at = time;
        Ok(())
    }

    /// Remove an object's descriptor; returns it so the caller can zero its bytes.
    pub fn delete(&mut self, id: u32, time: i64) -> Result<Descriptor> {
        let d = self.object(id)?.clone();
        if d.partition()
            .is_ok_and(|p| p.part_type == PartType::PrimSys)
        {
            self.header.set_arch(Arch::Unknown);
        }
        let slot = self
            .slots
            .iter()
            .position(|s| s.used && s.id == id)
            .expect("found above");
        self.slots[slot] = Descriptor::unused();
        self.header.descriptors_free += 1;
        self.header.modified_at = time;
        Ok(d)
    }

    /// Reclaim trailing space: `DataSize` ends at the last live object. Returns the length
    /// the file must be truncated to.
    pub fn compact(&mut self) -> u64 {
        let end = self.data_end();
        self.header.data_size = (end - self.data_offset()) as i64;
        end
    }

    /// The native SIF's writable overlay: the ext3 partition of type Overlay (SingularityCE
    /// uses the first one it finds).
    pub fn writable_overlay_partition(&self) -> Option<&Descriptor> {
        self.partitions(|p| p.fs_type == FsType::Ext3 && p.part_type == PartType::Overlay)
            .next()
    }

    /// Partitions whose partition descriptor satisfies `keep`, in descriptor order.
    pub fn partitions(
        &self,
        keep: impl Fn(&Partition) -> bool,
    ) -> impl Iterator<Item = &Descriptor> {
        self.objects().filter(move |d| {
            d.data_type == DataType::Partition && d.partition().is_ok_and(|p| keep(&p))
        })
    }

    /// The ids of SIF signature objects (PGP, DSSE or legacy).
    pub fn signatures(&self) -> Vec<u32> {
        self.objects()
            .filter(|d| d.data_type == DataType::Signature)
            .map(|d| d.id)
            .collect()
    }

    /// The primary system partition (what a native SIF runs).
    pub fn primary_partition(&self) -> Option<&Descriptor> {
        self.objects().find(|d| {
            d.data_type == DataType::Partition
                && d.partition()
                    .is_ok_and(|p| p.part_type == PartType::PrimSys)
        })
    }

    /// Set an OCI object's digest (the reference's `SetOCIBlobDigest`).
    pub fn set_oci_digest(&mut self, id: u32, digest: &Digest, time: i64) -> Result<()> {
        let d = self.object_mut(id)?;
        if !matches!(d.data_type, DataType::OciRootIndex | DataType::OciBlob) {
            return Err(Error::refused(format!(
                "object {id}: unexpected data type {}, expected one of: [OCI.RootIndex OCI.Blob]",
                d.data_type.display_name()
            )));
        }
        let mut extra = digest.to_string().into_bytes();
        extra.resize(EXTRA_LEN, 0);
        d.extra = extra;
        d.modified_at = time;
        self.header.modified_at = time;
        Ok(())
    }

    /// Replace an object's Extra (the reference's `SetMetadata`).
    pub fn set_extra(&mut self, id: u32, extra: &[u8], time: i64) -> Result<()> {
        if extra.len() > EXTRA_LEN {
            return Err(Error::refused("extra value too large"));
        }
        let d = self.object_mut(id)?;
        d.extra = extra.to_vec();
        d.extra.resize(EXTRA_LEN, 0);
        d.modified_at = time;
        self.header.modified_at = time;
        Ok(())
    }

    /// Make a system partition the primary one (the reference's `SetPrimPart`).
    pub fn set_primary_partition(&mut self, id: u32, time: i64) -> Result<()> {
        let target = self.object(id)?.clone();
        let p = target
            .partition()
            .map_err(|_| Error::refused(format!("object {id}: data object not a partition")))?;
        match p.part_type {
            PartType::PrimSys => return Ok(()),
            PartType::System => {}
            _ => {
                return Err(Error::refused(format!(
                    "object {id}: data object not a system partition"
                )));
            }
        }
        if let Some(old) = self.primary_partition().map(|d| d.id) {
            let old_d = self.object_mut(old)?;
            old_d.extra[4..8].copy_from_slice(&PartType::System.code().to_le_bytes());
            old_d.modified_at = time;
        }
        let d = self.object_mut(id)?;
        d.extra[4..8].copy_from_slice(&PartType::PrimSys.code().to_le_bytes());
        d.modified_at = time;
        self.header.set_arch(p.arch);
        self.header.modified_at = time;
        Ok(())
    }

    /// The exact bytes of `[0, DataOffset)`: header, zero gap, descriptor table, zero gap.
    pub fn metadata_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.data_offset() as usize];
        out[..HEADER_LEN].copy_from_slice(&self.header.to_bytes());
        let mut at = self.header.descriptors_offset as usize;
        for d in &self.slots {
            out[at..at + DESCRIPTOR_LEN].copy_from_slice(&d.to_bytes());
            at += DESCRIPTOR_LEN;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_follow_the_reference_layout_rules() {
        let mut c = Container::new(&CreateOptions::default()).unwrap();
        assert_eq!(c.data_offset(), 32176);
        let raw = ObjectSpec::partition(FsType::Raw, PartType::System, Arch::I386, 1, 4);
        let d1 = c.plan_add(raw, GO_ZERO_TIME).unwrap();
        assert_eq!((d1.id, d1.offset, d1.size_with_padding), (1, 32768, 596));
        let sq = ObjectSpec::partition(FsType::Squashfs, PartType::PrimSys, Arch::I386, 1, 4096);
        let d2 = c.plan_add(sq, GO_ZERO_TIME).unwrap();
        assert_eq!((d2.id, d2.offset, d2.size_with_padding), (2, 36864, 8188));
        assert_eq!(c.header.data_size, 8784);
        assert_eq!(c.header.arch, Arch::I386);
        assert_eq!(c.header.descriptors_free, 46);
        let blob = c
            .plan_add(
                ObjectSpec::oci_blob(DataType::OciBlob, &Digest::of(b"x"), 3),
                GO_ZERO_TIME,
            )
            .unwrap();
        assert_eq!(blob.offset, 40960, "OCI blobs are unaligned");
        // Delete the middle object: its id is reused by the next add, the hole is not.
        c.delete(2, GO_ZERO_TIME).unwrap();
        assert_eq!(c.header.arch, Arch::Unknown);
        let again = c
            .plan_add(
                ObjectSpec::oci_blob(DataType::OciBlob, &Digest::of(b"y"), 1),
                GO_ZERO_TIME,
            )
            .unwrap();
        assert_eq!((again.id, again.offset), (2, 40963));
        // Deleting the last object and compacting reclaims its space.
        c.delete(2, GO_ZERO_TIME).unwrap();
        assert_eq!(c.compact(), 40963);
        assert_eq!(c.header.data_size, 40963 - 32176);
    }
}
