//! The ext2/3/4 superblock, decoded once: the fields the reader ([`super::ExtFs`]) and
//! SingularityCE's overlay header rule ([`crate::fs::overlay`]) look at, and the feature
//! flags they test. Offsets and names follow the kernel's `struct ext4_super_block`.

use crate::fs::bytes::Fields;

/// Where the superblock starts, in bytes from the start of the filesystem.
pub(crate) const OFFSET: usize = 1024;
/// Bytes of the superblock.
pub(crate) const LEN: usize = 1024;
/// `s_magic`.
pub(crate) const MAGIC: u16 = 0xEF53;
/// Offset of `s_magic` in the superblock.
pub(crate) const MAGIC_OFFSET: usize = 0x38;

/// `s_feature_compat`: the filesystem has a journal (ext3 and later).
pub(crate) const COMPAT_HAS_JOURNAL: u32 = 0x4;
/// `s_feature_incompat` flags.
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
/// The journal holds transactions not yet replayed (a killed writer).
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub(crate) const INCOMPAT_ENCRYPT: u32 = 0x10000;
/// `s_feature_ro_compat` flags.
pub(crate) const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub(crate) const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub(crate) const RO_COMPAT_BTREE_DIR: u32 = 0x4;
/// Metadata checksums: the superblock carries a crc32c of itself at [`CHECKSUM_OFFSET`].
pub(crate) const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// Offset of `s_checksum`.
pub(crate) const CHECKSUM_OFFSET: usize = 0x3FC;
/// Offset of `s_feature_incompat`.
pub(crate) const FEATURE_INCOMPAT_OFFSET: usize = 0x60;

/// The superblock fields sifovl uses, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) inodes_count: u32,
    pub(crate) blocks_count_lo: u32,
    pub(crate) first_data_block: u32,
    /// Block size is `1024 << log_block_size`.
    pub(crate) log_block_size: u32,
    pub(crate) blocks_per_group: u32,
    pub(crate) inodes_per_group: u32,
    pub(crate) magic: u16,
    pub(crate) rev_level: u32,
    /// Meaningful from revision 1 on (see [`Superblock::inode_size`]).
    pub(crate) inode_size: u16,
    pub(crate) feature_compat: u32,
    pub(crate) feature_incompat: u32,
    pub(crate) feature_ro_compat: u32,
    /// Group descriptor size with the 64bit feature.
    pub(crate) desc_size: u16,
    /// First meta block group with the meta_bg feature.
    pub(crate) first_meta_bg: u32,
    /// High 32 bits of the block count with the 64bit feature.
    pub(crate) blocks_count_hi: u32,
    /// UUID of an external journal (all zeros for an internal one).
    pub(crate) journal_uuid: [u8; 16],
    /// Inode of an internal journal (0 without one).
    pub(crate) journal_inum: u32,
    /// Device number of an external journal.
    pub(crate) journal_dev: u32,
}

impl Superblock {
    /// Decode the superblock from its [`LEN`] bytes (`None` if `raw` is shorter).
    pub(crate) fn decode(raw: &[u8]) -> Option<Superblock> {
        if raw.len() < LEN {
            return None;
        }
        let u32_at = |at| Fields::at(raw, at).u32();
        let u16_at = |at| Fields::at(raw, at).u16();
        Some(Superblock {
            inodes_count: u32_at(0x00)?,
            blocks_count_lo: u32_at(0x04)?,
            first_data_block: u32_at(0x14)?,
            log_block_size: u32_at(0x18)?,
            blocks_per_group: u32_at(0x20)?,
            inodes_per_group: u32_at(0x28)?,
            magic: u16_at(MAGIC_OFFSET)?,
            rev_level: u32_at(0x4C)?,
            inode_size: u16_at(0x58)?,
            feature_compat: u32_at(0x5C)?,
            feature_incompat: u32_at(0x60)?,
            feature_ro_compat: u32_at(0x64)?,
            desc_size: u16_at(0xFE)?,
            first_meta_bg: u32_at(0x104)?,
            blocks_count_hi: u32_at(0x150)?,
            journal_uuid: raw.get(0xD0..0xE0)?.try_into().ok()?,
            journal_inum: u32_at(0xE0)?,
            journal_dev: u32_at(0xE4)?,
        })
    }

    pub(crate) fn has_magic(&self) -> bool {
        self.magic == MAGIC
    }

    /// Block size in bytes; `None` beyond 64 KiB (`log_block_size` > 6).
    pub(crate) fn block_size(&self) -> Option<u32> {
        (self.log_block_size <= 6).then(|| 1024u32 << self.log_block_size)
    }

    pub(crate) fn has_incompat(&self, flag: u32) -> bool {
        self.feature_incompat & flag != 0
    }

    /// Block count (64-bit with the 64bit feature).
    pub(crate) fn blocks(&self) -> u64 {
        let lo = self.blocks_count_lo as u64;
        if self.has_incompat(INCOMPAT_64BIT) {
            lo | (self.blocks_count_hi as u64) << 32
        } else {
            lo
        }
    }

    /// Inode record size: 128 in revision 0, `s_inode_size` after.
    pub(crate) fn inode_size(&self) -> u16 {
        if self.rev_level == 0 {
            128
        } else {
            self.inode_size
        }
    }

    /// The journal needs recovery: the job that wrote the filesystem was killed.
    pub(crate) fn needs_recovery(&self) -> bool {
        self.has_incompat(INCOMPAT_RECOVER)
    }
}

/// `raw` (a superblock's [`LEN`] bytes) with the needs_recovery flag cleared and, with
/// metadata_csum, its checksum updated: what e2fsck writes after replaying the journal.
pub(crate) fn clear_needs_recovery(raw: &mut [u8]) {
    if raw.len() < LEN {
        return;
    }
    let at = FEATURE_INCOMPAT_OFFSET;
    let incompat = u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    raw[at..at + 4].copy_from_slice(&(incompat & !INCOMPAT_RECOVER).to_le_bytes());
    let ro_compat = u32::from_le_bytes([raw[0x64], raw[0x65], raw[0x66], raw[0x67]]);
    if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
        let sum = super::journal::crc32c(!0, &raw[..CHECKSUM_OFFSET]);
        raw[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_where_the_kernel_puts_them() {
        let mut raw = vec![0u8; LEN];
        raw[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        raw[0x04..0x08].copy_from_slice(&7u32.to_le_bytes());
        raw[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        raw[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        let sb = Superblock::decode(&raw).unwrap();
        assert!(sb.has_magic());
        assert_eq!(sb.block_size(), Some(4096));
        assert_eq!(sb.blocks(), 7, "the high word counts only with 64bit");
        assert_eq!(sb.inode_size(), 128, "revision 0");
        raw[0x60..0x64].copy_from_slice(&(INCOMPAT_64BIT | INCOMPAT_RECOVER).to_le_bytes());
        let sb = Superblock::decode(&raw).unwrap();
        assert_eq!(sb.blocks(), 7 | 1 << 32);
        assert!(sb.needs_recovery());
        raw[0x18..0x1C].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(Superblock::decode(&raw).unwrap().block_size(), None);
        assert_eq!(Superblock::decode(&raw[..1000]), None);
    }
}
