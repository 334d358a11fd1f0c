//! Crash safety: an edit stopped at any instant leaves, once recovered, exactly the old file
//! or exactly the new one. Four ways of stopping it:
//!
//! * an abort injected before each durable step in turn (`SIFOVL_FAULT_AT`), whose count is
//!   asserted so that a lost fault point fails the test;
//! * the recovery of each of those states itself stopped at each of its steps in turn, by
//!   `sifovl recover` and by the automatic recovery of `inspect` and `verify`;
//! * SIGKILL at random instants over the edit's duration, which must land both before and
//!   after the commit and at least once while a journal exists;
//! * power loss: the edit's durable operations are recorded (`SIFOVL_RECORD_IO`) and
//!   replayed cut at every sync, with the writes that no sync covered dropped, or a random
//!   subset of them kept in a random order (what a page cache that was never flushed may
//!   leave), then recovered.
//!
//! Abort and SIGKILL keep the page cache, so only the power-loss replay can see a missing
//! or misordered fsync.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sifovl::journal::{journal_path, pending};

use crate::ocisif::{scratch, simulate_writable_run};
use crate::require_tool;
use crate::sifcheck;
use crate::util::{run_ok, sifovl};

/// A fixed SOURCE_DATE_EPOCH makes every run write the same bytes (seal stamps it).
fn edit_command(args: &[&str], work: &Path) -> Command {
    let mut cmd = sifovl();
    cmd.args(args)
        .arg(work)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    cmd
}

/// Whether `out` is a run stopped by fault injection.
fn aborted(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("fault injection")
}

/// Whether the edit run `out` was stopped by fault injection; any failure else fails the test.
fn edit_aborted(out: &Output, what: &str) -> bool {
    let stopped = aborted(out);
    assert!(
        stopped || out.status.success(),
        "{what}: failed for another reason: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stopped
}

/// Whether the journal beside `work` is committed (the edit must then recover as new).
fn journal_committed(work: &Path) -> Option<bool> {
    // The state byte follows the 16-byte magic (src/journal.rs: 1 prepared, 2 committed).
    let journal = std::fs::read(journal_path(work)).ok()?;
    Some(journal[16] == 2)
}

fn assert_no_journal(work: &Path, what: &str) {
    assert!(!pending(work), "{what}: journal left behind");
    let tmp = journal_path(work).with_extension("sifovl-journal-tmp");
    assert!(!tmp.exists(), "{what}: temporary journal left behind");
}

/// What one command's crash tests saw.
#[derive(Debug, Default)]
struct Seen {
    steps: u64,
    /// Runs of recover / inspect / verify stopped by a fault while recovering.
    interrupted_recoveries: u64,
    kills: u64,
    killed_old: u64,
    killed_new: u64,
    killed_with_journal: u64,
    /// Power-loss replays: cuts at a sync, replays, and how many recovered to old and new.
    power_cuts: usize,
    power_replays: usize,
    power_old: usize,
    power_new: usize,
}

/// Recover the state a fault left at `work` by running `reader` with an abort before its
/// step 1, then (on what that left) before its step 2, and so on until one run completes;
/// then a plain `recover`. The result must be what the journal promised. Returns the number
/// of interrupted runs.
fn recover_interrupted(work: &Path, reader: &[&str], expect: &[u8], what: &str) -> u64 {
    let mut interrupted = 0;
    for m in 1.. {
        let out = sifovl()
            .args(reader)
            .arg(work)
            .env("SIFOVL_FAULT_AT", m.to_string())
            .output()
            .unwrap();
        if !aborted(&out) {
            // Its verdict on the image is not the point (a dirty overlay fails `verify`):
            // it ended by itself, not by a signal.
            assert!(
                out.status.code().is_some(),
                "{what}, {reader:?} with a fault at {m}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        interrupted += 1;
        assert!(m < 10_000, "runaway recovery");
    }
    run_ok(sifovl().arg("recover").arg(work));
    assert_no_journal(work, what);
    assert!(
        std::fs::read(work).unwrap() == expect,
        "{what}: recovery stopped at each of its steps in turn ({interrupted} runs) did not give the file the journal promised"
    );
    interrupted
}

/// Stop the edit before every durable step in turn (which must number `expected_steps`),
/// recover each state with its recovery stopped at every step, then kill the edit at random
/// times.
fn assert_crash_safe(old: &[u8], args: &[&str], expected_steps: u64, random_trials: u64) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("image.sif");
    // The new state: the same edit, uninterrupted.
    std::fs::write(&work, old).unwrap();
    let started = Instant::now();
    run_ok(&mut edit_command(args, &work));
    let duration = started.elapsed();
    let new = std::fs::read(&work).unwrap();
    assert_ne!(new, old, "{args:?} changed nothing");
    let mut seen = Seen::default();

    for n in 1.. {
        // `write` keeps the inode, which the journal records.
        std::fs::write(&work, old).unwrap();
        let what = format!("{args:?} stopped before step {n}");
        let out = edit_command(args, &work)
            .env("SIFOVL_FAULT_AT", n.to_string())
            .output()
            .unwrap();
        if !edit_aborted(&out, &what) {
            assert!(
                std::fs::read(&work).unwrap() == new,
                "{what}: completed, not new"
            );
            assert_no_journal(&work, &what);
            seen.steps = n - 1;
            break;
        }
        assert!(n < 10_000, "runaway");
        // Recovery stopped at each of its steps after every fault, except for long edits
        // (resize's 87 steps): the chains grow with the square of the steps, so those
        // get them after every `stride`-th fault and a plain recovery after the others.
        let stride = (expected_steps / 15).max(1);
        match journal_committed(&work) {
            // Cycle the recovering command: `recover` itself, and the recovery every
            // command does on open.
            Some(committed) if n % stride == 0 => {
                let reader: &[&str] = match n % 3 {
                    0 => &["recover"],
                    1 => &["inspect"],
                    _ => &["verify"],
                };
                let expect = if committed { &new } else { old };
                seen.interrupted_recoveries += recover_interrupted(&work, reader, expect, &what);
            }
            promise => {
                run_ok(sifovl().arg("recover").arg(&work));
                assert_no_journal(&work, &what);
                let got = std::fs::read(&work).unwrap();
                match promise {
                    Some(committed) => assert!(
                        got == if committed { &new } else { old },
                        "{what}: recovery did not give the file the journal promised"
                    ),
                    None => assert!(got == old || got == new, "{what}: neither old nor new"),
                }
            }
        }
    }
    assert_eq!(
        seen.steps, expected_steps,
        "{args:?}: the number of durable steps changed (a fault point lost or added?)"
    );

    // SIGKILL at random instants across the edit's duration (process start to exit). The
    // edit must be seen killed before and after its commit and while a journal exists: if
    // the planned trials miss one of these, more are run (up to four times as many), with
    // the span widened while no kill has landed after the commit (a loaded machine runs
    // the edit slower than the timed run), narrowed while none has landed before it, and
    // the kill timed on the journal's appearance while none has landed during the edit.
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut span = duration.as_micros().max(1000) as u64;
    while seen.kills < random_trials
        || (seen.kills < 4 * random_trials
            && (seen.killed_old == 0 || seen.killed_new == 0 || seen.killed_with_journal == 0))
    {
        std::fs::write(&work, old).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if seen.kills >= random_trials {
            if seen.killed_new == 0 {
                span = span * 5 / 4;
            } else if seen.killed_old == 0 {
                span = (span * 4 / 5).max(1000);
            }
        }
        let mut child = edit_command(args, &work)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if seen.kills >= random_trials && seen.killed_with_journal == 0 {
            // The journal's window (prepare to unlink) can be a few milliseconds of a
            // long edit, which random instants keep missing on a loaded machine: watch
            // for the journal and kill as it appears, or after twice the span.
            let deadline = Instant::now() + Duration::from_micros(2 * span);
            while !pending(&work) && Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        } else {
            std::thread::sleep(Duration::from_micros(seed % span));
        }
        let _ = child.kill();
        let _ = child.wait();
        seen.kills += 1;
        if pending(&work) {
            seen.killed_with_journal += 1;
        }
        run_ok(sifovl().arg("recover").arg(&work));
        assert_no_journal(&work, "after a random kill");
        let got = std::fs::read(&work).unwrap();
        if got == old {
            seen.killed_old += 1;
        } else if got == new {
            seen.killed_new += 1;
        } else {
            panic!("{args:?}: killed at a random time: file is neither old nor new");
        }
    }
    assert!(
        seen.killed_old > 0 && seen.killed_new > 0 && seen.killed_with_journal > 0,
        "{args:?}: random kills did not cover the edit: {seen:?}"
    );
    (seen.power_cuts, seen.power_old, seen.power_new) = power_loss(old, &new, args);
    seen.power_replays = seen.power_old + seen.power_new;
    // The figures of docs/reliability.md.
    eprintln!("{args:?}: {seen:?}");
    seen
}

/// A 64 MiB ext3 overlay file made by the library (what `add --from` takes).
fn overlay_file(dir: &Path) -> PathBuf {
    let overlay = dir.join("overlay.ext3");
    sifovl::fs::overlay::create_ext3_overlay(
        &overlay,
        &sifovl::fs::overlay::CreateOverlay {
            size_mib: 64,
            create_dirs: vec![],
            uid: 0,
            gid: 0,
            ..Default::default()
        },
    )
    .unwrap();
    overlay
}

#[test]
fn slow_add_is_crash_safe() {
    let (dir, image) = scratch("sample.oci.sif");
    let overlay = overlay_file(dir.path());
    let old = std::fs::read(&image).unwrap();
    let from = format!("--from={}", overlay.display());
    // 24 steps: the prepared journal (write, sync, rename, dir sync); the overlay copied
    // straight to its final place past the old end, its head staged (4 chunks holding
    // data, each a fault point), then synced (1); the committed journal (4); applying it
    // (the head copied into place, the JSON blobs, the descriptor table: 6); sync, cut to
    // length, sync, unlink the journal, dir sync.
    assert_crash_safe(&old, &["add", "--sparse", &from], 24, 120);
}

#[test]
fn slow_add_of_a_new_overlay_is_crash_safe() {
    // The writer's path: SOURCE_DATE_EPOCH (set by `assert_crash_safe`) fixes the new
    // overlay's times, UUID and hash seed, so every run writes the same bytes. Every write
    // of the writer is a fault point.
    let (dir, image) = scratch("sample.oci.sif");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/file"), vec![5u8; 200_000]).unwrap();
    std::os::unix::fs::symlink("d/file", tree.join("link")).unwrap();
    let old = std::fs::read(&image).unwrap();
    let from_dir = format!("--from-dir={}", tree.display());
    // 29 steps: the prepared journal (4); the writer's writes to the overlay's place and
    // its staged head (9: journal, file data, inode tables, directories, bitmaps, group
    // descriptors, superblock); the sync, the committed journal (4), applying it (the head
    // copied into place, the JSON blobs, the descriptor table: 6), sync, cut, sync,
    // unlink, dir sync.
    assert_crash_safe(
        &old,
        &["add", "--sparse", "--size", "64", &from_dir],
        29,
        60,
    );
}

#[test]
fn slow_native_add_is_crash_safe() {
    // `--from`: an overlay made by the ext3 writer gets a random UUID and hash seed, so
    // two runs never write the same bytes and "new" would have no single value.
    let (dir, image) = scratch("sample.sif");
    let overlay = overlay_file(dir.path());
    let old = std::fs::read(&image).unwrap();
    let from = format!("--from={}", overlay.display());
    // 19 steps: the prepared journal (4), the overlay copied in place (3 chunks holding
    // data) and synced (1), the committed journal (4), applying (the descriptor table),
    // sync, cut, sync, unlink, dir sync.
    assert_crash_safe(&old, &["add", "--sparse", &from], 19, 60);
}

#[test]
fn slow_add_dropping_cosign_entries_is_crash_safe() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("signed.oci.sif");
    crate::ocisif::cosign_signed_image(&image);
    let overlay = overlay_file(dir.path());
    let from = format!("--from={}", overlay.display());
    let old = std::fs::read(&image).unwrap();
    // The edit under test is the one that drops the signature entry and its blobs.
    let copy = dir.path().join("copy.oci.sif");
    std::fs::write(&copy, &old).unwrap();
    let out = sifovl()
        .args(["add", "--sparse", &from])
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("removed 1 cosign"),
        "{err}"
    );
    // 24 steps, the same count as the plain add above: the entry and its blobs leave in
    // the same kinds of writes (the index and the descriptor table rewritten).
    assert_crash_safe(&old, &["add", "--sparse", &from], 24, 60);
}

#[test]
fn slow_reconcile_is_crash_safe() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    simulate_writable_run(&image, &["mkdir /upper/newdir"]);
    let old = std::fs::read(&image).unwrap();
    // 13 steps: no staging, so no prepared journal; the committed journal (4), applying
    // (the new config, manifest and index blobs, the descriptor table), sync, cut, sync,
    // unlink, dir sync.
    assert_crash_safe(&old, &["reconcile"], 13, 150);
}

#[test]
fn slow_seal_is_crash_safe() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let payload = dir.path().join("payload");
    std::fs::write(&payload, vec![7u8; 200_000]).unwrap();
    simulate_writable_run(
        &image,
        &[
            &format!("write {} /upper/payload", payload.display()),
            "mkdir /upper/d",
        ],
    );
    let old = std::fs::read(&image).unwrap();
    // 30 steps: the prepared journal (4), the squashfs writer's writes into the staging
    // area (superblock, data and metadata blocks, tables), sync, the committed journal
    // (4), applying (the squashfs copied over the ext3 layer, the blobs, the descriptor
    // table), sync, cut, sync, unlink, dir sync.
    assert_crash_safe(&old, &["seal"], 30, 100);
}

/// Change the overlay partition of a native SIF as a `--writable` run would (debugfs).
fn native_writable_run(image: &Path, debugfs_commands: &str) {
    let mut bytes = std::fs::read(image).unwrap();
    let overlay = sifcheck::parse(&bytes).objects.last().unwrap().clone();
    let range = overlay.offset as usize..(overlay.offset + overlay.size) as usize;
    let dir = tempfile::tempdir().unwrap();
    let ext3 = dir.path().join("overlay.img");
    std::fs::write(&ext3, &bytes[range.clone()]).unwrap();
    let script = dir.path().join("cmds");
    std::fs::write(&script, debugfs_commands).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(&ext3),
    );
    bytes[range].copy_from_slice(&std::fs::read(&ext3).unwrap());
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn slow_native_seal_is_crash_safe() {
    require_tool!("debugfs");
    let (dir, image) = scratch("sample.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let payload = dir.path().join("payload");
    std::fs::write(&payload, vec![5u8; 150_000]).unwrap();
    native_writable_run(
        &image,
        &format!(
            "write {} /upper/payload\nmkdir /upper/d\n",
            payload.display()
        ),
    );
    let old = std::fs::read(&image).unwrap();
    // The zero-then-copy path: the ext3 partition is deleted, the squashfs placed at its
    // offset in the same group, the rest of the old partition zeroed, the file cut.
    assert_crash_safe(&old, &["seal"], 27, 60);
}

#[test]
fn slow_remove_overlay_is_crash_safe() {
    // 14 steps on an OCI-SIF (the ext3 layer and its blobs zeroed, new JSON blobs), 11 on a
    // native SIF (the partition zeroed, the descriptor table).
    for (sample, steps) in [("sample.oci.sif", 14), ("sample.sif", 11)] {
        let (_dir, image) = scratch(sample);
        run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
        let old = std::fs::read(&image).unwrap();
        assert_crash_safe(&old, &["remove-overlay"], steps, 30);
    }
}

#[test]
fn slow_recover_overlay_is_crash_safe() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image, _) = crate::recover_overlay::dirty_overlay_image();
    let old = std::fs::read(&image).unwrap();
    // 23 steps: the replayed ext3 journal's blocks written in place through the edit.
    assert_crash_safe(&old, &["recover-overlay"], 23, 100);
}

#[test]
fn slow_resize_is_crash_safe() {
    let (dir, image) = scratch("sample.oci.sif");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/file"), vec![3u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("d/file", tree.join("link")).unwrap();
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--size", "80", "--from-dir"])
            .arg(&tree)
            .arg(&image),
    );
    let old = std::fs::read(&image).unwrap();
    // Growing in place, 31 steps: the file extended (a hole) for the grown overlay, then
    // the commit writes the metadata patches (superblocks, descriptor tables, bitmaps of
    // the new groups) and the JSON objects.
    assert_crash_safe(&old, &["resize", "--size", "200"], 31, 40);
    // Shrinking in place, 20 steps: nothing lies past the new end of this overlay (our
    // writer fills from the start), so only metadata and the JSON objects are written.
    assert_crash_safe(&old, &["resize", "--size", "64"], 20, 40);
}

#[test]
fn slow_shrinking_in_place_is_crash_safe() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    // An overlay whose content lies past the new end: its blocks move below it (copied at
    // commit from where they are, which stays intact until the file is cut) and the
    // inodes of the dropped groups get new numbers.
    let (dir, image) = scratch("sample.oci.sif");
    let fs = crate::shrink::mke2fs_spread_overlay(dir.path(), 16);
    run_ok(sifovl().args(["add", "--from"]).arg(&fs).arg(&image));
    std::fs::remove_file(&fs).unwrap();
    let old = std::fs::read(&image).unwrap();
    // 224 steps: mostly the moved blocks' runs (each copy a fault point) and the patched
    // metadata blocks (inode tables, directories, bitmaps, descriptor-table copies, the
    // resize inode's blocks), each written at commit.
    assert_crash_safe(&old, &["resize", "--size", "64"], 224, 40);
}

// ---------------------------------------------------------------- power loss

/// One durable operation recorded by `SIFOVL_RECORD_IO` (see `sifovl::journal::record`).
#[derive(Debug, Clone)]
enum Io {
    Write(String, u64, Vec<u8>),
    SetLen(String, u64),
    Sync(String),
    Create(String),
    Rename(String, String),
    Unlink(String),
    SyncDir,
}

fn parse_io_log(data: &[u8]) -> Vec<Io> {
    let mut ops = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = pos + data[pos..].iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&data[pos..end]).unwrap().to_string();
        pos = end + 1;
        let f: Vec<&str> = line.split('\t').collect();
        let s = |i: usize| f[i].to_string();
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        ops.push(match f[0] {
            "write" => {
                let len = n(3) as usize;
                pos += len;
                Io::Write(s(1), n(2), data[pos - len..pos].to_vec())
            }
            // A punched hole (or written zeros): the range reads as zeros.
            "zero" => Io::Write(s(1), n(2), vec![0; n(3) as usize]),
            "set_len" => Io::SetLen(s(1), n(2)),
            "sync" => Io::Sync(s(1)),
            "create" => Io::Create(s(1)),
            "rename" => Io::Rename(s(1), s(2)),
            "unlink" => Io::Unlink(s(1)),
            "sync_dir" => Io::SyncDir,
            other => panic!("unknown recorded operation {other}"),
        });
    }
    ops
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A change of the directory: a name bound to a new file (by its number), renamed, removed.
enum NameOp<'a> {
    Create(&'a str, usize),
    Rename(&'a str, &'a str),
    Unlink(&'a str),
}

/// What survives a power loss after the operations `ops`: each file keeps the operations
/// up to its last sync, the directory the name changes up to its last sync. With `rng`, a
/// random subset of each file's unsynced operations survives too, in a random order, and a
/// random prefix of the unsynced name changes (a journaling filesystem keeps those in
/// order). Returns each surviving name's content. The image (file 0, at `image`) existed
/// before with content `image_old`.
fn survivors(
    ops: &[Io],
    image: &str,
    image_old: &[u8],
    mut rng: Option<&mut Rng>,
) -> HashMap<String, Vec<u8>> {
    // Per file: its operations and how many of them the last sync covered.
    let mut files: Vec<(Vec<&Io>, usize)> = vec![(Vec::new(), 0)];
    let mut names: Vec<NameOp> = Vec::new();
    let mut names_synced = 0;
    // The file each path meant when the operation ran.
    let mut live: HashMap<&str, usize> = HashMap::from([(image, 0)]);
    for op in ops {
        match op {
            Io::Write(p, ..) | Io::SetLen(p, _) => files[live[p.as_str()]].0.push(op),
            Io::Sync(p) => {
                let file = &mut files[live[p.as_str()]];
                file.1 = file.0.len();
            }
            Io::Create(p) => {
                files.push((Vec::new(), 0));
                live.insert(p, files.len() - 1);
                names.push(NameOp::Create(p, files.len() - 1));
            }
            Io::Rename(from, to) => {
                let file = live.remove(from.as_str()).unwrap();
                live.insert(to, file);
                names.push(NameOp::Rename(from, to));
            }
            Io::Unlink(p) => {
                live.remove(p.as_str());
                names.push(NameOp::Unlink(p));
            }
            Io::SyncDir => names_synced = names.len(),
        }
    }
    let kept_names = match rng.as_deref_mut() {
        Some(r) => names_synced + (r.next() as usize % (names.len() - names_synced + 1)),
        None => names_synced,
    };
    let mut durable: HashMap<&str, usize> = HashMap::from([(image, 0)]);
    for op in &names[..kept_names] {
        match *op {
            NameOp::Create(p, file) => {
                durable.insert(p, file);
            }
            NameOp::Rename(from, to) => {
                let file = durable.remove(from).expect("renamed a missing name");
                durable.insert(to, file);
            }
            NameOp::Unlink(p) => {
                durable.remove(p);
            }
        }
    }
    let mut out = HashMap::new();
    for (name, file) in durable {
        let (list, synced) = &files[file];
        let mut chosen: Vec<&Io> = list[..*synced].to_vec();
        if let Some(r) = rng.as_deref_mut() {
            let mut rest: Vec<&Io> = list[*synced..]
                .iter()
                .copied()
                .filter(|_| r.next() % 2 == 0)
                .collect();
            for i in (1..rest.len()).rev() {
                rest.swap(i, r.next() as usize % (i + 1));
            }
            chosen.extend(rest);
        }
        let mut content = if file == 0 {
            image_old.to_vec()
        } else {
            Vec::new()
        };
        for op in chosen {
            match op {
                Io::Write(_, at, bytes) => {
                    let end = *at as usize + bytes.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[*at as usize..end].copy_from_slice(bytes);
                }
                Io::SetLen(_, len) => content.resize(*len as usize, 0),
                _ => unreachable!(),
            }
        }
        out.insert(name.to_string(), content);
    }
    out
}

/// Write `content` over `path` in place (the journal records the image's inode), leaving
/// all-zero blocks as holes.
fn write_in_place(path: &Path, content: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(content.len() as u64).unwrap();
    for (i, chunk) in content.chunks(1 << 16).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            file.write_all_at(chunk, (i << 16) as u64).unwrap();
        }
    }
}

/// Record the edit `args` of `old` (whose result is `new`), then for every sync in it, cut
/// the record there, keep what a power loss keeps, recover, and check the file is old or
/// new (and new once the whole edit is replayed). Returns the cuts replayed and how many
/// recovered to old and new.
fn power_loss(old: &[u8], new: &[u8], args: &[&str]) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    let work = dir_path.join("image.sif");
    let log = dir_path.join("io.log");
    std::fs::write(&work, old).unwrap();
    run_ok(edit_command(args, &work).env("SIFOVL_RECORD_IO", &log));
    assert!(
        std::fs::read(&work).unwrap() == new,
        "{args:?}: recorded run differs"
    );
    let ops = parse_io_log(&std::fs::read(&log).unwrap());
    let image = work.display().to_string();
    let journal = journal_path(&work);
    let tmp = journal.with_extension("sifovl-journal-tmp");
    assert!(
        ops.iter()
            .any(|op| matches!(op, Io::Write(p, ..) if *p == image)),
        "{args:?}: nothing recorded for the image"
    );
    // Cut after every sync, and at the very end.
    let cuts: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Io::Sync(_) | Io::SyncDir))
        .map(|(i, _)| i + 1)
        .chain([ops.len()])
        .collect();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let (mut saw_old, mut saw_new, mut replays) = (0, 0, 0);
    for &cut in &cuts {
        // One replay with every unsynced operation dropped, three with random survivors.
        for variant in 0..4 {
            let state = survivors(&ops[..cut], &image, old, (variant > 0).then_some(&mut rng));
            write_in_place(&work, &state[&image]);
            for path in [&journal, &tmp] {
                match state.get(&path.display().to_string()) {
                    Some(content) => std::fs::write(path, content).unwrap(),
                    None => {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            let what = format!(
                "{args:?}: power loss after {cut} of {} operations (variant {variant})",
                ops.len()
            );
            let out = sifovl().arg("recover").arg(&work).output().unwrap();
            assert!(
                out.status.success(),
                "{what}: recover failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_no_journal(&work, &what);
            let got = std::fs::read(&work).unwrap();
            replays += 1;
            if got == old {
                saw_old += 1;
            } else if got == new {
                saw_new += 1;
            } else {
                panic!("{what}: file is neither old nor new");
            }
            if cut == ops.len() && variant == 0 {
                assert!(got == new, "{what}: the whole edit replayed is not new");
            }
        }
    }
    eprintln!(
        "{args:?}: power loss: {} operations, {} cuts, {replays} replays: {saw_old} old, {saw_new} new",
        ops.len(),
        cuts.len()
    );
    (cuts.len(), saw_old, saw_new)
}
