//! Shrinking an ext2/3 filesystem in place, as `resize2fs` does for a smaller device: the
//! groups past the new end are dropped, after what lives there has moved below it.
//!
//! - Every block in use past the new end (file and directory data, indirect blocks, shared
//!   xattr blocks, the journal's blocks) moves to a free block below it, and the pointer
//!   naming it (in the inode or in an indirect block) follows. A block that only moves is a
//!   [`Move`] (the caller copies it at commit, one read and one write); a block whose
//!   content changes too (an indirect block whose children moved) is a patch.
//! - Every inode of a dropped group gets a free number below the new end; every directory
//!   entry naming it (its links, and `..` of its subdirectories) follows. The content, mode,
//!   owner, times, xattrs and link count stay; only the number changes.
//! - The last group's bitmap pads past the new end, the dropped groups' descriptors and
//!   backups go, the resize inode stops listing their reserved blocks, and the superblock
//!   and every descriptor-table copy get the new counts.
//!
//! Files mapped by extents (ext4), an orphan list, or a journal to recover are left to the
//! caller's rewrite, with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{Error, Result};

use super::super::write::{get16, get32, put16, put32};
use super::{DESC, Geometry, Patch, Read, bit, io, set_bits};

/// How a filesystem shrinks.
#[derive(Debug)]
pub enum Shrink {
    /// In place: apply the plan over the old image's first `fs_bytes`.
    InPlace(ShrinkPlan),
    /// Not in place, for this reason: rewrite the filesystem.
    Rewrite(String),
}

/// Bytes that move unchanged: `len` bytes from `src` (past the new end) to `dst` (below
/// it), byte offsets in the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Where the bytes are now.
    pub src: u64,
    /// Where they go.
    pub dst: u64,
    /// How many.
    pub len: u64,
}

/// What shrinking in place does.
#[derive(Debug)]
pub struct ShrinkPlan {
    /// Bytes of the shrunk filesystem (its block count times the block size).
    pub fs_bytes: u64,
    /// Copies to make first; sorted by destination, disjoint from each other and from the
    /// patches; every source lies past `fs_bytes`, every destination below it.
    pub moves: Vec<Move>,
    /// Byte offset in the filesystem, bytes to write there; sorted, disjoint, below
    /// `fs_bytes`.
    pub patches: Vec<Patch>,
    /// Block groups before and after.
    pub groups: (u64, u64),
    /// Inodes in use (unchanged in number).
    pub inodes_used: u64,
    /// Inodes given a new number (they lived in a dropped group).
    pub renumbered_inodes: u64,
    /// Blocks moved below the new end.
    pub moved_blocks: u64,
}

/// Why planning stopped: a layout to rewrite instead, or an error.
enum Stop {
    Rewrite(String),
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Error(e)
    }
}

type Step<T> = std::result::Result<T, Stop>;

fn rewrite<T>(why: impl Into<String>) -> Step<T> {
    Err(Stop::Rewrite(why.into()))
}

fn malformed<T>(what: String) -> Step<T> {
    Err(Stop::Error(Error::malformed(format!(
        "ext3 overlay: {what}"
    ))))
}

/// `i_flags` that map a file other than by block pointers.
const EXTENTS_FL: u32 = 0x8_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// `i_mode` file types.
const S_IFMT: u16 = 0xF000;
const S_IFDIR: u16 = 0x4000;
const S_IFREG: u16 = 0x8000;
const S_IFLNK: u16 = 0xA000;
/// Offset of `i_block` in an inode, and its direct pointers.
const I_BLOCK: usize = 0x28;
const DIRECT: usize = 12;
/// `s_jnl_backup_type` saying `s_jnl_blocks` holds the journal inode's block map.
const JNL_BACKUP_BLOCKS: u8 = 1;

/// Plan shrinking the filesystem that `read` reads (byte offset in the filesystem, buffer
/// to fill) to fit `new_size` bytes. Errors are for a filesystem that cannot be read or
/// makes no sense; a layout or content this code does not shrink is [`Shrink::Rewrite`].
pub fn plan_shrink(read: &mut Read<'_>, new_size: u64) -> Result<Shrink> {
    let geo = match Geometry::read(read)? {
        Ok(geo) => geo,
        Err(why) => return Ok(Shrink::Rewrite(why)),
    };
    match Shrinker::new(read, geo, new_size).and_then(Shrinker::plan) {
        Ok(plan) => Ok(Shrink::InPlace(plan)),
        Err(Stop::Rewrite(why)) => Ok(Shrink::Rewrite(why)),
        Err(Stop::Error(e)) => Err(e),
    }
}

struct Shrinker<'a, 'r> {
    read: &'a mut Read<'r>,
    geo: Geometry,
    new_blocks: u64,
    new_groups: u64,
    gdt: Vec<u8>,
    /// Block bitmaps of kept groups, read when first needed, changed in place.
    block_bitmaps: BTreeMap<u64, Vec<u8>>,
    /// New content of blocks below the new end.
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Blocks below the new end that take the unchanged content of a block past it
    /// (destination -> source).
    moved: BTreeMap<u64, u64>,
    /// Shared xattr blocks already moved (old -> new).
    xattr_blocks: HashMap<u64, u64>,
    /// Where the search for a free block goes on.
    next_free: u64,
    /// Block pointers followed so far (a damaged filesystem cannot make this loop long).
    visited: u64,
    /// Blocks moved below the new end.
    relocated: u64,
}

impl<'a, 'r> Shrinker<'a, 'r> {
    fn new(read: &'a mut Read<'r>, geo: Geometry, new_size: u64) -> Step<Self> {
        let target = (new_size / geo.bs).min(geo.blocks);
        if target <= geo.fdb + geo.overhead(0) {
            return rewrite("the new size leaves no room for a block group");
        }
        let (new_blocks, new_groups) = geo.fit(target, 1);
        if new_blocks >= geo.blocks {
            return rewrite("the new size does not drop any block");
        }
        if new_groups.div_ceil(geo.bs / DESC) != geo.gdt_blocks {
            return rewrite("its group descriptor table would lose a block");
        }
        if !geo.backups_in_place(read)? {
            return rewrite("its superblock backups are not where ext3 puts them");
        }
        let gdt = geo.read_gdt(read, geo.gdt_blocks)?;
        Ok(Shrinker {
            next_free: geo.fdb,
            read,
            geo,
            new_blocks,
            new_groups,
            gdt,
            block_bitmaps: BTreeMap::new(),
            dirty: BTreeMap::new(),
            moved: BTreeMap::new(),
            xattr_blocks: HashMap::new(),
            visited: 0,
            relocated: 0,
        })
    }

    fn bs(&self) -> u64 {
        self.geo.bs
    }

    fn desc(&self, g: u64, field: usize) -> u64 {
        u64::from(get32(&self.gdt, (g * DESC) as usize + field))
    }

    /// Group `g`'s metadata block at descriptor `field`, `len` blocks of it, checked to lie
    /// inside the group (and below the new end when the group is kept).
    fn group_block(&self, g: u64, field: usize, len: u64, what: &str) -> Step<u64> {
        let at = self.desc(g, field);
        let end = self.geo.start(g) + self.geo.bpg;
        if at < self.geo.start(g) || at + len > end.min(self.geo.blocks) {
            return malformed(format!(
                "group {g}'s {what} at block {at} lies outside the group"
            ));
        }
        if g < self.new_groups && at + len > self.new_blocks {
            return rewrite(format!("group {g}'s {what} lies past the new end"));
        }
        Ok(at)
    }

    fn read_block(&mut self, block: u64, what: &str) -> Step<Vec<u8>> {
        let mut buf = vec![0u8; self.bs() as usize];
        let at = block * self.bs();
        (self.read)(at, &mut buf).map_err(io(what))?;
        Ok(buf)
    }

    /// A block's content as the plan leaves it.
    fn content(&mut self, block: u64) -> Step<Vec<u8>> {
        if let Some(data) = self.dirty.get(&block) {
            return Ok(data.clone());
        }
        let src = self.moved.get(&block).copied().unwrap_or(block);
        self.read_block(src, "a block")
    }

    fn set_content(&mut self, block: u64, data: Vec<u8>) -> Step<()> {
        if block >= self.new_blocks {
            return Err(Stop::Error(Error::malformed(format!(
                "internal error: shrinking writes block {block} past the new end"
            ))));
        }
        self.moved.remove(&block);
        self.dirty.insert(block, data);
        Ok(())
    }

    /// Write `bytes` at byte `at` of the shrunk filesystem (over whatever the plan has
    /// there already).
    fn patch_bytes(&mut self, at: u64, bytes: &[u8]) -> Step<()> {
        let bs = self.bs();
        let mut done = 0u64;
        while done < bytes.len() as u64 {
            let pos = at + done;
            let (block, off) = (pos / bs, (pos % bs) as usize);
            let n = (bs as usize - off).min(bytes.len() - done as usize);
            let mut data = self.content(block)?;
            data[off..off + n].copy_from_slice(&bytes[done as usize..done as usize + n]);
            self.set_content(block, data)?;
            done += n as u64;
        }
        Ok(())
    }

    fn block_bitmap(&mut self, g: u64) -> Step<&mut Vec<u8>> {
        if !self.block_bitmaps.contains_key(&g) {
            let at = self.group_block(g, 0, 1, "block bitmap")?;
            let bitmap = self.read_block(at, "a block bitmap")?;
            self.block_bitmaps.insert(g, bitmap);
        }
        Ok(self.block_bitmaps.get_mut(&g).expect("inserted above"))
    }

    /// A free block below the new end, now taken.
    fn alloc(&mut self) -> Step<u64> {
        let (fdb, bpg) = (self.geo.fdb, self.geo.bpg);
        while self.next_free < self.new_blocks {
            let block = self.next_free;
            self.next_free += 1;
            let (g, i) = ((block - fdb) / bpg, (block - fdb) % bpg);
            let bitmap = self.block_bitmap(g)?;
            if !bit(bitmap, i) {
                set_bits(bitmap, i, i + 1, true);
                return Ok(block);
            }
        }
        rewrite("there are not enough free blocks below the new end")
    }

    fn check_pointer(&mut self, block: u64, ino: u32) -> Step<()> {
        self.visited += 1;
        if block < self.geo.fdb || block >= self.geo.blocks {
            return malformed(format!(
                "inode {ino} points at block {block}, outside the filesystem"
            ));
        }
        if self.visited > 4 * self.geo.blocks + 1024 {
            return malformed(format!("inode {ino}'s block map loops"));
        }
        Ok(())
    }

    /// Where data block `block` of inode `ino` lives after the shrink (moved if past the end).
    fn relocate_leaf(&mut self, block: u64, ino: u32) -> Step<u64> {
        self.check_pointer(block, ino)?;
        if block < self.new_blocks {
            return Ok(block);
        }
        let dst = self.alloc()?;
        self.relocated += 1;
        self.moved.insert(dst, block);
        Ok(dst)
    }

    /// Relocate the subtree of indirect block `block` (`depth` 1: it lists data blocks);
    /// returns where the indirect block lives after the shrink.
    fn relocate_tree(&mut self, block: u64, depth: u32, ino: u32) -> Step<u64> {
        self.check_pointer(block, ino)?;
        let mut node = self.content(block)?;
        let mut changed = false;
        for slot in (0..node.len()).step_by(4) {
            let child = u64::from(get32(&node, slot));
            if child == 0 {
                continue;
            }
            let placed = if depth == 1 {
                self.relocate_leaf(child, ino)?
            } else {
                self.relocate_tree(child, depth - 1, ino)?
            };
            if placed != child {
                put32(&mut node, slot, placed as u32);
                changed = true;
            }
        }
        if block >= self.new_blocks {
            let dst = self.alloc()?;
            self.relocated += 1;
            if changed {
                self.set_content(dst, node)?;
            } else {
                self.moved.insert(dst, block);
            }
            return Ok(dst);
        }
        if changed {
            self.set_content(block, node)?;
        }
        Ok(block)
    }

    /// Relocate what inode `ino` (its record `rec`) points at past the new end; returns
    /// whether the record changed.
    fn relocate_inode(&mut self, ino: u32, rec: &mut [u8]) -> Step<bool> {
        let mode = get16(rec, 0);
        let flags = get32(rec, 0x20);
        if flags & (EXTENTS_FL | INLINE_DATA_FL) != 0 {
            return rewrite(format!(
                "inode {ino} is mapped by extents or inline data (ext4)"
            ));
        }
        let mut changed = false;
        let acl = u64::from(get32(rec, 0x68)) | u64::from(get16(rec, 0x76)) << 32;
        if acl != 0 {
            self.check_pointer(acl, ino)?;
            if acl >= self.new_blocks {
                let placed = match self.xattr_blocks.get(&acl) {
                    Some(&placed) => placed,
                    None => {
                        let placed = self.relocate_leaf(acl, ino)?;
                        self.xattr_blocks.insert(acl, placed);
                        placed
                    }
                };
                put32(rec, 0x68, placed as u32);
                changed = true;
            }
        }
        let size = u64::from(get32(rec, 0x04));
        let i_blocks = u64::from(get32(rec, 0x1C));
        let mapped = match mode & S_IFMT {
            S_IFREG | S_IFDIR => true,
            // A fast symlink keeps its target in `i_block` (the kernel's test).
            S_IFLNK if acl != 0 => i_blocks != self.bs() / 512,
            S_IFLNK => size >= 60 || size == 0,
            // Devices keep their numbers in `i_block`; FIFOs and sockets have no data.
            _ => false,
        };
        if !mapped {
            return Ok(changed);
        }
        for (i, depth) in (0..DIRECT)
            .map(|i| (i, 0))
            .chain([(12, 1), (13, 2), (14, 3)])
        {
            let slot = I_BLOCK + i * 4;
            let block = u64::from(get32(rec, slot));
            if block == 0 {
                continue;
            }
            let placed = if depth == 0 {
                self.relocate_leaf(block, ino)?
            } else {
                self.relocate_tree(block, depth, ino)?
            };
            if placed != block {
                put32(rec, slot, placed as u32);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Byte offset of inode `ino`'s record.
    fn inode_at(&self, ino: u32) -> u64 {
        let (ipg, isz) = (self.geo.ipg, self.geo.isz);
        let g = (u64::from(ino) - 1) / ipg;
        self.desc(g, 8) * self.bs() + ((u64::from(ino) - 1) % ipg) * isz
    }

    /// The block holding byte `n * bs` of the file whose (final) record is `rec`.
    fn map_block(&mut self, rec: &[u8], n: u64) -> Step<u64> {
        let per = self.bs() / 4;
        if n < DIRECT as u64 {
            return Ok(u64::from(get32(rec, I_BLOCK + n as usize * 4)));
        }
        let mut rest = n - DIRECT as u64;
        let mut span = per;
        for depth in 1..=3u32 {
            if rest < span {
                let mut block = u64::from(get32(rec, I_BLOCK + (11 + depth as usize) * 4));
                for level in (0..depth).rev() {
                    if block == 0 {
                        return Ok(0);
                    }
                    let node = self.content(block)?;
                    let index = (rest / per.pow(level)) % per;
                    block = u64::from(get32(&node, (index * 4) as usize));
                }
                return Ok(block);
            }
            rest -= span;
            span *= per;
        }
        malformed(format!("a directory of more than {n} blocks"))
    }

    fn plan(mut self) -> Step<ShrinkPlan> {
        let bs = self.bs();
        let (ipg, isz) = (self.geo.ipg, self.geo.isz);
        let (old_groups, new_groups) = (self.geo.groups, self.new_groups);
        let sb = self.geo.sb_raw.clone();
        if get32(&sb, 0xE8) != 0 {
            return rewrite("it has an orphan list (files deleted while open)");
        }
        let first_ino = if get32(&sb, 0x4C) >= 1 {
            get32(&sb, 0x54)
        } else {
            11
        };
        let journal_ino = get32(&sb, 0xE0);
        let limit = new_groups * ipg;
        let free_inodes_before = u64::from(get32(&sb, 0x10));
        let mut sb_raw = sb;

        // Every inode in use: what it points at past the end moves; those past the end
        // are listed for new numbers.
        let mut records: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut dirs: Vec<u32> = Vec::new();
        let mut renumber: Vec<(u32, bool)> = Vec::new();
        let mut inode_bitmaps: Vec<Vec<u8>> = Vec::new();
        for g in 0..old_groups {
            let bitmap_at = self.group_block(g, 4, 1, "inode bitmap")?;
            let bitmap = self.read_block(bitmap_at, "an inode bitmap")?;
            let last_used = (0..ipg).rev().find(|&i| bit(&bitmap, i));
            if g < new_groups {
                inode_bitmaps.push(bitmap.clone());
            }
            let Some(last_used) = last_used else { continue };
            let table_at = self.group_block(g, 8, self.geo.itable_blocks, "inode table")?;
            let mut table = vec![0u8; ((last_used + 1) * isz) as usize];
            (self.read)(table_at * bs, &mut table).map_err(io("an inode table"))?;
            for i in (0..=last_used).filter(|&i| bit(&bitmap, i)) {
                let ino = (g * ipg + i + 1) as u32;
                if ino == super::RESIZE_INO {
                    continue; // its own patches, below
                }
                let rec = &mut table[(i * isz) as usize..((i + 1) * isz) as usize];
                let reserved = ino < first_ino && ino != 2 && ino != journal_ino;
                if reserved {
                    if rec[I_BLOCK..I_BLOCK + 60].iter().any(|&b| b != 0) {
                        return rewrite(format!("reserved inode {ino} holds blocks"));
                    }
                    continue;
                }
                if get16(rec, 0) == 0 {
                    return rewrite(format!("inode {ino} is marked in use but empty"));
                }
                let changed = self.relocate_inode(ino, rec)?;
                let is_dir = get16(rec, 0) & S_IFMT == S_IFDIR;
                if is_dir {
                    dirs.push(ino);
                }
                if ino == journal_ino && changed && sb_raw[0xFD] == JNL_BACKUP_BLOCKS {
                    // The superblock's copy of the journal inode's block map.
                    sb_raw[0x10C..0x10C + 60].copy_from_slice(&rec[I_BLOCK..I_BLOCK + 60]);
                    put32(&mut sb_raw, 0x10C + 60, get32(rec, 0x6C));
                    put32(&mut sb_raw, 0x10C + 64, get32(rec, 0x04));
                }
                if u64::from(ino) > limit {
                    renumber.push((ino, is_dir));
                }
                if changed || u64::from(ino) > limit {
                    records.insert(ino, rec.to_vec());
                }
            }
        }

        // New numbers, from the first free one in the kept groups.
        let mut numbers: HashMap<u32, u32> = HashMap::new();
        let mut new_dirs = vec![0u64; new_groups as usize];
        let mut inode_groups_changed = BTreeSet::new();
        let mut cursor = u64::from(first_ino.max(1)) - 1;
        for &(ino, is_dir) in &renumber {
            while cursor < limit && bit(&inode_bitmaps[(cursor / ipg) as usize], cursor % ipg) {
                cursor += 1;
            }
            if cursor >= limit {
                return rewrite("there are not enough free inodes below the new end");
            }
            let g = cursor / ipg;
            set_bits(
                &mut inode_bitmaps[g as usize],
                cursor % ipg,
                cursor % ipg + 1,
                true,
            );
            inode_groups_changed.insert(g);
            new_dirs[g as usize] += u64::from(is_dir);
            numbers.insert(ino, (cursor + 1) as u32);
        }

        // Directory entries naming a renumbered inode follow it.
        if !numbers.is_empty() {
            let filetype =
                self.geo.sb.feature_incompat & super::super::superblock::INCOMPAT_FILETYPE != 0;
            for &dir in &dirs {
                let rec = match records.get(&dir) {
                    Some(rec) => rec.clone(),
                    None => {
                        let mut rec = vec![0u8; isz as usize];
                        let at = self.inode_at(dir);
                        (self.read)(at, &mut rec).map_err(io("an inode"))?;
                        rec
                    }
                };
                let size = u64::from(get32(&rec, 0x04)) | u64::from(get32(&rec, 0x6C)) << 32;
                for n in 0..size.div_ceil(bs) {
                    let block = self.map_block(&rec, n)?;
                    if block == 0 {
                        continue;
                    }
                    if block >= self.new_blocks {
                        return Err(Stop::Error(Error::malformed(format!(
                            "internal error: directory {dir} still names block {block} past the new end"
                        ))));
                    }
                    let mut data = self.content(block)?;
                    let mut changed = false;
                    let mut pos = 0usize;
                    while pos + 8 <= data.len() {
                        let entry = get32(&data, pos);
                        let rec_len = usize::from(get16(&data, pos + 4));
                        let name_len = if filetype {
                            usize::from(data[pos + 6])
                        } else {
                            usize::from(get16(&data, pos + 6))
                        };
                        if rec_len < 8 || pos + rec_len > data.len() || 8 + name_len > rec_len {
                            return malformed(format!(
                                "directory inode {dir} has a damaged entry in block {block}"
                            ));
                        }
                        if let Some(&number) = numbers.get(&entry) {
                            put32(&mut data, pos, number);
                            changed = true;
                        }
                        pos += rec_len;
                    }
                    if changed {
                        self.set_content(block, data)?;
                    }
                }
            }
        }

        // Inode records at their (new) places.
        for (ino, rec) in &records {
            let number = numbers.get(ino).copied().unwrap_or(*ino);
            let at = self.inode_at(number);
            self.patch_bytes(at, rec)?;
        }

        // The resize inode no longer lists the dropped groups' reserved blocks.
        if self.geo.reserved_gdt > 0 {
            let resize = self.geo.resize_inode(&self.gdt, new_groups, 0);
            match resize.patches(&mut *self.read)? {
                Some(patches) => {
                    for (at, bytes) in patches {
                        if at + bytes.len() as u64 > self.new_blocks * bs {
                            return rewrite("its resize inode lies past the new end");
                        }
                        self.patch_bytes(at, &bytes)?;
                    }
                }
                None => return rewrite("its resize inode is not laid out as mke2fs lays it out"),
            }
        }

        // Bitmaps and group counts. The new last group pads its bitmap past the new end.
        let last = new_groups - 1;
        let in_last = self.new_blocks - self.geo.start(last);
        set_bits(self.block_bitmap(last)?, in_last, bs * 8, true);
        let bpg = self.geo.bpg;
        let in_group = |g: u64| if g == last { in_last } else { bpg };
        let zeros = |bitmap: &[u8], n: u64| (0..n).filter(|&i| !bit(bitmap, i)).count() as u64;
        let block_groups: Vec<u64> = self.block_bitmaps.keys().copied().collect();
        for g in block_groups {
            let bitmap = self.block_bitmaps[&g].clone();
            let free = zeros(&bitmap, in_group(g));
            put16(&mut self.gdt, (g * DESC) as usize + 0x0C, free as u16);
            let at = self.desc(g, 0);
            self.patch_bytes(at * bs, &bitmap)?;
        }
        for g in inode_groups_changed {
            let bitmap = inode_bitmaps[g as usize].clone();
            let desc = (g * DESC) as usize;
            put16(&mut self.gdt, desc + 0x0E, zeros(&bitmap, ipg) as u16);
            let dirs = u64::from(get16(&self.gdt, desc + 0x10)) + new_dirs[g as usize];
            put16(&mut self.gdt, desc + 0x10, dirs as u16);
            let at = self.desc(g, 4);
            self.patch_bytes(at * bs, &bitmap)?;
        }
        let sum = |field: usize| {
            (0..new_groups)
                .map(|g| u64::from(get16(&self.gdt, (g * DESC) as usize + field)))
                .sum::<u64>()
        };
        let free = (sum(0x0C), sum(0x0E));
        let mut gdt = self.gdt.clone();
        gdt[(new_groups * DESC) as usize..].fill(0);
        let copies =
            self.geo
                .superblock_copies(&mut sb_raw, &gdt, new_groups, self.new_blocks, free);
        for (at, bytes) in copies {
            self.patch_bytes(at, &bytes)?;
        }

        // The plan: unchanged blocks as moves (runs merged), changed ones as patches.
        let mut moves: Vec<Move> = Vec::new();
        for (&dst, &src) in &self.moved {
            match moves.last_mut() {
                Some(m) if m.dst + m.len == dst * bs && m.src + m.len == src * bs => m.len += bs,
                _ => moves.push(Move {
                    src: src * bs,
                    dst: dst * bs,
                    len: bs,
                }),
            }
        }
        let mut patches: Vec<Patch> = Vec::new();
        for (block, data) in std::mem::take(&mut self.dirty) {
            match patches.last_mut() {
                Some((at, bytes)) if *at + bytes.len() as u64 == block * bs => {
                    bytes.extend_from_slice(&data)
                }
                _ => patches.push((block * bs, data)),
            }
        }
        Ok(ShrinkPlan {
            fs_bytes: self.new_blocks * bs,
            moves,
            patches,
            groups: (old_groups, new_groups),
            inodes_used: u64::from(self.geo.sb.inodes_count).saturating_sub(free_inodes_before),
            renumbered_inodes: numbers.len() as u64,
            moved_blocks: self.relocated,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::fs::dir::DirSource;
    use crate::fs::ext::{Ext3Options, Outcome, write_ext3};
    use crate::fs::target::Target;

    /// Our writer's ext3 (4 KiB blocks, two groups) of a directory holding a 100 KB file
    /// (an indirect block) and a symlink.
    fn made() -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("d")).unwrap();
        std::fs::write(tree.join("d/f"), vec![5u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("d/f", tree.join("link")).unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let options = Ext3Options {
            size: 200 << 20,
            ..Default::default()
        };
        let mut source = DirSource::new(&tree).unwrap();
        let written = write_ext3(Target::at(&file, 0), &options, &mut source).unwrap();
        assert!(matches!(written, Outcome::Written(_)));
        (dir, file)
    }

    fn plan(file: &std::fs::File, size: u64) -> Result<Shrink> {
        plan_shrink(&mut |at, buf: &mut [u8]| file.read_exact_at(buf, at), size)
    }

    /// Byte offset of the first regular file's inode record.
    fn file_inode(file: &std::fs::File) -> u64 {
        let mut desc = [0u8; 32];
        file.read_exact_at(&mut desc, 4096).unwrap();
        let table = u64::from(get32(&desc, 8)) * 4096;
        (11..64)
            .map(|i| table + i * 256)
            .find(|&at| {
                let mut mode = [0u8; 2];
                file.read_exact_at(&mut mode, at).unwrap();
                u16::from_le_bytes(mode) & S_IFMT == S_IFREG
            })
            .unwrap()
    }

    #[test]
    fn a_clean_filesystem_shrinks_and_the_plan_stays_below_the_new_end() {
        let (_dir, file) = made();
        let Shrink::InPlace(plan) = plan(&file, 100 << 20).unwrap() else {
            panic!("not in place")
        };
        assert_eq!(plan.fs_bytes, 100 << 20);
        assert_eq!(plan.groups, (2, 1));
        // Our writer fills from the start: nothing to move or renumber.
        assert_eq!((plan.moved_blocks, plan.renumbered_inodes), (0, 0));
        assert!(
            plan.patches
                .iter()
                .all(|(at, b)| at + b.len() as u64 <= 100 << 20)
        );
        let sb = &plan.patches.iter().find(|p| p.0 == 0).unwrap().1[1024..2048];
        assert_eq!(get32(sb, 0x04), 25600, "block count");
        let mut old_sb = [0u8; 1024];
        file.read_exact_at(&mut old_sb, 1024).unwrap();
        assert_eq!(
            get32(sb, 0x00),
            get32(&old_sb, 0x28),
            "inode count of one group"
        );
    }

    #[test]
    fn damaged_or_foreign_filesystems_give_an_error_or_a_rewrite_never_a_panic() {
        // A block pointer past the end of the filesystem: an error naming the inode.
        let (_dir, file) = made();
        let at = file_inode(&file);
        file.write_all_at(&9_999_999u32.to_le_bytes(), at + I_BLOCK as u64)
            .unwrap();
        let err = plan(&file, 100 << 20).unwrap_err().to_string();
        assert!(err.contains("outside the filesystem"), "{err}");
        // A file mapped by extents: rewritten, with the reason.
        let (_dir, file) = made();
        let at = file_inode(&file);
        file.write_all_at(&EXTENTS_FL.to_le_bytes(), at + 0x20)
            .unwrap();
        assert!(
            matches!(plan(&file, 100 << 20).unwrap(), Shrink::Rewrite(w) if w.contains("extents"))
        );
        // An orphan list: rewritten.
        let (_dir, file) = made();
        file.write_all_at(&12u32.to_le_bytes(), 1024 + 0xE8)
            .unwrap();
        assert!(
            matches!(plan(&file, 100 << 20).unwrap(), Shrink::Rewrite(w) if w.contains("orphan"))
        );
        // An inode table outside its group: an error, not a read elsewhere.
        let (_dir, file) = made();
        file.write_all_at(&40_000u32.to_le_bytes(), 4096 + 8)
            .unwrap();
        let err = plan(&file, 100 << 20).unwrap_err().to_string();
        assert!(err.contains("inode table"), "{err}");
        // Sizes that drop nothing, or leave no room for a group.
        let (_dir, file) = made();
        assert!(matches!(
            plan(&file, 300 << 20).unwrap(),
            Shrink::Rewrite(_)
        ));
        assert!(matches!(plan(&file, 4096).unwrap(), Shrink::Rewrite(_)));
        // Not ext at all.
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        assert!(plan(&file, 1 << 19).is_err());
    }
}
