//! `recover-overlay` through the binary: an OCI-SIF whose ext3 overlay was left with a dirty
//! journal (a job killed mid-write) is read through the journal by `ls` and `seal`, is
//! recovered in place as e2fsck would, and verifies afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ext_journal::{Txn, assert_same_blocks, dirty_journal, recovered_by_e2fsck};
use crate::ocisif::{overlay_range, scratch};
use crate::require_tool;
use crate::sifcheck::sha256;
use crate::util::{run_ok, sifovl};

/// A sample OCI-SIF with an overlay whose journal holds two committed transactions (a new
/// directory and a file that exist only in the journal) and a torn third one. Returns the
/// temp dir, the image and the dirty overlay as a separate file.
pub fn dirty_overlay_image() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let (offset, size) = overlay_range(&image);
    let mut bytes = std::fs::read(&image).unwrap();
    let work = dir.path().join("journal");
    std::fs::create_dir(&work).unwrap();
    let base = work.join("overlay.img");
    std::fs::write(&base, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    let payload = work.join("payload");
    std::fs::write(&payload, b"written by a job that was killed\n".repeat(100)).unwrap();
    let txns = [
        Txn {
            commands: vec!["mkdir upper/results".into()],
            ..Txn::default()
        },
        Txn {
            commands: vec![format!(
                "write {} upper/results/journal-only.txt",
                payload.display()
            )],
            ..Txn::default()
        },
        Txn {
            commands: vec!["mkdir upper/torn".into()],
            torn: true,
            ..Txn::default()
        },
    ];
    let dirty = dirty_journal(&work, &base, &txns, "");
    let dirty_bytes = std::fs::read(&dirty).unwrap();
    assert_eq!(dirty_bytes.len() as u64, size);
    bytes[offset as usize..(offset + size) as usize].copy_from_slice(&dirty_bytes);
    std::fs::write(&image, bytes).unwrap();
    (dir, image, dirty)
}

fn ls_paths(image: &Path, layer: Option<usize>) -> Vec<String> {
    let mut cmd = sifovl();
    cmd.args(["ls", "--json"]);
    if let Some(n) = layer {
        cmd.arg(format!("--layer={n}"));
    }
    let out = run_ok(cmd.arg(image));
    let entries: serde_json::Value = serde_json::from_slice(&out).unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["path"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .collect()
}

fn extract_overlay(image: &Path, to: &Path) {
    let (offset, size) = overlay_range(image);
    let bytes = std::fs::read(image).unwrap();
    std::fs::write(to, &bytes[offset as usize..(offset + size) as usize]).unwrap();
}

#[test]
fn recover_overlay_replays_like_e2fsck_and_the_image_verifies() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let (dir, image, dirty) = dirty_overlay_image();

    // Before: readers see the journal replayed; verify warns (and fails: the killed job
    // changed the overlay's bytes); --check says recovery is needed.
    let paths = ls_paths(&image, None);
    assert!(
        paths.iter().any(|p| p == "upper/results/journal-only.txt"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p == "upper/torn"),
        "torn transaction shown"
    );
    let out = sifovl().arg("verify").arg(&image).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warn  the overlay's ext3 journal needs recovery"),
        "{text}"
    );
    let out = sifovl()
        .args(["recover-overlay", "--check"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sifovl()
        .args(["reconcile", "--check", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["journal_needs_recovery"], true);

    let out = run_ok(sifovl().args(["recover-overlay", "--json"]).arg(&image));
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["recovered"], true, "{report}");
    assert_eq!(report["transactions"], 2, "{report}");
    assert_eq!(report["first_transaction"], 1, "{report}");
    assert_eq!(report["last_transaction"], 2, "{report}");
    assert!(report["blocks_replayed"].as_u64().unwrap() >= 4, "{report}");

    // After: verify passes without warnings, nothing left to recover, e2fsck finds the
    // overlay clean, and it equals e2fsck's own recovery of the dirty overlay.
    let out = run_ok(sifovl().args(["verify", "--json"]).arg(&image));
    let verify: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["warnings"].as_array().unwrap().len(), 0, "{verify}");
    run_ok(sifovl().args(["recover-overlay", "--check"]).arg(&image));
    let ours = dir.path().join("recovered.img");
    extract_overlay(&image, &ours);
    run_ok(Command::new("e2fsck").arg("-fn").arg(&ours));
    assert_same_blocks(
        &std::fs::read(&ours).unwrap(),
        &recovered_by_e2fsck(&dirty, &["-fy"]),
        "recover-overlay",
    );
    let paths = ls_paths(&image, None);
    assert!(paths.iter().any(|p| p == "upper/results/journal-only.txt"));
    // A second run has nothing to do.
    let out = run_ok(sifovl().args(["recover-overlay", "--json"]).arg(&image));
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["needs_recovery"], false);
    assert_eq!(report["recovered"], false);
}

#[test]
fn seal_of_a_dirty_overlay_holds_the_replayed_content() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image, _) = dirty_overlay_image();
    let out = sifovl().arg("seal").arg(&image).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sealing it as replayed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["inspect", "--json"]).arg(&image))).unwrap();
    let layers = inspect["layers"].as_array().unwrap().len();
    let paths = ls_paths(&image, Some(layers - 1));
    assert!(
        paths.iter().any(|p| p == "results/journal-only.txt"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "torn"), "{paths:?}");
    run_ok(sifovl().arg("verify").arg(&image));
}

#[test]
fn a_corrupt_journal_is_refused_and_the_image_left_unchanged() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image, dirty) = dirty_overlay_image();
    // Point the journal superblock's s_start (big-endian, 0x1C) far outside the log.
    let (offset, _) = overlay_range(&image);
    let jsb = journal_superblock_offset(&dirty);
    let mut bytes = std::fs::read(&image).unwrap();
    let at = (offset + jsb) as usize + 0x1C;
    bytes[at..at + 4].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
    std::fs::write(&image, &bytes).unwrap();
    let before = sha256(&bytes);
    for args in [
        &["recover-overlay"][..],
        &["ls"],
        &["seal"],
        &["recover-overlay", "--check"],
    ] {
        let out = sifovl().args(args).arg(&image).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("ext journal: log start"), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
        assert_eq!(
            sha256(&std::fs::read(&image).unwrap()),
            before,
            "{args:?} changed it"
        );
    }
}

/// Byte offset of the journal superblock in an ext image (debugfs `bmap <8> 0`).
fn journal_superblock_offset(ext: &Path) -> u64 {
    let out = run_ok(
        Command::new("debugfs")
            .args(["-R", "bmap <8> 0"])
            .arg(ext)
            .stderr(std::process::Stdio::null()),
    );
    let block: u64 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    let bytes = std::fs::read(ext).unwrap();
    let bs = 1024u64 << u32::from_le_bytes(bytes[1024 + 0x18..1024 + 0x1C].try_into().unwrap());
    block * bs
}

/// Give the native SIF at `path` an overlay partition whose journal holds one committed
/// transaction (a directory only in the journal); returns (offset, size, dirty overlay).
fn dirty_native(path: &Path, work: &Path, force: bool) -> (u64, u64, PathBuf) {
    let mut add = sifovl();
    add.args(["add", "--sparse"]);
    if force {
        add.arg("--force");
    }
    run_ok(add.arg(path));
    let inspect: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["inspect", "--json"]).arg(path))).unwrap();
    let overlay = &inspect["overlay"];
    let (offset, size) = (
        overlay["offset"].as_u64().unwrap(),
        overlay["size"].as_u64().unwrap(),
    );
    let mut bytes = std::fs::read(path).unwrap();
    let base = work.join("o.img");
    std::fs::write(&base, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    let dirty = dirty_journal(
        work,
        &base,
        &[Txn {
            commands: vec!["mkdir upper/native-journal-only".into()],
            ..Txn::default()
        }],
        "",
    );
    bytes[offset as usize..(offset + size) as usize]
        .copy_from_slice(&std::fs::read(&dirty).unwrap());
    std::fs::write(path, &bytes).unwrap();
    (offset, size, dirty)
}

#[test]
fn recover_overlay_works_on_a_native_sif_overlay_partition() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    require_tool!("e2fsck");
    let (dir, path) = scratch("sample.sif");
    let work = dir.path().join("w");
    std::fs::create_dir(&work).unwrap();
    let (offset, size, dirty) = dirty_native(&path, &work, false);
    assert!(
        ls_paths(&path, None)
            .iter()
            .any(|p| p == "upper/native-journal-only")
    );
    run_ok(sifovl().arg("recover-overlay").arg(&path));
    run_ok(sifovl().args(["recover-overlay", "--check"]).arg(&path));
    run_ok(sifovl().arg("verify").arg(&path));
    let ours = work.join("ours.img");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&ours, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    run_ok(Command::new("e2fsck").arg("-fn").arg(&ours));
    assert_same_blocks(
        &std::fs::read(&ours).unwrap(),
        &recovered_by_e2fsck(&dirty, &["-fy"]),
        "native recover-overlay",
    );
}

/// Edits refuse to break intact SIF signatures without `--force`, and need no second
/// `--force` once a signature is broken (`Image::refuse_if_signed`). Adding an overlay to
/// the signed fixture breaks its group signature already, so recovering that overlay then
/// goes ahead without `--force`. (No fixture has an intact signature beside an overlay, so
/// the refusal itself is covered by the other edits' tests of the same function.)
#[test]
fn recover_overlay_on_a_signed_image_whose_signature_an_earlier_edit_broke() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let fixtures = crate::require_fixtures!();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signed.sif");
    std::fs::copy(
        fixtures.join("sylabs-sif/images/one-group-signed-pgp.sif"),
        &path,
    )
    .unwrap();
    let work = dir.path().join("w");
    std::fs::create_dir(&work).unwrap();
    dirty_native(&path, &work, true);
    let out = sifovl().arg("recover-overlay").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(sifovl().args(["recover-overlay", "--check"]).arg(&path));
    assert!(
        ls_paths(&path, None)
            .iter()
            .any(|p| p == "upper/native-journal-only")
    );
}
