//! Extended attribute entries, as stored in an inode's extra space and in xattr blocks.

use super::{le16, le32};
use crate::error::{Error, Result};
use crate::fs::entry::Xattr;

/// Magic of an xattr block and of the in-inode xattr area.
pub(super) const MAGIC: u32 = 0xEA02_0000;
/// Most entries one area may hold (a corrupt area stops here).
const MAX_ENTRIES: usize = 4096;

/// The namespace prefix of an entry's name index.
fn prefix(index: u8) -> &'static [u8] {
    match index {
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => b"",
    }
}

/// Decode the entries of `area` from byte `start` until the terminating zero word; values
/// lie in `values` at the offsets the entries give.
pub(super) fn parse_entries(
    area: &[u8],
    start: usize,
    values: &[u8],
    out: &mut Vec<Xattr>,
) -> Result<()> {
    let mut at = start;
    let mut count = 0;
    while at + 16 <= area.len() {
        if le32(area, at)? == 0 {
            break;
        }
        count += 1;
        if count > MAX_ENTRIES {
            return Err(Error::malformed("too many xattr entries"));
        }
        let name_len = area[at] as usize;
        let index = area[at + 1];
        let value_offs = le16(area, at + 2)? as usize;
        let value_inum = le32(area, at + 4)?;
        let value_size = le32(area, at + 8)? as usize;
        let name = area
            .get(at + 16..at + 16 + name_len)
            .ok_or_else(|| Error::malformed("xattr name overflows"))?;
        if value_inum != 0 {
            return Err(Error::unsupported(
                "xattr values stored in separate inodes (ea_inode)",
            ));
        }
        let mut full = prefix(index).to_vec();
        full.extend_from_slice(name);
        let value = values
            .get(value_offs..value_offs.saturating_add(value_size))
            .ok_or_else(|| Error::malformed("xattr value lies outside its area"))?
            .to_vec();
        out.push(Xattr { name: full, value });
        at += (16 + name_len).next_multiple_of(4);
    }
    Ok(())
}
