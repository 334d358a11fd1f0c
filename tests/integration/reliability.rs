//! Faults of a real system (issue 16): a signal in the middle of a long command, a full
//! disk at many points of an edit, two processes on one image, and an image whose file
//! metadata and symlink must survive an in-place edit. After each, the image is the old
//! one or the new one, nothing is left beside it (no temporary file, no journal), and the
//! command said what happened in one line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ocisif::simulate_writable_run;
use crate::require_tool;
use crate::util::{run_ok, sifovl};

fn sha(path: &Path) -> String {
    crate::sifcheck::sha256(&std::fs::read(path).unwrap())
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A small tmpfs mounted for a test, unmounted on drop: a disk that runs out of space.
pub(crate) struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A `mib` MiB tmpfs; `None` (the test is skipped) when not root, outside CI.
    pub(crate) fn mount(mib: u64) -> Option<SmallDisk> {
        if !rustix::process::geteuid().is_root() {
            assert!(
                !crate::util::under_ci(),
                "mounting a small tmpfs needs root under CI"
            );
            eprintln!("SKIPPED: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        std::fs::create_dir(&path).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&path),
        );
        Some(SmallDisk { path, _dir: dir })
    }

    /// Fill the disk with a file `filler` until `free_kib` KiB are left.
    pub(crate) fn fill_to(&self, free_kib: u64) {
        let filler = self.path.join("filler");
        let _ = std::fs::remove_file(&filler);
        let stat = rustix::fs::statvfs(&self.path).unwrap();
        let available = stat.f_bavail * stat.f_frsize;
        let fill = available.saturating_sub(free_kib << 10);
        let f = std::fs::File::create(&filler).unwrap();
        // Real blocks (tmpfs has no fallocate beyond size), written once.
        let chunk = vec![1u8; 1 << 20];
        let mut written = 0;
        while written < fill {
            let n = (fill - written).min(chunk.len() as u64) as usize;
            if std::io::Write::write_all(&mut &f, &chunk[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
    }

    /// Remove the filler.
    pub(crate) fn unfill(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

impl SmallDisk {
    /// Run `cmd` with the path of a new image on this disk appended, when only `free_kib`
    /// KiB are left: see [`new_file_or_nothing`]; a new image must pass `verify`, and is
    /// removed again.
    pub(crate) fn write_new_image(
        &self,
        free_kib: u64,
        cmd: &mut Command,
        what: &str,
    ) -> &'static str {
        self.fill_to(free_kib);
        let out = self.path.join("out.oci.sif");
        let result = cmd.arg(&out).output().unwrap();
        let outcome = new_file_or_nothing(self, "out.oci.sif", &result, what);
        if outcome == "new" {
            run_ok(sifovl().arg("verify").arg(&out));
            std::fs::remove_file(&out).unwrap();
        }
        outcome
    }
}

/// What a command that writes a new file (`OUT`) did on a disk `free_kib` KiB from full:
/// it succeeded, leaving `OUT` and nothing else, or failed with one line saying the disk is
/// full, leaving nothing at all. Returns "new" or "ENOSPC, nothing left".
pub(crate) fn new_file_or_nothing(
    disk: &SmallDisk,
    out_name: &str,
    out: &std::process::Output,
    what: &str,
) -> &'static str {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    disk.unfill();
    let left = names(&disk.path);
    match out.status.code() {
        Some(0) => {
            assert_eq!(
                left,
                BTreeSet::from([out_name.to_string()]),
                "{what}: succeeded, so only {out_name}"
            );
            "new"
        }
        Some(2) => {
            assert!(left.is_empty(), "{what}: failed but left {left:?}: {err}");
            assert!(err.contains("No space left"), "{what}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
            "ENOSPC, nothing left"
        }
        other => panic!("{what}: {other:?} {err}"),
    }
}

/// Random bytes (xorshift), incompressible enough to make sealing take a while.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An OCI-SIF whose overlay holds `payload_mib` MiB of noise in several files.
pub(crate) fn image_with_payload(dir: &Path, payload_mib: usize) -> PathBuf {
    let image = dir.join("image.oci.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &image).unwrap();
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--size", "128"])
            .arg(&image),
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut commands = Vec::new();
    for i in 0..payload_mib.div_ceil(4) {
        let file = scratch.path().join(format!("part{i}"));
        std::fs::write(&file, noise(4 << 20, i as u64 + 1)).unwrap();
        commands.push(format!("write {} /upper/part{i}", file.display()));
    }
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    simulate_writable_run(&image, &commands);
    image
}

/// Send `signal` to a running `args` on `image` after `delay`; returns the exit code and
/// stderr.
fn signalled(args: &[&str], image: &Path, signal: i32, delay: Duration) -> (Option<i32>, String) {
    let child = sifovl()
        .args(args)
        .arg(image)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(
        pid,
        rustix::process::Signal::from_named_raw(signal).unwrap(),
    );
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_signal_during_seal_or_reconcile_leaves_the_image_old_or_new_and_nothing_behind() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let original = image_with_payload(dir.path(), 24);
    let old = sha(&original);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let image = work.join("image.oci.sif");
    for args in [&["seal"][..], &["reconcile"]] {
        // The uninterrupted run: its time and its result.
        std::fs::copy(&original, &image).unwrap();
        let started = Instant::now();
        run_ok(
            sifovl()
                .args(args)
                .arg(&image)
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        );
        let took = started.elapsed();
        let new = sha(&image);
        let (mut stopped, mut finished) = (0, 0);
        for (i, signal) in [2, 15, 2, 15, 2, 15, 2, 15].into_iter().enumerate() {
            std::fs::copy(&original, &image).unwrap();
            let delay = took.mul_f64((i as f64 + 0.5) / 8.0);
            let mut cmd_args = args.to_vec();
            cmd_args.push("--json");
            let (code, stderr) = signalled(&cmd_args, &image, signal, delay);
            let got = sha(&image);
            match code {
                Some(0) => {
                    finished += 1;
                    assert_eq!(got, new, "{args:?}: finished, so new");
                }
                Some(130) => {
                    stopped += 1;
                    assert_eq!(got, old, "{args:?}: stopped, so old");
                    assert!(stderr.contains("interrupted by a signal"), "{stderr}");
                    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
                }
                // Killed by the signal itself: it came before the handlers were installed
                // (a loaded machine starts the process slowly), so before the edit began.
                None => {
                    assert_eq!(got, old, "{args:?}: killed at start, so old");
                }
                other => panic!("{args:?} signal {signal} after {delay:?}: {other:?} {stderr}"),
            }
            assert_eq!(
                names(&work),
                BTreeSet::from(["image.oci.sif".to_string()]),
                "{args:?}: something left beside the image"
            );
            assert!(!sifovl::journal::pending(&image));
        }
        eprintln!(
            "{args:?}: {took:?} uninterrupted; signals stopped {stopped}, {finished} finished"
        );
        assert!(stopped > 0, "{args:?}: no signal landed during the work");
    }
}

#[test]
fn a_signal_during_import_leaves_no_output() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let image = image_with_payload(dir.path(), 24);
    run_ok(sifovl().arg("seal").arg(&image));
    let layout = dir.path().join("layout");
    run_ok(
        sifovl()
            .args(["export", "--layer-format", "tar"])
            .arg(&image)
            .arg(&layout),
    );
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("new.sif");
    let started = Instant::now();
    run_ok(sifovl().arg("import").arg(&layout).arg(&out));
    let took = started.elapsed();
    std::fs::remove_file(&out).unwrap();
    let mut stopped = 0;
    for i in 0..4 {
        let mut child = sifovl()
            .arg("import")
            .arg(&layout)
            .arg(&out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64((i as f64 + 0.5) / 5.0));
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let status = child.wait().unwrap();
        if status.code() == Some(130) {
            stopped += 1;
            assert!(names(&out_dir).is_empty(), "{:?}", names(&out_dir));
        } else {
            assert!(status.success());
            run_ok(sifovl().arg("verify").arg(&out));
            std::fs::remove_file(&out).unwrap();
        }
    }
    assert!(stopped > 0, "no signal landed during the import");
}

#[test]
fn two_processes_on_one_image_never_both_write() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let image = image_with_payload(dir.path(), 24);
    // In sync, so a reader that comes before the seal takes its lock sees an image that
    // verifies (the writable run left the overlay's digest stale).
    run_ok(sifovl().arg("reconcile").arg(&image));
    for _attempt in 0..5 {
        let old = sha(&image);
        let mut seal = sifovl()
            .arg("seal")
            .arg(&image)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut refused, mut readers) = (0, 0);
        loop {
            if seal.try_wait().unwrap().is_some() {
                break;
            }
            // A second editor is refused while the first holds the lock...
            let out = sifovl()
                .args(["add", "--sparse"])
                .arg(&image)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                // The seal had released its lock (it is exiting): the add came after it.
                break;
            }
            if seal.try_wait().unwrap().is_none() {
                // Refused for holding no lock ("in use"), or, before the seal took it, for the
                // overlay it found: never a write.
                assert_eq!(out.status.code(), Some(2), "{err}");
                assert!(
                    err.contains("in use") || err.contains("already exists"),
                    "{err}"
                );
                refused += usize::from(err.contains("in use"));
            }
            // ...and a reader sees the old image or the new one, or is told to wait.
            let out = sifovl().arg("verify").arg(&image).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            match out.status.code() {
                Some(0) => readers += 1,
                Some(2) if err.contains("in use") => {}
                other => panic!("verify during an edit: {other:?} {err}"),
            }
        }
        let sealed = seal.wait_with_output().unwrap();
        if !sealed.status.success() {
            // A reader or the second editor took the lock before the seal did: the seal is
            // the one refused, clearly, with nothing written. Try the race again.
            let err = String::from_utf8_lossy(&sealed.stderr);
            assert!(err.contains("in use"), "seal: {err}");
            assert_eq!(sha(&image), old, "a refused seal changed the image");
            continue;
        }
        assert_ne!(sha(&image), old);
        run_ok(sifovl().arg("verify").arg(&image));
        assert!(refused > 0, "the edit ended before a second one was tried");
        eprintln!("concurrent add refused {refused} times; {readers} reads completed");
        return;
    }
    panic!("the seal lost the race for its lock 5 times in a row");
}

#[test]
fn a_full_disk_at_any_point_leaves_the_image_old_or_new() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = image_with_payload(dir.path(), 8);
    let mnt = disk.path.clone();
    let image = mnt.join("image.oci.sif");
    let mut outcomes = std::collections::BTreeMap::new();
    // The overlay is mostly holes: copy it as such (a plain copy onto tmpfs fills them).
    let copy = |source: &Path| {
        run_ok(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(source)
                .arg(&image),
        );
    };
    // `add` of a fixed overlay (the same bytes every time) holding 4 MiB of noise.
    let plain = crate::ocisif::sample("sample.oci.sif");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("noise"), noise(4 << 20, 7)).unwrap();
    let overlay = dir.path().join("overlay.ext3");
    sifovl::fs::overlay::create_ext3_overlay(
        &overlay,
        &sifovl::fs::overlay::CreateOverlay {
            size_mib: 64,
            from_dir: Some(tree),
            fixed: Some(sifovl::fs::overlay::Fixed {
                uuid: [7; 16],
                hash_seed: [9; 16],
                time: 1_700_000_000,
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let from = format!("--from={}", overlay.display());
    for (source, args) in [
        (source.as_path(), &["seal"][..]),
        (&source, &["reconcile"]),
        (&source, &["remove-overlay"]),
        (&plain, &["add", "--sparse", &from]),
    ] {
        let copy = || copy(source);
        // The new state, with room to spare.
        copy();
        let old = sha(&image);
        run_ok(
            sifovl()
                .args(args)
                .arg(&image)
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        );
        let new = sha(&image);
        for free_kib in [0u64, 4, 16, 64, 256, 1024, 4096, 12288, 20480] {
            disk.unfill();
            copy();
            disk.fill_to(free_kib);
            let out = sifovl()
                .args(args)
                .arg(&image)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            disk.unfill();
            // Recovery, if any was needed, happens on the next open.
            run_ok(sifovl().arg("recover").arg(&image));
            let got = sha(&image);
            let outcome = match out.status.code() {
                Some(0) => {
                    assert_eq!(got, new, "{args:?} {free_kib} KiB free: succeeded, so new");
                    "new"
                }
                // Out of space past the commit point: the edit is committed, and the
                // next open (here `recover`) completes it.
                Some(2) if err.contains("it is committed") => {
                    assert_eq!(got, new, "{args:?} {free_kib} KiB free: committed, so new");
                    assert!(err.contains("No space left"), "{args:?}: {err}");
                    "ENOSPC after the commit point, new after recovery"
                }
                Some(2) => {
                    assert_eq!(
                        got, old,
                        "{args:?} {free_kib} KiB free: failed, so old: {err}"
                    );
                    assert!(err.contains("No space left"), "{args:?}: {err}");
                    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
                    "ENOSPC, old"
                }
                other => panic!("{args:?} {free_kib} KiB free: {other:?} {err}"),
            };
            assert_eq!(
                names(&mnt),
                BTreeSet::from(["image.oci.sif".to_string()]),
                "{args:?} {free_kib} KiB free: something left beside the image"
            );
            outcomes.insert(format!("{args:?} with {free_kib} KiB free"), outcome);
        }
    }
    eprintln!("{outcomes:#?}");
    assert!(outcomes.values().any(|o| *o == "ENOSPC, old"));
    assert!(outcomes.values().any(|o| *o == "new"));
}

#[test]
fn a_full_disk_during_import_leaves_the_output_whole_or_absent() {
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    // An OCI layout of about 8 MiB (a sealed overlay of noise), on the roomy disk.
    let dir = tempfile::tempdir().unwrap();
    let image = image_with_payload(dir.path(), 8);
    run_ok(sifovl().arg("seal").arg(&image));
    let layout = dir.path().join("layout");
    run_ok(sifovl().arg("export").arg(&image).arg(&layout));
    let mut outcomes = std::collections::BTreeMap::new();
    for free_kib in [0u64, 8, 64, 512, 2048, 6144, 9216, 16384] {
        for keep in [false, true] {
            let mut cmd = sifovl();
            cmd.arg("import");
            if keep {
                cmd.arg("--keep-layers");
            }
            let what = format!("import (keep layers: {keep}) with {free_kib} KiB free");
            let outcome = disk.write_new_image(free_kib, cmd.arg(&layout), &what);
            outcomes.insert(what, outcome);
        }
    }
    eprintln!("{outcomes:#?}");
    assert!(outcomes.values().any(|o| *o == "ENOSPC, nothing left"));
    assert!(outcomes.values().any(|o| *o == "new"));
}

#[test]
fn mode_owner_xattrs_an_acl_and_a_symlink_survive_an_in_place_edit() {
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("real.oci.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &image).unwrap();
    let link = dir.path().join("link.oci.sif");
    std::os::unix::fs::symlink(&image, &link).unwrap();
    std::fs::set_permissions(&image, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        std::os::unix::fs::chown(&image, Some(1234), Some(5678)).unwrap();
    }
    rustix::fs::setxattr(&image, "user.keep", b"me", rustix::fs::XattrFlags::empty()).unwrap();
    // A POSIX ACL granting user 4321 read access (the kernel's xattr form: version 2, then
    // tag, permissions, id for USER_OBJ rw, USER 4321 r, GROUP_OBJ r, MASK r, OTHER none).
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 4321),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let acl_set = rustix::fs::setxattr(
        &image,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    if !acl_set {
        eprintln!("NOTE: this filesystem takes no POSIX ACLs; ACLs not checked");
    }
    let before = std::fs::metadata(&image).unwrap();
    for args in [
        &["add", "--sparse"][..],
        &["reconcile"],
        &["seal"],
        &["remove-overlay"],
    ] {
        let out = sifovl().args(args).arg(&link).output().unwrap();
        // remove-overlay after seal has nothing to remove: refused, which is fine here.
        assert!(
            out.status.success() || args == ["remove-overlay"],
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let after = std::fs::metadata(&image).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(after.mode(), before.mode(), "{args:?}");
        assert_eq!(
            (after.uid(), after.gid()),
            (before.uid(), before.gid()),
            "{args:?}"
        );
        assert_eq!(after.ino(), before.ino(), "{args:?}: edited in place");
        let mut value = [0u8; 16];
        let n = rustix::fs::getxattr(&image, "user.keep", &mut value).unwrap();
        assert_eq!(&value[..n], b"me", "{args:?}");
        if acl_set {
            let mut value = [0u8; 64];
            let n = rustix::fs::getxattr(&image, "system.posix_acl_access", &mut value).unwrap();
            assert_eq!(&value[..n], &acl[..], "{args:?}: the ACL");
        }
    }
    assert_eq!(
        names(dir.path()),
        BTreeSet::from(["real.oci.sif".into(), "link.oci.sif".into()])
    );
}

/// A process holding a POSIX record lock on `len` bytes at `start` of `image`, as
/// SingularityCE's `lockSection` does on a native SIF's ext3 partition while a container
/// runs it (`exclusive`: `--writable`). Released when the returned child is killed.
fn container_lock(image: &Path, start: u64, len: u64, exclusive: bool) -> std::process::Child {
    let script = r#"
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
kind = fcntl.LOCK_EX if sys.argv[4] == "ex" else fcntl.LOCK_SH
fcntl.lockf(fd, kind | fcntl.LOCK_NB, int(sys.argv[3]), int(sys.argv[2]))
print("locked", flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(image)
        .arg(start.to_string())
        .arg(len.to_string())
        .arg(if exclusive { "ex" } else { "sh" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

#[test]
fn a_running_containers_lock_on_the_overlay_is_respected() {
    require_tool!("python3");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("native.sif");
    std::fs::copy(crate::ocisif::sample("sample.sif"), &image).unwrap();
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let report: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["inspect", "--json"]).arg(&image))).unwrap();
    let start = report["overlay"]["offset"].as_u64().unwrap();
    let len = report["overlay"]["size"].as_u64().unwrap();
    let before = sha(&image);
    let refused = |args: &[&str], why: &str| {
        let out = sifovl().args(args).arg(&image).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("in use by another process") && err.contains(why),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_eq!(sha(&image), before, "{args:?} changed the image");
    };
    // `singularity run --writable`: no edit, and no read of an overlay being written.
    let mut writer = container_lock(&image, start, len, true);
    refused(&["seal"], "a container runs it");
    refused(&["resize", "--size", "80"], "a container runs it");
    refused(&["verify"], "a container writes into its overlay");
    refused(&["ls"], "a container writes into its overlay");
    writer.kill().unwrap();
    writer.wait().unwrap();
    // A read-only run: readers go on, editors are refused.
    let mut reader = container_lock(&image, start, len, false);
    run_ok(sifovl().arg("verify").arg(&image));
    run_ok(sifovl().arg("ls").arg(&image));
    refused(&["seal"], "a container runs it");
    refused(&["remove-overlay"], "a container runs it");
    reader.kill().unwrap();
    reader.wait().unwrap();
    // The container gone, the edit goes through.
    run_ok(sifovl().arg("seal").arg(&image));
    assert_ne!(sha(&image), before);
}

#[test]
fn an_image_on_read_only_media_is_read_and_never_written() {
    let Some(disk) = SmallDisk::mount(32) else {
        return;
    };
    let image = disk.path.join("image.oci.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &image).unwrap();
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    // A second image left with an interrupted edit: its journal waits beside it.
    let pending = disk.path.join("pending.oci.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &pending).unwrap();
    let out = sifovl()
        .args(["add", "--sparse"])
        .arg(&pending)
        .env("SIFOVL_FAULT_AT", "6")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(sifovl::journal::pending(&pending));
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&disk.path),
    );
    let (image_sha, pending_sha) = (sha(&image), sha(&pending));
    let listing = names(&disk.path);
    for args in [&["verify"][..], &["ls"], &["inspect"], &["list"]] {
        run_ok(sifovl().args(args).arg(&image));
    }
    for (target, args) in [
        (&image, &["reconcile"][..]),
        (&image, &["seal"]),
        (&image, &["remove-overlay"]),
        (&image, &["resize", "--size", "128"]),
        (&pending, &["verify"]),
        (&pending, &["recover"]),
        (&pending, &["inspect"]),
    ] {
        let out = sifovl().args(args).arg(target).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(&target.display().to_string()) && err.to_lowercase().contains("read-only"),
            "{args:?}: {err}"
        );
    }
    assert_eq!((sha(&image), sha(&pending)), (image_sha, pending_sha));
    assert_eq!(names(&disk.path), listing);
    // Writable again, the pending edit is recovered as usual.
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(&disk.path),
    );
    run_ok(sifovl().arg("recover").arg(&pending));
    assert!(!sifovl::journal::pending(&pending));
    run_ok(sifovl().arg("verify").arg(&pending));
}
