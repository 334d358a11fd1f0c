//! The on-disk header (128 bytes) and descriptor (585 bytes), little-endian and packed.

use super::types::{Arch, DataType, FsType, HashType, PartType};
use crate::error::{Error, Result};

/// Size of the global header at offset 0, in bytes.
pub(super) const HEADER_LEN: usize = 128;
/// Size of one descriptor slot, in bytes.
pub(super) const DESCRIPTOR_LEN: usize = 585;
/// The header `Magic` field (bytes 32..42) every SIF carries.
pub(super) const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
/// The header `Version` field (bytes 42..45): spec version `01`, the only one there is.
pub(super) const VERSION: &[u8; 3] = b"01\0";
/// Size of the descriptor `Name` field; a name of exactly this length has no NUL.
pub(super) const NAME_LEN: usize = 128;
/// Size of the descriptor `Extra` field (type-specific metadata, zero-padded).
pub(super) const EXTRA_LEN: usize = 384;
/// The group mask every writer ORs into `GroupID` (spec 3.1).
pub(super) const GROUP_MASK: u32 = 0xF000_0000;
/// Go's zero `time.Time` as Unix seconds: the timestamp of deterministic images.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The global header: the first 128 bytes of the file (spec 2). `Magic` and `Version` are
/// checked on parse and written as constants, so they have no field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Shebang line that makes the file executable, NUL-padded; all NUL for none.
    pub launch_script: [u8; 32],
    /// Architecture of the primary partition; `Unknown` when there is none.
    pub arch: Arch,
    /// The raw arch bytes, kept so an unknown code survives a rewrite.
    pub arch_raw: [u8; 3],
    /// Image UUID in RFC 4122 byte order; all zero (nil) for deterministic images.
    pub id: [u8; 16],
    /// Creation time, Unix seconds ([`GO_ZERO_TIME`] for deterministic images).
    pub created_at: i64,
    /// Last modification time, Unix seconds.
    pub modified_at: i64,
    /// Number of unused descriptor slots.
    pub descriptors_free: i64,
    /// Number of descriptor slots, used and unused (the table's capacity).
    pub descriptors_total: i64,
    /// Byte offset of descriptor slot 0 from the start of the file (4096 in practice).
    pub descriptors_offset: i64,
    /// Size of the descriptor table in bytes (`descriptors_total * 585`).
    pub descriptors_size: i64,
    /// Byte offset of the data section from the start of the file.
    pub data_offset: i64,
    /// Bytes of the data section in use, counted from `data_offset` (padding included).
    pub data_size: i64,
}

impl Header {
    /// Decode the 128 header bytes; fails on a wrong magic or an unsupported version.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header> {
        if &b[32..42] != MAGIC {
            return Err(Error::malformed("invalid SIF magic"));
        }
        if &b[42..45] != VERSION {
            return Err(Error::unsupported(format!(
                "incompatible SIF version {:?}",
                String::from_utf8_lossy(&b[42..45]).trim_end_matches('\0')
            )));
        }
        Ok(Header {
            launch_script: b[..32].try_into().unwrap(),
            arch: Arch::from_bytes(&b[45..48]),
            arch_raw: b[45..48].try_into().unwrap(),
            id: b[48..64].try_into().unwrap(),
            created_at: i64_at(b, 64),
            modified_at: i64_at(b, 72),
            descriptors_free: i64_at(b, 80),
            descriptors_total: i64_at(b, 88),
            descriptors_offset: i64_at(b, 96),
            descriptors_size: i64_at(b, 104),
            data_offset: i64_at(b, 112),
            data_size: i64_at(b, 120),
        })
    }

    /// Encode the 128 header bytes, magic and version included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, 0, &self.launch_script);
        put(&mut b, 32, MAGIC);
        put(&mut b, 42, VERSION);
        put(&mut b, 45, &self.arch_raw);
        put(&mut b, 48, &self.id);
        for (i, v) in [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ]
        .into_iter()
        .enumerate()
        {
            put(&mut b, 64 + 8 * i, &v.to_le_bytes());
        }
        b
    }

    /// Set the primary architecture (both `arch` and `arch_raw`).
    pub fn set_arch(&mut self, arch: Arch) {
        self.arch = arch;
        self.arch_raw = arch.to_bytes();
    }

    /// The launch script with trailing NULs trimmed.
    pub fn launch_script_text(&self) -> String {
        let end = self
            .launch_script
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        String::from_utf8_lossy(&self.launch_script[..end]).into_owned()
    }

    /// A deterministic image: nil UUID and Go zero times (edits keep the zero time).
    pub fn is_deterministic(&self) -> bool {
        self.id == [0; 16] && self.created_at == GO_ZERO_TIME && self.modified_at == GO_ZERO_TIME
    }
}

/// Where a descriptor links to: its `LinkedID` field decoded (spec 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `LinkedID` 0: no link.
    None,
    /// A link to the object with this ID (e.g. a legacy signature's signed object).
    Object(u32),
    /// A link to this object group (stored as `0xF0000000 | group`), e.g. a signature's.
    Group(u32),
}

/// Partition metadata (Extra of a partition object, spec 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Filesystem in the partition (`Fstype`, Extra bytes 0..4).
    pub fs_type: FsType,
    /// Role of the partition (`Parttype`, Extra bytes 4..8).
    pub part_type: PartType,
    /// Architecture the partition's contents are built for (`Arch`, Extra bytes 8..11).
    pub arch: Arch,
}

impl Partition {
    /// Encode as the 11 significant Extra bytes (the caller zero-pads to 384).
    pub fn to_extra(self) -> Vec<u8> {
        let mut extra = Vec::with_capacity(11);
        extra.extend_from_slice(&self.fs_type.code().to_le_bytes());
        extra.extend_from_slice(&self.part_type.code().to_le_bytes());
        extra.extend_from_slice(&self.arch.to_bytes());
        extra
    }
}

/// One descriptor slot: 585 bytes describing one data object (spec 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// What the object holds (`DataType`); `Unknown(0)` in unused slots.
    pub data_type: DataType,
    /// Whether the slot describes an object; unused slots are all zero on disk.
    pub used: bool,
    /// Object ID, unique among used slots and never 0 (writers use slot index + 1).
    pub id: u32,
    /// Raw field, mask included (`0xF0000001` for group 1).
    pub group_id: u32,
    /// Raw field: 0, an object id, or `0xF0000000 | group`.
    pub linked_id: u32,
    /// Byte offset of the object's first byte from the start of the file.
    pub offset: u64,
    /// Length of the object in bytes.
    pub size: u64,
    /// `size` plus the alignment padding written before the object, in bytes.
    pub size_with_padding: u64,
    /// Object creation time, Unix seconds.
    pub created_at: i64,
    /// Object modification time, Unix seconds.
    pub modified_at: i64,
    /// Deprecated: the creating user's uid in legacy images, 0 from current writers.
    pub uid: i64,
    /// Deprecated: the creating user's gid in legacy images, 0 from current writers.
    pub gid: i64,
    /// Object name (`Name`), trailing NULs trimmed; at most 128 bytes.
    pub name: Vec<u8>,
    /// Type-specific metadata (`Extra`, spec 4), zero-padded; always 384 bytes.
    pub extra: Vec<u8>,
}

impl Descriptor {
    /// An unused slot (all fields zero).
    pub fn unused() -> Descriptor {
        Descriptor {
            data_type: DataType::Unknown(0),
            used: false,
            id: 0,
            group_id: 0,
            linked_id: 0,
            offset: 0,
            size: 0,
            size_with_padding: 0,
            created_at: 0,
            modified_at: 0,
            uid: 0,
            gid: 0,
            name: Vec::new(),
            extra: vec![0; EXTRA_LEN],
        }
    }

    /// Decode one 585-byte slot; fails if a used slot has a negative offset or size field.
    /// An unused slot decodes as [`Descriptor::unused`], whatever stray bytes it holds.
    pub fn parse(b: &[u8; DESCRIPTOR_LEN]) -> Result<Descriptor> {
        let signed = |at: usize, what: &str| -> Result<u64> {
            let v = i64_at(b, at);
            u64::try_from(v).map_err(|_| Error::malformed(format!("negative {what} {v}")))
        };
        let used = b[4] != 0;
        if !used {
            // An unused slot means nothing whatever bytes it holds: normalised to the
            // all-zero slot writers leave, so that load -> encode -> load is the identity
            // and two images that differ only in such bytes compare equal (a fuzzing find).
            return Ok(Descriptor::unused());
        }
        let name_end = b[73..201]
            .iter()
            .rposition(|&c| c != 0)
            .map_or(0, |i| i + 1);
        Ok(Descriptor {
            data_type: DataType::from_code(i32::from_le_bytes(b[0..4].try_into().unwrap())),
            used,
            id: u32_at(b, 5),
            group_id: u32_at(b, 9),
            linked_id: u32_at(b, 13),
            offset: signed(17, "offset")?,
            size: signed(25, "size")?,
            size_with_padding: signed(33, "size with padding")?,
            created_at: i64_at(b, 41),
            modified_at: i64_at(b, 49),
            uid: i64_at(b, 57),
            gid: i64_at(b, 65),
            name: b[73..73 + name_end].to_vec(),
            extra: b[201..585].to_vec(),
        })
    }

    /// Encode the 585-byte slot; an unused slot encodes as all zeros.
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        if !self.used {
            return b;
        }
        put(&mut b, 0, &self.data_type.code().to_le_bytes());
        b[4] = 1;
        put(&mut b, 5, &self.id.to_le_bytes());
        put(&mut b, 9, &self.group_id.to_le_bytes());
        put(&mut b, 13, &self.linked_id.to_le_bytes());
        for (at, v) in [
            (17, self.offset as i64),
            (25, self.size as i64),
            (33, self.size_with_padding as i64),
            (41, self.created_at),
            (49, self.modified_at),
            (57, self.uid),
            (65, self.gid),
        ] {
            put(&mut b, at, &v.to_le_bytes());
        }
        put(&mut b, 73, &self.name[..self.name.len().min(NAME_LEN)]);
        put(&mut b, 201, &self.extra[..self.extra.len().min(EXTRA_LEN)]);
        b
    }

    /// The group number, `None` for "no group".
    pub fn group(&self) -> Option<u32> {
        match self.group_id & !GROUP_MASK {
            0 => None,
            g => Some(g),
        }
    }

    /// The decoded `LinkedID`.
    pub fn link(&self) -> Link {
        match self.linked_id {
            0 => Link::None,
            l if l & GROUP_MASK == GROUP_MASK => Link::Group(l & !GROUP_MASK),
            l => Link::Object(l),
        }
    }

    /// Byte offset just past the object's last byte (`offset + size`).
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }

    fn extra_i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.extra[at..at + 4].try_into().unwrap())
    }

    /// The partition metadata in Extra; fails if the object is not a partition.
    pub fn partition(&self) -> Result<Partition> {
        if self.data_type != DataType::Partition {
            return Err(Error::malformed(format!(
                "object {}: not a partition",
                self.id
            )));
        }
        Ok(Partition {
            fs_type: FsType::from_code(self.extra_i32(0)),
            part_type: PartType::from_code(self.extra_i32(4)),
            arch: Arch::from_bytes(&self.extra[8..11]),
        })
    }

    /// A signature's hash type (Extra bytes 0..4); meaningless for other data types.
    pub fn signature_hash(&self) -> HashType {
        HashType::from_code(self.extra_i32(0))
    }

    /// The signing key fingerprint (first 20 bytes of Entity), if not all zero.
    pub fn signature_entity(&self) -> Option<[u8; 20]> {
        let fp: [u8; 20] = self.extra[4..24].try_into().unwrap();
        (fp != [0; 20]).then_some(fp)
    }

    /// The little-endian i32 at byte `at` of Extra (e.g. crypto-message or SBOM codes).
    pub fn extra_code(&self, at: usize) -> i32 {
        self.extra_i32(at)
    }

    /// The OCI digest of an `OCI.RootIndex` / `OCI.Blob`, validated like the reference.
    pub fn oci_digest(&self) -> Result<crate::digest::Digest> {
        if !matches!(self.data_type, DataType::OciRootIndex | DataType::OciBlob) {
            return Err(Error::malformed(format!(
                "object {}: not an OCI object",
                self.id
            )));
        }
        let end = self
            .extra
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.extra.len());
        let text = std::str::from_utf8(&self.extra[..end])
            .map_err(|_| Error::malformed(format!("object {}: digest is not text", self.id)))?;
        crate::digest::Digest::parse(text).map_err(|e| e.context(format!("object {}", self.id)))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_unused_slot_with_stray_bytes_normalises_to_the_zero_slot() {
        // The fuzzer's smallest case: an unused slot, all zero but byte 17 (the offset).
        let mut raw = [0u8; DESCRIPTOR_LEN];
        raw[17] = 1;
        let d = Descriptor::parse(&raw).unwrap();
        assert_eq!(d, Descriptor::unused());
        assert_eq!(d.to_bytes(), [0u8; DESCRIPTOR_LEN]);
        // Stray bytes everywhere but the used flag: still the unused slot.
        let mut noisy = [0xa5u8; DESCRIPTOR_LEN];
        noisy[4] = 0;
        assert_eq!(Descriptor::parse(&noisy).unwrap(), Descriptor::unused());
    }

    use super::*;

    #[test]
    fn descriptor_round_trips() {
        let mut d = Descriptor::unused();
        d.used = true;
        d.data_type = DataType::Partition;
        d.id = 3;
        d.group_id = GROUP_MASK | 2;
        d.linked_id = GROUP_MASK | 1;
        d.offset = 40960;
        d.size = 262144;
        d.size_with_padding = 262144;
        d.created_at = GO_ZERO_TIME;
        d.name = b"part".to_vec();
        d.extra = Partition {
            fs_type: FsType::Ext3,
            part_type: PartType::System,
            arch: Arch::Amd64,
        }
        .to_extra();
        d.extra.resize(EXTRA_LEN, 0);
        let bytes = d.to_bytes();
        assert_eq!(Descriptor::parse(&bytes).unwrap(), d);
        assert_eq!(d.group(), Some(2));
        assert_eq!(d.link(), Link::Group(1));
        assert_eq!(d.partition().unwrap().arch, Arch::Amd64);
    }
}
