//! Integration tests: tar layers checked with GNU tar, umoci, sha256sum, the oci-tools
//! fixtures, and path traversal cases built with Python's tarfile.

use std::path::Path;
use std::process::Command;

use sifovl::fs::dir::DirSource;
use sifovl::fs::entry::copy_entries;
use sifovl::fs::tar::{LayerDigests, TarCompression, TarLayerReader, TarLayerWriter};

use crate::tree::{host_listing, source_listing};
use crate::util::run_ok;
use crate::{require_fixtures, require_tool};

fn write_layer(tree: &Path, out: &Path, compression: TarCompression) -> LayerDigests {
    let file = std::fs::File::create(out).unwrap();
    let mut writer = TarLayerWriter::new(std::io::BufWriter::new(file), compression).unwrap();
    copy_entries(&mut DirSource::new(tree).unwrap(), &mut writer).unwrap();
    writer.finish().unwrap()
}

fn sha256_file(p: &Path) -> String {
    crate::sifcheck::sha256(&std::fs::read(p).unwrap())
}

fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    crate::ext::make_tree(&tree);
    // A name and a link target longer than ustar's 100 bytes.
    let deep = tree.join("x".repeat(60)).join("y".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("z".repeat(80)), b"deep").unwrap();
    std::os::unix::fs::symlink("t".repeat(150), tree.join("long-target")).unwrap();
    (dir, tree)
}

#[test]
fn gnu_tar_extracts_exactly_the_source_tree_and_digests_match_sha256sum() {
    require_tool!("tar");
    require_tool!("zstd");
    let (dir, tree) = tree();
    let mut expected = host_listing(&tree);
    expected.retain(|k, _| !k.is_empty());
    for (name, compression, decompress) in [
        ("plain", TarCompression::None, "cat"),
        ("gzip", TarCompression::Gzip { level: 6 }, "gzip -dc"),
        ("zstd", TarCompression::Zstd { level: 3 }, "zstd -dc"),
    ] {
        let layer = dir.path().join(format!("layer.{name}"));
        let d = write_layer(&tree, &layer, compression);
        assert_eq!(d.digest.to_string(), sha256_file(&layer), "{name} digest");
        assert_eq!(d.size, std::fs::metadata(&layer).unwrap().len());
        let tar = dir.path().join("plain.tar");
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "{decompress} {} > {}",
            layer.display(),
            tar.display()
        )));
        assert_eq!(d.diff_id.to_string(), sha256_file(&tar), "{name} diff_id");
        let out = dir.path().join(format!("out-{name}"));
        std::fs::create_dir(&out).unwrap();
        run_ok(
            Command::new("tar")
                .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
                .arg(&tar)
                .arg("-C")
                .arg(&out),
        );
        let got = host_listing(&out);
        for (path, want) in &expected {
            // GNU tar restores directory times only after their contents; compare the rest.
            let strip = |s: &str| {
                s.split(" mtime=").next().unwrap().to_string() + s.split(" [").nth(1).unwrap_or("")
            };
            let got_line = got
                .get(path)
                .unwrap_or_else(|| panic!("{name}: {path} missing"));
            if want.starts_with("dir") {
                assert_eq!(strip(got_line), strip(want), "{name}: {path}");
            } else {
                assert_eq!(got_line, want, "{name}: {path}");
            }
        }
        assert_eq!(got.len(), expected.len(), "{name}: entry count");
        // And GNU tar lists it without complaint.
        run_ok(Command::new("tar").args(["--xattrs", "-tvvf"]).arg(&tar));
    }
    // Deterministic: the same tree gives the same bytes.
    let (a, b) = (dir.path().join("a.tgz"), dir.path().join("b.tgz"));
    assert_eq!(
        write_layer(&tree, &a, TarCompression::Gzip { level: 6 }),
        write_layer(&tree, &b, TarCompression::Gzip { level: 6 })
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn our_reader_reads_back_what_we_write() {
    let (dir, tree) = tree();
    let layer = dir.path().join("layer.tar.zst");
    write_layer(&tree, &layer, TarCompression::Zstd { level: 3 });
    let mut reader = TarLayerReader::new(std::fs::File::open(&layer).unwrap()).unwrap();
    let ours = source_listing(&mut reader);
    let mut expected = source_listing(&mut DirSource::new(&tree).unwrap());
    // Tar drops sockets; our tree has none. Directory order differs only by path.
    expected.retain(|k, _| !k.is_empty());
    assert_eq!(ours, expected);
}

#[test]
fn umoci_unpacks_our_layer() {
    require_tool!("umoci");
    let (dir, tree) = tree();
    let layout = dir.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_path = dir.path().join("layer.tgz");
    let d = write_layer(&tree, &layer_path, TarCompression::Gzip { level: 6 });
    std::fs::copy(&layer_path, blobs.join(d.digest.hex())).unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [d.diff_id.to_string()]}, "config": {}
    }))
    .unwrap();
    let config_digest = sifovl::oci::Digest::of(&config);
    std::fs::write(blobs.join(config_digest.hex()), &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest.to_string()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": d.size, "digest": d.digest.to_string()}]
    }))
    .unwrap();
    let manifest_digest = sifovl::oci::Digest::of(&manifest);
    std::fs::write(blobs.join(manifest_digest.hex()), &manifest).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": manifest.len(),
            "digest": manifest_digest.to_string(), "annotations": {"org.opencontainers.image.ref.name": "test"}}]}))
        .unwrap(),
    )
    .unwrap();
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:test", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(std::fs::read(rootfs.join("small.txt")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read_link(rootfs.join("fast-link")).unwrap(),
        Path::new("small.txt")
    );
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(rootfs.join("dir/big.bin")).unwrap(),
        std::fs::metadata(rootfs.join("dir/sub/big-link.bin")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    let deep = rootfs
        .join("x".repeat(60))
        .join("y".repeat(60))
        .join("z".repeat(80));
    assert_eq!(std::fs::read(deep).unwrap(), b"deep");
    assert_eq!(
        std::fs::read_link(rootfs.join("long-target")).unwrap(),
        Path::new(&"t".repeat(150))
    );
}

#[test]
fn our_reader_lists_every_fixture_layer_like_gnu_tar() {
    require_tool!("tar");
    let fixtures = require_fixtures!();
    let mut layers = 0;
    for layout in std::fs::read_dir(fixtures.join("oci-layouts")).unwrap() {
        let layout = layout.unwrap().path();
        let Ok(blobs) = std::fs::read_dir(layout.join("blobs/sha256")) else {
            continue;
        };
        for blob in blobs {
            let blob = blob.unwrap().path();
            let bytes = std::fs::read(&blob).unwrap();
            // A layer is any blob GNU tar can list (JSON blobs are not tars).
            let gnu = Command::new("tar")
                .args(["-tvf"])
                .arg(&blob)
                .arg("--numeric-owner")
                .output()
                .unwrap();
            if !gnu.status.success() || bytes.first() == Some(&b'{') {
                continue;
            }
            let gnu_text = String::from_utf8_lossy(&gnu.stdout);
            let mut expected: Vec<(char, String)> = gnu_text
                .lines()
                .map(|l| {
                    let kind = l.chars().next().unwrap();
                    // Name is field 6 on; cut link annotations.
                    let name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
                    let name = name
                        .split(" -> ")
                        .next()
                        .unwrap()
                        .split(" link to ")
                        .next()
                        .unwrap();
                    let name = name
                        .trim_start_matches("./")
                        .trim_end_matches('/')
                        .to_string();
                    (if kind == 'h' { 'h' } else { kind }, name)
                })
                .filter(|(_, n)| !n.is_empty() && n != ".")
                .collect();
            let mut reader = TarLayerReader::new(std::fs::File::open(&blob).unwrap()).unwrap();
            let mut ours = Vec::new();
            while let Some(e) = sifovl::fs::entry::EntrySource::next_entry(&mut reader).unwrap() {
                if e.path.is_empty() {
                    continue;
                }
                let kind = match e.kind {
                    sifovl::fs::entry::EntryKind::Directory => 'd',
                    sifovl::fs::entry::EntryKind::File { .. } => '-',
                    sifovl::fs::entry::EntryKind::Symlink { .. } => 'l',
                    sifovl::fs::entry::EntryKind::HardLink { .. } => 'h',
                    sifovl::fs::entry::EntryKind::CharDevice { .. } => 'c',
                    sifovl::fs::entry::EntryKind::BlockDevice { .. } => 'b',
                    sifovl::fs::entry::EntryKind::Fifo => 'p',
                    sifovl::fs::entry::EntryKind::Socket => 's',
                };
                ours.push((kind, String::from_utf8_lossy(&e.path).into_owned()));
            }
            expected.sort();
            ours.sort();
            assert_eq!(ours, expected, "{}", blob.display());
            layers += 1;
        }
    }
    assert!(layers >= 15, "only {layers} fixture layers read");
}

#[test]
fn path_traversal_is_refused() {
    require_tool!("python3");
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import io, sys, tarfile
def make(name, members):
    with tarfile.open(name, "w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            info = tarfile.TarInfo(m[1]); info.type = m[0]
            if len(m) > 2: info.linkname = m[2]
            data = b"evil" if m[0] == tarfile.REGTYPE else b""
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
R, L, S, D = tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE
cases = {
  "dotdot": [(R, "../evil")],
  "nested-dotdot": [(D, "a"), (R, "a/../../evil")],
  "absolute": [(R, "/etc/evil")],
  "hardlink-out": [(L, "x", "../../etc/passwd")],
  "hardlink-absolute": [(L, "x", "/etc/passwd")],
  "hardlink-root": [(L, "x", "./")],
  "through-symlink": [(S, "a", "/etc"), (R, "a/passwd")],
  "through-relative-symlink": [(S, "a", "../.."), (R, "a/evil")],
  "through-nested-symlink": [(D, "d"), (S, "d/l", "/"), (R, "d/l/etc/evil")],
  "long-dotdot": [(R, "x/" * 60 + "../" * 70 + "evil")],
}
for k, v in cases.items():
    make(sys.argv[1] + "/" + k + ".tar", v)
"#;
    run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir.path()),
    );
    let mut refused = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut reader = TarLayerReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let result = (|| -> sifovl::Result<()> {
            while sifovl::fs::entry::EntrySource::next_entry(&mut reader)?.is_some() {}
            Ok(())
        })();
        let err = result.expect_err(&path.display().to_string());
        assert!(!err.to_string().contains('\n'));
        refused += 1;
    }
    assert_eq!(refused, 10);
    // The reader never writes: nothing appeared outside (or inside) the scratch directory.
    assert!(!dir.path().join("evil").exists() && !Path::new("/etc/evil").exists());
}

#[test]
fn random_corruption_never_panics() {
    let (dir, tree) = tree();
    let layer = dir.path().join("layer.tar");
    write_layer(&tree, &layer, TarCompression::None);
    let good = std::fs::read(&layer).unwrap();
    let mut state = 0x13198A2E03707344u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 6 {
            let at = (next() as usize) % bad.len().min(200_000);
            bad[at] = next() as u8;
        }
        let mut reader = TarLayerReader::new(std::io::Cursor::new(bad)).unwrap();
        for _ in 0..100_000 {
            match sifovl::fs::entry::EntrySource::next_entry(&mut reader) {
                Ok(Some(e)) => {
                    if let sifovl::fs::entry::EntryKind::File { .. } = e.kind {
                        let mut sink = Vec::new();
                        if let Ok(mut c) = sifovl::fs::entry::EntrySource::read_content(&mut reader)
                        {
                            let _ = std::io::Read::read_to_end(&mut c, &mut sink);
                        }
                    }
                }
                _ => break,
            }
        }
    }
}
