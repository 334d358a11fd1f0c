//! The JBD2 journal of an ext3/4 filesystem: what a recovery would write, computed without
//! writing anything.
//!
//! A job killed while the kernel wrote the overlay leaves committed transactions in the
//! journal (superblock flag `needs_recovery`). Recovery replays them the way the kernel's
//! `fs/jbd2/recovery.c` and e2fsck do, in three passes over the circular log that starts at
//! the journal superblock's `s_start` with transaction `s_sequence`:
//!
//! 1. **scan**: follow descriptor, commit and revoke blocks with consecutive sequence numbers
//!    to find the end of the log; a transaction without a (valid) commit block ends it and is
//!    dropped;
//! 2. **revoke**: collect the revoke records of the committed transactions (a block revoked
//!    in transaction T is not replayed from T or any earlier transaction);
//! 3. **replay**: for each tag of each descriptor block of each committed transaction, the
//!    newest copy of the block wins.
//!
//! The result ([`Replay`]) maps a filesystem block number to where its newest copy lies in
//! the journal (the data stays there: journals can be hundreds of MiB). The reader
//! ([`super::ExtFs`]) reads through it; `recover-overlay` writes it home.
//!
//! Every field is hostile: sizes, positions, counts and checksums are checked and a journal
//! that the kernel would refuse or report as corrupt is an error naming what is wrong. Where
//! the kernel would replay what it can and report an error (a data block whose checksum does
//! not match, a commit block whose checksum fails in a synchronous journal), we refuse the
//! whole replay: never half-applied.
//!
//! On-disk format (all big-endian): every metadata block starts with a 12-byte header
//! (`h_magic` 0xC03B3998, `h_blocktype`, `h_sequence`). The journal superblock is block 0
//! of the journal inode (inode 8 by default, `s_journal_inum`).

use std::collections::{BTreeMap, HashMap};

use super::superblock::{self, Superblock};
use super::{ExtFs, Inode};
use crate::error::{Error, Result};

/// `h_magic` of every journal metadata block.
pub(crate) const MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;

/// `s_feature_compat`: commit blocks carry a crc32 of the transaction (checksum v1).
const COMPAT_CHECKSUM: u32 = 0x1;
const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

/// Tag flags.
const FLAG_ESCAPE: u16 = 0x1;
const FLAG_SAME_UUID: u16 = 0x2;
const FLAG_LAST_TAG: u16 = 0x8;

/// `s_checksum_type` for checksum v2/v3.
const CHECKSUM_CRC32C: u8 = 4;
/// `h_chksum_type`/`h_chksum_size` of a checksum-v1 commit block.
const CHECKSUM_CRC32: u8 = 1;
const CHECKSUM_CRC32_SIZE: u8 = 4;

/// Journal superblock fields (offsets in `journal_superblock_t`).
const SB_BLOCKSIZE: usize = 0x0C;
const SB_MAXLEN: usize = 0x10;
const SB_FIRST: usize = 0x14;
const SB_SEQUENCE: usize = 0x18;
const SB_START: usize = 0x1C;
const SB_FEATURE_COMPAT: usize = 0x24;
const SB_FEATURE_INCOMPAT: usize = 0x28;
const SB_UUID: usize = 0x30;
const SB_CHECKSUM_TYPE: usize = 0x50;
const SB_CHECKSUM: usize = 0xFC;
/// Bytes of the journal superblock covered by its checksum.
const SB_LEN: usize = 1024;

/// Commit block fields.
const COMMIT_CHKSUM_TYPE: usize = 0x0C;
const COMMIT_CHKSUM_SIZE: usize = 0x0D;
const COMMIT_CHKSUM: usize = 0x10;
const COMMIT_SEC: usize = 0x30;

/// Revoke block: `r_count` (bytes used, header included) after the 12-byte header.
const REVOKE_COUNT: usize = 0x0C;
const REVOKE_RECORDS: usize = 0x10;
const HEADER: usize = 12;

/// Most distinct revoked blocks we track (a real journal revokes a few hundred).
const MAX_REVOKES: usize = 1 << 22;

/// The big-endian `u32` at `at`.
fn be32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| Error::malformed("ext journal: a block is shorter than its fields"))
}

fn be16(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| Error::malformed("ext journal: a block is shorter than its fields"))
}

fn be64(b: &[u8], at: usize) -> Result<u64> {
    Ok((be32(b, at)? as u64) << 32 | be32(b, at + 4)? as u64)
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::malformed(format!("ext journal: {what}"))
}

/// `a` is after `b` in transaction-ID order (IDs wrap around).
fn tid_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

// ---------------------------------------------------------------- checksums

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

const fn crc32_be_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32C: [u32; 256] = crc32c_table();
static CRC32_BE: [u32; 256] = crc32_be_table();

/// CRC32C (Castagnoli) continuing from `crc`, without the final inversion: the kernel's
/// `crc32c(seed, data)`, which jbd2 and ext4 checksums use with seed `!0`.
pub(crate) fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The kernel's big-endian `crc32_be(seed, data)` (checksum-v1 commit blocks).
fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32_BE[((crc >> 24) ^ b as u32) as usize] ^ (crc << 8);
    }
    crc
}

// ---------------------------------------------------------------- the replay

/// Where the newest committed copy of one filesystem block lies in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalCopy {
    /// Byte offset of the copy from the start of the filesystem.
    pub at: u64,
    /// The copy was escaped (its first 4 bytes were the journal magic, which the journal
    /// stores as zeros): reading it restores the magic.
    pub escaped: bool,
}

/// What a journal recovery writes: the newest copy of each replayed block, and the facts a
/// report gives.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Filesystem block number -> its newest copy in the journal.
    pub(crate) blocks: BTreeMap<u64, JournalCopy>,
    /// First transaction in the log (`s_sequence`).
    pub first_transaction: u32,
    /// Committed transactions replayed (those from `first_transaction` on).
    pub transactions: u32,
    /// Tags skipped because a later (or the same) transaction revoked their block.
    pub revoked_tags: u64,
    /// Revoke records in the committed transactions.
    pub revoke_records: u64,
    /// Byte offset of the journal superblock from the start of the filesystem.
    pub(crate) journal_superblock_at: u64,
    /// The journal superblock after recovery (`s_start` 0, `s_sequence` the next free
    /// transaction ID, checksum updated), as e2fsck leaves it: its first 1024 bytes.
    pub(crate) recovered_journal_superblock: Vec<u8>,
}

impl Replay {
    /// Number of distinct filesystem blocks the replay writes.
    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// The last committed transaction replayed (`None` when none was).
    pub fn last_transaction(&self) -> Option<u32> {
        (self.transactions > 0).then(|| self.first_transaction.wrapping_add(self.transactions - 1))
    }

    /// Replayed filesystem block numbers, ascending.
    pub fn block_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.keys().copied()
    }
}

/// The journal superblock, decoded and checked.
#[derive(Debug, Clone)]
struct JournalSb {
    raw: Vec<u8>,
    /// Log blocks `first..last` (the journal superblock is block 0).
    first: u32,
    last: u32,
    sequence: u32,
    start: u32,
    compat: u32,
    incompat: u32,
    csum_seed: u32,
}

impl JournalSb {
    fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    fn csum_v2or3(&self) -> bool {
        self.has(INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3)
    }

    /// Bytes per descriptor tag (`journal_tag_bytes`).
    fn tag_bytes(&self) -> usize {
        if self.has(INCOMPAT_CSUM_V3) {
            return 16;
        }
        let mut size = 12;
        if self.has(INCOMPAT_CSUM_V2) {
            size += 2;
        }
        if self.has(INCOMPAT_64BIT) {
            size
        } else {
            size - 4
        }
    }

    /// Bytes at the end of descriptor and revoke blocks taken by their checksum.
    fn tail_bytes(&self) -> usize {
        if self.csum_v2or3() { 4 } else { 0 }
    }

    fn decode(raw: Vec<u8>, block_size: u32, inode_blocks: u64) -> Result<JournalSb> {
        let blocktype = be32(&raw, 4)?;
        if be32(&raw, 0)? != MAGIC || !matches!(blocktype, SUPERBLOCK_V1 | SUPERBLOCK_V2) {
            return Err(malformed("no journal superblock (bad magic or block type)"));
        }
        let bs = be32(&raw, SB_BLOCKSIZE)?;
        if bs != block_size {
            return Err(malformed(format!(
                "journal block size {bs} differs from the filesystem's {block_size}"
            )));
        }
        let maxlen = be32(&raw, SB_MAXLEN)?;
        if maxlen as u64 > inode_blocks {
            return Err(malformed(format!(
                "the journal superblock claims {maxlen} blocks but the journal inode holds {inode_blocks}"
            )));
        }
        let first = be32(&raw, SB_FIRST)?;
        if first == 0 || first >= maxlen {
            return Err(malformed(format!(
                "first log block {first} is outside the {maxlen}-block journal"
            )));
        }
        let (compat, incompat) = if blocktype == SUPERBLOCK_V2 {
            (
                be32(&raw, SB_FEATURE_COMPAT)?,
                be32(&raw, SB_FEATURE_INCOMPAT)?,
            )
        } else {
            (0, 0)
        };
        let mut sb = JournalSb {
            first,
            last: maxlen,
            sequence: be32(&raw, SB_SEQUENCE)?,
            start: be32(&raw, SB_START)?,
            compat,
            incompat,
            csum_seed: 0,
            raw,
        };
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(Error::unsupported(format!(
                "ext journal: unknown incompatible journal features {:#x}",
                incompat & !INCOMPAT_KNOWN
            )));
        }
        if sb.has(INCOMPAT_FAST_COMMIT) {
            return Err(Error::unsupported(
                "ext journal: fast-commit journals are not supported (recover with e2fsck)",
            ));
        }
        if sb.has(INCOMPAT_CSUM_V2) && sb.has(INCOMPAT_CSUM_V3) {
            return Err(malformed("checksum v2 and v3 are both enabled"));
        }
        if sb.csum_v2or3() {
            if compat & COMPAT_CHECKSUM != 0 {
                return Err(malformed("checksum v1 and v2/v3 are both enabled"));
            }
            let kind = sb.raw.get(SB_CHECKSUM_TYPE).copied().unwrap_or(0);
            if kind != CHECKSUM_CRC32C {
                return Err(malformed(format!("unknown checksum type {kind}")));
            }
            if sb_checksum(&sb.raw)? != be32(&sb.raw, SB_CHECKSUM)? {
                return Err(malformed("journal superblock checksum mismatch"));
            }
            let uuid = sb
                .raw
                .get(SB_UUID..SB_UUID + 16)
                .ok_or_else(|| malformed("short"))?;
            sb.csum_seed = crc32c(!0, uuid);
        }
        if sb.start != 0 && (sb.start < sb.first || sb.start >= sb.last) {
            return Err(malformed(format!(
                "log start {} is outside log blocks {}..{}",
                sb.start, sb.first, sb.last
            )));
        }
        Ok(sb)
    }

    /// The superblock e2fsck leaves after recovering up to transaction `next` (exclusive):
    /// empty log, next transaction ID `next + 1` (the kernel skips one), checksum updated.
    fn recovered(&self, next: u32) -> Result<Vec<u8>> {
        let mut raw = self.raw[..SB_LEN].to_vec();
        raw[SB_SEQUENCE..SB_SEQUENCE + 4].copy_from_slice(&next.wrapping_add(1).to_be_bytes());
        raw[SB_START..SB_START + 4].copy_from_slice(&0u32.to_be_bytes());
        if self.csum_v2or3() {
            let sum = sb_checksum(&raw)?;
            raw[SB_CHECKSUM..SB_CHECKSUM + 4].copy_from_slice(&sum.to_be_bytes());
        }
        Ok(raw)
    }
}

/// crc32c of the journal superblock with its checksum field as zero.
fn sb_checksum(raw: &[u8]) -> Result<u32> {
    let sb = raw
        .get(..SB_LEN)
        .ok_or_else(|| malformed("short superblock"))?;
    let crc = crc32c(!0, &sb[..SB_CHECKSUM]);
    let crc = crc32c(crc, &[0; 4]);
    Ok(crc32c(crc, &sb[SB_CHECKSUM + 4..]))
}

/// The journal: its superblock and the inode holding it.
struct Log<'a, 'f> {
    fs: &'a ExtFs<'f>,
    inode: Inode,
    sb: JournalSb,
    bs: usize,
}

/// One committed (or being scanned) transaction: where its descriptor and revoke blocks are.
#[derive(Debug, Default)]
struct Transaction {
    descriptors: Vec<u32>,
    revokes: Vec<u32>,
}

impl Log<'_, '_> {
    /// Byte offset in the filesystem of log block `n`.
    fn location(&self, n: u64) -> Result<u64> {
        if n >= self.sb.last as u64 {
            return Err(malformed(format!(
                "log block {n} is beyond the {}-block journal",
                self.sb.last
            )));
        }
        let phys = self
            .fs
            .map_block(&self.inode, n)?
            .ok_or_else(|| malformed(format!("log block {n} is a hole in the journal inode")))?;
        if phys >= self.fs.geo.blocks {
            return Err(malformed(format!(
                "log block {n} maps to block {phys}, beyond the filesystem"
            )));
        }
        Ok(phys * self.bs as u64)
    }

    fn read(&self, n: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.location(n)?;
        self.fs.read_raw(buf, at, "journal block")
    }

    /// The log block after `n`, wrapping around the circular log once.
    fn next(&self, n: u64) -> u64 {
        let n = n + 1;
        self.wrap(n)
    }

    fn wrap(&self, n: u64) -> u64 {
        if n >= self.sb.last as u64 {
            n - (self.sb.last - self.sb.first) as u64
        } else {
            n
        }
    }

    /// Block-tail checksum of a descriptor or revoke block.
    fn tail_ok(&self, block: &[u8]) -> Result<bool> {
        if !self.sb.csum_v2or3() {
            return Ok(true);
        }
        let end = block.len() - 4;
        let crc = crc32c(self.sb.csum_seed, &block[..end]);
        Ok(crc32c(crc, &[0; 4]) == be32(block, end)?)
    }

    /// The commit block's own checksum (v2/v3).
    fn commit_ok(&self, block: &[u8]) -> Result<bool> {
        if !self.sb.csum_v2or3() {
            return Ok(true);
        }
        let crc = crc32c(self.sb.csum_seed, &block[..COMMIT_CHKSUM]);
        let crc = crc32c(crc, &[0; 4]);
        Ok(crc32c(crc, &block[COMMIT_CHKSUM + 4..]) == be32(block, COMMIT_CHKSUM)?)
    }

    /// The tags of a descriptor block: (flags, filesystem block, tag bytes).
    fn tags<'b>(&self, block: &'b [u8]) -> Result<Vec<(u16, u64, &'b [u8])>> {
        let tag_bytes = self.sb.tag_bytes();
        let size = block.len() - self.sb.tail_bytes();
        let mut at = HEADER;
        let mut out = Vec::new();
        while at + tag_bytes <= size {
            let tag = &block[at..at + tag_bytes];
            let flags = be16(block, at + 6)?;
            let mut nr = be32(tag, 0)? as u64;
            if self.sb.has(INCOMPAT_64BIT) {
                nr |= (be32(tag, 8)? as u64) << 32;
            }
            out.push((flags, nr, tag));
            at += tag_bytes;
            if flags & FLAG_SAME_UUID == 0 {
                at += 16;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Pass 1: the committed transactions from `s_start`, in order.
    fn scan(&self) -> Result<Vec<Transaction>> {
        let bs = self.bs;
        let log_len = (self.sb.last - self.sb.first) as u64;
        let mut block = vec![0u8; bs];
        let mut data = vec![0u8; bs];
        let mut next = self.sb.start as u64;
        let mut next_id = self.sb.sequence;
        let mut committed = Vec::new();
        let mut current = Transaction::default();
        let mut read_blocks = 0u64;
        let mut need_check_commit_time = false;
        let mut last_commit_time = 0u64;
        let mut end: Option<u32> = None;
        let mut crc32_sum = !0u32;
        let v1 = self.sb.compat & COMPAT_CHECKSUM != 0;
        loop {
            read_blocks += 1;
            if read_blocks > log_len + 1 {
                return Err(malformed(
                    "the log runs longer than the journal (it loops back on itself)",
                ));
            }
            let here = next;
            self.read(here, &mut block)?;
            next = self.next(here);
            if be32(&block, 0)? != MAGIC || be32(&block, 8)? != next_id {
                break;
            }
            match be32(&block, 4)? {
                DESCRIPTOR_BLOCK => {
                    if !self.tail_ok(&block)? {
                        need_check_commit_time = true;
                    }
                    let tags = self.tags(&block)?.len() as u64;
                    if v1 && !need_check_commit_time && end.is_none() {
                        crc32_sum = crc32_be(crc32_sum, &block);
                        for _ in 0..tags {
                            self.read(next, &mut data)?;
                            crc32_sum = crc32_be(crc32_sum, &data);
                            next = self.next(next);
                        }
                    } else {
                        next = self.wrap(next + tags);
                    }
                    read_blocks += tags;
                    current.descriptors.push(here as u32);
                }
                COMMIT_BLOCK => {
                    let commit_time = be64(&block, COMMIT_SEC)?;
                    if need_check_commit_time {
                        if commit_time >= last_commit_time {
                            return Err(malformed(format!(
                                "transaction {next_id}: a descriptor or revoke block fails its checksum"
                            )));
                        }
                        // A stale block of an older use of the journal: the log ends here.
                        break;
                    }
                    let mut checksum_ok = true;
                    if v1 {
                        if let Some(end) = end {
                            return Err(malformed(format!(
                                "transaction {end}: commit block checksum mismatch"
                            )));
                        }
                        let found = be32(&block, COMMIT_CHKSUM)?;
                        let kind = block[COMMIT_CHKSUM_TYPE];
                        let size = block[COMMIT_CHKSUM_SIZE];
                        checksum_ok = (found == crc32_sum
                            && kind == CHECKSUM_CRC32
                            && size == CHECKSUM_CRC32_SIZE)
                            || (kind == 0 && size == 0 && found == 0);
                        crc32_sum = !0;
                    }
                    if checksum_ok && !self.commit_ok(&block)? {
                        checksum_ok = false;
                    }
                    if !checksum_ok {
                        if commit_time < last_commit_time {
                            break;
                        }
                        if end.is_none() {
                            end = Some(next_id);
                        }
                        if !self.sb.has(INCOMPAT_ASYNC_COMMIT) {
                            return Err(malformed(format!(
                                "transaction {next_id}: commit block checksum mismatch"
                            )));
                        }
                    }
                    last_commit_time = commit_time;
                    if end.is_none() {
                        committed.push(std::mem::take(&mut current));
                    } else {
                        current = Transaction::default();
                    }
                    next_id = next_id.wrapping_add(1);
                }
                REVOKE_BLOCK => {
                    if !self.tail_ok(&block)? {
                        need_check_commit_time = true;
                    }
                    current.revokes.push(here as u32);
                }
                _ => break,
            }
        }
        Ok(committed)
    }

    /// Pass 2: block -> the newest transaction that revoked it.
    fn revokes(&self, transactions: &[Transaction]) -> Result<(HashMap<u64, u32>, u64)> {
        let mut revoked: HashMap<u64, u32> = HashMap::new();
        let mut records = 0u64;
        let mut block = vec![0u8; self.bs];
        let record_len = if self.sb.has(INCOMPAT_64BIT) { 8 } else { 4 };
        for (i, t) in transactions.iter().enumerate() {
            let id = self.sb.sequence.wrapping_add(i as u32);
            for &at in &t.revokes {
                self.read(at as u64, &mut block)?;
                let count = be32(&block, REVOKE_COUNT)? as usize;
                if count > self.bs - self.sb.tail_bytes() {
                    return Err(malformed(format!(
                        "transaction {id}: revoke block {at} claims {count} bytes of records"
                    )));
                }
                let mut off = REVOKE_RECORDS;
                while off + record_len <= count {
                    let nr = if record_len == 8 {
                        be64(&block, off)?
                    } else {
                        be32(&block, off)? as u64
                    };
                    off += record_len;
                    records += 1;
                    match revoked.get_mut(&nr) {
                        Some(seq) => {
                            if tid_gt(id, *seq) {
                                *seq = id;
                            }
                        }
                        None => {
                            if revoked.len() >= MAX_REVOKES {
                                return Err(malformed("too many revoke records"));
                            }
                            revoked.insert(nr, id);
                        }
                    }
                }
            }
        }
        Ok((revoked, records))
    }

    /// Pass 3: the newest copy of every block the committed transactions hold.
    fn replay(
        &self,
        transactions: &[Transaction],
        revoked: &HashMap<u64, u32>,
    ) -> Result<(BTreeMap<u64, JournalCopy>, u64)> {
        let mut blocks = BTreeMap::new();
        let mut hits = 0u64;
        let mut block = vec![0u8; self.bs];
        let mut data = vec![0u8; self.bs];
        let fs_blocks = self.fs.geo.blocks;
        for (i, t) in transactions.iter().enumerate() {
            let id = self.sb.sequence.wrapping_add(i as u32);
            for &at in &t.descriptors {
                self.read(at as u64, &mut block)?;
                if !self.tail_ok(&block)? {
                    return Err(malformed(format!(
                        "transaction {id}: descriptor block {at} fails its checksum"
                    )));
                }
                let mut log_block = at as u64;
                for (flags, nr, tag) in self.tags(&block)? {
                    log_block = self.next(log_block);
                    if revoked.get(&nr).is_some_and(|&r| !tid_gt(id, r)) {
                        hits += 1;
                        continue;
                    }
                    if nr >= fs_blocks {
                        return Err(malformed(format!(
                            "transaction {id}: a tag names block {nr}, beyond the filesystem's {fs_blocks} blocks"
                        )));
                    }
                    if self.sb.csum_v2or3() {
                        self.read(log_block, &mut data)?;
                        let crc = crc32c(self.sb.csum_seed, &id.to_be_bytes());
                        let crc = crc32c(crc, &data);
                        let ok = if self.sb.has(INCOMPAT_CSUM_V3) {
                            be32(tag, 12)? == crc
                        } else {
                            be16(tag, 4)? == crc as u16
                        };
                        if !ok {
                            return Err(malformed(format!(
                                "transaction {id}: the copy of block {nr} (log block {log_block}) fails its checksum"
                            )));
                        }
                    }
                    blocks.insert(
                        nr,
                        JournalCopy {
                            at: self.location(log_block)?,
                            escaped: flags & FLAG_ESCAPE != 0,
                        },
                    );
                }
            }
        }
        Ok((blocks, hits))
    }
}

/// Compute the replay of the journal of `fs` (opened without one), whose superblock is
/// `sb` (which needs recovery). An empty log (`s_start` 0) replays nothing.
pub(crate) fn compute(fs: &ExtFs<'_>, sb: &Superblock) -> Result<Replay> {
    if sb.feature_compat & superblock::COMPAT_HAS_JOURNAL == 0 || sb.journal_inum == 0 {
        let what = if sb.journal_dev != 0 || sb.journal_uuid != [0; 16] {
            "the journal is on an external device"
        } else {
            "needs recovery but has no journal inode"
        };
        return Err(Error::unsupported(format!("ext filesystem: {what}")));
    }
    let inode = fs
        .inode(sb.journal_inum)
        .map_err(|e| e.context(format!("ext journal: inode {}", sb.journal_inum)))?;
    if inode.file_type() != 0o100000 {
        return Err(malformed(format!(
            "journal inode {} is not a regular file",
            sb.journal_inum
        )));
    }
    let bs = fs.geo.block_size as usize;
    let inode_blocks = inode.size / bs as u64;
    let mut raw = vec![0u8; bs.max(SB_LEN)];
    let at = fs
        .map_block(&inode, 0)?
        .filter(|&b| b < fs.geo.blocks)
        .ok_or_else(|| malformed("the journal superblock block is missing"))?
        * bs as u64;
    fs.read_raw(&mut raw[..bs], at, "journal superblock")?;
    let jsb = JournalSb::decode(raw, bs as u32, inode_blocks)?;
    let jsb_block = at / bs as u64;
    if jsb_block == superblock::OFFSET as u64 / bs as u64 {
        return Err(malformed(
            "the journal superblock shares a block with the filesystem superblock",
        ));
    }
    let empty = jsb.start == 0;
    let log = Log {
        fs,
        inode,
        sb: jsb,
        bs,
    };
    let (transactions, revoked, revoke_records) = if empty {
        (Vec::new(), HashMap::new(), 0)
    } else {
        let transactions = log.scan()?;
        let (revoked, records) = log.revokes(&transactions)?;
        (transactions, revoked, records)
    };
    let (blocks, revoked_tags) = log.replay(&transactions, &revoked)?;
    let count = transactions.len() as u32;
    if blocks.contains_key(&jsb_block) {
        return Err(malformed(
            "a transaction overwrites the journal's own superblock",
        ));
    }
    Ok(Replay {
        blocks,
        first_transaction: log.sb.sequence,
        transactions: count,
        revoked_tags,
        revoke_records,
        journal_superblock_at: at,
        recovered_journal_superblock: log.sb.recovered(log.sb.sequence.wrapping_add(count))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc32_be_matches_the_bzip2_check_value() {
        assert_eq!(!crc32_be(!0, b"123456789"), 0xFC89_1918);
    }

    /// A v2 journal superblock: 1 KiB blocks, `maxlen` blocks, log from block 1.
    fn jsb(incompat: u32, maxlen: u32, start: u32) -> Vec<u8> {
        let mut raw = vec![0u8; 1024];
        let mut put = |at: usize, v: u32| raw[at..at + 4].copy_from_slice(&v.to_be_bytes());
        put(0, MAGIC);
        put(4, SUPERBLOCK_V2);
        put(SB_BLOCKSIZE, 1024);
        put(SB_MAXLEN, maxlen);
        put(SB_FIRST, 1);
        put(SB_SEQUENCE, 7);
        put(SB_START, start);
        put(SB_FEATURE_INCOMPAT, incompat);
        raw[SB_UUID..SB_UUID + 16].copy_from_slice(&[0xAB; 16]);
        if incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0 {
            raw[SB_CHECKSUM_TYPE] = CHECKSUM_CRC32C;
            let sum = sb_checksum(&raw).unwrap();
            raw[SB_CHECKSUM..SB_CHECKSUM + 4].copy_from_slice(&sum.to_be_bytes());
        }
        raw
    }

    fn decode_err(raw: Vec<u8>, inode_blocks: u64) -> String {
        JournalSb::decode(raw, 1024, inode_blocks)
            .expect_err("accepted")
            .to_string()
    }

    #[test]
    fn tag_sizes_follow_journal_tag_bytes() {
        let size = |incompat| {
            JournalSb::decode(jsb(incompat, 64, 0), 1024, 64)
                .unwrap()
                .tag_bytes()
        };
        assert_eq!(size(0), 8);
        assert_eq!(size(INCOMPAT_64BIT), 12);
        assert_eq!(size(INCOMPAT_CSUM_V2), 10);
        assert_eq!(size(INCOMPAT_CSUM_V2 | INCOMPAT_64BIT), 14);
        assert_eq!(size(INCOMPAT_CSUM_V3), 16);
        assert_eq!(size(INCOMPAT_CSUM_V3 | INCOMPAT_64BIT), 16);
    }

    #[test]
    fn hostile_journal_superblocks_are_refused_with_the_reason() {
        let mut raw = jsb(0, 64, 1);
        raw[0] = 0;
        assert!(decode_err(raw, 64).contains("no journal superblock"));
        assert!(
            JournalSb::decode(jsb(0, 64, 1), 4096, 64)
                .unwrap_err()
                .to_string()
                .contains("block size")
        );
        assert!(decode_err(jsb(0, 65, 1), 64).contains("journal inode holds 64"));
        let mut raw = jsb(0, 64, 1);
        raw[SB_FIRST..SB_FIRST + 4].copy_from_slice(&0u32.to_be_bytes());
        assert!(decode_err(raw, 64).contains("first log block 0"));
        assert!(decode_err(jsb(0, 64, 64), 64).contains("log start 64"));
        assert!(decode_err(jsb(INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3, 64, 1), 64).contains("both"));
        assert!(decode_err(jsb(0x100, 64, 1), 64).contains("unknown incompatible"));
        assert!(decode_err(jsb(INCOMPAT_FAST_COMMIT, 64, 1), 64).contains("fast-commit"));
        let mut raw = jsb(INCOMPAT_CSUM_V3, 64, 1);
        raw[SB_SEQUENCE] ^= 1;
        assert!(decode_err(raw, 64).contains("checksum mismatch"));
        let mut raw = jsb(INCOMPAT_CSUM_V3, 64, 1);
        raw[SB_CHECKSUM_TYPE] = 1;
        assert!(decode_err(raw, 64).contains("checksum type"));
        // Short buffers are errors, not panics.
        assert!(JournalSb::decode(vec![0; 10], 1024, 64).is_err());
    }

    #[test]
    fn the_recovered_superblock_empties_the_log_and_skips_one_id() {
        let sb = JournalSb::decode(jsb(INCOMPAT_CSUM_V3, 64, 5), 1024, 64).unwrap();
        let raw = sb.recovered(9).unwrap();
        assert_eq!(be32(&raw, SB_START).unwrap(), 0);
        assert_eq!(be32(&raw, SB_SEQUENCE).unwrap(), 10);
        assert_eq!(sb_checksum(&raw).unwrap(), be32(&raw, SB_CHECKSUM).unwrap());
        let again = JournalSb::decode(raw, 1024, 64).unwrap();
        assert_eq!((again.start, again.sequence), (0, 10));
    }

    #[test]
    fn transaction_ids_compare_across_the_wrap() {
        assert!(tid_gt(1, 0));
        assert!(tid_gt(0, u32::MAX));
        assert!(!tid_gt(5, 5));
        assert!(!tid_gt(u32::MAX, 0));
    }
}
