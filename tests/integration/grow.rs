//! `resize` growing an overlay in place: only metadata written, the result checked against
//! what `resize2fs` makes of the same filesystem (`dumpe2fs`, group by group), `e2fsck -fn`,
//! `debugfs` and a kernel mount; the layouts not grown in place fall back to a rewrite and
//! say why.

use std::path::Path;
use std::process::Command;

use crate::ext_write::{assert_fsck_clean, bytes_written, copy_range_out, overlay_range};
use crate::ocisif::scratch;
use crate::util::{run_ok, sifovl};
use crate::{require_mount, require_tool};

/// Pseudo-random bytes (incompressible, never all zero).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8 | 1
        })
        .collect()
}

/// A tree of `upper/` and `work/` as an overlay holds it: a 12 MiB file and 300 small ones.
fn overlay_tree(root: &Path) -> Vec<u8> {
    let big = noise(12 << 20, 0x1234_5678_9ABC_DEF1);
    std::fs::create_dir_all(root.join("upper/d")).unwrap();
    std::fs::create_dir_all(root.join("work")).unwrap();
    std::fs::write(root.join("upper/d/big.bin"), &big).unwrap();
    for i in 0..300 {
        std::fs::write(root.join(format!("upper/d/s{i}")), format!("{i}\n")).unwrap();
    }
    big
}

/// The overlay's bytes copied out to `dest` (holes kept).
fn extract_overlay(image: &Path, dest: &Path) {
    let (offset, size) = overlay_range(image);
    copy_range_out(image, offset, size, dest);
}

/// `dumpe2fs` of `fs` without what differs between any two runs (times, mount counts,
/// checksums, the UUID and hash seed).
fn dump(fs: &Path) -> String {
    let out = Command::new("dumpe2fs").arg(fs).output().unwrap();
    assert!(out.status.success(), "dumpe2fs {}", fs.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            ![
                "time",
                "Lifetime",
                "UUID",
                "checksum",
                "created",
                "Last ",
                "Mount count",
            ]
            .iter()
            .any(|w| l.contains(w))
                && !l.starts_with("Directory Hash Seed")
                && !l.starts_with("Filesystem state")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sifovl resize --json --size MIB IMAGE`: its report, and the bytes it wrote (`wchar`).
pub fn resize_counting_writes(image: &Path, mib: u64) -> (serde_json::Value, u64) {
    let json = image.with_extension("resize.json");
    let written = bytes_written(&[
        "sh".as_ref(),
        "-c".as_ref(),
        r#""$0" resize --json --size "$1" "$2" > "$3""#.as_ref(),
        env!("CARGO_BIN_EXE_sifovl").as_ref(),
        mib.to_string().as_ref(),
        image.as_os_str(),
        json.as_os_str(),
    ]);
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    (report, written)
}

/// Grow the overlay of `image` to `mib` MiB and check it: "in place" (with the bytes the
/// command wrote far below the content) or "rewritten" for `expect_rewrite`'s reason;
/// verify; e2fsck clean; the big file reads back; and, in place, `dumpe2fs` equal to what
/// resize2fs makes of the old filesystem.
fn grow_and_check(image: &Path, mib: u64, big: &[u8], expect_rewrite: Option<&str>) {
    let dir = image.parent().unwrap();
    let old_fs = dir.join("old.ext3");
    extract_overlay(image, &old_fs);
    let (report, written) = resize_counting_writes(image, mib);
    let what = format!("{} to {mib} MiB: {report}", image.display());
    assert_eq!(report["new_size"], mib << 20, "{what}");
    match expect_rewrite {
        None => {
            assert_eq!(report["method"], "in place", "{what}");
            assert_eq!(report["data_bytes"], 0, "{what}");
            // Metadata only, each byte twice (the edit's journal, then in place): bitmaps,
            // descriptor tables and superblocks of the new groups, the resize inode's
            // blocks, the JSON objects; about 3 MiB for 300 new groups of 1 KiB blocks. A
            // rewrite writes the content (12 MiB) at least twice.
            assert!(
                written < big.len() as u64 / 3,
                "{what}: wrote {written} bytes"
            );
        }
        Some(why) => {
            assert_eq!(report["method"], "rewritten", "{what}");
            let said = report["rewritten_because"].as_str().unwrap();
            assert!(said.contains(why), "{what}");
        }
    }
    run_ok(sifovl().arg("verify").arg(image));
    let (offset, size) = overlay_range(image);
    assert_eq!(size, mib << 20, "{what}");
    assert_fsck_clean(image, offset, size);
    let new_fs = dir.join("new.ext3");
    extract_overlay(image, &new_fs);
    let out = Command::new("debugfs")
        .args(["-R", "cat /upper/d/big.bin"])
        .arg(&new_fs)
        .output()
        .unwrap();
    assert!(
        out.stdout == big,
        "{what}: the big file reads back different"
    );
    if expect_rewrite.is_none() {
        // resize2fs on a copy of the old filesystem grown to the same size.
        let reference = dir.join("resize2fs.ext3");
        std::fs::copy(&old_fs, &reference).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&reference)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let out = Command::new("resize2fs")
            .arg("-f")
            .arg(&reference)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "resize2fs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ours, theirs) = (dump(&new_fs), dump(&reference));
        if ours != theirs {
            let diff: Vec<_> = ours
                .lines()
                .zip(theirs.lines())
                .filter(|(a, b)| a != b)
                .take(10)
                .collect();
            panic!("{what}: dumpe2fs differs from resize2fs's: {diff:?}");
        }
    }
}

/// An image whose overlay is `mke2fs -t ext3 OPTIONS -d tree` of `mib` MiB, added with
/// `add --from`.
fn image_with_mke2fs_overlay(
    sample: &str,
    options: &[&str],
    mib: u64,
) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let (dir, image) = scratch(sample);
    let tree = dir.path().join("tree");
    let big = overlay_tree(&tree);
    let fs = dir.path().join("made.ext3");
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext3"])
        .args(options)
        .arg("-d")
        .arg(&tree)
        .arg(&fs)
        .output()
        .unwrap();
    assert!(out.status.success(), "mke2fs {options:?}");
    run_ok(sifovl().args(["add", "--from"]).arg(&fs).arg(&image));
    std::fs::remove_file(&fs).unwrap();
    (dir, image, big)
}

#[test]
fn growing_in_place_writes_only_metadata_and_matches_resize2fs() {
    require_tool!("mke2fs");
    require_tool!("e2fsck");
    require_tool!("debugfs");
    require_tool!("dumpe2fs");
    require_tool!("resize2fs");
    // SingularityCE's `overlay create` runs plain `mkfs.ext3`: 1 KiB blocks below 512 MiB,
    // with resize_inode. 64 -> 200 MiB adds superblock backups (group 9: the resize inode
    // maps their reserved blocks); -> 600 MiB also needs two more descriptor-table blocks
    // (taken from the reserved ones); -> 3000 MiB, more of both.
    for (sample, options, from, steps) in [
        (
            "sample.oci.sif",
            &["-b", "1024"][..],
            64,
            &[200u64, 600, 3000][..],
        ),
        ("sample.sif", &["-b", "1024"][..], 64, &[600][..]),
        ("sample.oci.sif", &["-b", "4096"][..], 64, &[300, 4000][..]),
        ("sample.oci.sif", &["-b", "2048"][..], 64, &[900][..]),
        (
            "sample.oci.sif",
            &["-b", "1024", "-O", "^resize_inode"][..],
            64,
            &[200][..],
        ),
    ] {
        let (_dir, image, big) = image_with_mke2fs_overlay(sample, options, from);
        for &mib in steps {
            grow_and_check(&image, mib, &big, None);
        }
    }
}

#[test]
fn overlays_sifovl_made_grow_in_place_too_and_mount_read_write() {
    require_tool!("e2fsck");
    require_tool!("debugfs");
    require_tool!("dumpe2fs");
    require_tool!("resize2fs");
    for sample in ["sample.oci.sif", "sample.sif"] {
        let (dir, image) = scratch(sample);
        let tree = dir.path().join("tree");
        let big = overlay_tree(&tree);
        run_ok(
            sifovl()
                .args(["add", "--sparse", "--size", "64", "--from-dir"])
                .arg(tree.join("upper"))
                .arg(&image),
        );
        // Our writer: 4 KiB blocks, no resize_inode; group 0 filled out, then backups in
        // groups 1, 3, 5, 7, 9, 25.
        grow_and_check(&image, 300, &big, None);
        grow_and_check(&image, 4000, &big, None);
    }
}

#[test]
fn a_grown_overlay_mounts_read_write_and_fills_past_its_old_size() {
    require_mount!();
    require_tool!("e2fsck");
    let (dir, image) = scratch("sample.oci.sif");
    let tree = dir.path().join("tree");
    overlay_tree(&tree);
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--size", "64", "--from-dir"])
            .arg(tree.join("upper"))
            .arg(&image),
    );
    run_ok(sifovl().args(["resize", "--size", "400"]).arg(&image));
    let fs = dir.path().join("mounted.ext3");
    extract_overlay(&image, &fs);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&fs)
            .arg(&mnt),
    );
    // 200 MiB more than the old 64 MiB could hold.
    let wrote = std::fs::write(mnt.join("more.bin"), noise(200 << 20, 7));
    let _ = Command::new("sync").status();
    run_ok(Command::new("umount").arg(&mnt));
    wrote.unwrap();
    assert_fsck_clean(&fs, 0, std::fs::metadata(&fs).unwrap().len());
}

#[test]
fn layouts_not_grown_in_place_are_rewritten_and_say_why() {
    require_tool!("mke2fs");
    require_tool!("e2fsck");
    require_tool!("debugfs");
    // No reserved descriptor-table blocks: past 32 groups of 8 MiB the table needs a
    // second block, which only a rewrite can make room for.
    let (_dir, image, big) =
        image_with_mke2fs_overlay("sample.oci.sif", &["-b", "1024", "-O", "^resize_inode"], 64);
    grow_and_check(
        &image,
        600,
        &big,
        Some("group descriptor table would need another block"),
    );
    // meta_bg (descriptor blocks spread over the groups) is not grown in place.
    let (_dir, image, big) =
        image_with_mke2fs_overlay("sample.sif", &["-O", "meta_bg,^resize_inode"], 64);
    grow_and_check(&image, 128, &big, Some("features"));
}

#[test]
fn a_shrunk_overlay_stays_sparse() {
    // A shrink rewrites the overlay over the old one: the new overlay's holes below the old
    // end are punched, not written as zeros (which allocated the whole overlay).
    require_tool!("e2fsck");
    require_tool!("debugfs");
    let (dir, image) = scratch("sample.oci.sif");
    let tree = dir.path().join("tree");
    let big = overlay_tree(&tree);
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--size", "300", "--from-dir"])
            .arg(tree.join("upper"))
            .arg(&image),
    );
    let allocated =
        |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap()) * 512;
    assert!(allocated(&image) < 40 << 20, "add is sparse");
    run_ok(sifovl().args(["resize", "--size", "100"]).arg(&image));
    let (offset, size) = overlay_range(&image);
    assert_eq!(size, 100 << 20);
    assert!(
        allocated(&image) < 40 << 20,
        "the shrunk overlay allocates {} bytes for 12 MiB of content",
        allocated(&image)
    );
    assert_fsck_clean(&image, offset, size);
    let fs = dir.path().join("shrunk.ext3");
    extract_overlay(&image, &fs);
    let out = Command::new("debugfs")
        .args(["-R", "cat /upper/d/big.bin"])
        .arg(&fs)
        .output()
        .unwrap();
    assert!(out.stdout == big);
    run_ok(sifovl().arg("verify").arg(&image));
}
