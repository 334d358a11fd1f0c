//! Integration tests: the ext2/3/4 reader against mke2fs-built images, debugfs and ext4-view.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use sifovl::fs::entry::{EntryKind, EntrySource};
use sifovl::fs::ext::ExtFs;

use crate::util::run_ok;
use crate::{require_fixtures, require_tool};

/// Our listing: path -> (kind text, mode, uid, gid, content sha or target, xattrs).
pub fn listing(fs: &ExtFs<'_>, dir: &[u8]) -> BTreeMap<String, String> {
    let mut walk = fs.walk_dir(dir).unwrap();
    let mut out = BTreeMap::new();
    while let Some(e) = walk.next_entry().unwrap() {
        let ino = walk.current_inode().unwrap().number;
        let kind = match &e.kind {
            EntryKind::File { size } => {
                let mut data = Vec::new();
                walk.read_content().unwrap().read_to_end(&mut data).unwrap();
                assert_eq!(data.len() as u64, *size);
                format!("file {}", crate::sifcheck::sha256(&data))
            }
            EntryKind::Directory => "dir".into(),
            EntryKind::Symlink { target } => format!("symlink {}", String::from_utf8_lossy(target)),
            EntryKind::CharDevice { major, minor } => format!("char {major},{minor}"),
            EntryKind::BlockDevice { major, minor } => format!("block {major},{minor}"),
            EntryKind::Fifo => "fifo".into(),
            EntryKind::Socket => "socket".into(),
            EntryKind::HardLink { target } => {
                format!("hardlink {}", String::from_utf8_lossy(target))
            }
        };
        let xattrs: Vec<String> = e
            .metadata
            .xattrs
            .iter()
            .map(|x| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&x.name),
                    hex::encode(&x.value)
                )
            })
            .collect();
        out.insert(
            e.display_path(),
            format!(
                "{kind} {:o} {}:{} mtime={} [{}] ino={ino}",
                e.metadata.permissions,
                e.metadata.uid,
                e.metadata.gid,
                e.metadata.mtime,
                xattrs.join(",")
            ),
        );
    }
    out
}

#[test]
fn reads_the_singularity_overlay_fixture_at_offset_zero_and_embedded() {
    let fixtures = require_fixtures!();
    let path = fixtures.join("singularity/extfs-for-overlay.img");
    let bytes = std::fs::read(&path).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let fs = ExtFs::open(&file, 0, bytes.len() as u64).unwrap();
    let plain = listing(&fs, b"");
    assert!(
        plain.contains_key("/upper") && plain.contains_key("/work"),
        "{plain:?}"
    );
    // The same image at an odd offset inside a larger file.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("embedded.bin");
    let mut data = vec![0x5Au8; 12345];
    data.extend_from_slice(&bytes);
    data.extend_from_slice(&[0xA5; 777]);
    std::fs::write(&big, &data).unwrap();
    let f2 = std::fs::File::open(&big).unwrap();
    let fs2 = ExtFs::open(&f2, 12345, bytes.len() as u64).unwrap();
    assert_eq!(listing(&fs2, b""), plain);
}

fn mkfs(kind: &str, tree: &Path, image: &Path, size_mib: u64) {
    let f = std::fs::File::create(image).unwrap();
    f.set_len(size_mib << 20).unwrap();
    drop(f);
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", kind, "-b", "1024", "-I", "256", "-d"])
            .arg(tree)
            .arg(image),
    );
}

/// A tree with every file kind, xattrs, hard links, sparse and big files, long names and a
/// big (htree) directory, old and future timestamps.
pub fn make_tree(root: &Path) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::write(root.join("small.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..(300u32 << 10)).map(|i| (i % 253) as u8).collect();
    std::fs::write(root.join("dir/big.bin"), &big).unwrap(); // beyond the double-indirect threshold at 1 KiB blocks
    std::fs::hard_link(root.join("dir/big.bin"), root.join("dir/sub/big-link.bin")).unwrap();
    let sparse = std::fs::File::create(root.join("sparse.bin")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (8 << 20) - 3).unwrap();
    symlink("small.txt", root.join("fast-link")).unwrap();
    symlink("x".repeat(200), root.join("slow-link")).unwrap();
    let long = "n".repeat(255);
    std::fs::write(root.join(&long), b"long name").unwrap();
    std::fs::create_dir(root.join("many")).unwrap();
    for i in 0..600 {
        std::fs::write(
            root.join(format!("many/file-with-a-longish-name-{i:04}")),
            format!("{i}"),
        )
        .unwrap();
    }
    run_ok(
        Command::new("mknod")
            .arg(root.join("whiteout"))
            .args(["c", "0", "0"]),
    );
    run_ok(
        Command::new("mknod")
            .arg(root.join("null"))
            .args(["c", "1", "3"]),
    );
    run_ok(
        Command::new("mknod")
            .arg(root.join("bigdev"))
            .args(["b", "259", "70000"]),
    );
    run_ok(Command::new("mkfifo").arg(root.join("fifo")));
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.comment", "-v", "hi"])
            .arg(root.join("small.txt")),
    );
    run_ok(
        Command::new("setfattr")
            .args(["-n", "trusted.overlay.opaque", "-v", "y"])
            .arg(root.join("dir")),
    );
    run_ok(
        Command::new("setfattr")
            .args([
                "-n",
                "security.capability",
                "-v",
                "0x0100000200200000000000000000000000000000",
            ])
            .arg(root.join("empty")),
    );
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.big", "-v", &"v".repeat(600)])
            .arg(root.join("dir/sub")),
    );
    run_ok(
        Command::new("chown")
            .args(["70000:1234"])
            .arg(root.join("small.txt")),
    );
    run_ok(
        Command::new("touch")
            .args(["-h", "-d", "1960-05-01 00:00:00 UTC"])
            .arg(root.join("empty")),
    );
    run_ok(
        Command::new("touch")
            .args(["-h", "-d", "2100-01-01 00:00:00 UTC"])
            .arg(root.join("small.txt")),
    );
}

#[test]
fn listing_of_mke2fs_images_matches_the_source_tree_and_debugfs() {
    require_tool!("mke2fs");
    require_tool!("setfattr");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let expected = crate::tree::host_listing(&tree);
    for kind in ["ext2", "ext3", "ext4"] {
        let image = dir.path().join(format!("{kind}.img"));
        mkfs(kind, &tree, &image, 32);
        // mke2fs -d drops the epoch bits of times after 2038; debugfs stores them properly.
        run_ok(
            Command::new("debugfs")
                .args(["-w", "-R", "sif /small.txt mtime 21000101000000"])
                .arg(&image),
        );
        let file = std::fs::File::open(&image).unwrap();
        let fs = ExtFs::open(&file, 0, std::fs::metadata(&image).unwrap().len()).unwrap();
        let ours = listing(&fs, b"");
        // Compare with the source tree (mke2fs -d copies everything but the root's times).
        for (path, want) in &expected {
            let got = ours
                .get(path)
                .unwrap_or_else(|| panic!("{kind}: {path} missing"));
            let strip = |s: &str| s.split(" ino=").next().unwrap().to_string();
            assert_eq!(strip(got), strip(want), "{kind}: {path}");
        }
        // debugfs agrees on inode numbers.
        for path in [
            "/small.txt",
            "/dir/big.bin",
            "/many/file-with-a-longish-name-0599",
        ] {
            let out = String::from_utf8(run_ok(
                Command::new("debugfs")
                    .args(["-R", &format!("stat {path}")])
                    .arg(&image),
            ))
            .unwrap();
            let ino: String = out
                .split("Inode: ")
                .nth(1)
                .unwrap()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            assert!(
                ours[path].ends_with(&format!(" ino={ino}")),
                "{kind} {path}: debugfs says {ino}: {}",
                ours[path]
            );
        }
    }
}

#[test]
fn corrupted_images_give_clean_errors() {
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/f"), vec![1u8; 50_000]).unwrap();
    let image = dir.path().join("ok.img");
    mkfs("ext3", &tree, &image, 4);
    let good = std::fs::read(&image).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flip = |name: &'static str, at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        cases.push((name, b));
    };
    flip("magic", 1024 + 0x38, &[0, 0]);
    flip("block size", 1024 + 0x18, &[30, 0, 0, 0]);
    flip("blocks per group", 1024 + 0x20, &[0, 0, 0, 0]);
    flip("inode size", 1024 + 0x58, &[3, 0]);
    flip("inode count", 1024, &[1, 0, 0, 0]);
    flip("huge block count", 1024 + 4, &[0xff, 0xff, 0xff, 0x7f]);
    flip(
        "inode table out of range",
        2048 + 8,
        &[0xff, 0xff, 0xff, 0x0f],
    );
    flip("incompat features", 1024 + 0x60, &[0, 0x80, 0, 0]);
    cases.push(("truncated", good[..1500].to_vec()));
    for (name, bytes) in cases {
        let p = dir.path().join("bad.img");
        std::fs::write(&p, &bytes).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        let result = ExtFs::open(&file, 0, bytes.len() as u64).and_then(|fs| {
            let mut w = fs.walk()?;
            while let Some(e) = w.next_entry()? {
                if matches!(e.kind, EntryKind::File { .. }) {
                    let mut sink = Vec::new();
                    w.read_content()?
                        .read_to_end(&mut sink)
                        .map_err(|e| sifovl::Error::io("read", e))?;
                }
            }
            Ok(())
        });
        let err = result.expect_err(name);
        assert!(!err.to_string().contains('\n'), "{name}: {err}");
    }
}

#[test]
fn file_contents_equal_ext4_views_where_it_can_read_them() {
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d/e")).unwrap();
    for (i, size) in [
        0usize,
        1,
        1023,
        1024,
        4096,
        12 * 1024 + 1,
        300 * 1024,
        2 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let data: Vec<u8> = (0..size).map(|j| (j * 13 + i) as u8).collect();
        std::fs::write(tree.join(format!("d/e/f{i}")), data).unwrap();
    }
    for kind in ["ext4", "ext3"] {
        let image = dir.path().join(format!("{kind}.img"));
        mkfs(kind, &tree, &image, 16);
        let oracle = ext4_view::Ext4::load_from_path(&image).unwrap();
        let file = std::fs::File::open(&image).unwrap();
        let fs = ExtFs::open(&file, 0, std::fs::metadata(&image).unwrap().len()).unwrap();
        let mut walk = fs.walk().unwrap();
        let mut compared = 0;
        while let Some(e) = walk.next_entry().unwrap() {
            if let EntryKind::File { .. } = e.kind {
                let mut ours = Vec::new();
                walk.read_content().unwrap().read_to_end(&mut ours).unwrap();
                let theirs = oracle.read(e.display_path().as_str()).unwrap();
                assert!(ours == theirs, "{kind}: {}", e.display_path());
                compared += 1;
            }
        }
        assert_eq!(compared, 8, "{kind}");
    }
}

#[test]
fn a_directory_loop_is_an_error_not_a_hang() {
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    let image = dir.path().join("loop.img");
    mkfs("ext3", &tree, &image, 4);
    let script = dir.path().join("cmds");
    std::fs::write(&script, "cd /a/b\nln /a loop\n").unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(&image),
    );
    let file = std::fs::File::open(&image).unwrap();
    let fs = ExtFs::open(&file, 0, std::fs::metadata(&image).unwrap().len()).unwrap();
    let mut walk = fs.walk().unwrap();
    let err = loop {
        match walk.next_entry() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the loop was not noticed"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("reached twice"), "{err}");
}

#[test]
fn random_corruption_never_panics() {
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/f"), vec![1u8; 70_000]).unwrap();
    std::os::unix::fs::symlink("x".repeat(100), tree.join("a/l")).unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.k", "-v", "v"])
            .arg(tree.join("a")),
    );
    let image = dir.path().join("ok.img");
    mkfs("ext4", &tree, &image, 2);
    let good = std::fs::read(&image).unwrap();
    // Metadata lives in the first blocks: corrupt bytes there, several at a time.
    let hot = good.len().min(64 * 1024);
    let mut state = 0x243F6A8885A308D3u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let p = dir.path().join("bad.img");
    for _ in 0..400 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() as usize) % hot;
            bad[at] = next() as u8;
        }
        std::fs::write(&p, &bad).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        let _ = ExtFs::open(&file, 0, bad.len() as u64).and_then(|fs| {
            let mut w = fs.walk()?;
            for _ in 0..10_000 {
                let Some(e) = w.next_entry()? else { break };
                if let EntryKind::File { size } = e.kind {
                    let mut sink = Vec::new();
                    let _ = w
                        .read_content()?
                        .take(size.min(1 << 22))
                        .read_to_end(&mut sink);
                }
            }
            Ok(())
        });
    }
}

#[test]
fn meta_bg_layouts_read_like_the_plain_one() {
    // SingularityCE's overlay rule allows meta_bg; with 1 KiB blocks and 300 MiB there are
    // two meta-groups, so the second group-descriptor block is not next to the superblock.
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let expected = crate::tree::host_listing(&tree);
    let image = dir.path().join("meta_bg.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    run_ok(
        Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext3",
                "-b",
                "1024",
                "-O",
                "meta_bg,^resize_inode",
                "-d",
            ])
            .arg(&tree)
            .arg(&image),
    );
    run_ok(
        Command::new("debugfs")
            .args(["-w", "-R", "sif /small.txt mtime 21000101000000"])
            .arg(&image),
    );
    let file = std::fs::File::open(&image).unwrap();
    let fs = ExtFs::open(&file, 0, 300 << 20).unwrap();
    let ours = listing(&fs, b"");
    for (path, want) in &expected {
        let got = ours.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(got.split(" ino=").next().unwrap(), want.as_str(), "{path}");
    }
    run_ok(Command::new("e2fsck").arg("-fn").arg(&image));
    // Every group's inode table where dumpe2fs says, the second meta-group's included.
    let dump = String::from_utf8(run_ok(Command::new("dumpe2fs").arg(&image))).unwrap();
    let tables: Vec<u64> = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Inode table at "))
        .map(|r| r.split('-').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        tables.len() > 32,
        "{} groups: not two meta-groups",
        tables.len()
    );
    assert_eq!(fs.group_count(), tables.len());
    for (g, want) in tables.iter().enumerate() {
        assert_eq!(fs.inode_table_block(g), Some(*want), "group {g}");
    }
}

/// Whether a file is stored with holes (what decides a squashfs inode's sparse bytes when
/// the overlay is sealed) follows the blocks allocated to it, as debugfs counts them.
#[test]
fn stored_with_holes_follows_the_allocated_block_count() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let image = dir.path().join("ext3.img");
    mkfs("ext3", &tree, &image, 16);
    let file = std::fs::File::open(&image).unwrap();
    let fs = ExtFs::open(&file, 0, std::fs::metadata(&image).unwrap().len()).unwrap();
    let mut walk = fs.walk_dir(b"").unwrap();
    let mut seen = BTreeMap::new();
    while let Some(e) = walk.next_entry().unwrap() {
        if let EntryKind::File { size } = e.kind {
            let path = String::from_utf8(e.path.clone()).unwrap();
            let stat = String::from_utf8(run_ok(
                Command::new("debugfs")
                    .args(["-R", &format!("stat /{path}")])
                    .arg(&image),
            ))
            .unwrap();
            let sectors: u64 = stat
                .split("Blockcount:")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no Blockcount for {path}: {stat}"));
            assert_eq!(
                walk.stored_with_holes(),
                Some(sectors * 512 < size),
                "{path}: {sectors} sectors for {size} bytes"
            );
            seen.insert(path, sectors * 512 < size);
        }
    }
    assert_eq!(seen.get("sparse.bin"), Some(&true), "{seen:?}");
    assert_eq!(seen.get("dir/big.bin"), Some(&false), "{seen:?}");
}
