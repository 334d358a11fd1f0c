//! Issue 15's "every command and option through the binary, its output checked by an
//! independent tool": what the other modules did not already cover that way.
//!
//! Covered elsewhere, through the binary and an independent check (not repeated here):
//! - `list`, `header`, `info`, `dump` text output byte for byte against the siftool goldens:
//!   sif.rs `list_and_header_equal_the_siftool_goldens`, `info_and_dump_equal_the_siftool_goldens`.
//! - `seal` (default gzip, 128K) extracted by unsquashfs, `-lls`, e2fsck/debugfs of the overlay:
//!   seal.rs `seal_turns_the_overlay_into_a_squashfs_layer`; `--root-owned`,
//!   `--keep-aufs-markers`: seal.rs.
//! - `export-layer --json` (default layer, gzip) digest against sha256 and `tar -tvz`:
//!   seal.rs `seal_turns_the_overlay_into_a_squashfs_layer`.
//! - `mktar` compression by file name and explicit `--compression`, magic bytes and `tar -t`
//!   member count: cli.rs `mktar_compression_follows_the_file_name_and_counts_tar_members`.
//! - `mksquashfs --block-size 64K` with `unsquashfs -s`, `add --size` units: cli.rs
//!   `sizes_take_units_and_absurd_sizes_are_refused_before_any_work`.
//! - `add --sparse` (holes, e2fsck -fn, debugfs of upper/ and work/): ocisif.rs
//!   `add_appends_an_ext3_layer_that_keeps_every_invariant`.
//! - `recover` after a fault before every durable step and random SIGKILLs, old or new byte
//!   for byte: crash.rs (every editing command).
//! - `reconcile --json`, `--check`: ocisif.rs `writable_run_then_reconcile_then_verify`.
//! - `resize`, `recover-overlay`: ext_write.rs, recover_overlay.rs; `diff`, `cat`, `extract`:
//!   view.rs; `import`, `export`: import.rs; registry commands: registry.rs (their
//!   `--username`, `--plain-http` and `push --oras`: `username_plain_http_and_oras_as_options`,
//!   checked with skopeo and base64).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::ocisif::scratch;
use crate::sifcheck;
use crate::util::{run_ok, sifovl};
use crate::{require_fixtures, require_tool};

/// Standard output of an independent tool that must succeed, as text.
fn tool(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd)).unwrap()
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = run_ok(cmd);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{cmd:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out)))
}

/// `sha256sum` of each file, as `sha256:HEX`.
fn sha256sum(paths: &[PathBuf]) -> Vec<String> {
    if paths.is_empty() {
        return Vec::new();
    }
    let out = tool(Command::new("sha256sum").args(paths));
    out.lines()
        .map(|l| format!("sha256:{}", l.split_whitespace().next().unwrap()))
        .collect()
}

/// `sha256sum` of what `command` (a shell pipeline producer) writes on standard output.
fn sha256_of_stdout(shell: &str) -> String {
    let out = tool(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{shell} | sha256sum")),
    );
    format!("sha256:{}", out.split_whitespace().next().unwrap())
}

/// A small tree with what listings and packers must get right: modes (setgid, 0700,
/// executable), an empty file, a file over several 64K blocks, a symlink, a hard link, and
/// (as root) a foreign owner.
fn make_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, PermissionsExt::from_mode(m)).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("secret")).unwrap();
    std::fs::create_dir_all(root.join("shared/deep")).unwrap();
    std::fs::write(root.join("file.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("bin/run.sh"), b"#!/bin/sh\necho run\n").unwrap();
    mode(&root.join("bin/run.sh"), 0o755);
    std::fs::write(root.join("secret/key"), b"k").unwrap();
    mode(&root.join("secret/key"), 0o600);
    mode(&root.join("secret"), 0o700);
    mode(&root.join("shared"), 0o2775);
    std::fs::write(root.join("empty"), b"").unwrap();
    let mut seed = 0x9E3779B97F4A7C15u64;
    let big: Vec<u8> = (0..300_000)
        .map(|i| {
            // Half random, half runs: compressible and not.
            if i % 2 == 0 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            } else {
                (i / 1000) as u8
            }
        })
        .collect();
    std::fs::write(root.join("shared/deep/big.bin"), &big).unwrap();
    std::fs::hard_link(root.join("shared/deep/big.bin"), root.join("hard.bin")).unwrap();
    std::os::unix::fs::symlink("file.txt", root.join("link")).unwrap();
    // Names past tar's 100-byte field and a symlink target past it too.
    let long = root.join("a".repeat(120)).join("b".repeat(150));
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join("c".repeat(200)), b"deep\n").unwrap();
    std::os::unix::fs::symlink("z".repeat(300), root.join("longlink")).unwrap();
    run_ok(Command::new("mkfifo").arg(root.join("fifo")));
    // A file that is one hole: packed and sealed, unsquashfs must restore it as a hole.
    std::fs::File::create(root.join("hole"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(root.join("file.txt"), Some(1234), Some(5678)).unwrap();
        run_ok(
            Command::new("mknod")
                .arg(root.join("cdev"))
                .args(["c", "1", "3"]),
        );
        run_ok(
            Command::new("mknod")
                .arg(root.join("bdev"))
                .args(["b", "8", "0"]),
        );
    }
}

/// What a tree holds, path (relative, no leading `/`) to (type and mode as `ls -l` prints
/// them, uid, gid, size or symlink target, content), from the filesystem itself.
fn walk(root: &Path) -> BTreeMap<String, (String, u32, u32, String, Vec<u8>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let ft = meta.file_type();
            let rdev = meta.rdev();
            let device = format!(
                "{},{}",
                ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
                (rdev & 0xff) | ((rdev >> 12) & !0xff)
            );
            let (kind, what, content) = if meta.is_dir() {
                stack.push(path.clone());
                ('d', String::new(), Vec::new())
            } else if ft.is_char_device() {
                ('c', device, Vec::new())
            } else if ft.is_block_device() {
                ('b', device, Vec::new())
            } else if ft.is_fifo() {
                ('p', String::new(), Vec::new())
            } else if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&path).unwrap();
                ('l', t.to_str().unwrap().to_string(), Vec::new())
            } else {
                ('-', meta.len().to_string(), std::fs::read(&path).unwrap())
            };
            out.insert(
                rel,
                (
                    perm_string(kind, meta.mode() & 0o7777),
                    meta.uid(),
                    meta.gid(),
                    what,
                    content,
                ),
            );
        }
    }
    out
}

/// A listed entry's path relative to the filesystem's root (`""` for the root itself).
fn rel(e: &serde_json::Value) -> String {
    e["path"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string()
}

/// `ls -l`'s mode column: the type letter and rwx with setuid, setgid and sticky.
fn perm_string(kind: char, mode: u32) -> String {
    let mut s = String::from(kind);
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn type_letter(kind: &str) -> char {
    match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        "socket" => 's',
        // Hard links list as regular files in ls -l and unsquashfs alike.
        _ => '-',
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM` in UTC (unsquashfs' listing under TZ=UTC).
fn utc_minute(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The layers of an OCI-SIF, bottom first, as the independent decoder finds them.
fn layers(image: &Path) -> Vec<sifcheck::Desc> {
    let bytes = std::fs::read(image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let o = sifcheck::oci(&sif, &bytes);
    o.manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| sifcheck::blob(&sif, l["digest"].as_str().unwrap()).clone())
        .collect()
}

/// `sifovl dump ID IMAGE` into `out`; its bytes must be the object's as the independent
/// decoder places it.
fn dump(image: &Path, desc: &sifcheck::Desc, out: &Path) {
    let bytes = run_ok(sifovl().arg("dump").arg(desc.id.to_string()).arg(image));
    assert_eq!(
        bytes,
        desc.data(&std::fs::read(image).unwrap()),
        "dump {}",
        desc.id
    );
    std::fs::write(out, bytes).unwrap();
}

/// `unsquashfs -lln` of a squashfs file under TZ=UTC: path to (mode column, uid/gid,
/// size, time, symlink target).
fn unsquashfs_listing(sqfs: &Path) -> BTreeMap<String, (String, String, String, String)> {
    let text = tool(
        Command::new("unsquashfs")
            .args(["-lln", "-d", "R"])
            .arg(sqfs)
            .env("TZ", "UTC"),
    );
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut t: Vec<&str> = l.split_whitespace().collect();
            // A device's size column is `MAJOR,  MINOR`: two words, made one here.
            let is_device = t[0].starts_with(['c', 'b']);
            let device = format!("{}{}", t[2], t.get(3).unwrap_or(&""));
            if is_device {
                t.remove(3);
            }
            let path = t[5].strip_prefix('R').unwrap().trim_start_matches('/');
            let size = match t.iter().position(|w| *w == "->") {
                Some(i) => t[i + 1..].join(" "),
                None if is_device => device,
                None => t[2].to_string(),
            };
            (
                path.to_string(),
                (
                    t[0].to_string(),
                    t[1].to_string(),
                    size,
                    format!("{} {}", t[3], t[4]),
                ),
            )
        })
        .collect()
}

/// `sifovl ls --json --hash [--layer N]` equals unsquashfs' listing of the layer dumped by
/// `sifovl dump`, and each file's sha256 equals sha256sum of unsquashfs' extraction.
fn assert_ls_matches_unsquashfs(image: &Path, layer: usize, desc: &sifcheck::Desc, scratch: &Path) {
    let sqfs = scratch.join(format!("layer{layer}.sqfs"));
    dump(image, desc, &sqfs);
    let listed = json(
        sifovl()
            .args(["ls", "--json", "--hash", "--layer", &layer.to_string()])
            .arg(image),
    );
    let expected = unsquashfs_listing(&sqfs);
    let mut ours = BTreeMap::new();
    for e in listed.as_array().unwrap() {
        let kind = e["kind"].as_str().unwrap();
        let size = match kind {
            "symlink" | "char" | "block" => e["target"].as_str().unwrap().to_string(),
            "dir" => expected
                .get(&rel(e))
                .map(|x| x.2.clone())
                .unwrap_or_default(),
            _ => e["size"].to_string(),
        };
        ours.insert(
            rel(e),
            (
                perm_string(type_letter(kind), e["mode"].as_u64().unwrap() as u32),
                format!("{}/{}", e["uid"], e["gid"]),
                size,
                utc_minute(e["mtime"].as_i64().unwrap()),
            ),
        );
    }
    assert_eq!(ours, expected, "ls --layer {layer} against unsquashfs -lln");

    let root = scratch.join(format!("layer{layer}"));
    run_ok(
        Command::new("unsquashfs")
            .args(["-no-progress", "-d"])
            .arg(&root)
            .arg(&sqfs),
    );
    let files: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "file")
        .collect();
    assert!(!files.is_empty());
    let sums = sha256sum(&files.iter().map(|e| root.join(rel(e))).collect::<Vec<_>>());
    for (e, sum) in files.iter().zip(&sums) {
        assert_eq!(e["sha256"].as_str().unwrap(), sum, "{}", e["path"]);
    }
    // The text listing carries the same hashes, one line per entry.
    let text = tool(
        sifovl()
            .args(["ls", "--hash", "--layer", &layer.to_string()])
            .arg(image),
    );
    assert_eq!(text.lines().count(), listed.as_array().unwrap().len());
    for sum in &sums {
        assert!(
            text.lines().any(|l| l.ends_with(sum.as_str())),
            "{sum} not in\n{text}"
        );
    }
}

/// `debugfs -R "ls -l DIR"` for every directory: path to (octal mode with type, uid, gid,
/// size) of each entry.
fn debugfs_listing(ext3: &Path, dirs: &[String]) -> BTreeMap<String, (u32, u32, u32, u64)> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let text = tool(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("ls -l /{dir}"))
                .arg(ext3),
        );
        for l in text.lines() {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 9 || t[8] == "." || t[8] == ".." {
                continue;
            }
            let path = if dir.is_empty() {
                t[8].to_string()
            } else {
                format!("{dir}/{}", t[8])
            };
            out.insert(
                path,
                (
                    u32::from_str_radix(t[1], 8).unwrap(),
                    t[3].parse().unwrap(),
                    t[4].parse().unwrap(),
                    t[5].parse().unwrap(),
                ),
            );
        }
    }
    out
}

/// A copy of the OCI-SIF sample whose overlay holds [`make_tree`]'s tree (`add
/// --from-dir`): (its directory, the image, the tree).
fn image_with_tree_in_overlay() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, image) = scratch("sample.oci.sif");
    let tree = dir.path().join("tree");
    make_tree(&tree);
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--from-dir"])
            .arg(&tree)
            .arg(&image),
    );
    (dir, image, tree)
}

#[test]
fn ls_of_the_overlay_and_of_layers_matches_debugfs_unsquashfs_and_sha256sum() {
    require_tool!("unsquashfs");
    require_tool!("debugfs");
    require_tool!("sha256sum");
    let (dir, image, tree) = image_with_tree_in_overlay();

    // The overlay (no --layer): against debugfs on the overlay dumped out of the image.
    let ext3 = dir.path().join("overlay.ext3");
    dump(&image, layers(&image).last().unwrap(), &ext3);
    let listed = json(sifovl().args(["ls", "--json", "--hash"]).arg(&image));
    let listed = listed.as_array().unwrap();
    let dirs: Vec<String> = listed
        .iter()
        .filter(|e| e["kind"] == "dir")
        .map(rel)
        .collect();
    let expected = debugfs_listing(&ext3, &dirs);
    let type_bits = |kind: &str| match kind {
        "dir" => 0o040000,
        "symlink" => 0o120000,
        "char" => 0o020000,
        "block" => 0o060000,
        "fifo" => 0o010000,
        _ => 0o100000,
    };
    let ours: BTreeMap<String, (u32, u32, u32, u64)> = listed
        .iter()
        // debugfs lists what a directory holds: the root is no entry of its own.
        .filter(|e| e["path"] != "/")
        .map(|e| {
            let kind = e["kind"].as_str().unwrap();
            let path = rel(e);
            // ext3 gives a directory its blocks' size, not a content length.
            let size = match kind {
                "dir" => expected.get(&path).map(|x| x.3).unwrap_or(0),
                _ => e["size"].as_u64().unwrap(),
            };
            (
                path,
                (
                    type_bits(kind) | e["mode"].as_u64().unwrap() as u32,
                    e["uid"].as_u64().unwrap() as u32,
                    e["gid"].as_u64().unwrap() as u32,
                    size,
                ),
            )
        })
        .collect();
    assert_eq!(ours, expected, "ls of the overlay against debugfs ls -l");
    // Every file's hash against sha256sum of debugfs' rdump of the same overlay.
    let rdump = dir.path().join("rdump");
    std::fs::create_dir(&rdump).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /upper {}", rdump.display()))
            .arg(&ext3),
    );
    let files: Vec<_> = listed.iter().filter(|e| e["kind"] == "file").collect();
    let sums = sha256sum(&files.iter().map(|e| rdump.join(rel(e))).collect::<Vec<_>>());
    for (e, sum) in files.iter().zip(&sums) {
        assert_eq!(e["sha256"].as_str().unwrap(), sum, "{}", e["path"]);
    }
    assert!(
        files.iter().any(|e| e["size"] == 300_000),
        "the big file (or its link)"
    );

    // Sealed, the tree is layer 1; layer 0 is the sample's own.
    run_ok(sifovl().arg("seal").arg(&image));
    for (n, layer) in layers(&image).iter().enumerate() {
        assert_ls_matches_unsquashfs(&image, n, layer, dir.path());
    }

    // A native SIF: --layer N is its Nth squashfs or ext3 partition, in descriptor order;
    // sealed, the overlay is partition 1.
    let native = dir.path().join("native.sif");
    std::fs::copy(crate::ocisif::sample("sample.sif"), &native).unwrap();
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--from-dir"])
            .arg(&tree)
            .arg(&native),
    );
    run_ok(sifovl().arg("seal").arg(&native));
    let bytes = std::fs::read(&native).unwrap();
    let partitions: Vec<_> = sifcheck::parse(&bytes)
        .objects
        .into_iter()
        .filter(|d| d.dtype == sifcheck::PARTITION)
        .collect();
    assert_eq!(partitions.len(), 2);
    let scratch = dir.path().join("native");
    std::fs::create_dir(&scratch).unwrap();
    for (n, partition) in partitions.iter().enumerate() {
        assert_ls_matches_unsquashfs(&native, n, partition, &scratch);
    }
}

/// A file unsquashfs restored as the hole it was: no block allocated.
fn assert_hole(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert_eq!(meta.blocks(), 0, "{} is allocated", path.display());
}

/// Two trees hold the same entries: types, modes, owners, sizes, symlink targets, bytes.
fn assert_same_tree(ours: &Path, source: &Path, what: &str) {
    let (got, want) = (walk(ours), walk(source));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the same paths"
    );
    for (path, w) in &want {
        let g = &got[path];
        assert_eq!(
            (&g.0, g.1, g.2, &g.3),
            (&w.0, w.1, w.2, &w.3),
            "{what}: {path}: mode, owner, size or target"
        );
        assert!(g.4 == w.4, "{what}: {path}: content differs");
    }
}

/// GNU tar extracts the tar file `out` (into `scratch/NAME.d`) to exactly `tree`.
fn assert_gnu_tar_extracts_the_tree(out: &Path, scratch: &Path, tree: &Path, name: &str) {
    let unpacked = scratch.join(format!("{name}.d"));
    std::fs::create_dir(&unpacked).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(out)
            .arg("-C")
            .arg(&unpacked),
    );
    assert_same_tree(&unpacked, tree, name);
}

#[test]
fn mksquashfs_unpacks_to_the_same_tree_with_the_compressor_and_block_size_asked() {
    require_tool!("unsquashfs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    for (args, compressor, block) in [
        (vec![], "gzip", 131072),
        (
            vec!["--compression", "xz", "--block-size", "256K"],
            "xz",
            262144,
        ),
        (
            vec!["--compression", "zstd:19", "--block-size", "4096"],
            "zstd",
            4096,
        ),
        (
            vec!["--compression", "lz4", "--block-size", "1M"],
            "lz4",
            1 << 20,
        ),
    ] {
        let out = dir.path().join(format!("{compressor}.sqfs"));
        let report = json(
            sifovl()
                .arg("mksquashfs")
                .args(&args)
                .arg("--json")
                .arg(&tree)
                .arg(&out),
        );
        let stat = tool(Command::new("unsquashfs").arg("-s").arg(&out));
        assert!(
            stat.contains(&format!("Compression {compressor}\n"))
                && stat.contains(&format!("Block size {block}\n")),
            "{args:?}: {stat}"
        );
        // The report counts what unsquashfs lists (the root included) and the file's size.
        assert_eq!(
            report["entries"],
            unsquashfs_listing(&out).len(),
            "{args:?}"
        );
        assert_eq!(report["size"], std::fs::metadata(&out).unwrap().len());
        let unpacked = dir.path().join(format!("{compressor}.d"));
        run_ok(
            Command::new("unsquashfs")
                .args(["-no-progress", "-d"])
                .arg(&unpacked)
                .arg(&out),
        );
        assert_same_tree(&unpacked, &tree, &format!("mksquashfs {args:?}"));
        assert_hole(&unpacked.join("hole"));
    }
}

/// `tar -tv --numeric-owner` of a layer: member name (no trailing `/`) to (mode column
/// without its type letter, uid/gid).
fn tar_listing(layer: &Path) -> BTreeMap<String, (String, String)> {
    tool(
        Command::new("tar")
            .args(["-tv", "--numeric-owner", "-f"])
            .arg(layer),
    )
    .lines()
    .map(|l| {
        let t: Vec<&str> = l.split_whitespace().collect();
        (
            t[5].trim_end_matches('/').to_string(),
            (t[0][1..].to_string(), t[1].to_string()),
        )
    })
    .collect()
}

#[test]
fn mksquashfs_mkfs_time_and_threads_give_reproducible_bytes() {
    require_tool!("unsquashfs");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let mut images = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}.sqfs"));
        run_ok(
            sifovl()
                .args(["mksquashfs", "--mkfs-time", "86400", "--threads", threads])
                .arg(&tree)
                .arg(&out),
        );
        images.push(std::fs::read(&out).unwrap());
        // unsquashfs reads the superblock's time: a day after the epoch.
        let stat = tool(
            Command::new("unsquashfs")
                .arg("-s")
                .arg(&out)
                .env("TZ", "UTC"),
        );
        assert!(
            stat.contains("Creation or last append time Fri Jan  2 00:00:00 1970"),
            "{stat}"
        );
    }
    assert!(images[0] == images[1], "one thread or two, the same bytes");
}

#[test]
fn mktar_unpacks_with_gnu_tar_to_the_same_tree_and_its_digests_are_sha256sums() {
    require_tool!("tar");
    require_tool!("sha256sum");
    require_tool!("zstd");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let source = walk(&tree);
    for (name, args, decompress) in [
        ("layer.tar.gz", vec![], "gzip -dc"),
        ("zstd.tar", vec!["--compression", "zstd:5"], "zstd -dc"),
        ("plain.tar", vec![], "cat"),
    ] {
        let out = dir.path().join(name);
        let report = json(
            sifovl()
                .arg("mktar")
                .args(&args)
                .arg("--json")
                .arg(&tree)
                .arg(&out),
        );
        assert_eq!(report["digest"], sha256sum(std::slice::from_ref(&out))[0]);
        assert_eq!(
            report["diff_id"],
            sha256_of_stdout(&format!("{decompress} {}", out.display())),
            "{name}: diff_id is the sha256 of the uncompressed tar"
        );
        assert_eq!(report["size"], std::fs::metadata(&out).unwrap().len());
        let listing = tar_listing(&out);
        assert_eq!(report["entries"], listing.len(), "{name}");
        assert_eq!(
            listing.keys().collect::<Vec<_>>(),
            source.keys().collect::<Vec<_>>(),
            "{name}: tar -t lists the tree"
        );
        for (path, (mode, owner)) in &listing {
            let (want_mode, uid, gid, ..) = &source[path];
            assert_eq!(mode, &want_mode[1..], "{name}: {path}");
            assert_eq!(owner, &format!("{uid}/{gid}"), "{name}: {path}");
        }
        assert_gnu_tar_extracts_the_tree(&out, dir.path(), &tree, name);
    }
}

#[test]
fn add_without_sparse_of_a_size_and_its_json_agree_with_du_dumpe2fs_e2fsck_and_sha256sum() {
    require_tool!("dumpe2fs");
    require_tool!("e2fsck");
    require_tool!("du");
    let (dir, image) = scratch("sample.oci.sif");
    let report = json(sifovl().args(["add", "--size", "80", "--json"]).arg(&image));
    let bytes = std::fs::read(&image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let o = sifcheck::oci(&sif, &bytes);
    let overlay = layers(&image).last().unwrap().clone();
    assert_eq!(report["format"], "oci-sif");
    assert_eq!(report["object"], overlay.id);
    assert_eq!(report["offset"], overlay.offset);
    assert_eq!(report["size"], 80 << 20);
    assert_eq!(overlay.size, 80 << 20);
    let ext3 = dir.path().join("overlay.ext3");
    dump(&image, &overlay, &ext3);
    let digest = &sha256sum(std::slice::from_ref(&ext3))[0];
    assert_eq!(&report["digest"], digest);
    assert_eq!(overlay.digest(), *digest);
    assert_eq!(
        report["manifest_digest"],
        sifcheck::sha256(&o.manifest_bytes),
        "the manifest the index now names"
    );
    // Without --sparse every byte of the overlay is allocated: du counts the whole file.
    let du: u64 = tool(Command::new("du").args(["--block-size=1"]).arg(&image))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(du >= bytes.len() as u64, "du {du} < {} bytes", bytes.len());
    // 80 MiB of 4 KiB blocks, with a journal; clean.
    let header = tool(Command::new("dumpe2fs").arg("-h").arg(&ext3));
    let field = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} missing:\n{header}"))
    };
    assert_eq!(field("Block count:"), "20480");
    assert_eq!(field("Block size:"), "4096");
    assert!(field("Filesystem features:").contains("has_journal"));
    run_ok(Command::new("e2fsck").arg("-fn").arg(&ext3));

    // A native SIF: the report names the overlay partition the independent decoder finds.
    let (_d, native) = scratch("sample.sif");
    let report = json(sifovl().args(["add", "--sparse", "--json"]).arg(&native));
    let bytes = std::fs::read(&native).unwrap();
    let sif = sifcheck::parse(&bytes);
    let part = sif
        .objects
        .iter()
        .find(|d| d.id == report["object"].as_u64().unwrap() as u32)
        .unwrap();
    assert_eq!(report["format"], "native");
    assert_eq!(part.dtype, sifcheck::PARTITION);
    assert_eq!(
        (part.offset, part.size),
        (report["offset"].as_u64().unwrap(), 64 << 20)
    );
    assert!(report["digest"].is_null());
}

#[test]
fn add_from_an_ext3_made_by_mke2fs_puts_it_in_the_image_as_is() {
    require_tool!("mke2fs");
    require_tool!("e2fsck");
    let (dir, image) = scratch("sample.oci.sif");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("upper/data")).unwrap();
    std::fs::create_dir_all(src.join("work")).unwrap();
    std::fs::write(src.join("upper/data/hello.txt"), b"from mke2fs\n").unwrap();
    let img = dir.path().join("made.ext3");
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext3", "-d"])
            .arg(&src)
            .arg(&img)
            .arg("16M"),
    );
    let made = std::fs::read(&img).unwrap();
    let report = json(
        sifovl()
            .args(["add", "--json", "--from"])
            .arg(&img)
            .arg(&image),
    );
    let overlay = layers(&image).last().unwrap().clone();
    assert_eq!(report["object"], overlay.id);
    let out = dir.path().join("out.ext3");
    dump(&image, &overlay, &out);
    assert!(
        std::fs::read(&out).unwrap() == made,
        "the overlay is the file given"
    );
    assert_eq!(
        std::fs::read(&img).unwrap(),
        made,
        "--from's file unchanged"
    );
    run_ok(Command::new("e2fsck").arg("-fn").arg(&out));
    assert_eq!(
        tool(sifovl().arg("cat").arg(&image).arg("/data/hello.txt")),
        "from mke2fs\n"
    );
    run_ok(sifovl().arg("verify").arg(&image));
}

/// `siftool`'s readable size ("27 KiB", "0 B") holds `bytes`, rounded to its unit.
fn readable_size_holds(text: &str, bytes: i64) -> bool {
    let (n, unit) = text.split_once(' ').unwrap();
    let unit = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        other => panic!("unit {other}"),
    };
    (bytes as f64 / unit).round() == n.parse::<f64>().unwrap()
}

/// The `Key: value` lines of a siftool golden.
fn golden_fields(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// siftool's `NONE`, `3` or `1 (G)` as (linked object, linked group), or a group number.
fn none_or(text: &str) -> serde_json::Value {
    if text == "NONE" {
        serde_json::Value::Null
    } else {
        serde_json::Value::from(text.trim_end_matches("(G)").trim().parse::<u64>().unwrap())
    }
}

#[test]
fn list_info_and_header_json_agree_with_the_siftool_goldens() {
    let fixtures = require_fixtures!();
    let images = fixtures.join("sylabs-sif/images");
    let image_of = |name: &str| images.join(format!("{}.sif", crate::sif::kebab(name)));
    let mut rows_seen = 0;
    for (name, golden) in crate::sif::goldens(&fixtures, "TestApp_List") {
        let objects = json(sifovl().args(["list", "--json"]).arg(image_of(&name)));
        let rows: Vec<Vec<String>> = std::fs::read_to_string(&golden)
            .unwrap()
            .lines()
            .filter(|l| l.contains('|') && !l.starts_with("ID"))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect();
        let objects = objects.as_array().unwrap();
        assert_eq!(objects.len(), rows.len(), "{name}");
        for (o, row) in objects.iter().zip(&rows) {
            assert_eq!(o["id"].to_string(), row[0], "{name}");
            assert_eq!(o["group"], none_or(&row[1]), "{name}: group");
            let link = if row[2].ends_with("(G)") {
                &o["linked_group"]
            } else {
                &o["linked_object"]
            };
            assert_eq!(*link, none_or(&row[2]), "{name}: link");
            let (start, end) = row[3].split_once('-').unwrap();
            assert_eq!(o["offset"].to_string(), start, "{name}");
            assert_eq!(
                (o["offset"].as_u64().unwrap() + o["size"].as_u64().unwrap()).to_string(),
                end,
                "{name}"
            );
            let d = &o["details"];
            let ty = o["data_type"].as_str().unwrap();
            let expected = if d["filesystem"].is_string() {
                format!(
                    "{ty} ({}/{}/{})",
                    d["filesystem"].as_str().unwrap(),
                    d["partition"].as_str().unwrap(),
                    d["architecture"].as_str().unwrap()
                )
            } else if d["hash"].is_string() {
                format!("{ty} ({})", d["hash"].as_str().unwrap())
            } else {
                row[4].clone()
            };
            assert!(row[4].starts_with(ty), "{name}: {} vs {ty}", row[4]);
            assert_eq!(row[4], expected, "{name}: type");
            rows_seen += 1;
        }
    }
    assert!(rows_seen >= 30, "{rows_seen} rows");

    for (name, golden) in crate::sif::goldens(&fixtures, "TestApp_Header") {
        let h = json(sifovl().args(["header", "--json"]).arg(image_of(&name)));
        let fields = golden_fields(&golden);
        assert!(fields.len() >= 7, "{name}");
        for (key, value) in fields {
            match key.as_str() {
                "Version" => assert_eq!(h["version"], value.as_str(), "{name}"),
                "Primary Architecture" => {
                    assert_eq!(h["primary_architecture"], value.as_str(), "{name}")
                }
                "ID" => assert_eq!(h["id"], value.as_str(), "{name}"),
                // The golden's line ends where the script's newline does.
                "Launch Script" => assert_eq!(
                    h["launch_script"].as_str().unwrap().trim_end(),
                    value,
                    "{name}"
                ),
                "Descriptors Free" | "Descriptors Total" | "Descriptors Offset" | "Data Offset" => {
                    let k = key.to_lowercase().replace(' ', "_");
                    assert_eq!(h[&k].to_string(), value, "{name}: {key}")
                }
                "Descriptors Size" | "Data Size" => {
                    let k = key.to_lowercase().replace(' ', "_");
                    assert!(
                        readable_size_holds(&value, h[&k].as_i64().unwrap()),
                        "{name}: {key} {value} vs {}",
                        h[&k]
                    )
                }
                "Created At" | "Modified At" => {
                    let k = key.to_lowercase().replace(' ', "_");
                    let t = h[&k].as_i64().unwrap();
                    assert_eq!(
                        format!("{}:{:02} +0000 UTC", utc_minute(t), t.rem_euclid(60)),
                        value,
                        "{name}: {key}"
                    )
                }
                other => panic!("{name}: unknown header field {other}"),
            }
        }
    }

    // info: the golden's image and object, from the fixtures' README.
    for (golden, image, id) in crate::sif::INFO_GOLDENS {
        let o = json(
            sifovl()
                .args(["info", "--json", &id.to_string()])
                .arg(images.join(format!("{image}.sif"))),
        );
        let details: Vec<String> = o["details"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for (key, value) in golden_fields(
            &fixtures
                .join("sylabs-sif/goldens/TestApp_Info")
                .join(format!("{golden}.golden")),
        ) {
            match key.as_str() {
                "Data Type" => assert_eq!(o["data_type"], value.as_str(), "{golden}"),
                "ID" => assert_eq!(o["id"].to_string(), value, "{golden}"),
                "Group ID" => assert_eq!(o["group"], none_or(&value), "{golden}"),
                "Linked ID" if value.ends_with("(G)") => {
                    assert_eq!(o["linked_group"], none_or(&value), "{golden}")
                }
                "Linked ID" => assert_eq!(o["linked_object"], none_or(&value), "{golden}"),
                "Offset" | "Size" => {
                    assert_eq!(o[&key.to_lowercase()].to_string(), value, "{golden}")
                }
                "Name" => assert_eq!(o["name"], value.as_str(), "{golden}"),
                "Created At" | "Modified At" => {
                    let k = key.to_lowercase().replace(' ', "_");
                    let t = o[&k].as_i64().unwrap();
                    assert_eq!(
                        format!("{}:{:02} +0000 UTC", utc_minute(t), t.rem_euclid(60)),
                        value,
                        "{golden}: {key}"
                    )
                }
                // Type-specific facts: somewhere among the details.
                _ => assert!(
                    details.contains(&value),
                    "{golden}: {key}: {value} not in {details:?}"
                ),
            }
        }
    }
}

#[test]
fn verify_json_agrees_with_the_independent_decoder_before_and_after_damage() {
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let report = json(sifovl().args(["verify", "--json"]).arg(&image));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["format"], "oci-sif");
    let checks = report["checks"].as_array().unwrap();
    assert!(
        checks.len() >= 5 && checks.iter().all(|c| c["ok"] == true),
        "{report}"
    );
    // Every blob's digest holds, by the independent decoder.
    let bytes = std::fs::read(&image).unwrap();
    let sif = sifcheck::parse(&bytes);
    for d in sif.objects.iter().filter(|d| d.dtype == sifcheck::BLOB) {
        assert_eq!(d.digest(), sifcheck::sha256(d.data(&bytes)));
    }
    // Layer 0 damaged: the decoder sees its digest fail; verify's report says so, exit 1.
    let layer0 = layers(&image)[0].clone();
    let mut damaged = bytes.clone();
    damaged[layer0.offset as usize + 10] ^= 0x55;
    assert_ne!(layer0.digest(), sifcheck::sha256(layer0.data(&damaged)));
    let bad = dir.path().join("damaged.sif");
    std::fs::write(&bad, &damaged).unwrap();
    let out = sifovl()
        .args(["verify", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert!(
        failed[0]["detail"].as_str().unwrap().contains("layer 0"),
        "{report}"
    );
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        damaged,
        "verify changes nothing"
    );
}

#[test]
fn seal_compression_and_block_size_are_what_unsquashfs_reads() {
    require_tool!("unsquashfs");
    require_tool!("sha256sum");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    for (compression, block, name, bytes) in [
        ("gzip:9", "64K", "gzip", 65536),
        ("zstd", "256K", "zstd", 262144),
        ("xz", "1M", "xz", 1 << 20),
        ("lz4", "4K", "lz4", 4096),
    ] {
        let image = dir.path().join(format!("{name}.oci.sif"));
        std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &image).unwrap();
        run_ok(
            sifovl()
                .args(["add", "--sparse", "--from-dir"])
                .arg(&tree)
                .arg(&image),
        );
        let report = json(
            sifovl()
                .args(["seal", "--json", "--compression", compression])
                .args(["--block-size", block])
                .arg(&image),
        );
        let sealed = layers(&image).last().unwrap().clone();
        assert_eq!(report["object"], sealed.id, "{name}");
        assert_eq!(report["offset"], sealed.offset, "{name}");
        assert_eq!(report["squashfs_size"], sealed.size, "{name}");
        assert_eq!(
            report["file_size_after"],
            std::fs::metadata(&image).unwrap().len()
        );
        let sqfs = dir.path().join(format!("{name}.sqfs"));
        dump(&image, &sealed, &sqfs);
        assert_eq!(report["digest"], sha256sum(std::slice::from_ref(&sqfs))[0]);
        let stat = tool(Command::new("unsquashfs").arg("-s").arg(&sqfs));
        assert!(
            stat.contains(&format!("Compression {name}\n"))
                && stat.contains(&format!("Block size {bytes}\n")),
            "{compression} {block}: {stat}"
        );
        let unpacked = dir.path().join(format!("{name}.d"));
        run_ok(
            Command::new("unsquashfs")
                .args(["-no-progress", "-d"])
                .arg(&unpacked)
                .arg(&sqfs),
        );
        assert_same_tree(&unpacked, &tree, &format!("seal {compression} {block}"));
        assert_hole(&unpacked.join("hole"));
    }
}

#[test]
fn export_layer_of_each_layer_and_compression_is_what_tar_and_sha256sum_read() {
    require_tool!("unsquashfs");
    require_tool!("tar");
    require_tool!("zstd");
    let (dir, image, tree) = image_with_tree_in_overlay();
    run_ok(sifovl().arg("seal").arg(&image));
    let before = std::fs::read(&image).unwrap();
    let layer_paths = |n: usize| {
        let sqfs = dir.path().join(format!("l{n}.sqfs"));
        dump(&image, &layers(&image)[n], &sqfs);
        let mut paths: Vec<String> = unsquashfs_listing(&sqfs).into_keys().collect();
        paths.retain(|p| !p.is_empty());
        paths
    };
    for (layer, compression, name, magic, decompress) in [
        (1, "none", "l1.tar.gz", "tar", "cat"),
        (1, "gzip", "l1.tar", "gzip", "gzip -dc"),
        (0, "zstd", "l0.tar.zst", "zstd", "zstd -dc"),
        (0, "gzip:1", "l0.tgz", "gzip", "gzip -dc"),
    ] {
        let out = dir.path().join(name);
        let report = json(
            sifovl()
                .args(["export-layer", "--json", "--layer", &layer.to_string()])
                .args(["--compression", compression])
                .arg(&image)
                .arg(&out),
        );
        let bytes = std::fs::read(&out).unwrap();
        let found = if bytes.starts_with(&[0x1f, 0x8b]) {
            "gzip"
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "zstd"
        } else if &bytes[257..262] == b"ustar" {
            "tar"
        } else {
            "unknown"
        };
        assert_eq!(found, magic, "{name}: --compression {compression} wins");
        assert_eq!(report["digest"], sha256sum(std::slice::from_ref(&out))[0]);
        assert_eq!(
            report["diff_id"],
            sha256_of_stdout(&format!("{decompress} {}", out.display())),
            "{name}"
        );
        let listing = tar_listing(&out);
        assert_eq!(report["entries"], listing.len(), "{name}");
        assert_eq!(
            listing.into_keys().collect::<Vec<_>>(),
            layer_paths(layer),
            "{name}: tar -t lists the layer's files"
        );
        if layer == 1 {
            assert_gnu_tar_extracts_the_tree(&out, dir.path(), &tree, name);
        }
    }
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "export-layer reads only"
    );
}

#[test]
fn recover_after_a_stopped_edit_leaves_old_or_new_that_list_and_verify_accept() {
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let old = std::fs::read(&image).unwrap();
    let reference = dir.path().join("new.sif");
    std::fs::write(&reference, &old).unwrap();
    run_ok(sifovl().arg("remove-overlay").arg(&reference));
    let new = std::fs::read(&reference).unwrap();
    let list_of = |p: &Path| tool(sifovl().arg("list").arg(p));
    let (old_list, new_list) = (list_of(&image), list_of(&reference));
    let work = dir.path().join("work.sif");
    let journal = dir.path().join("work.sif.sifovl-journal");
    let (mut recovered, mut seen) = (0, std::collections::BTreeSet::new());
    for n in 1.. {
        std::fs::write(&work, &old).unwrap();
        let out = sifovl()
            .arg("remove-overlay")
            .arg(&work)
            .env("SIFOVL_FAULT_AT", n.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(n < 200, "runaway");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("fault injection"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pending = journal.exists();
        let report = json(sifovl().args(["recover", "--json"]).arg(&work));
        assert_eq!(report["recovered"], pending, "fault {n}: {report}");
        assert_eq!(report["image"], work.to_str().unwrap());
        assert!(!journal.exists(), "fault {n}: journal left behind");
        recovered += usize::from(pending);
        let got = std::fs::read(&work).unwrap();
        let listing = list_of(&work);
        if got == old {
            assert_eq!(listing, old_list);
            seen.insert("old");
        } else {
            assert!(got == new, "fault {n}: neither old nor new");
            assert_eq!(listing, new_list);
            seen.insert("new");
        }
        sifcheck::assert_oci_sif_invariants(&got, true);
        let v = json(sifovl().args(["verify", "--json"]).arg(&work));
        assert_eq!(v["ok"], true, "fault {n}: {v}");
        // A second recover has nothing to do.
        let again = json(sifovl().args(["recover", "--json"]).arg(&work));
        assert_eq!(again["recovered"], false);
    }
    assert!(recovered > 0, "no fault left a journal to recover");
    assert!(seen.contains("old"), "{seen:?}");
}

/// Exit 2 and one line on standard error that holds every needle.
fn assert_error(args: &[&std::ffi::OsStr], needles: &[&str]) -> String {
    let out: Output = sifovl().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(
        err.starts_with("sifovl: ") && !err.contains("panicked"),
        "{args:?}: {err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: {needle:?} missing from {err}"
        );
    }
    err
}

#[test]
fn errors_exit_2_with_one_line_naming_the_file_or_object_and_change_nothing() {
    let (dir, image) = scratch("sample.oci.sif");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let missing = dir.path().join("missing.sif");
    let out = dir.path().join("out.file");
    let before = std::fs::read(&image).unwrap();
    let s = |p: &Path| p.as_os_str().to_owned();
    let o = |t: &str| std::ffi::OsString::from(t);
    // Every command that reads an image, given a missing file or a directory.
    let image_commands: Vec<Vec<&str>> = vec![
        vec!["ls"],
        vec!["ls", "--layer", "0"],
        vec!["inspect"],
        vec!["verify"],
        vec!["list"],
        vec!["header"],
        vec!["info", "1"],
        vec!["dump", "1"],
        vec!["add", "--sparse"],
        vec!["reconcile"],
        vec!["seal"],
        vec!["resize", "--size", "100"],
        vec!["remove-overlay"],
        vec!["recover"],
        vec!["recover-overlay"],
        vec!["diff"],
    ];
    for bad in [&missing, &dir.path().to_path_buf()] {
        for command in &image_commands {
            let mut args: Vec<std::ffi::OsString> = command.iter().map(|a| o(a)).collect();
            args.push(s(bad));
            let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            assert_error(&refs, &[bad.to_str().unwrap()]);
        }
        for (command, tail) in [("export-layer", s(&out)), ("cat", o("/f"))] {
            let args = [o(command), s(bad), tail];
            let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            assert_error(&refs, &[bad.to_str().unwrap()]);
        }
        // A missing or non-directory source of the packers.
        if bad == &missing {
            for command in ["mksquashfs", "mktar"] {
                let args = [o(command), s(bad), s(&out)];
                let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
                assert_error(&refs, &[bad.to_str().unwrap()]);
            }
        }
    }
    assert!(!missing.exists() && !out.exists(), "nothing created");

    // A bad --compression names the value, before any work.
    let bogus = o("bogus");
    let c = o("--compression");
    for args in [
        vec![o("seal"), c.clone(), bogus.clone(), s(&image)],
        vec![o("mksquashfs"), c.clone(), bogus.clone(), s(&tree), s(&out)],
        vec![o("mktar"), c.clone(), bogus.clone(), s(&tree), s(&out)],
        vec![
            o("export-layer"),
            c.clone(),
            bogus.clone(),
            s(&image),
            s(&out),
        ],
    ] {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        assert_error(&refs, &["bogus"]);
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }

    // --layer out of range names the layer, the valid range and the image.
    let image_s = image.to_str().unwrap();
    for args in [
        vec![o("ls"), o("--layer"), o("5"), s(&image)],
        vec![o("export-layer"), o("--layer"), o("5"), s(&image), s(&out)],
        vec![o("cat"), o("--layer"), o("5"), s(&image), o("/etc")],
        vec![o("diff"), o("--layer"), o("5"), s(&image)],
        vec![
            o("extract"),
            o("--layer"),
            o("5"),
            s(&image),
            o("/"),
            s(&dir.path().join("x")),
        ],
    ] {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        assert_error(&refs, &["no layer 5", "0 to 0", image_s]);
        assert!(!out.exists() && !dir.path().join("x").exists(), "{args:?}");
    }

    // dump / info of an object that is not there name it and the image.
    for command in ["dump", "info"] {
        let args = [o(command), o("99"), s(&image)];
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        assert_error(&refs, &["99", image_s]);
    }

    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "the image is unchanged"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["sample.oci.sif", "tree"], "no stray files");
}

#[test]
fn packers_never_truncate_their_input_nor_leave_partial_output() {
    require_tool!("unsquashfs");
    require_tool!("tar");
    let (dir, image) = scratch("sample.oci.sif");
    let before = std::fs::read(&image).unwrap();
    let o = |t: &str| std::ffi::OsString::from(t);
    let s = |p: &Path| p.as_os_str().to_owned();
    let run = |args: &[std::ffi::OsString], needles: &[&str]| {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        assert_error(&refs, needles);
    };
    // The output is the image: it used to be truncated to nothing before being read.
    run(
        &[
            o("export-layer"),
            o("--layer"),
            o("0"),
            s(&image),
            s(&image),
        ],
        &[image.to_str().unwrap(), "is the image itself"],
    );
    assert_eq!(std::fs::read(&image).unwrap(), before);

    // An output inside the directory being packed is left out of it, as mksquashfs does,
    // and so is the temporary file it is written to: a second run packs the same tree.
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let sqfs = tree.join("out.sqfs");
    let mut runs = Vec::new();
    for _ in 0..2 {
        run_ok(
            sifovl()
                .args(["mksquashfs", "--mkfs-time", "0"])
                .arg(&tree)
                .arg(&sqfs),
        );
        runs.push(std::fs::read(&sqfs).unwrap());
    }
    assert!(
        runs[0] == runs[1],
        "the second run packed the first one's output"
    );
    let listed: Vec<String> = unsquashfs_listing(&sqfs).into_keys().collect();
    assert_eq!(listed, ["", "f"], "unsquashfs -lln");
    let tar = tree.join("out.tar");
    run_ok(sifovl().arg("mktar").arg(&tree).arg(&tar));
    let members: Vec<String> = tar_listing(&tar).into_keys().collect();
    assert_eq!(members, ["f", "out.sqfs"], "tar -tv");
    std::fs::remove_file(&sqfs).unwrap();
    std::fs::remove_file(&tar).unwrap();

    // A layer that fails half way leaves no output (nor temporary file) behind.
    let layer0 = layers(&image)[0].clone();
    let mut damaged = before.clone();
    for b in
        &mut damaged[layer0.offset as usize + 200..(layer0.offset + layer0.size) as usize - 200]
    {
        *b ^= 0x5a;
    }
    let bad = dir.path().join("bad.sif");
    std::fs::write(&bad, &damaged).unwrap();
    let out = dir.path().join("layer.tar");
    run(
        &[o("export-layer"), o("--layer"), o("0"), s(&bad), s(&out)],
        &["bad.sif"],
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["bad.sif", "sample.oci.sif", "tree"],
        "no partial output"
    );

    // A finished output has the mode of any new file (not a temporary file's 0600).
    run_ok(sifovl().arg("mktar").arg(&tree).arg(&out));
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&reference));
}
