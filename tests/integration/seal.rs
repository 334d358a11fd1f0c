//! Integration tests: `seal` turns a changed overlay into a squashfs layer / partition,
//! checked with unsquashfs (listing and extraction), getfattr and the independent decoder.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ocisif::{scratch, simulate_writable_run};
use crate::sifcheck::{self, assert_oci_sif_invariants};
use crate::util::{run_ok, sifovl};
use crate::{require_fixtures, require_tool};

/// The debugfs commands of a `--writable` run that exercises every kind of change.
fn writable_run(dir: &Path) -> Vec<String> {
    let new = dir.join("new.txt");
    std::fs::write(&new, b"created by the job\n").unwrap();
    let release = dir.join("os-release");
    std::fs::write(&release, b"NAME=\"modified\"\n").unwrap();
    let big = dir.join("big.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    let sparse = dir.join("sparse.bin");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tail", (3 << 20) - 4).unwrap();
    let cap = dir.join("cap.bin");
    std::fs::write(
        &cap,
        [
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    let p = |f: &Path| f.display().to_string();
    vec![
        format!("write {} /upper/new.txt", p(&new)),
        "sif /upper/new.txt uid 1000".into(),
        "sif /upper/new.txt gid 1001".into(),
        "ea_set /upper/new.txt user.comment hello-xattr".into(),
        format!("ea_set -f {} /upper/new.txt security.capability", p(&cap)),
        "mkdir /upper/etc".into(),
        format!("write {} /upper/etc/os-release", p(&release)),
        // Deletions: OverlayFS whiteouts (0/0 character devices).
        "mknod /upper/hello.txt c 0 0".into(),
        "mknod /upper/bin c 0 0".into(),
        // An opaque directory with fuse-overlayfs's markers.
        "mkdir /upper/opaque".into(),
        "ea_set /upper/opaque trusted.overlay.opaque y".into(),
        "mknod /upper/opaque/.wh..opq c 0 0".into(),
        format!("write {} /upper/opaque/.wh..wh..opq", p(&dir.join("empty"))),
        format!("write {} /upper/opaque/inside.txt", p(&new)),
        // fuse-overlayfs on fuse2fs: a deletion as an empty `.wh.` file; and a `.wh.` file
        // with data, which no driver writes as a marker (kept, with a warning).
        format!("write {} /upper/.wh.gone.txt", p(&dir.join("empty"))),
        // Hard links, symlinks, devices, a fifo, a big and a sparse file.
        "mkdir /upper/data".into(),
        format!("write {} /upper/data/big.bin", p(&big)),
        "ln /upper/data/big.bin /upper/data/big-link.bin".into(),
        "sif /upper/data/big.bin links_count 2".into(),
        "symlink /upper/data/link /etc/os-release".into(),
        "mknod /upper/data/null c 1 3".into(),
        "mknod /upper/data/disk b 8 1".into(),
        "mknod /upper/data/pipe p".into(),
        format!("write {} /upper/data/sparse.bin", p(&sparse)),
        format!("write {} /upper/data/.wh.notes", p(&new)),
        // Something in work/ that must never be sealed.
        format!("write {} /work/junk", p(&new)),
    ]
}

#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Option<Vec<u8>>,
    rdev: u64,
    link: Option<String>,
    ino: u64,
    nlink: u64,
}

/// Walk an extracted tree (lstat, no following).
fn walk(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            out.insert(
                rel,
                Node {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    content: ft.is_file().then(|| std::fs::read(&path).unwrap()),
                    rdev: meta.rdev(),
                    link: ft
                        .is_symlink()
                        .then(|| std::fs::read_link(&path).unwrap().display().to_string()),
                    ino: meta.ino(),
                    nlink: meta.nlink(),
                },
            );
        }
    }
    out
}

fn getfattr(path: &Path) -> String {
    String::from_utf8(run_ok(
        Command::new("getfattr")
            .args(["-h", "-d", "-m", "-", "-e", "hex"])
            .arg(path),
    ))
    .unwrap()
}

/// Extract the sealed squashfs layer of an OCI-SIF (or a partition) with unsquashfs.
fn extract(bytes: &[u8], offset: u64, size: u64, dir: &Path) -> std::path::PathBuf {
    let sqfs = dir.join("layer.sqfs");
    std::fs::write(&sqfs, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    let out = dir.join("extracted");
    run_ok(
        Command::new("unsquashfs")
            .args(["-no-progress", "-d"])
            .arg(&out)
            .arg(&sqfs),
    );
    out
}

/// `keep_markers`: sealed with `--keep-aufs-markers` (the reference's bytes).
fn assert_sealed_tree(root: &Path, root_owned: bool, keep_markers: bool) {
    let tree = walk(root);
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    let mut expected = vec![
        "bin",
        "data",
        "data/.wh.notes",
        "data/big-link.bin",
        "data/big.bin",
        "data/disk",
        "data/link",
        "data/null",
        "data/pipe",
        "data/sparse.bin",
        "etc",
        "etc/os-release",
        "hello.txt",
        "new.txt",
        "opaque",
        "opaque/inside.txt",
    ];
    if keep_markers {
        expected.extend([".wh.gone.txt", "opaque/.wh..wh..opq"]);
    } else {
        expected.push("gone.txt");
    }
    expected.sort();
    assert_eq!(
        names, expected,
        "work/, lost+found and .wh..opq markers are not sealed; AUFS markers converted unless kept"
    );
    if !keep_markers {
        assert_eq!(
            (
                tree["gone.txt"].kind,
                tree["gone.txt"].rdev,
                tree["gone.txt"].mode
            ),
            ("char", 0, 0o644),
            "the empty .wh.gone.txt became a 0/0 whiteout with its mode"
        );
    }
    assert_eq!(
        tree["data/.wh.notes"].kind, "file",
        "a .wh. file with data is kept"
    );
    let new = &tree["new.txt"];
    assert_eq!(new.content.as_deref(), Some(&b"created by the job\n"[..]));
    if root_owned {
        assert!(
            tree.values().all(|n| n.uid == 0 && n.gid == 0),
            "all owners 0:0"
        );
    } else {
        assert_eq!((new.uid, new.gid), (1000, 1001), "owners kept");
    }
    assert_eq!(
        tree["etc/os-release"].content.as_deref(),
        Some(&b"NAME=\"modified\"\n"[..])
    );
    for whiteout in ["hello.txt", "bin"] {
        assert_eq!(
            (tree[whiteout].kind, tree[whiteout].rdev),
            ("char", 0),
            "{whiteout} is a 0/0 whiteout"
        );
    }
    let (a, b) = (&tree["data/big.bin"], &tree["data/big-link.bin"]);
    assert_eq!(a.ino, b.ino, "hard link kept as one inode");
    assert_eq!(a.nlink, 2);
    assert_eq!(a.content.as_ref().unwrap().len(), 300_000);
    assert_eq!(tree["data/link"].link.as_deref(), Some("/etc/os-release"));
    assert_eq!(
        (tree["data/null"].kind, tree["data/null"].rdev),
        ("char", libc_makedev(1, 3))
    );
    assert_eq!(
        (tree["data/disk"].kind, tree["data/disk"].rdev),
        ("block", libc_makedev(8, 1))
    );
    assert_eq!(tree["data/pipe"].kind, "fifo");
    let sparse = tree["data/sparse.bin"].content.as_ref().unwrap();
    assert_eq!(sparse.len(), 3 << 20);
    assert!(sparse[..(3 << 20) - 4].iter().all(|&b| b == 0) && sparse.ends_with(b"tail"));
    let attrs = getfattr(&root.join("new.txt"));
    assert!(
        attrs.contains("user.comment=0x68656c6c6f2d7861747472"),
        "{attrs}"
    );
    assert!(
        attrs.contains("security.capability=0x01000002002000000000000000000000"),
        "{attrs}"
    );
    let opaque = getfattr(&root.join("opaque"));
    assert!(opaque.contains("trusted.overlay.opaque=0x79"), "{opaque}");
    // For the kernel's overlayfs with userxattr, and fuse-overlayfs on squashfuse < 0.5.
    assert_eq!(
        opaque.contains("user.overlay.opaque=0x79"),
        !keep_markers,
        "{opaque}"
    );
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}

/// An OCI-SIF with a changed overlay, sealed with `seal ARGS`; also seal's stderr.
fn sealed_oci_image(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, String) {
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    let commands = writable_run(dir.path());
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    simulate_writable_run(&image, &refs);
    let before = std::fs::read(&image).unwrap();
    let out = sifovl()
        .arg("seal")
        .args(args)
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "seal {args:?}: {stderr}");
    (dir, image, before, stderr)
}

#[test]
fn seal_turns_the_overlay_into_a_squashfs_layer() {
    require_tool!("unsquashfs");
    require_tool!("debugfs");
    require_tool!("getfattr");
    let (dir, image, before, stderr) = sealed_oci_image(&[]);
    assert!(
        stderr.contains("sifovl: warning: overlay upper/data/.wh.notes: a .wh. name that is not an empty regular file"),
        "{stderr}"
    );
    let after = std::fs::read(&image).unwrap();
    assert!(after.len() < before.len(), "the file shrank");
    assert_oci_sif_invariants(&after, true);
    assert!(run_ok(sifovl().arg("verify").arg(&image)).ends_with(b"checks passed\n"));
    let (old, new) = (sifcheck::parse(&before), sifcheck::parse(&after));
    let (oo, on) = (sifcheck::oci(&old, &before), sifcheck::oci(&new, &after));
    // 14: last layer squashfs, gzip, history unchanged, no ext3 object left.
    let layers = on.manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], oo.manifest["layers"][0]);
    assert_eq!(
        layers[1]["mediaType"],
        "application/vnd.sylabs.image.layer.v1.squashfs"
    );
    assert_eq!(on.config["history"], oo.config["history"]);
    let layer = sifcheck::blob(&new, layers[1]["digest"].as_str().unwrap());
    let data = layer.data(&after);
    assert_eq!(&data[..4], b"hsqs");
    assert_eq!(
        u16::from_le_bytes([data[20], data[21]]),
        1,
        "gzip compression id"
    );
    assert!(data.len() >= 2048);
    // 18: the squashfs took the overlay's slot and offset.
    assert_eq!(
        (layer.slot, layer.offset),
        (old.objects[1].slot, old.objects[1].offset)
    );
    let root = extract(&after, layer.offset, layer.size, dir.path());
    assert_sealed_tree(&root, false, false);
    // unsquashfs -lls agrees on the link count and the whiteouts.
    let sqfs = dir.path().join("layer.sqfs");
    let listing = String::from_utf8(run_ok(
        Command::new("unsquashfs").args(["-lls", "-n"]).arg(&sqfs),
    ))
    .unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('c') && l.contains("0,  0") && l.ends_with("/hello.txt")),
        "{listing}"
    );
    // The sealed layer exported as a tar layer carries AUFS whiteouts only (invariant 22).
    let tgz = dir.path().join("layer.tgz");
    let report: serde_json::Value = serde_json::from_slice(&run_ok(
        sifovl()
            .args(["export-layer", "--json"])
            .arg(&image)
            .arg(&tgz),
    ))
    .unwrap();
    assert_eq!(
        report["digest"].as_str().unwrap(),
        sifcheck::sha256(&std::fs::read(&tgz).unwrap())
    );
    let listing = String::from_utf8(run_ok(
        Command::new("tar").args(["--xattrs", "-tvzf"]).arg(&tgz),
    ))
    .unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    for expected in [
        ".wh.hello.txt",
        ".wh.bin",
        ".wh.gone.txt",
        "opaque/.wh..wh..opq",
        "data/big-link.bin",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from\n{listing}"
        );
    }
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".wh..wh..opq")).count(),
        1,
        "no duplicate opaque marker"
    );
    // The report counts tar members, as `tar -t` lists them.
    assert_eq!(report["entries"].as_u64().unwrap() as usize, names.len());
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with('c') && l.contains(" 0,0 ")),
        "no 0/0 devices left:\n{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('h') && l.contains("data/big-link.bin")),
        "hard link kept"
    );
    // Sealing twice is refused: there is no overlay any more.
    let out = sifovl().arg("seal").arg(&image).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not contain a writable overlay"));
}

/// Extract the sealed layer (layer 1) of `image` under `dest` with unsquashfs.
fn extract_sealed_layer(image: &Path, dest: &Path) -> PathBuf {
    let bytes = std::fs::read(image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let o = sifcheck::oci(&sif, &bytes);
    let sealed = o.manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layer = sifcheck::blob(&sif, &sealed);
    extract(&bytes, layer.offset, layer.size, dest)
}

#[test]
fn seal_root_owned_maps_every_owner_to_root() {
    require_tool!("unsquashfs");
    require_tool!("debugfs");
    require_tool!("getfattr");
    let (dir, image, _, _) = sealed_oci_image(&["--root-owned"]);
    let root = extract_sealed_layer(&image, dir.path());
    assert_sealed_tree(&root, true, false);
}

#[test]
fn seal_keep_aufs_markers_keeps_the_references_bytes() {
    require_tool!("unsquashfs");
    require_tool!("debugfs");
    require_tool!("getfattr");
    let (dir, image, _, stderr) = sealed_oci_image(&["--keep-aufs-markers"]);
    assert!(!stderr.contains("warning: overlay upper"), "{stderr}");
    let root = extract_sealed_layer(&image, dir.path());
    assert_sealed_tree(&root, false, true);
}

/// A journal that needs recovery is read through (docs/journal-recovery.md): seal seals the
/// replayed filesystem and says so (here the log is empty: only the flag is set). Replayed
/// content and corrupt journals: tests/integration/recover_overlay.rs.
#[test]
fn seal_reads_a_journal_that_needs_recovery_through_its_replay() {
    require_tool!("mke2fs");
    let (_dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let (offset, _) = crate::ocisif::overlay_range(&image);
    let mut bytes = std::fs::read(&image).unwrap();
    // Set the ext3 `needs_recovery` incompat flag, as a killed job leaves it.
    bytes[(offset + 1024 + 0x60) as usize] |= 0x4;
    std::fs::write(&image, &bytes).unwrap();
    let out = sifovl().arg("seal").arg(&image).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sealing it as replayed (0 blocks"), "{err}");
    run_ok(sifovl().arg("verify").arg(&image));
}

#[test]
fn native_seal_makes_a_squashfs_overlay_partition() {
    require_tool!("unsquashfs");
    require_tool!("debugfs");
    let fixtures = require_fixtures!();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("busybox.sif");
    std::fs::copy(fixtures.join("singularity/busybox_amd64.sif"), &image).unwrap();
    run_ok(sifovl().args(["add", "--sparse", "--force"]).arg(&image));
    let bytes = std::fs::read(&image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let overlay = sif.objects.last().unwrap().clone();
    // Change the overlay partition in place.
    let ext3 = dir.path().join("overlay.img");
    std::fs::write(&ext3, overlay.data(&bytes)).unwrap();
    let note = dir.path().join("note.txt");
    std::fs::write(&note, b"native job output\n").unwrap();
    run_ok(
        Command::new("debugfs")
            .args([
                "-w",
                "-R",
                &format!("write {} /upper/note.txt", note.display()),
            ])
            .arg(&ext3),
    );
    let script = dir.path().join("cmds");
    std::fs::write(&script, "cd /upper\nmknod bin c 0 0\n").unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(&ext3),
    );
    let mut changed = bytes.clone();
    changed[overlay.offset as usize..(overlay.offset + overlay.size) as usize]
        .copy_from_slice(&std::fs::read(&ext3).unwrap());
    std::fs::write(&image, &changed).unwrap();

    // The signature broke when the overlay joined its group (add --force): sealing breaks
    // nothing more, so it needs no second --force and reports nothing invalidated.
    let report: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["seal", "--json"]).arg(&image))).unwrap();
    assert_eq!(
        report["invalidated_signatures"],
        serde_json::json!([]),
        "{report}"
    );
    let after = std::fs::read(&image).unwrap();
    assert!(after.len() < changed.len());
    let sealed = sifcheck::parse(&after);
    let part = sealed.objects.last().unwrap();
    assert_eq!(part.dtype, sifcheck::PARTITION);
    assert_eq!(
        &part.extra[..8],
        &[1, 0, 0, 0, 4, 0, 0, 0],
        "Squashfs / Overlay"
    );
    assert_eq!(part.group, overlay.group);
    assert_eq!((part.id, part.offset), (overlay.id, overlay.offset));
    assert_eq!(after.len() as u64, part.offset + part.size);
    let listing = String::from_utf8(run_ok(sifovl().arg("list").arg(&image))).unwrap();
    assert!(
        listing.contains("|FS (Squashfs/Overlay/amd64)"),
        "{listing}"
    );
    let root = extract(&after, part.offset, part.size, dir.path());
    assert_eq!(
        std::fs::read(root.join("note.txt")).unwrap(),
        b"native job output\n"
    );
    assert!(
        std::fs::symlink_metadata(root.join("bin"))
            .unwrap()
            .file_type()
            .is_char_device_compat()
    );
    assert!(!root.join("work").exists() && !root.join("upper").exists());
}

trait CharDevice {
    fn is_char_device_compat(&self) -> bool;
}

impl CharDevice for std::fs::FileType {
    fn is_char_device_compat(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}

#[test]
fn ls_reads_fuse_overlayfs_markers_as_deletions() {
    require_tool!("debugfs");
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let e = empty.display();
    simulate_writable_run(
        &image,
        &[
            &format!("write {e} /upper/.wh.hello.txt"),
            "mkdir /upper/etc",
            &format!("write {e} /upper/etc/.wh..wh..opq"),
            "mknod /upper/etc/.wh..opq c 0 0",
            "mknod /upper/gone c 0 0",
        ],
    );
    let text = String::from_utf8(run_ok(sifovl().arg("ls").arg(&image))).unwrap();
    for line in [
        "/upper/.wh.hello.txt  (whiteout of /upper/hello.txt)",
        "/upper/etc  (opaque)",
        "/upper/etc/.wh..opq device 0,0  (marker)",
        "/upper/etc/.wh..wh..opq  (marker)",
        "/upper/gone device 0,0  (whiteout)",
    ] {
        assert!(
            text.lines().any(|l| l.ends_with(line)),
            "{line:?} not in\n{text}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["ls", "--json"]).arg(&image))).unwrap();
    let marker = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/upper/.wh.hello.txt")
        .unwrap();
    assert_eq!(marker["whiteout"], true);
    assert_eq!(marker["deletes"], "/upper/hello.txt");
}

/// Progress as a terminal would show it: (label, total, advanced so far).
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(String, u64, u64)>>>);
struct RecordedTask(
    std::sync::Arc<std::sync::Mutex<Vec<(String, u64, u64)>>>,
    usize,
);

impl sifovl::progress::Reporter for Recorder {
    fn start(&self, label: &str, total_bytes: u64) -> Box<dyn sifovl::progress::Task> {
        let mut tasks = self.0.lock().unwrap();
        tasks.push((label.to_string(), total_bytes, 0));
        Box::new(RecordedTask(self.0.clone(), tasks.len() - 1))
    }
}

impl sifovl::progress::Task for RecordedTask {
    fn advance(&self, bytes: u64) {
        self.0.lock().unwrap()[self.1].2 += bytes;
    }
}

#[test]
fn seal_progress_counts_the_data_to_seal_and_reaches_its_end() {
    require_tool!("debugfs");
    let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // One reporter per test process; other tests' tasks are told apart by their totals.
    sifovl::progress::set_reporter(Box::new(Recorder(tasks.clone())));
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, vec![3u8; 123_457]).unwrap();
    std::fs::write(&b, vec![5u8; 7_001]).unwrap();
    simulate_writable_run(
        &image,
        &[
            &format!("write {} /upper/a", a.display()),
            &format!("write {} /upper/b", b.display()),
        ],
    );
    sifovl::ops::seal::seal(&image, &sifovl::ops::seal::SealOptions::default()).unwrap();
    let tasks = tasks.lock().unwrap();
    let sealing: Vec<_> = tasks
        .iter()
        .filter(|(label, total, _)| label == "sealing" && *total == 130_458)
        .collect();
    assert_eq!(sealing.len(), 1, "{tasks:?}");
    assert_eq!(sealing[0].2, 130_458, "the bar reaches its end");
}
