//! `cat`, `extract`, `diff` and `remove-overlay`, checked against independent tools: the
//! image is built with `mksquashfs` (lower layer) and `mke2fs -d` (the overlay, with
//! OverlayFS whiteouts and an opaque directory), and the merged view must equal what the
//! kernel's overlayfs shows of the same two directories; `extract` of imported multi-layer
//! images must equal `umoci`'s unpack; `remove-overlay` must give back the image as it was
//! before `add`, byte for byte.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

use crate::tree::host_listing;
use crate::util::{run_ok, sifovl};
use crate::{require_fixtures, require_tool};

const MTIME: i64 = 1_600_000_000;

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn set_mtime(path: &Path) {
    let t = rustix::fs::Timespec {
        tv_sec: MTIME,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Fix every mtime under `root` (deepest first, so directories keep theirs).
fn fix_times(root: &Path) {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        all.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    for p in all.iter().rev() {
        set_mtime(p);
    }
}

/// The lower layer's tree.
fn lower_tree(l: &Path) {
    write(&l.join("bin/.keep"), b"");
    write(&l.join("bin/sh"), b"#!sh\n");
    write(&l.join("etc/os-release"), b"NAME=lower\n");
    write(&l.join("etc/hostname"), b"lower\n");
    write(&l.join("hello.txt"), b"hello\n");
    write(&l.join("gone/a"), b"a\n");
    write(&l.join("gone/b/c"), b"c\n");
    for f in ["same", "perm", "owner", "xattr"] {
        write(&l.join(format!("keep/{f}.txt")), f.as_bytes());
    }
    write(&l.join("opaque/old1"), b"old 1\n");
    write(&l.join("opaque/sub/old2"), b"old 2\n");
    std::os::unix::fs::symlink("/etc/os-release", l.join("abs")).unwrap();
    fix_times(l);
}

/// The overlay's `upper/`, in the OverlayFS form the kernel writes.
fn upper_tree(u: &Path) {
    // Same size, new content: found by hashing.
    write(&u.join("etc/os-release"), b"NAME=upper\n");
    // Copied up for metadata only.
    for f in ["perm", "owner", "xattr"] {
        write(&u.join(format!("keep/{f}.txt")), f.as_bytes());
    }
    mode(&u.join("keep/perm.txt"), 0o600);
    std::os::unix::fs::chown(u.join("keep/owner.txt"), Some(1000), Some(1000)).unwrap();
    setxattr(&u.join("keep/xattr.txt"), "user.note", b"x");
    // Deletions: a file and a directory tree.
    for gone in ["hello.txt", "gone"] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            u.join(gone),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }
    // An opaque directory with one new file.
    write(&u.join("opaque/new.txt"), b"new in opaque\n");
    setxattr(&u.join("opaque"), "trusted.overlay.opaque", b"y");
    // New entries of every kind.
    write(&u.join("new/file"), b"new\n");
    std::fs::hard_link(u.join("new/file"), u.join("new/hard")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        u.join("new/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("../etc/hostname", u.join("new/rel")).unwrap();
    fix_times(u);
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// An OCI layout whose one layer is the squashfs `layer`: imported unmodified.
fn squashfs_layout(layer: &[u8], dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let digest = sha256_hex(data);
        std::fs::write(blobs.join(&digest), data).unwrap();
        (format!("sha256:{digest}"), data.len())
    };
    let (layer_digest, layer_size) = put(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.sylabs.image.layer.v1.squashfs", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The manifest (without its config descriptor) and the config of an OCI-SIF, parsed.
fn image_json(image: &Path) -> (serde_json::Value, serde_json::Value) {
    let bytes = std::fs::read(image).unwrap();
    let sif = crate::sifcheck::parse(&bytes);
    let report: serde_json::Value =
        serde_json::from_str(&text(sifovl().args(["inspect", "--json"]).arg(image))).unwrap();
    let blob = |digest: &str| -> serde_json::Value {
        let d = sif
            .objects
            .iter()
            .find(|d| format!("sha256:{}", sha256_hex(d.data(&bytes))) == digest)
            .unwrap();
        serde_json::from_slice(d.data(&bytes)).unwrap()
    };
    let mut manifest = blob(report["manifest_digest"].as_str().unwrap());
    let config = blob(report["config_digest"].as_str().unwrap());
    manifest.as_object_mut().unwrap().remove("config");
    (manifest, config)
}

/// A kernel overlayfs mount, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

struct Built {
    _dir: tempfile::TempDir,
    work: PathBuf,
    image: PathBuf,
    /// The image before `add`.
    before_add: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
}

/// An OCI-SIF whose lower layer comes from mksquashfs and whose overlay from mke2fs.
fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().canonicalize().unwrap();
    let lower = work.join("lower");
    let overlay_root = work.join("overlay");
    let upper = overlay_root.join("upper");
    lower_tree(&lower);
    std::fs::create_dir_all(overlay_root.join("work")).unwrap();
    upper_tree(&upper);
    let sqfs = work.join("lower.sqfs");
    run_ok(Command::new("mksquashfs").arg(&lower).arg(&sqfs).args([
        "-noappend",
        "-quiet",
        "-no-progress",
    ]));
    let layout = work.join("layout");
    squashfs_layout(&std::fs::read(&sqfs).unwrap(), &layout);
    let image = work.join("image.oci.sif");
    run_ok(sifovl().arg("import").arg(&layout).arg(&image));
    let before_add = work.join("before-add.oci.sif");
    std::fs::copy(&image, &before_add).unwrap();
    let ext3 = work.join("overlay.img");
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext3", "-d"])
            .arg(&overlay_root)
            .arg(&ext3)
            .arg("64M"),
    );
    run_ok(sifovl().arg("add").arg("--from").arg(&ext3).arg(&image));
    Built {
        _dir: dir,
        work,
        image,
        before_add,
        lower,
        upper,
    }
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd)).unwrap()
}

fn fails(cmd: &mut Command, needle: &str) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "wanted {needle:?} in: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn diff_lists_what_the_overlay_changes() {
    require_tool!("mksquashfs");
    require_tool!("mke2fs");
    let b = build();
    let listing = text(sifovl().arg("diff").arg(&b.image));
    let expected = "\
D /gone
D /hello.txt
M /etc/os-release (content)
M /keep/owner.txt (owner)
M /keep/perm.txt (mode)
M /keep/xattr.txt (xattrs)
A /new
A /new/fifo
A /new/file
A /new/hard
A /new/rel
O /opaque
A /opaque/new.txt
";
    let sorted = |s: &str| {
        let mut lines: Vec<String> = s.lines().map(|l| l[2..].to_string() + &l[..1]).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&listing), sorted(expected), "{listing}");
    let report: serde_json::Value =
        serde_json::from_str(&text(sifovl().args(["diff", "--json"]).arg(&b.image))).unwrap();
    assert_eq!(
        (
            &report["added"],
            &report["modified"],
            &report["deleted"],
            &report["opaque"]
        ),
        (
            &serde_json::json!(6),
            &serde_json::json!(4),
            &serde_json::json!(2),
            &serde_json::json!(1)
        ),
        "{report}"
    );
    let gone = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/gone")
        .unwrap();
    assert_eq!(gone["kind"], "dir", "{gone}");
    // The lower layer compared with nothing: everything added.
    let layer0 = text(sifovl().args(["diff", "--layer", "0"]).arg(&b.image));
    assert!(layer0.lines().all(|l| l.starts_with("A ")), "{layer0}");
    assert!(layer0.contains("A /gone/b/c\n"), "{layer0}");
    // Without an overlay, diff needs a layer.
    fails(
        sifovl().arg("diff").arg(&b.before_add),
        "no writable overlay",
    );
}

#[test]
fn cat_reads_the_merged_view_and_resolves_symlinks_inside_the_image() {
    require_tool!("mksquashfs");
    require_tool!("mke2fs");
    let b = build();
    let read = |path: &str, layer: Option<&str>| {
        let mut cmd = sifovl();
        cmd.arg("cat");
        if let Some(n) = layer {
            cmd.args(["--layer", n]);
        }
        run_ok(cmd.arg(&b.image).arg(path))
    };
    assert_eq!(read("/etc/os-release", None), b"NAME=upper\n");
    assert_eq!(read("etc/os-release", Some("0")), b"NAME=lower\n");
    // An absolute symlink resolves inside the image, never on the host.
    assert_eq!(read("/abs", None), b"NAME=upper\n");
    assert_eq!(read("/new/rel", None), b"lower\n");
    assert_eq!(read("/new/hard", None), b"new\n");
    assert_eq!(read("/opaque/../keep/./same.txt", None), b"same");
    fails(
        sifovl().arg("cat").arg(&b.image).arg("/hello.txt"),
        "no such file or directory",
    );
    fails(
        sifovl().arg("cat").arg(&b.image).arg("/opaque/old1"),
        "no such file or directory",
    );
    fails(
        sifovl().arg("cat").arg(&b.image).arg("/etc"),
        "a directory, not a file",
    );
    fails(
        sifovl()
            .args(["cat", "--layer", "7"])
            .arg(&b.image)
            .arg("/etc/hostname"),
        "layers are numbered 0 to 1",
    );
}

#[test]
fn extract_gives_the_tree_the_kernels_overlayfs_shows() {
    require_tool!("mksquashfs");
    require_tool!("mke2fs");
    crate::require_mount!();
    let b = build();
    let merged = b.work.join("merged");
    std::fs::create_dir(&merged).unwrap();
    // Both read-only lowers: no workdir needed, nothing written into our trees.
    run_ok(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "ro,lowerdir={}:{}",
                b.upper.display(),
                b.lower.display()
            ))
            .arg(&merged),
    );
    let mount = Mount(merged.clone());
    let expected = host_listing(&merged);
    drop(mount);
    assert!(expected.contains_key("/opaque/new.txt") && !expected.contains_key("/opaque/old1"));

    let out = b.work.join("out");
    let report: serde_json::Value = serde_json::from_str(&text(
        sifovl()
            .args(["extract", "--json"])
            .arg(&b.image)
            .arg("/")
            .arg(&out),
    ))
    .unwrap();
    assert_eq!(report["skipped"], serde_json::json!([]), "{report}");
    let got = host_listing(&out);
    assert_eq!(
        got, expected,
        "extract differs from the kernel's overlayfs view"
    );

    // A subtree, a single file into a directory, a symlink as itself.
    let sub = b.work.join("sub");
    run_ok(sifovl().arg("extract").arg(&b.image).arg("/new").arg(&sub));
    let want: BTreeMap<String, String> = expected
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("/new/")
                .map(|r| (format!("/{r}"), v.replace("hardlink new/", "hardlink ")))
        })
        .collect();
    assert_eq!(host_listing(&sub), want);
    let into = b.work.join("into");
    std::fs::create_dir(&into).unwrap();
    run_ok(
        sifovl()
            .arg("extract")
            .arg(&b.image)
            .arg("/etc/os-release")
            .arg(&into),
    );
    assert_eq!(
        std::fs::read(into.join("os-release")).unwrap(),
        b"NAME=upper\n"
    );
    run_ok(
        sifovl()
            .arg("extract")
            .arg(&b.image)
            .arg("/abs")
            .arg(b.work.join("abs")),
    );
    assert_eq!(
        std::fs::read_link(b.work.join("abs")).unwrap(),
        Path::new("/etc/os-release")
    );
    // Never over anything.
    fails(
        sifovl().arg("extract").arg(&b.image).arg("/").arg(&out),
        "not empty",
    );
    fails(
        sifovl()
            .arg("extract")
            .arg(&b.image)
            .arg("/etc/os-release")
            .arg(into.join("os-release")),
        "never overwrites",
    );
}

#[test]
fn extract_of_imported_layers_equals_umocis_unpack() {
    let fixtures = require_fixtures!();
    require_tool!("umoci");
    require_tool!("skopeo");
    let work = tempfile::tempdir().unwrap();
    // Not hard-link-2 and hard-link-delete-4: their hard links to a lower layer's file are
    // copies in the imported layers (a layer on its own cannot express them), so the
    // extracted tree has copies too.
    for name in [
        "whiteout-opaque",
        "whiteout-explicit-dir",
        "whiteout-explicit-file",
        "many-layers",
        "hard-link-1",
    ] {
        let tagged = crate::import::tagged_copy(&fixtures, name, work.path());
        let expected =
            crate::import::umoci_tree(&tagged, &work.path().join(format!("umoci-{name}")));
        let source = format!("oci:{}", fixtures.join("oci-layouts").join(name).display());
        let image = work.path().join(format!("{name}.sif"));
        run_ok(
            sifovl()
                .args(["import", "--keep-layers"])
                .arg(&source)
                .arg(&image),
        );
        let out = work.path().join(format!("out-{name}"));
        run_ok(sifovl().arg("extract").arg(&image).arg("/").arg(&out));
        assert_eq!(
            host_listing(&out),
            expected,
            "{name}: extract of the layers differs from umoci's unpack"
        );
    }
}

#[test]
fn remove_overlay_gives_back_the_image_before_add() {
    require_tool!("mksquashfs");
    require_tool!("mke2fs");
    let b = build();
    let report: serde_json::Value = serde_json::from_str(&text(
        sifovl().args(["remove-overlay", "--json"]).arg(&b.image),
    ))
    .unwrap();
    assert_eq!(report["format"], "oci-sif", "{report}");
    // The image is the one before `add`: the same manifest and config (as JSON: the edit
    // writes them in Go's encoding, the imported layout had its own), the overlay's space
    // given back.
    assert_eq!(image_json(&b.image), image_json(&b.before_add));
    assert!(std::fs::metadata(&b.image).unwrap().len() < 20_000);
    run_ok(sifovl().arg("verify").arg(&b.image));
    crate::sifcheck::assert_oci_sif_invariants(&std::fs::read(&b.image).unwrap(), true);
    // Nothing left to remove: refused, file unchanged.
    let before = sha256_hex(&std::fs::read(&b.image).unwrap());
    fails(
        sifovl().arg("remove-overlay").arg(&b.image),
        "does not contain a writable overlay",
    );
    assert_eq!(sha256_hex(&std::fs::read(&b.image).unwrap()), before);

    // The sample OCI-SIF and native SIF (laid out as SingularityCE writes them) come back
    // byte for byte.
    for sample in ["sample.oci.sif", "sample.sif"] {
        let image = b.work.join(sample);
        std::fs::copy(crate::ocisif::sample(sample), &image).unwrap();
        let original = sha256_hex(&std::fs::read(&image).unwrap());
        run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
        run_ok(sifovl().arg("remove-overlay").arg(&image));
        assert_eq!(
            sha256_hex(&std::fs::read(&image).unwrap()),
            original,
            "{sample}"
        );
    }
    // Native SIF: a second add names the way out.
    let native = b.work.join("native.sif");
    std::fs::copy(crate::ocisif::sample("sample.sif"), &native).unwrap();
    run_ok(sifovl().args(["add", "--sparse"]).arg(&native));
    fails(
        sifovl().args(["add", "--sparse"]).arg(&native),
        "sifovl remove-overlay",
    );
    run_ok(sifovl().arg("remove-overlay").arg(&native));
    let listing = text(sifovl().arg("list").arg(&native));
    assert!(!listing.contains("Overlay"), "{listing}");
}
