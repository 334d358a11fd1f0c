//! `resize` shrinking an overlay in place: the blocks past the new end move below it, the
//! inodes of the dropped groups get new numbers, and only that and the metadata is
//! written. The overlays are filled by the kernel (its allocator spreads directories and
//! their files over the block groups, as a container's writes do), and the results checked
//! with `e2fsck -fn`, `dumpe2fs` against `resize2fs` of the same filesystem, and a kernel
//! mount listing every file (content, mode, owner, times, xattrs, hard links) as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ext_write::{assert_fsck_clean, copy_range_out, overlay_range};
use crate::ocisif::scratch;
use crate::tree::host_listing;
use crate::util::{noise, run_ok, sifovl};
use crate::{require_mount, require_tool};

/// A tree with every kind of entry an overlay holds, about `scale` / 6 MiB of content: files big enough for double-indirect blocks, hard links, fast and
/// slow symlinks, a FIFO, a device, a sparse file, small and large xattrs (two files with
/// the same large one share an xattr block), and 16 more top-level directories (which the
/// kernel spreads over the groups).
fn tree(root: &Path, scale: usize) {
    let upper = root.join("upper");
    std::fs::create_dir_all(root.join("work/work")).unwrap();
    std::fs::create_dir_all(upper.join("d/e")).unwrap();
    std::fs::write(upper.join("big.bin"), noise(scale * 1024 * 64, 1)).unwrap();
    for i in 0..60 {
        let sub = upper.join(format!("d{}", i % 6));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}")),
            noise(i * scale * 64, i as u64 + 2),
        )
        .unwrap();
    }
    std::fs::hard_link(upper.join("d1/f7"), upper.join("d/e/hard")).unwrap();
    std::os::unix::fs::symlink("../d1/f7", upper.join("d/fast")).unwrap();
    std::os::unix::fs::symlink("x".repeat(120), upper.join("d/slow")).unwrap();
    run_ok(Command::new("mkfifo").arg(upper.join("d/fifo")));
    run_ok(
        Command::new("mknod")
            .arg(upper.join("d/null"))
            .args(["c", "1", "3"]),
    );
    let sparse = std::fs::File::create(upper.join("d/sparse")).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", 3 << 20).unwrap();
    let large = "v".repeat(600);
    for (file, name, value) in [
        ("d2/f8", "user.small", "hi"),
        ("d3/f9", "user.large", large.as_str()),
        ("d4/f10", "user.large", large.as_str()),
        ("d", "trusted.overlay.opaque", "y"),
    ] {
        rustix::fs::setxattr(
            upper.join(file),
            name,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    for i in 0..16 {
        let dir = root.join(format!("t{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("file"), noise(scale * 8, 100 + i)).unwrap();
    }
    run_ok(
        Command::new("chown")
            .args(["-R", "1234:5678"])
            .arg(upper.join("d1")),
    );
}

/// Mount `fs` (a loop mount at `mnt`), run `f` on the mount point, unmount.
fn mounted<T>(fs: &Path, mnt: &Path, options: &str, f: impl FnOnce(&Path) -> T) -> T {
    std::fs::create_dir_all(mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", &format!("loop,{options}")])
            .arg(fs)
            .arg(mnt),
    );
    let out = f(mnt);
    let _ = Command::new("sync").status();
    run_ok(Command::new("umount").arg(mnt));
    out
}

/// An ext3 filesystem of `mib` MiB made by `mke2fs -t ext3 OPTIONS` and filled by the
/// kernel with `tree(_, scale)` after a filler file of `filler` MiB, then deleted: the
/// content lies past the filler, over the later groups. Returns it and its listing.
pub fn spread_overlay(
    dir: &Path,
    mib: u64,
    options: &[&str],
    filler: u64,
    scale: usize,
) -> (PathBuf, BTreeMap<String, String>) {
    let source = dir.join("source");
    tree(&source, scale);
    let fs = dir.join("spread.ext3");
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext3"])
            .args(options)
            .arg(&fs),
    );
    let listing = mounted(&fs, &dir.join("mnt"), "rw", |mnt| {
        std::fs::write(mnt.join("filler"), vec![7u8; (filler << 20) as usize]).unwrap();
        let _ = Command::new("sync").status();
        run_ok(Command::new("cp").arg("-a").arg(source.join(".")).arg(mnt));
        std::fs::remove_file(mnt.join("filler")).unwrap();
        host_listing(mnt)
    });
    std::fs::remove_dir_all(&source).unwrap();
    (fs, listing)
}

/// The same kind of overlay made without the kernel, so that its layout is the same in
/// every run: `mke2fs -d` (which fills in name order) of a filler file and 300 empty files
/// named to come first, then `tree(_, scale)`; then `debugfs` deletes the filler and the
/// empty files. 128 MiB of 1 KiB blocks, 32 inodes per group: the content lies past 80 MiB
/// and its inodes in groups 9 and later.
pub fn mke2fs_spread_overlay(dir: &Path, scale: usize) -> PathBuf {
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("0inodes")).unwrap();
    std::fs::write(source.join("0filler"), vec![7u8; 80 << 20]).unwrap();
    let mut commands = String::from("rm /0filler\n");
    for i in 0..300 {
        std::fs::write(source.join(format!("0inodes/{i:03}")), b"").unwrap();
        commands.push_str(&format!("rm /0inodes/{i:03}\n"));
    }
    commands.push_str("rmdir /0inodes\n");
    tree(&source, scale);
    let fs = dir.join("spread.ext3");
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext3", "-b", "1024", "-N", "512", "-d"])
            .arg(&source)
            .arg(&fs),
    );
    let script = dir.join("debugfs.cmds");
    std::fs::write(&script, commands).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(&fs),
    );
    std::fs::remove_dir_all(&source).unwrap();
    assert_fsck_clean(&fs, 0, 128 << 20);
    fs
}

/// `dumpe2fs -h` lines that count blocks and inodes.
fn counts(fs: &Path) -> Vec<String> {
    let out = Command::new("dumpe2fs").arg("-h").arg(fs).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            [
                "Inode count",
                "Block count",
                "Reserved block count",
                "Free blocks",
                "Free inodes",
            ]
            .iter()
            .any(|w| l.starts_with(w))
        })
        .map(str::to_string)
        .collect()
}

/// [`counts`] of what `resize2fs` makes of a copy of `fs` shrunk to `mib` MiB.
fn resize2fs_counts(fs: &Path, mib: u64) -> Vec<String> {
    let reference = fs.with_extension("resize2fs");
    std::fs::copy(fs, &reference).unwrap();
    run_ok(
        Command::new("resize2fs")
            .arg("-f")
            .arg(&reference)
            .arg(format!("{mib}M")),
    );
    let counted = counts(&reference);
    std::fs::remove_file(&reference).unwrap();
    counted
}

#[test]
fn shrinking_in_place_moves_blocks_renumbers_inodes_and_keeps_every_file() {
    require_mount!();
    require_tool!("mke2fs");
    require_tool!("e2fsck");
    require_tool!("dumpe2fs");
    require_tool!("resize2fs");
    // SingularityCE's `overlay create` layout (1 KiB blocks, resize_inode) in an OCI-SIF,
    // and 4 KiB blocks in a native SIF.
    for (sample, options, from, filler, to) in [
        ("sample.oci.sif", &["-b", "1024"][..], 200u64, 120u64, 64u64),
        ("sample.sif", &["-b", "4096"][..], 600, 400, 200),
    ] {
        let (dir, image) = scratch(sample);
        let (fs, before) = spread_overlay(dir.path(), from, options, filler, 64);
        run_ok(sifovl().args(["add", "--from"]).arg(&fs).arg(&image));
        let (report, written) = crate::grow::resize_counting_writes(&image, to);
        let what = format!("{sample} {from} -> {to} MiB: {report}");
        eprintln!("{what}: wrote {written} bytes");
        assert_eq!(report["method"], "in place", "{what}");
        let moved = report["data_bytes"].as_u64().unwrap();
        assert!(moved > 4 << 20, "{what}: the content lay past the new end");
        assert!(
            report["renumbered_inodes"].as_u64().unwrap() > 0,
            "{what}: the kernel spread directories past the new end"
        );
        // The moved content written once, plus metadata and JSON (twice: journal, place).
        assert!(
            written < moved + (4 << 20),
            "{what}: wrote {written} bytes to move {moved}"
        );
        run_ok(sifovl().arg("verify").arg(&image));
        let (offset, size) = overlay_range(&image);
        assert_eq!(size, to << 20, "{what}");
        assert_fsck_clean(&image, offset, size);
        let shrunk = dir.path().join("shrunk.ext3");
        copy_range_out(&image, offset, size, &shrunk);
        // The same counts as resize2fs gives the old filesystem.
        assert_eq!(counts(&shrunk), resize2fs_counts(&fs, to), "{what}");
        // Every file as it was, through the kernel.
        let after = mounted(&shrunk, &dir.path().join("mnt"), "ro", host_listing);
        assert_eq!(after, before, "{what}");
        // And the kernel writes into it: fill most of it, then e2fsck clean again.
        mounted(&shrunk, &dir.path().join("mnt"), "rw", |mnt| {
            std::fs::write(mnt.join("upper/more"), noise(((to / 2) << 20) as usize, 9)).unwrap();
        });
        assert_fsck_clean(&shrunk, 0, size);
    }
}

/// `debugfs rdump` of the whole filesystem `fs`, listed (without the symlinks' times,
/// which rdump does not restore; it skips devices and FIFOs).
fn rdump_listing(fs: &Path, dest: &Path) -> BTreeMap<String, String> {
    std::fs::create_dir_all(dest).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", dest.display()))
            .arg(fs),
    );
    let mut listing = host_listing(dest);
    for line in listing.values_mut().filter(|l| l.starts_with("symlink")) {
        if let Some(at) = line.find(" mtime=") {
            let end = line[at + 1..].find(' ').map_or(line.len(), |e| at + 1 + e);
            line.replace_range(at..end, "");
        }
    }
    listing
}

#[test]
fn an_overlay_filled_by_mke2fs_shrinks_in_place_as_resize2fs_counts_it() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    require_tool!("e2fsck");
    require_tool!("dumpe2fs");
    require_tool!("resize2fs");
    let (dir, image) = scratch("sample.oci.sif");
    let fs = mke2fs_spread_overlay(dir.path(), 64);
    let before = rdump_listing(&fs, &dir.path().join("before"));
    assert!(before.len() > 100, "{before:?}");
    run_ok(sifovl().args(["add", "--from"]).arg(&fs).arg(&image));
    let out = run_ok(
        sifovl()
            .args(["resize", "--json", "--size", "64"])
            .arg(&image),
    );
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["method"], "in place", "{report}");
    // Every inode of the content lived in groups 9 and later (of 16; 8 are kept).
    assert!(
        report["renumbered_inodes"].as_u64().unwrap() > 100,
        "{report}"
    );
    assert!(report["data_bytes"].as_u64().unwrap() > 8 << 20, "{report}");
    run_ok(sifovl().arg("verify").arg(&image));
    let (offset, size) = overlay_range(&image);
    assert_fsck_clean(&image, offset, size);
    let shrunk = dir.path().join("shrunk.ext3");
    copy_range_out(&image, offset, size, &shrunk);
    assert_eq!(counts(&shrunk), resize2fs_counts(&fs, 64));
    assert_eq!(rdump_listing(&shrunk, &dir.path().join("after")), before);
    // Our reader sees the same tree as debugfs.
    let ours = String::from_utf8(run_ok(sifovl().args(["ls", "--hash"]).arg(&image))).unwrap();
    for path in [
        "upper/big.bin",
        "upper/d/e/hard",
        "upper/d/slow",
        "upper/d5/f59",
    ] {
        assert!(ours.contains(path), "{path} missing from `ls`: {ours}");
    }
}
