//! Extended attributes as ext2/3/4 stores them: entries with a name index, values packed at
//! the end of the area, and the entry and block hashes e2fsck checks. POSIX ACLs given in the
//! xattr API's form (version 2, as `getxattr` returns them) are stored in ext4's own form.

use crate::error::{Error, Result};
use crate::fs::entry::Xattr;

/// Magic of an xattr block and of the in-inode area.
pub(super) const MAGIC: u32 = 0xEA02_0000;
/// Bytes of an xattr block's header.
const BLOCK_HEADER: usize = 32;

/// One entry ready to encode: name index, name without its prefix, value.
struct Encoded<'a> {
    index: u8,
    name: &'a [u8],
    value: Vec<u8>,
}

/// The name index of a full xattr name and the rest of the name.
fn split_name(name: &[u8]) -> (u8, &[u8]) {
    const EXACT: [(&[u8], u8); 2] = [
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
    ];
    const PREFIXES: [(&[u8], u8); 4] = [
        (b"user.", 1),
        (b"trusted.", 4),
        (b"security.", 6),
        (b"system.", 7),
    ];
    for (full, index) in EXACT {
        if name == full {
            return (index, b"");
        }
    }
    for (prefix, index) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (index, rest);
        }
    }
    (0, name)
}

/// A POSIX ACL in the xattr API's form (version 2: tag, perm, id per entry) converted to
/// ext4's (version 1: the id only for named users and groups). Other values pass unchanged.
fn acl_to_disk(value: &[u8]) -> Vec<u8> {
    if value.len() < 4 || value[..4] != [2, 0, 0, 0] || !(value.len() - 4).is_multiple_of(8) {
        return value.to_vec();
    }
    let mut out = vec![1, 0, 0, 0];
    for e in value[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[..4]);
        // ACL_USER (2) and ACL_GROUP (8) carry an id.
        if tag == 2 || tag == 8 {
            out.extend_from_slice(&e[4..8]);
        }
    }
    out
}

fn prepare(xattrs: &[Xattr]) -> Result<Vec<Encoded<'_>>> {
    let mut out = Vec::with_capacity(xattrs.len());
    for x in xattrs {
        let (index, name) = split_name(&x.name);
        if name.len() > 255 || (name.is_empty() && index != 2 && index != 3) {
            return Err(Error::unsupported(format!(
                "xattr {:?}: the name is empty or longer than 255 bytes",
                String::from_utf8_lossy(&x.name)
            )));
        }
        let value = if index == 2 || index == 3 {
            acl_to_disk(&x.value)
        } else {
            x.value.clone()
        };
        out.push(Encoded { index, name, value });
    }
    // The kernel looks entries of a block up in this order.
    out.sort_by(|a, b| (a.index, a.name.len(), a.name).cmp(&(b.index, b.name.len(), b.name)));
    Ok(out)
}

fn entry_len(e: &Encoded<'_>) -> usize {
    (16 + e.name.len()).next_multiple_of(4)
}

fn value_len(e: &Encoded<'_>) -> usize {
    e.value.len().next_multiple_of(4)
}

/// e2fsprogs' `ext2fs_ext_attr_hash_entry` (names hashed as signed chars, as x86 kernels do).
fn entry_hash(e: &Encoded<'_>) -> u32 {
    let mut hash = 0u32;
    for &c in e.name {
        hash = (hash << 5) ^ (hash >> 27) ^ (c as i8 as i32 as u32);
    }
    let mut padded = e.value.clone();
    padded.resize(value_len(e), 0);
    for w in padded.chunks(4) {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        hash = (hash << 16) ^ (hash >> 16) ^ v;
    }
    hash
}

/// Bytes the entries take in an area: entries, the 4-byte terminator, values.
fn area_need(entries: &[Encoded<'_>]) -> usize {
    entries
        .iter()
        .map(|e| entry_len(e) + value_len(e))
        .sum::<usize>()
        + 4
}

/// Write `entries` into `area` from `start`: entries forward, values backward from the end;
/// value offsets are relative to `base`. Returns the entry hashes.
fn fill(area: &mut [u8], start: usize, base: usize, entries: &[Encoded<'_>]) -> Vec<u32> {
    let mut at = start;
    let mut end = area.len();
    let mut hashes = Vec::new();
    for e in entries {
        let hash = entry_hash(e);
        hashes.push(hash);
        let vlen = value_len(e);
        let value_offs = if e.value.is_empty() {
            0
        } else {
            end -= vlen;
            area[end..end + e.value.len()].copy_from_slice(&e.value);
            end - base
        };
        area[at] = e.name.len() as u8;
        area[at + 1] = e.index;
        area[at + 2..at + 4].copy_from_slice(&(value_offs as u16).to_le_bytes());
        area[at + 8..at + 12].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
        area[at + 12..at + 16].copy_from_slice(&hash.to_le_bytes());
        area[at + 16..at + 16 + e.name.len()].copy_from_slice(e.name);
        at += entry_len(e);
    }
    hashes
}

/// Where an inode's xattrs go.
pub(super) enum Placement {
    None,
    /// In the inode, after the extra fields: the bytes from the magic to the inode's end.
    Inline(Vec<u8>),
    /// In an xattr block of its own: the block's bytes.
    Block(Vec<u8>),
}

/// Place `xattrs`: in the inode's `inline_room` bytes (magic included) if they fit, else in
/// one block of `block_size` bytes.
pub(super) fn place(xattrs: &[Xattr], inline_room: usize, block_size: usize) -> Result<Placement> {
    if xattrs.is_empty() {
        return Ok(Placement::None);
    }
    let entries = prepare(xattrs)?;
    let need = area_need(&entries);
    if need + 4 <= inline_room {
        let mut area = vec![0u8; inline_room];
        area[..4].copy_from_slice(&MAGIC.to_le_bytes());
        let (head, rest) = area.split_at_mut(4);
        let _ = head;
        fill(rest, 0, 0, &entries);
        return Ok(Placement::Inline(area));
    }
    if need + BLOCK_HEADER > block_size {
        return Err(Error::unsupported(format!(
            "{} xattrs of {need} bytes do not fit in one {block_size}-byte xattr block",
            entries.len()
        )));
    }
    let mut block = vec![0u8; block_size];
    block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[4..8].copy_from_slice(&1u32.to_le_bytes()); // h_refcount
    block[8..12].copy_from_slice(&1u32.to_le_bytes()); // h_blocks
    let hashes = fill(&mut block, BLOCK_HEADER, 0, &entries);
    // e2fsprogs' `ext2fs_ext_attr_block_rehash`.
    let mut hash = 0u32;
    for h in hashes {
        if h == 0 {
            hash = 0;
            break;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    block[12..16].copy_from_slice(&hash.to_le_bytes());
    Ok(Placement::Block(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(name: &str, value: &[u8]) -> Xattr {
        Xattr {
            name: name.as_bytes().to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn names_split_into_index_and_suffix() {
        assert_eq!(split_name(b"user.a"), (1, &b"a"[..]));
        assert_eq!(
            split_name(b"trusted.overlay.opaque"),
            (4, &b"overlay.opaque"[..])
        );
        assert_eq!(split_name(b"security.capability"), (6, &b"capability"[..]));
        assert_eq!(split_name(b"system.posix_acl_access"), (2, &b""[..]));
        assert_eq!(split_name(b"other.x"), (0, &b"other.x"[..]));
    }

    #[test]
    fn small_xattrs_go_inline_big_ones_to_a_block() {
        let Placement::Inline(area) = place(&[x("user.a", b"hi")], 96, 4096).unwrap() else {
            panic!("not inline")
        };
        assert_eq!(area.len(), 96);
        assert_eq!(&area[..4], &MAGIC.to_le_bytes());
        let big = [x("user.big", &[b'v'; 600]), x("trusted.t", b"y")];
        let Placement::Block(block) = place(&big, 96, 4096).unwrap() else {
            panic!("not in a block")
        };
        // Sorted by index: user (1) before trusted (4).
        assert_eq!(block[32 + 1], 1);
        assert!(place(&[x("user.huge", &[0; 5000])], 96, 4096).is_err());
    }

    #[test]
    fn acls_are_stored_in_ext4_form() {
        // user::rw- (tag 1), user:1000:r-- (tag 2), group::r-- (4), mask (0x10), other (0x20).
        let mut v = vec![2, 0, 0, 0];
        for (tag, perm, id) in [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX)] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let disk = acl_to_disk(&v);
        assert_eq!(disk.len(), 4 + 4 + 8 + 4);
        assert_eq!(&disk[..4], &[1, 0, 0, 0]);
        assert_eq!(&disk[12..16], &1000u32.to_le_bytes());
    }
}
