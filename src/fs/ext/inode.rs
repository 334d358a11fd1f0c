//! Inodes: decoding an inode record, and finding an inode's data blocks through its block
//! map (direct, indirect, double and triple indirect) or its extent tree.

use super::{ExtFs, le16, le32};
use crate::error::{Error, Result};

const EXTENT_MAGIC: u16 = 0xF30A;
/// `i_flags`: the inode's data is mapped by an extent tree.
const EXTENTS_FL: u32 = 0x80000;

/// One inode, decoded.
#[derive(Debug, Clone)]
pub struct Inode {
    /// The inode number (tests compare it with debugfs's).
    pub number: u32,
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) links: u16,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: u32,
    pub(crate) flags: u32,
    /// The 60-byte `i_block` area (block map, extent tree or fast symlink target).
    pub(crate) block: [u8; 60],
    pub(crate) file_acl: u64,
    /// 512-byte sectors allocated (data, indirect and xattr blocks).
    pub(crate) sectors: u64,
    /// In-inode xattr area (after the extra fields), if any.
    pub(crate) inline_xattrs: Vec<u8>,
}

impl Inode {
    pub(crate) fn file_type(&self) -> u16 {
        self.mode & 0o170000
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == 0o040000
    }

    fn uses_extents(&self) -> bool {
        self.flags & EXTENTS_FL != 0
    }

    /// (major, minor) of a device inode, old or new encoding.
    pub(crate) fn rdev(&self) -> Result<(u32, u32)> {
        let w0 = le32(&self.block, 0)?;
        Ok(if w0 != 0 {
            ((w0 >> 8) & 0xff, w0 & 0xff)
        } else {
            let w1 = le32(&self.block, 4)?;
            ((w1 & 0xfff00) >> 8, (w1 & 0xff) | ((w1 >> 12) & 0xfff00))
        })
    }

    /// Decode inode `number` from its `raw` record (at least 128 bytes).
    fn decode(number: u32, raw: &[u8]) -> Result<Inode> {
        let isz = raw.len() as u64;
        let mode = le16(raw, 0)?;
        let uid = le16(raw, 2)? as u32 | (le16(raw, 0x78)? as u32) << 16;
        let gid = le16(raw, 0x18)? as u32 | (le16(raw, 0x7A)? as u32) << 16;
        let size = le32(raw, 4)? as u64 | (le32(raw, 0x6C)? as u64) << 32;
        let mut mtime = le32(raw, 0x10)? as i32 as i64;
        let mut mtime_nsec = 0;
        let mut inline_xattrs = Vec::new();
        if isz > 128 {
            let extra = le16(raw, 0x80)? as u64;
            if 128 + extra > isz {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {number}: extra size {extra} too large"
                )));
            }
            if extra >= 0x8C - 0x80 {
                // i_mtime_extra at 0x88: low 2 bits extend the epoch, the rest is nanoseconds.
                let x = le32(raw, 0x88)?;
                mtime += ((x & 3) as i64) << 32;
                mtime_nsec = x >> 2;
            }
            let start = (128 + extra) as usize;
            if raw.len() >= start + 4 && le32(raw, start)? == super::xattr::MAGIC {
                inline_xattrs = raw[start + 4..].to_vec();
            }
        }
        let mut block = [0u8; 60];
        block.copy_from_slice(raw.get(0x28..0x28 + 60).ok_or_else(super::too_short)?);
        Ok(Inode {
            number,
            mode,
            uid,
            gid,
            size,
            links: le16(raw, 0x1A)?,
            mtime,
            mtime_nsec,
            flags: le32(raw, 0x20)?,
            block,
            file_acl: le32(raw, 0x68)? as u64 | (le16(raw, 0x76)? as u64) << 32,
            sectors: le32(raw, 0x1C)? as u64 | (le16(raw, 0x74)? as u64) << 32,
            inline_xattrs,
        })
    }
}

impl ExtFs<'_> {
    /// Read and decode inode `number`.
    pub(super) fn inode(&self, number: u32) -> Result<Inode> {
        if number == 0 || number > self.geo.inodes {
            return Err(Error::malformed(format!(
                "ext filesystem: inode {number} is out of range"
            )));
        }
        let index = number - 1;
        let group = (index / self.geo.inodes_per_group) as usize;
        let table = *self.inode_tables.get(group).ok_or_else(|| {
            Error::malformed(format!(
                "ext filesystem: inode {number}: group {group} does not exist"
            ))
        })?;
        let isz = self.geo.inode_size as u64;
        let at = table
            .checked_mul(self.geo.block_size as u64)
            .and_then(|t| t.checked_add((index % self.geo.inodes_per_group) as u64 * isz))
            .ok_or_else(|| {
                Error::malformed(format!(
                    "ext filesystem: inode {number}: table offset overflows"
                ))
            })?;
        let raw = self.read_bytes(at, isz, &format!("inode {number}"))?;
        Inode::decode(number, &raw)
    }

    /// Physical block of logical block `n` of `inode`; `None` for a hole.
    pub(super) fn map_block(&self, inode: &Inode, n: u64) -> Result<Option<u64>> {
        if inode.uses_extents() {
            return self.map_extent(inode, n);
        }
        let per = (self.geo.block_size / 4) as u64;
        let direct = |i: usize| le32(&inode.block, i * 4).map(u64::from);
        let lookup = |block: u64, index: u64| -> Result<u64> {
            if block == 0 {
                return Ok(0);
            }
            let data = self.read_block(block, &format!("inode {} indirect block", inode.number))?;
            Ok(le32(&data, (index * 4) as usize)? as u64)
        };
        let mut n = n;
        let phys = if n < 12 {
            direct(n as usize)?
        } else {
            n -= 12;
            if n < per {
                lookup(direct(12)?, n)?
            } else {
                n -= per;
                if n < per * per {
                    let l1 = lookup(direct(13)?, n / per)?;
                    lookup(l1, n % per)?
                } else {
                    n -= per * per;
                    if n >= per * per * per {
                        return Err(Error::malformed(format!(
                            "ext filesystem: inode {}: block beyond the triple-indirect range",
                            inode.number
                        )));
                    }
                    let l1 = lookup(direct(14)?, n / (per * per))?;
                    let l2 = lookup(l1, n / per % per)?;
                    lookup(l2, n % per)?
                }
            }
        };
        Ok((phys != 0).then_some(phys))
    }

    fn map_extent(&self, inode: &Inode, n: u64) -> Result<Option<u64>> {
        let mut node = inode.block.to_vec();
        for _depth in 0..8 {
            if le16(&node, 0)? != EXTENT_MAGIC {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: bad extent header",
                    inode.number
                )));
            }
            let entries = le16(&node, 2)? as usize;
            let depth = le16(&node, 6)?;
            if 12 + entries * 12 > node.len() {
                return Err(Error::malformed(format!(
                    "ext filesystem: inode {}: extent node overflows",
                    inode.number
                )));
            }
            let entry = |i: usize| &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                for i in 0..entries {
                    let e = entry(i);
                    let first = le32(e, 0)? as u64;
                    let mut count = le16(e, 4)? as u64;
                    let uninit = count > 32768;
                    if uninit {
                        count -= 32768;
                    }
                    let start = (le16(e, 6)? as u64) << 32 | le32(e, 8)? as u64;
                    if n >= first && n < first + count {
                        // Uninitialised extents read as zeros.
                        return Ok((!uninit).then_some(start + (n - first)));
                    }
                }
                return Ok(None);
            }
            let mut next = None;
            for i in 0..entries {
                let e = entry(i);
                if le32(e, 0)? as u64 <= n {
                    next = Some((le16(e, 8)? as u64) << 32 | le32(e, 4)? as u64);
                } else {
                    break;
                }
            }
            let Some(block) = next else { return Ok(None) };
            node = self.read_block(block, &format!("inode {} extent node", inode.number))?;
        }
        Err(Error::malformed(format!(
            "ext filesystem: inode {}: extent tree too deep",
            inode.number
        )))
    }

    /// Read `len` bytes of an inode's data from logical offset `pos` (holes read as zeros).
    pub(super) fn read_data(&self, inode: &Inode, pos: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.geo.block_size as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let logical = at / bs;
            let within = (at % bs) as usize;
            let n = (bs as usize - within).min(buf.len() - done);
            match self.map_block(inode, logical)? {
                Some(phys) => {
                    if phys >= self.geo.blocks {
                        return Err(Error::malformed(format!(
                            "ext filesystem: inode {}: block {phys} is out of range",
                            inode.number
                        )));
                    }
                    self.read_exact(
                        &mut buf[done..done + n],
                        phys.saturating_mul(bs) + within as u64,
                        &format!("inode {} data", inode.number),
                    )?;
                }
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// The whole content of a small inode (directory, symlink), capped.
    pub(super) fn read_all(&self, inode: &Inode, cap: u64, what: &str) -> Result<Vec<u8>> {
        if inode.size > cap || inode.size > self.len {
            return Err(Error::malformed(format!(
                "ext filesystem: inode {}: {what} of {} bytes is too large",
                inode.number, inode.size
            )));
        }
        let mut buf = vec![0u8; inode.size as usize];
        self.read_data(inode, 0, &mut buf)?;
        Ok(buf)
    }
}
