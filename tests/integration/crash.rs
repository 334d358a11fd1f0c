//! Crash safety: an edit stopped at any instant leaves, once recovered, exactly the old file
//! or exactly the new one. Two ways of stopping it: an abort injected before each durable
//! step in turn (`SIFOVL_FAULT_AT`), and SIGKILL at random times.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ocisif::{scratch, simulate_writable_run};
use crate::require_tool;
use crate::util::{run_ok, sifovl};

/// Run `args` on a copy of `old` with an abort before durable step `n`; recover; return
/// whether the edit ran to completion and the recovered bytes.
fn faulted_run(old: &[u8], args: &[&str], n: u64, work: &Path) -> (bool, Vec<u8>) {
    std::fs::write(work, old).unwrap();
    let out = sifovl()
        .args(args)
        .arg(work)
        .env("SIFOVL_FAULT_AT", n.to_string())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let completed = out.status.success();
    if !completed {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("fault injection"),
            "failed for another reason: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    run_ok(sifovl().arg("recover").arg(work));
    assert!(!sifovl::journal::pending(work), "journal left behind");
    (completed, std::fs::read(work).unwrap())
}

/// Stop the edit before every durable step in turn, then at random times.
fn assert_crash_safe(old: &[u8], args: &[&str], random_trials: usize) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("image.sif");
    // The new state: the same edit, uninterrupted.
    std::fs::write(&work, old).unwrap();
    let started = Instant::now();
    // A fixed SOURCE_DATE_EPOCH makes every run write the same bytes (seal stamps it).
    run_ok(
        sifovl()
            .args(args)
            .arg(&work)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let duration = started.elapsed();
    let new = std::fs::read(&work).unwrap();
    assert_ne!(new, old, "{args:?} changed nothing");

    let mut steps = 0;
    for n in 1.. {
        let (completed, got) = faulted_run(old, args, n, &work);
        assert!(
            got == old || got == new,
            "{args:?}: stopped before step {n}: file is neither old nor new"
        );
        if completed {
            assert_eq!(got, new);
            steps = n - 1;
            break;
        }
        assert!(n < 10_000, "runaway");
    }
    assert!(steps >= 5, "only {steps} durable steps seen");

    // SIGKILL at random instants across the edit's duration.
    let mut seed = 0x2545F4914F6CDD1Du64;
    let span = duration.as_micros().max(1000) as u64 * 2;
    let (mut saw_old, mut saw_new) = (0, 0);
    for _ in 0..random_trials {
        std::fs::write(&work, old).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = sifovl()
            .args(args)
            .arg(&work)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(seed % span));
        let _ = child.kill();
        let _ = child.wait();
        run_ok(sifovl().arg("recover").arg(&work));
        let got = std::fs::read(&work).unwrap();
        if got == old {
            saw_old += 1;
        } else if got == new {
            saw_new += 1;
        } else {
            panic!("{args:?}: killed at a random time: file is neither old nor new");
        }
    }
    eprintln!("{args:?}: {steps} durable steps; random kills left {saw_old} old, {saw_new} new");
}

#[test]
fn slow_add_is_crash_safe() {
    let (dir, image) = scratch("sample.oci.sif");
    let overlay = dir.path().join("overlay.ext3");
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
    let old = std::fs::read(&image).unwrap();
    let from = format!("--from={}", overlay.display());
    assert_crash_safe(&old, &["add", "--sparse", &from], 120);
}

#[test]
fn slow_reconcile_is_crash_safe() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    simulate_writable_run(&image, &["mkdir /upper/newdir"]);
    let old = std::fs::read(&image).unwrap();
    assert_crash_safe(&old, &["reconcile"], 150);
    let _ = Command::new("true").status();
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
    assert_crash_safe(&old, &["seal"], 100);
}

#[test]
fn slow_remove_overlay_is_crash_safe() {
    for sample in ["sample.oci.sif", "sample.sif"] {
        let (_dir, image) = scratch(sample);
        run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
        let old = std::fs::read(&image).unwrap();
        assert_crash_safe(&old, &["remove-overlay"], 30);
    }
}

#[test]
fn slow_recover_overlay_is_crash_safe() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image, _) = crate::recover_overlay::dirty_overlay_image();
    let old = std::fs::read(&image).unwrap();
    assert_crash_safe(&old, &["recover-overlay"], 100);
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
            .args(["add", "--sparse", "--from-dir"])
            .arg(&tree)
            .arg(&image),
    );
    let old = std::fs::read(&image).unwrap();
    assert_crash_safe(&old, &["resize", "--size", "72"], 40);
}
