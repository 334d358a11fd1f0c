//! JBD2 journal replay against e2fsck.
//!
//! Dirty journals are built with `debugfs -w` (`jo` opens the journal, `jw -b BLOCKS FILE`
//! writes a transaction holding those blocks, `-r` adds revoke records, `-c` leaves the
//! transaction uncommitted, `jc` closes the journal without replaying it): each transaction
//! holds the blocks a debugfs change made on a scratch copy, so the committed state is a
//! consistent filesystem and `e2fsck -fy` has nothing to repair beyond the replay. Our
//! recovery ([`ExtFs::recovery_blocks`] / [`ExtFs::recovered_block`], what `recover-overlay`
//! writes) must equal what `e2fsck -fy` leaves, block for block, except for the superblock
//! fields e2fsck changes beyond the replay (see [`E2FSCK_OWN_FIELDS`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use sifovl::fs::ext::ExtFs;

use crate::ext::listing;
use crate::require_tool;
use crate::util::run_ok;

/// Superblock fields (offset in the superblock, length) that `e2fsck` sets itself when it
/// runs, whatever the journal held, and that our recovery leaves as the journal had them:
/// `s_wtime` (0x30, the write time e2fsck stamps when it flushes the superblock),
/// `s_mnt_count` (0x34, reset by a full check), `s_lastcheck` (0x40, the time of the check),
/// `s_kbytes_written` (0x178, e2fsck adds the kilobytes it wrote) and `s_checksum` (0x3FC,
/// which covers those). Everything else, in every block, must be equal.
pub const E2FSCK_OWN_FIELDS: &[(usize, usize)] =
    &[(0x30, 4), (0x34, 2), (0x40, 4), (0x178, 8), (0x3FC, 4)];

/// One transaction to put in the journal.
#[derive(Default, Clone)]
pub struct Txn {
    /// debugfs commands whose changes (on the state so far) the transaction holds.
    pub commands: Vec<String>,
    /// Raw blocks (number, first bytes; the rest zero) to write as well: free blocks, whose
    /// content e2fsck ignores, for revoke and escape cases.
    pub raw: Vec<(u64, Vec<u8>)>,
    /// Blocks to revoke.
    pub revoke: Vec<u64>,
    /// Leave the transaction without a commit block (a torn last transaction).
    pub torn: bool,
}

/// A fresh filesystem at `path`: `mke2fs` with `args`, with `upper/` and `work/`.
pub fn mkfs(path: &Path, args: &[&str], size_mib: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size_mib << 20).unwrap();
    drop(f);
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-E", "root_owner=0:0"])
            .args(args)
            .arg(path),
    );
    debugfs(path, &["mkdir upper", "mkdir work"]);
}

/// Run debugfs commands on `image` in one read-write session.
pub fn debugfs(image: &Path, commands: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cmds");
    std::fs::write(&script, commands.join("\n") + "\n").unwrap();
    let out = run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(image)
            .stderr(std::process::Stdio::piped()),
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("rror") && !text.contains("not open"),
        "debugfs {commands:?}: {text}"
    );
}

fn block_size(image: &[u8]) -> usize {
    1024 << u32::from_le_bytes(image[1024 + 0x18..1024 + 0x1C].try_into().unwrap())
}

/// Write `txns` into the journal of a copy of `base` (the journal opened with `jo
/// {jo_flags}`); returns the dirty image.
pub fn dirty_journal(dir: &Path, base: &Path, txns: &[Txn], jo_flags: &str) -> PathBuf {
    let dirty = dir.join("dirty.img");
    std::fs::copy(base, &dirty).unwrap();
    let mut state = std::fs::read(base).unwrap();
    let bs = block_size(&state);
    // One `jo`/`jc` per transaction: within one session, debugfs 1.47 starts the transaction
    // after one with revoke records on that one's commit block.
    let mut script = Vec::new();
    for (i, txn) in txns.iter().enumerate() {
        let next_path = dir.join(format!("state{i}.img"));
        std::fs::write(&next_path, &state).unwrap();
        if !txn.commands.is_empty() {
            let cmds: Vec<&str> = txn.commands.iter().map(String::as_str).collect();
            debugfs(&next_path, &cmds);
        }
        let mut next = std::fs::read(&next_path).unwrap();
        for (block, bytes) in &txn.raw {
            let at = *block as usize * bs;
            next[at..at + bs].fill(0);
            next[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let changed: Vec<usize> = (0..state.len() / bs)
            .filter(|&b| state[b * bs..(b + 1) * bs] != next[b * bs..(b + 1) * bs])
            .collect();
        let data_path = dir.join(format!("txn{i}.bin"));
        let mut data = Vec::new();
        for &b in &changed {
            data.extend_from_slice(&next[b * bs..(b + 1) * bs]);
        }
        std::fs::write(&data_path, &data).unwrap();
        let mut jw = String::from("jw");
        if !changed.is_empty() {
            let list: Vec<String> = changed.iter().map(|b| b.to_string()).collect();
            jw.push_str(&format!(" -b {}", list.join(",")));
        }
        if !txn.revoke.is_empty() {
            let list: Vec<String> = txn.revoke.iter().map(|b| b.to_string()).collect();
            jw.push_str(&format!(" -r {}", list.join(",")));
        }
        if txn.torn {
            jw.push_str(" -c");
        }
        if !changed.is_empty() {
            jw.push_str(&format!(" {}", data_path.display()));
        }
        script.push(format!("jo {jo_flags}"));
        script.push(jw);
        script.push("jc".into());
        if !txn.torn {
            state = next;
        }
    }
    let cmds: Vec<&str> = script.iter().map(String::as_str).collect();
    debugfs(&dirty, &cmds);
    dirty
}

/// The image as our recovery leaves it (what `recover-overlay` writes into the overlay).
pub fn recovered_by_us(dirty: &Path) -> Vec<u8> {
    let file = File::open(dirty).unwrap();
    let len = file.metadata().unwrap().len();
    let fs = ExtFs::open(&file, 0, len).unwrap();
    assert!(fs.needs_recovery());
    let mut bytes = std::fs::read(dirty).unwrap();
    let bs = fs.block_size() as usize;
    let mut buf = vec![0u8; bs];
    for b in fs.recovery_blocks() {
        fs.recovered_block(b, &mut buf).unwrap();
        bytes[b as usize * bs..(b as usize + 1) * bs].copy_from_slice(&buf);
    }
    bytes
}

/// The image as `e2fsck {args}` leaves a copy of it (exit 0 or 1: nothing left uncorrected).
pub fn recovered_by_e2fsck(dirty: &Path, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("e2fsck.img");
    std::fs::copy(dirty, &copy).unwrap();
    let out = Command::new("e2fsck")
        .args(args)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&copy).unwrap()
}

/// The superblock's free block and inode counts (`s_free_blocks_count` lo 0x0C and hi 0x158,
/// `s_free_inodes_count` 0x10). The kernel keeps them in the group descriptors and leaves the
/// superblock's copy stale while mounted, so after replaying a kernel-written journal
/// `e2fsck -fy` recomputes them in pass 5 ("Free blocks count wrong ... Fix? yes"): a repair
/// beyond the replay, which `e2fsck -E journal_only` does not make.
pub const KERNEL_STALE_COUNTS: &[(usize, usize)] = &[(0x0C, 4), (0x10, 4), (0x158, 4)];

/// Assert `ours` equals `theirs` block for block, [`E2FSCK_OWN_FIELDS`] excepted.
pub fn assert_same_blocks(ours: &[u8], theirs: &[u8], what: &str) {
    assert_same_blocks_except(ours, theirs, &[], what);
}

/// Assert `ours` equals `theirs` block for block, [`E2FSCK_OWN_FIELDS`] and the superblock
/// fields `extra` excepted.
pub fn assert_same_blocks_except(ours: &[u8], theirs: &[u8], extra: &[(usize, usize)], what: &str) {
    assert_eq!(ours.len(), theirs.len());
    let mask = |b: &[u8]| {
        let mut b = b.to_vec();
        for &(at, len) in E2FSCK_OWN_FIELDS.iter().chain(extra) {
            b[1024 + at..1024 + at + len].fill(0);
        }
        b
    };
    let (ours, theirs) = (mask(ours), mask(theirs));
    let bs = block_size(&ours);
    let differing: Vec<usize> = (0..ours.len() / bs)
        .filter(|&b| ours[b * bs..(b + 1) * bs] != theirs[b * bs..(b + 1) * bs])
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: blocks {differing:?} differ from e2fsck's recovery"
    );
}

/// The replayed view of `image` equals e2fsck's recovery, block for block, and its tree
/// equals the tree of e2fsck's result; returns the replayed listing.
fn check_against_e2fsck(dirty: &Path, what: &str) -> std::collections::BTreeMap<String, String> {
    check_against_e2fsck_except(dirty, &[], what)
}

/// [`check_against_e2fsck`], also excepting the superblock fields `extra` from the
/// comparison with `e2fsck -fy` (not from the one with `-E journal_only`).
fn check_against_e2fsck_except(
    dirty: &Path,
    extra: &[(usize, usize)],
    what: &str,
) -> std::collections::BTreeMap<String, String> {
    let ours = recovered_by_us(dirty);
    let theirs = recovered_by_e2fsck(dirty, &["-fy"]);
    assert_same_blocks_except(&ours, &theirs, extra, what);
    // The replay alone, without the checks: the same again.
    let journal_only = recovered_by_e2fsck(dirty, &["-E", "journal_only", "-y"]);
    assert_same_blocks(&ours, &journal_only, what);
    // And e2fsck -fn finds our result clean.
    let dir = tempfile::tempdir().unwrap();
    let ours_path = dir.path().join("ours.img");
    std::fs::write(&ours_path, &ours).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&ours_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: e2fsck -fn on our recovery: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The view through the journal lists what the recovered image lists.
    let file = File::open(dirty).unwrap();
    let view = ExtFs::open(&file, 0, ours.len() as u64).unwrap();
    let replayed = listing(&view, b"");
    let rfile = File::open(&ours_path).unwrap();
    let recovered = ExtFs::open(&rfile, 0, ours.len() as u64).unwrap();
    assert!(!recovered.needs_recovery());
    assert_eq!(replayed, listing(&recovered, b""), "{what}");
    replayed
}

fn write_cmd(dir: &Path, name: &str, len: usize, seed: u64, dest: &str) -> String {
    let host = dir.join(name);
    std::fs::write(&host, crate::util::noise(len, seed)).unwrap();
    format!("write {} {dest}", host.display())
}

/// The journal's log blocks, physical, in logical order (`bmap` in debugfs; `blocks` would
/// list the indirect blocks too).
fn journal_blocks(image: &Path) -> Vec<u64> {
    let bytes = std::fs::read(image).unwrap();
    let bs = block_size(&bytes);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cmds");
    // The journal inode's size is its block count times the block size.
    let stat = run_ok(
        Command::new("debugfs")
            .args(["-R", "stat <8>"])
            .arg(image)
            .stderr(std::process::Stdio::null()),
    );
    let stat = String::from_utf8_lossy(&stat);
    let size: usize = stat
        .split("Size: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("journal size");
    let cmds: String = (0..size / bs).map(|n| format!("bmap <8> {n}\n")).collect();
    std::fs::write(&script, cmds).unwrap();
    let out = run_ok(
        Command::new("debugfs")
            .arg("-f")
            .arg(&script)
            .arg(image)
            .stderr(std::process::Stdio::null()),
    );
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.starts_with("debugfs"))
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Rotate the journal's log by `k` blocks so that it starts `k` blocks before the end of
/// the journal and wraps around (a valid log: block positions are in no checksum).
fn rotate_log(image: &Path, k: u64) {
    let blocks = journal_blocks(image);
    let mut bytes = std::fs::read(image).unwrap();
    let bs = block_size(&bytes);
    let jsb = blocks[0] as usize * bs;
    let be = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as u64;
    let (maxlen, first, start) = (
        be(&bytes, jsb + 0x10),
        be(&bytes, jsb + 0x14),
        be(&bytes, jsb + 0x1C),
    );
    assert_eq!(start, first, "debugfs starts the log at s_first");
    let len = maxlen - first;
    let log: Vec<Vec<u8>> = (first..maxlen)
        .map(|n| {
            let at = blocks[n as usize] as usize * bs;
            bytes[at..at + bs].to_vec()
        })
        .collect();
    for (i, block) in log.iter().enumerate() {
        let n = first + (i as u64 + len - k) % len;
        let at = blocks[n as usize] as usize * bs;
        bytes[at..at + bs].copy_from_slice(block);
    }
    let new_start = (first + len - k) as u32;
    bytes[jsb + 0x1C..jsb + 0x20].copy_from_slice(&new_start.to_be_bytes());
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn one_transaction_replays_like_e2fsck_and_shows_a_file_only_in_the_journal() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    mkfs(&base, &["-t", "ext3", "-b", "4096"], 16);
    let txn = Txn {
        commands: vec![write_cmd(
            dir.path(),
            "p",
            10_000,
            1,
            "upper/journal-only.bin",
        )],
        ..Txn::default()
    };
    let dirty = dirty_journal(dir.path(), &base, &[txn], "");
    let file = File::open(&dirty).unwrap();
    let len = file.metadata().unwrap().len();
    let raw = ExtFs::open_unreplayed(&file, 0, len).unwrap();
    assert!(!listing(&raw, b"").contains_key("/upper/journal-only.bin"));
    let view = check_against_e2fsck(&dirty, "one transaction");
    assert!(view.contains_key("/upper/journal-only.bin"), "{view:?}");
    let fs = ExtFs::open(&file, 0, len).unwrap();
    let replay = fs.replay().unwrap();
    assert_eq!(replay.transactions, 1);
    assert_eq!(fs.replayed_blocks(), replay.block_count());
    assert!(replay.block_count() >= 4);
}

/// Several transactions rewriting the same metadata (newest copy wins), one spanning
/// several descriptor blocks, a torn last one, on 1 KiB blocks.
fn several_transactions(dir: &Path, mkfs_args: &[&str], jo_flags: &str) -> PathBuf {
    let base = dir.join("base.img");
    mkfs(&base, mkfs_args, 8);
    let txns = vec![
        Txn {
            commands: vec![write_cmd(dir, "a", 3000, 2, "upper/a")],
            ..Txn::default()
        },
        Txn {
            commands: vec![
                "mkdir upper/d".into(),
                write_cmd(dir, "b", 300_000, 3, "upper/d/b"),
            ],
            ..Txn::default()
        },
        Txn {
            commands: vec!["rm upper/a".into(), "symlink upper/l /etc/passwd".into()],
            ..Txn::default()
        },
        Txn {
            commands: vec![write_cmd(dir, "c", 5000, 4, "upper/torn")],
            torn: true,
            ..Txn::default()
        },
    ];
    dirty_journal(dir, &base, &txns, jo_flags)
}

const EXT3_1K: &[&str] = &["-t", "ext3", "-b", "1024"];

#[test]
fn several_transactions_and_a_torn_one_replay_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = several_transactions(dir.path(), EXT3_1K, "");
    let view = check_against_e2fsck(&dirty, "several transactions");
    assert!(view.contains_key("/upper/d/b") && view.contains_key("/upper/l"));
    assert!(
        !view.contains_key("/upper/a"),
        "deleted in a later transaction"
    );
    assert!(
        !view.contains_key("/upper/torn"),
        "torn transaction replayed"
    );
    let file = File::open(&dirty).unwrap();
    let fs = ExtFs::open(&file, 0, file.metadata().unwrap().len()).unwrap();
    assert_eq!(fs.replay().unwrap().transactions, 3);
}

#[test]
fn a_log_that_wraps_around_the_journal_replays_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = several_transactions(dir.path(), EXT3_1K, "");
    let before = recovered_by_us(&dirty);
    // Start the log 7 blocks before the end of the journal: it wraps inside the second
    // transaction's data.
    rotate_log(&dirty, 7);
    let view = check_against_e2fsck(&dirty, "wrapped log");
    assert!(view.contains_key("/upper/d/b"));
    // Same filesystem as the unrotated log gives (the journal superblock aside).
    let after = recovered_by_us(&dirty);
    let jsb = journal_blocks(&dirty)[0] as usize * 1024;
    let differing: Vec<usize> = (0..before.len() / 1024)
        .filter(|&b| before[b * 1024..(b + 1) * 1024] != after[b * 1024..(b + 1) * 1024])
        .filter(|&b| b * 1024 != jsb)
        .collect();
    let log: std::collections::HashSet<u64> = journal_blocks(&dirty).into_iter().collect();
    assert!(
        differing.iter().all(|&b| log.contains(&(b as u64))),
        "outside the journal, blocks {differing:?} differ"
    );
}

/// Free blocks written, revoked and rewritten; a block that starts with the journal magic
/// (stored escaped).
fn revokes_and_escapes(dir: &Path, mkfs_args: &[&str], jo_flags: &str) -> PathBuf {
    let base = dir.join("base.img");
    mkfs(&base, mkfs_args, 32);
    let bytes = std::fs::read(&base).unwrap();
    let bs = block_size(&bytes) as u64;
    let blocks = bytes.len() as u64 / bs;
    // Free blocks near the end of the filesystem (mke2fs leaves them unused).
    let (x, y, z, e) = (blocks - 3, blocks - 5, blocks - 7, blocks - 9);
    let mut magic = 0xC03B_3998u32.to_be_bytes().to_vec();
    magic.extend_from_slice(b"escaped block");
    let txns = vec![
        Txn {
            commands: vec![write_cmd(dir, "f1", 20_000, 5, "upper/f1")],
            raw: vec![(x, b"x from t1".to_vec()), (y, b"y from t1".to_vec())],
            ..Txn::default()
        },
        Txn {
            raw: vec![(z, b"z from t2".to_vec()), (e, magic)],
            revoke: vec![x],
            ..Txn::default()
        },
        Txn {
            commands: vec![write_cmd(dir, "f2", 7_000, 6, "upper/f2")],
            raw: vec![(x, b"x from t3".to_vec())],
            revoke: vec![y, z],
            ..Txn::default()
        },
        Txn {
            raw: vec![(y, b"y from the torn t4".to_vec())],
            torn: true,
            ..Txn::default()
        },
    ];
    dirty_journal(dir, &base, &txns, jo_flags)
}

fn check_revokes(dirty: &Path, what: &str) {
    let view = check_against_e2fsck(dirty, what);
    assert!(
        view.contains_key("/upper/f1") && view.contains_key("/upper/f2"),
        "{what}: {view:?}\n{}",
        String::from_utf8_lossy(
            &Command::new("debugfs")
                .args(["-R", "logdump"])
                .arg(dirty)
                .output()
                .unwrap()
                .stdout
        )
    );
    let ours = recovered_by_us(dirty);
    let bs = block_size(&ours);
    let blocks = ours.len() / bs;
    let block = |b: usize| &ours[b * bs..(b + 1) * bs];
    assert!(block(blocks - 3).starts_with(b"x from t3"), "{what}: x");
    assert!(
        block(blocks - 5).iter().all(|&b| b == 0),
        "{what}: y revoked, torn t4 dropped"
    );
    assert!(
        block(blocks - 7).iter().all(|&b| b == 0),
        "{what}: z revoked"
    );
    assert!(
        block(blocks - 9).starts_with(&0xC03B_3998u32.to_be_bytes()),
        "{what}: escape"
    );
    let file = File::open(dirty).unwrap();
    let fs = ExtFs::open(&file, 0, ours.len() as u64).unwrap();
    let replay = fs.replay().unwrap();
    assert_eq!(replay.transactions, 3, "{what}");
    assert_eq!(replay.revoke_records, 3, "{what}");
    assert!(replay.revoked_tags >= 3, "{what}: {}", replay.revoked_tags);
}

#[test]
fn revokes_escapes_and_a_torn_transaction_replay_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = revokes_and_escapes(dir.path(), &["-t", "ext3", "-b", "4096"], "");
    check_revokes(&dirty, "ext3, no checksums");
}

#[test]
fn sixty_four_bit_checksum_v3_journals_replay_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = revokes_and_escapes(
        dir.path(),
        &["-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum"],
        "-c",
    );
    check_revokes(&dirty, "64bit, metadata_csum, journal checksum v3");
}

#[test]
fn checksum_v2_journals_replay_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = revokes_and_escapes(
        dir.path(),
        &["-t", "ext4", "-b", "1024", "-O", "64bit,metadata_csum"],
        "-c -v 2",
    );
    check_revokes(&dirty, "64bit, journal checksum v2, 1 KiB blocks");
}

/// `jo -c` without metadata_csum enables the old checksum (v1: a crc32 of each
/// transaction's descriptor and data blocks in its commit block).
#[test]
fn checksum_v1_journals_replay_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = several_transactions(dir.path(), &["-t", "ext3", "-b", "2048"], "-c");
    let view = check_against_e2fsck(&dirty, "checksum v1");
    assert!(view.contains_key("/upper/d/b") && !view.contains_key("/upper/torn"));
}

/// debugfs sums a transaction's revoke blocks into its v1 checksum, the kernel does not:
/// e2fsck calls such a transaction corrupt and stops replaying there; we refuse.
#[test]
fn a_v1_checksum_mismatch_is_refused_where_e2fsck_calls_the_transaction_corrupt() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = revokes_and_escapes(dir.path(), &["-t", "ext3", "-b", "2048"], "-c");
    let file = File::open(&dirty).unwrap();
    let err = ExtFs::open(&file, 0, file.metadata().unwrap().len())
        .err()
        .expect("a corrupt transaction accepted")
        .to_string();
    assert!(
        err.contains("transaction 2: commit block checksum mismatch"),
        "{err}"
    );
    let copy = dir.path().join("e2fsck.img");
    std::fs::copy(&dirty, &copy).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fy")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Journal transaction 2 was corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Flip one byte of the image at `at`.
fn flip(image: &Path, at: usize) {
    let mut bytes = std::fs::read(image).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn corrupt_journals_are_refused_with_a_reason() {
    require_tool!("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let dirty = revokes_and_escapes(
        dir.path(),
        &["-t", "ext4", "-b", "4096", "-O", "64bit,metadata_csum"],
        "-c",
    );
    let log = journal_blocks(&dirty);
    let open_err = |path: &Path| {
        let file = File::open(path).unwrap();
        match ExtFs::open(&file, 0, file.metadata().unwrap().len()) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e.to_string(),
        }
    };
    // A data block copy of the first transaction (after its descriptor at s_first = 1).
    let c = dir.path().join("data.img");
    std::fs::copy(&dirty, &c).unwrap();
    flip(&c, log[2] as usize * 4096 + 100);
    let err = open_err(&c);
    assert!(err.contains("fails its checksum"), "{err}");
    // The journal superblock.
    std::fs::copy(&dirty, &c).unwrap();
    flip(&c, log[0] as usize * 4096 + 0x40);
    let err = open_err(&c);
    assert!(err.contains("journal superblock checksum"), "{err}");
    // The first descriptor block.
    std::fs::copy(&dirty, &c).unwrap();
    flip(&c, log[1] as usize * 4096 + 200);
    let err = open_err(&c);
    assert!(err.contains("checksum"), "{err}");
}

/// `needs_recovery` set over an empty log (`s_start` 0): nothing to replay; e2fsck clears the
/// flag and advances the journal's sequence by one, and so do we.
#[test]
fn needs_recovery_with_an_empty_log_recovers_like_e2fsck() {
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let dirty = dir.path().join("flagged.img");
    mkfs(&dirty, &["-t", "ext3", "-b", "4096"], 16);
    debugfs(&dirty, &["feature needs_recovery"]);
    let file = File::open(&dirty).unwrap();
    let fs = ExtFs::open(&file, 0, file.metadata().unwrap().len()).unwrap();
    assert!(fs.needs_recovery());
    assert_eq!(fs.replayed_blocks(), 0);
    assert_eq!(fs.replay().unwrap().transactions, 0);
    check_against_e2fsck(&dirty, "empty log");
}

/// Build a filesystem with `mkfs_args`, mount it (loop, `commit=600` so nothing is
/// checkpointed on its own), write, delete (revoke records) and sync in four transactions,
/// and copy the image while it is still mounted: a journal as the kernel leaves it when the
/// job is killed. `None` when this machine cannot loop-mount (not root, no loop devices).
fn kernel_dirty_journal(dir: &Path, mkfs_args: &str) -> Option<PathBuf> {
    let image = dir.join("kernel.img");
    let dirty = dir.join("kernel-dirty.img");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let f = File::create(&image).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("mke2fs -q -F {mkfs_args} \"$0\"",))
            .arg(&image),
    );
    let mounted = Command::new("mount")
        .args(["-o", "loop,commit=600"])
        .arg(&image)
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        return None;
    }
    let script = r#"set -e
m="$1"; img="$2"; dirty="$3"
mkdir -p "$m/upper/k"
head -c 3000000 /dev/urandom > "$m/upper/k/big"; sync
for i in $(seq 1 30); do head -c $((i*1500)) /dev/urandom > "$m/upper/k/f$i"; done; sync
rm "$m/upper/k/big"; sync
mkdir "$m/upper/k/d"; for i in $(seq 1 10); do echo $i > "$m/upper/k/d/n$i"; done
ln -s f1 "$m/upper/k/link"; sync
cp "$img" "$dirty"
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&mnt)
        .arg(&image)
        .arg(&dirty)
        .output()
        .unwrap();
    let unmounted = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(unmounted.success(), "umount {}", mnt.display());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dirty)
}

/// Optional (needs root and loop devices): journals written by the kernel's jbd2, ext3 and
/// ext4 with 64bit and checksum v3.
#[test]
fn kernel_written_dirty_journals_replay_like_e2fsck() {
    require_tool!("e2fsck");
    for mkfs_args in ["-t ext3", "-t ext4 -O metadata_csum,64bit"] {
        let dir = tempfile::tempdir().unwrap();
        let Some(dirty) = kernel_dirty_journal(dir.path(), mkfs_args) else {
            eprintln!("SKIPPED: cannot loop-mount here (needs root and loop devices)");
            return;
        };
        let file = File::open(&dirty).unwrap();
        let fs = ExtFs::open(&file, 0, file.metadata().unwrap().len()).unwrap();
        let replay = fs.replay().expect("the copy needs recovery");
        assert!(
            replay.transactions >= 3,
            "{mkfs_args}: {}",
            replay.transactions
        );
        let view = check_against_e2fsck_except(&dirty, KERNEL_STALE_COUNTS, mkfs_args);
        assert!(view.contains_key("/upper/k/d/n10") && view.contains_key("/upper/k/link"));
        assert!(!view.contains_key("/upper/k/big"), "{mkfs_args}");
    }
}
