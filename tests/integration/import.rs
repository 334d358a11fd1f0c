//! `import` and `export`, checked against independent tools: `umoci raw unpack` of the
//! source image is the reference tree, `unsquashfs` reads our squashfs layers, `skopeo`
//! makes the archives we read and reads the ones we write, and `sifcheck` + `verify` check
//! the OCI-SIF invariants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sifcheck::assert_oci_sif_invariants;
use crate::tree::host_listing;
use crate::util::{run_ok, sifovl};
use crate::{require_fixtures, require_tool};

/// Layouts of the fixture set that import cleanly (the AUFS one is deliberately broken:
/// see `a_fixture_with_wrong_digests_is_refused`).
const LAYOUTS: &[&str] = &[
    "hard-link-1",
    "hard-link-2",
    "hard-link-delete-1",
    "hard-link-delete-2",
    "hard-link-delete-3",
    "hard-link-delete-4",
    "hello-world-cosign-manifest",
    "hello-world-cosign-manifest-list",
    "hello-world-docker-v2-manifest",
    "hello-world-docker-v2-manifest-list",
    "many-layers",
    "overlayfs-docker-v2-manifest",
    "root-dir-entry",
    "whiteout-explicit-dir",
    "whiteout-explicit-file",
    "whiteout-opaque",
];

fn inspect(image: &Path) -> serde_json::Value {
    serde_json::from_slice(&run_ok(sifovl().args(["inspect", "--json"]).arg(image))).unwrap()
}

/// What `umoci raw unpack` makes of `image` (an OCI layout reference `DIR:TAG`).
pub(crate) fn umoci_tree(image: &str, dest: &Path) -> BTreeMap<String, String> {
    run_ok(
        Command::new("umoci")
            .args(["raw", "unpack", "--rootless", "--image", image])
            .arg(dest),
    );
    host_listing(dest)
}

/// A copy of fixture layout `name` as `DIR:latest` (skopeo; umoci needs a tag), resolving a
/// multi-platform index for linux/amd64 as sifovl does by default on this machine. Cosign
/// entries are left out first (skopeo wants one image in the index).
pub(crate) fn tagged_copy(fixtures: &Path, name: &str, work: &Path) -> String {
    let source = layout_copy(fixtures, name, &work.join(format!("source-{name}")));
    let index_path = source.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"].is_null());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let dest = work.join(format!("tagged-{name}"));
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--override-os",
                "linux",
                "--override-arch",
                "amd64",
            ])
            .arg(format!("oci:{}", source.display()))
            .arg(format!("oci:{}:latest", dest.display())),
    );
    format!("{}:latest", dest.display())
}

/// Extract layer `index` of the OCI-SIF `image` with `unsquashfs` and list it.
fn squashfs_layer_tree(image: &Path, index: usize, dest: &Path) -> BTreeMap<String, String> {
    let info = inspect(image);
    let layer = &info["layers"][index];
    assert_eq!(
        layer["media_type"], "application/vnd.sylabs.image.layer.v1.squashfs",
        "{info}"
    );
    let object = layer["object"].as_u64().unwrap().to_string();
    let blob = dest.with_extension("sqfs");
    std::fs::write(&blob, run_ok(sifovl().args(["dump", &object]).arg(image))).unwrap();
    run_ok(
        Command::new("unsquashfs")
            .args(["-q", "-n", "-d"])
            .arg(dest)
            .arg(&blob),
    );
    host_listing(dest)
}

fn import(args: &[&str], source: &str, out: &Path) -> serde_json::Value {
    let report = run_ok(
        sifovl()
            .arg("import")
            .args(args)
            .args(["--json", source])
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let bytes = std::fs::read(out).unwrap();
    assert_oci_sif_invariants(&bytes, true);
    run_ok(sifovl().arg("verify").arg(out));
    serde_json::from_slice(&report).unwrap()
}

#[test]
fn every_fixture_layout_imports_to_the_tree_umoci_unpacks() {
    let fixtures = require_fixtures!();
    require_tool!("umoci");
    require_tool!("skopeo");
    require_tool!("unsquashfs");
    let work = tempfile::tempdir().unwrap();
    for name in LAYOUTS {
        let source = fixtures.join("oci-layouts").join(name);
        let expected = if *name == "overlayfs-docker-v2-manifest" {
            // Its one layer is squashfs already (skopeo and umoci refuse that media type in
            // a Docker manifest): the reference tree is what unsquashfs makes of it.
            let dest = work.path().join(format!("umoci-{name}"));
            let layer = std::fs::read_dir(source.join("blobs/sha256"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| std::fs::read(p).unwrap().starts_with(b"hsqs"))
                .unwrap();
            run_ok(
                Command::new("unsquashfs")
                    .args(["-q", "-n", "-d"])
                    .arg(&dest)
                    .arg(layer),
            );
            host_listing(&dest)
        } else {
            let tagged = tagged_copy(&fixtures, name, work.path());
            umoci_tree(&tagged, &work.path().join(format!("umoci-{name}")))
        };
        let out = work.path().join(format!("{name}.sif"));
        let report = import(&[], source.to_str().unwrap(), &out);
        let layers = report["layers"].as_array().unwrap().len();
        assert_eq!(layers, 1, "{name}: squashed into one layer: {report}");
        let got = squashfs_layer_tree(&out, 0, &work.path().join(format!("sqfs-{name}")));
        assert_eq!(
            got, expected,
            "{name}: squashed layer differs from umoci's unpack"
        );
        if *name == "overlayfs-docker-v2-manifest" {
            assert_eq!(report["mode"], "unmodified", "{report}");
            assert_eq!(report["manifest"], report["source_manifest"]);
        } else {
            assert_eq!(report["mode"], "squashed", "{name}: {report}");
        }
    }
}

#[test]
fn keep_layers_round_trips_through_a_tar_export_to_the_same_tree() {
    let fixtures = require_fixtures!();
    require_tool!("umoci");
    require_tool!("skopeo");
    require_tool!("unsquashfs");
    let work = tempfile::tempdir().unwrap();
    for name in [
        "hard-link-delete-4",
        "whiteout-opaque",
        "whiteout-explicit-dir",
        "whiteout-explicit-file",
        "many-layers",
        "hard-link-2",
    ] {
        let tagged = tagged_copy(&fixtures, name, work.path());
        let expected = umoci_tree(&tagged, &work.path().join(format!("umoci-{name}")));
        let source = format!("oci:{}", fixtures.join("oci-layouts").join(name).display());
        let sources = serde_json::from_slice::<serde_json::Value>(&run_ok(
            Command::new("skopeo").args(["inspect", "--raw", &source]),
        ))
        .unwrap();
        let out = work.path().join(format!("{name}.sif"));
        let report = import(&["--keep-layers"], &source, &out);
        assert_eq!(report["mode"], "keep-layers");
        assert_eq!(
            report["layers"].as_array().unwrap().len(),
            sources["layers"].as_array().unwrap().len(),
            "{name}: one squashfs layer per tar layer"
        );
        // Whiteouts are kept in each layer, in the OverlayFS form.
        for (i, _) in report["layers"].as_array().unwrap().iter().enumerate() {
            let tree = squashfs_layer_tree(&out, i, &work.path().join(format!("l{i}-{name}")));
            for (path, line) in &tree {
                assert!(
                    !path.rsplit('/').next().unwrap().starts_with(".wh."),
                    "{name}: AUFS marker left in layer {i}: {path}"
                );
                if line.starts_with("char 0,0") {
                    assert!(name.starts_with("whiteout") || name.starts_with("hard-link-delete"));
                }
            }
        }
        // Export as a Docker/Podman image and unpack it with umoci: the same tree.
        // (No tag: skopeo 1.9 finds tags only on OCI-typed index entries, and these
        // images keep their Docker manifests.)
        let archive = work.path().join(format!("{name}.tar"));
        run_ok(
            sifovl()
                .args(["export", "--layer-format", "tar"])
                .arg(&out)
                .arg(format!("oci-archive:{}", archive.display())),
        );
        let back = work.path().join(format!("back-{name}"));
        run_ok(
            Command::new("skopeo")
                .args(["copy", "-q"])
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("oci:{}:v1", back.display())),
        );
        let got = umoci_tree(
            &format!("{}:v1", back.display()),
            &work.path().join(format!("umoci-back-{name}")),
        );
        // A layer cannot link to a file of the layer below it (neither can OverlayFS across
        // layers): --keep-layers stores such a link as a copy, same content and metadata.
        let links_as_copies = |tree: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            tree.iter()
                .map(|(path, line)| {
                    let line = match line.strip_prefix("hardlink ") {
                        Some(rest) => {
                            let target = rest.split(' ').next().unwrap();
                            tree[&format!("/{target}")].clone()
                        }
                        None => line.clone(),
                    };
                    (path.clone(), line)
                })
                .collect()
        };
        assert_eq!(
            links_as_copies(&got),
            links_as_copies(&expected),
            "{name}: export --layer-format tar of --keep-layers"
        );
    }
}

#[test]
fn squashfs_export_then_import_gives_back_the_same_sif() {
    require_tool!("skopeo");
    let work = tempfile::tempdir().unwrap();
    let sample = crate::ocisif::sample("sample.oci.sif");
    let layout = work.path().join("layout");
    run_ok(sifovl().arg("export").arg(&sample).arg(&layout));
    // skopeo reads it, and sees the SIF's manifest bytes.
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}", layout.display())),
    );
    let info = inspect(&sample);
    assert_eq!(
        crate::sifcheck::sha256(&raw),
        info["manifest_digest"].as_str().unwrap()
    );
    let back = work.path().join("back.sif");
    let report = import(&[], layout.to_str().unwrap(), &back);
    assert_eq!(report["mode"], "unmodified");
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&sample).unwrap(),
        "export (squashfs) then import must give back the image byte for byte"
    );
    // The same through both archive forms.
    for dest in ["oci-archive", "docker-archive"] {
        let archive = work.path().join(format!("{dest}.tar"));
        run_ok(
            sifovl()
                .args(["export", "--layer-format", "squashfs"])
                .arg(&sample)
                .arg(format!("{dest}:{}", archive.display())),
        );
        let back = work.path().join(format!("back-{dest}.sif"));
        import(&[], &format!("{dest}:{}", archive.display()), &back);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(&sample).unwrap(),
            "{dest}"
        );
    }
}

#[test]
fn archives_made_by_skopeo_import_like_the_layout() {
    let fixtures = require_fixtures!();
    require_tool!("skopeo");
    require_tool!("umoci");
    require_tool!("unsquashfs");
    let work = tempfile::tempdir().unwrap();
    let name = "hard-link-delete-3";
    let tagged = tagged_copy(&fixtures, name, work.path());
    let expected = umoci_tree(&tagged, &work.path().join("umoci"));
    for transport in ["docker-archive", "oci-archive"] {
        let archive = work.path().join(format!("{transport}.tar"));
        let dest = if transport == "docker-archive" {
            format!("{transport}:{}:example/app:v1", archive.display())
        } else {
            format!("{transport}:{}:v1", archive.display())
        };
        run_ok(Command::new("skopeo").args(["copy", "-q", &format!("oci:{tagged}"), &dest]));
        let out = work.path().join(format!("{transport}.sif"));
        let report = import(&[], &format!("{transport}:{}", archive.display()), &out);
        assert_eq!(report["mode"], "squashed");
        let got = squashfs_layer_tree(&out, 0, &work.path().join(format!("sqfs-{transport}")));
        assert_eq!(got, expected, "{transport}");
    }
}

#[test]
fn a_multi_platform_index_gives_the_platform_asked_for() {
    let fixtures = require_fixtures!();
    let work = tempfile::tempdir().unwrap();
    let source = fixtures.join("oci-layouts/hello-world-docker-v2-manifest-list");
    // The manifest list's entries, by platform, from the fixture itself.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(source.join("index.json")).unwrap()).unwrap();
    let list_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let list: serde_json::Value = serde_json::from_slice(
        &std::fs::read(source.join("blobs/sha256").join(&list_digest[7..])).unwrap(),
    )
    .unwrap();
    let digest_for = |arch: &str, variant: Option<&str>| {
        list["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["platform"]["architecture"] == arch
                    && m["platform"]["os"] == "linux"
                    && variant.is_none_or(|v| m["platform"]["variant"] == v)
            })
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (platform, arch, variant) in [
        ("linux/amd64", "amd64", None),
        ("linux/arm64/v8", "arm64", Some("v8")),
        ("linux/arm/v7", "arm", Some("v7")),
    ] {
        let out = work.path().join(format!("{arch}.sif"));
        let report = import(&["--platform", platform], source.to_str().unwrap(), &out);
        assert_eq!(
            report["source_manifest"],
            digest_for(arch, variant),
            "{platform}"
        );
    }
    let out = work.path().join("none.sif");
    let err = sifovl()
        .args(["import", "--platform", "linux/sparc64"])
        .arg(&source)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2));
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        text.contains("no image for linux/sparc64") && text.contains("linux/amd64"),
        "{text}"
    );
    assert!(!out.exists());
}

/// A writable copy of fixture layout `name`.
fn layout_copy(fixtures: &Path, name: &str, dest: &Path) -> PathBuf {
    run_ok(
        Command::new("cp")
            .args(["-r", "--no-preserve=mode"])
            .arg(fixtures.join("oci-layouts").join(name))
            .arg(dest),
    );
    dest.to_path_buf()
}

/// The hex sha256 of `data` (a blob's file name in a layout).
fn hex_sha256(data: &[u8]) -> String {
    crate::sifcheck::sha256(data)["sha256:".len()..].to_string()
}

/// Replace the one layer of the single-layer layout `dir` by `layer` (manifest, config
/// diff_id and index rewritten so that only the layer itself is wrong).
fn with_layer(dir: &Path, layer: &[u8], diff_id: Option<&str>) {
    let blobs = dir.join("blobs/sha256");
    let digest = hex_sha256(layer);
    std::fs::write(blobs.join(&digest), layer).unwrap();
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest_digest[7..])).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&config_digest[7..])).unwrap()).unwrap();
    let uncompressed = if layer.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(layer)
            .read_to_end(&mut out)
            .map(|_| out)
            .unwrap_or_default()
    } else {
        layer.to_vec()
    };
    let diff_id = diff_id.map_or_else(|| crate::sifcheck::sha256(&uncompressed), str::to_string);
    config["rootfs"]["diff_ids"] = serde_json::json!([diff_id]);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = hex_sha256(&config_bytes);
    std::fs::write(blobs.join(&config_digest), &config_bytes).unwrap();
    manifest["config"]["digest"] = format!("sha256:{config_digest}").into();
    manifest["config"]["size"] = config_bytes.len().into();
    manifest["layers"] = serde_json::json!([{
        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "size": layer.len(),
        "digest": format!("sha256:{digest}"),
    }]);
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = hex_sha256(&manifest_bytes);
    std::fs::write(blobs.join(&manifest_digest), &manifest_bytes).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{manifest_digest}").into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A tar stream with one member whose name is written raw (so `../x` can be made).
fn raw_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn assert_import_refused(source: &Path, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sif");
    let result = sifovl()
        .arg("import")
        .arg(source)
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!out.exists(), "no OUT after a failed import");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left beside OUT"
    );
}

#[test]
fn bad_inputs_are_refused_in_one_line_and_leave_nothing_behind() {
    let fixtures = require_fixtures!();
    let work = tempfile::tempdir().unwrap();
    let base = "whiteout-explicit-file";

    // A missing blob.
    let dir = layout_copy(&fixtures, base, &work.path().join("missing"));
    let manifest = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}", dir.display())),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    std::fs::remove_file(dir.join("blobs/sha256").join(&layer[7..])).unwrap();
    assert_import_refused(&dir, &format!("blob {layer} is missing"));

    // A layer whose bytes do not match its digest.
    let dir = layout_copy(&fixtures, base, &work.path().join("corrupt"));
    let path = dir.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert_import_refused(&dir, "not the declared digest");

    // A path that climbs out of the tree.
    let dir = layout_copy(&fixtures, base, &work.path().join("traversal"));
    with_layer(&dir, &gzip(&raw_tar("../escape", b"x")), None);
    assert_import_refused(&dir, "escape");

    // A truncated gzip stream.
    let dir = layout_copy(&fixtures, base, &work.path().join("truncated"));
    let whole = gzip(&raw_tar("a", &[7u8; 100_000]));
    with_layer(&dir, &whole[..whole.len() / 2], None);
    assert_import_refused(&dir, "layer 0");

    // Bytes that are neither gzip, zstd nor tar.
    let dir = layout_copy(&fixtures, base, &work.path().join("unknown"));
    with_layer(&dir, &[0x42u8; 2048], None);
    assert_import_refused(&dir, "layer 0");

    // A diff_id that does not match the uncompressed layer.
    let dir = layout_copy(&fixtures, base, &work.path().join("diffid"));
    with_layer(
        &dir,
        &gzip(&raw_tar("a", b"x")),
        Some("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    );
    assert_import_refused(&dir, "not its diff_id");

    // Docker schema 1.
    let dir = layout_copy(&fixtures, base, &work.path().join("schema1"));
    let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"latest","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let digest = hex_sha256(schema1);
    std::fs::write(dir.join("blobs/sha256").join(&digest), schema1).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","size":{},"digest":"sha256:{digest}"}}]}}"#,
            schema1.len()
        ),
    )
    .unwrap();
    assert_import_refused(&dir, "Docker schema 1");
}

#[test]
fn a_fixture_with_wrong_digests_is_refused() {
    let fixtures = require_fixtures!();
    // oci-tools' AUFS fixture declares sizes and digests its blobs do not have.
    assert_import_refused(
        &fixtures.join("oci-layouts/aufs-docker-v2-manifest"),
        "bytes stored",
    );
}

#[test]
fn export_tar_reads_a_stale_overlay_as_it_is_and_squashfs_export_refuses_it() {
    require_tool!("debugfs");
    require_tool!("skopeo");
    require_tool!("umoci");
    let (dir, image) = crate::ocisif::scratch("sample.oci.sif");
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--create-dir", "/data"])
            .arg(&image),
    );
    let job = dir.path().join("result.txt");
    std::fs::write(&job, b"results of the job\n").unwrap();
    crate::ocisif::simulate_writable_run(
        &image,
        &[&format!("write {} /upper/data/result.txt", job.display())],
    );
    let before = std::fs::read(&image).unwrap();
    let layout = dir.path().join("layout");
    let refused = sifovl()
        .arg("export")
        .arg(&image)
        .arg(&layout)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sifovl reconcile"));
    run_ok(
        sifovl()
            .args(["export", "--layer-format", "tar", "--tag", "v1"])
            .arg(&image)
            .arg(&layout),
    );
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "export never edits the image"
    );
    let root = dir.path().join("root");
    umoci_tree(&format!("{}:v1", layout.display()), &root);
    assert_eq!(
        std::fs::read(root.join("data/result.txt")).unwrap(),
        b"results of the job\n"
    );
    assert!(
        root.join("hello.txt").is_file(),
        "the squashfs layer below is there too"
    );
    // Layer media types follow the manifest's family (an OCI manifest here).
    let manifest: serde_json::Value = serde_json::from_slice(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:v1", layout.display())),
    ))
    .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
}

#[test]
fn a_layer_that_expands_beyond_the_bound_is_refused_as_a_bomb() {
    use sifovl::ops::import::{ImportOptions, ImportSource, import};
    let fixtures = require_fixtures!();
    let work = tempfile::tempdir().unwrap();
    let dir = layout_copy(
        &fixtures,
        "whiteout-explicit-file",
        &work.path().join("bomb"),
    );
    // 8 MiB of zeros gzip to about 8 KiB: a ratio of ~1,000.
    with_layer(&dir, &gzip(&raw_tar("zeros", &vec![0u8; 8 << 20])), None);
    let out = work.path().join("out.sif");
    let source = ImportSource::Layout {
        dir: dir.clone(),
        reference: None,
    };
    let strict = ImportOptions {
        max_expansion: 100,
        expansion_allowance: 0,
        ..ImportOptions::default()
    };
    let err = import(&source, &out, &strict).unwrap_err();
    assert!(err.to_string().contains("decompression bomb"), "{err}");
    assert!(!out.exists());
    // The default bound lets the same layer through.
    let report = import(&source, &out, &ImportOptions::default()).unwrap();
    assert_eq!(report.layers.len(), 1);
}

#[test]
fn xattrs_devices_symlinks_and_links_survive_import_as_umoci_unpacks_them() {
    require_tool!("umoci");
    require_tool!("unsquashfs");
    require_tool!("setfattr");
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to make device nodes and trusted.* xattrs");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    for dir in ["etc", "usr/bin", "dev", "var/big", "opt/gone"] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
    }
    std::fs::write(tree.join("etc/conf"), b"key=value\n").unwrap();
    std::fs::write(tree.join("usr/bin/tool"), vec![0x7fu8; 300_000]).unwrap();
    std::fs::hard_link(tree.join("usr/bin/tool"), tree.join("usr/bin/tool-alias")).unwrap();
    std::os::unix::fs::symlink("../etc/conf", tree.join("usr/conf-link")).unwrap();
    std::fs::write(tree.join("var/big/data"), vec![1u8; 2_000_000]).unwrap();
    std::fs::write(tree.join("opt/gone/data"), vec![2u8; 1_000_000]).unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.origin", "-v", "sifovl-test"])
            .arg(tree.join("etc/conf")),
    );
    run_ok(
        Command::new("setfattr")
            .args(["-n", "trusted.note", "-v", "0x00ff"])
            .arg(tree.join("usr/bin")),
    );
    run_ok(
        Command::new("mknod")
            .arg(tree.join("dev/null"))
            .args(["c", "1", "3"]),
    );
    run_ok(Command::new("mkfifo").arg(tree.join("dev/pipe")));
    std::os::unix::fs::chown(tree.join("etc/conf"), Some(1234), Some(5678)).unwrap();
    let layout = work.path().join("layout");
    run_ok(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-layout.py"))
            .arg(&tree)
            .arg(&layout)
            .arg("4"),
    );
    // umoci as root (not rootless): devices, owners and trusted.* xattrs are real.
    let expected_root = work.path().join("umoci");
    run_ok(
        Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&expected_root),
    );
    let expected = host_listing(&expected_root);
    assert!(expected.contains_key("/dev/null") && !expected.contains_key("/var/big"));
    let out = work.path().join("out.sif");
    import(&[], layout.to_str().unwrap(), &out);
    let got = squashfs_layer_tree(&out, 0, &work.path().join("sqfs"));
    assert_eq!(got, expected);
    assert!(got["/etc/conf"].contains("1234:5678") && got["/etc/conf"].contains("user.origin="));
    assert!(got["/usr/bin/tool-alias"].starts_with("hardlink "));
    assert!(got["/dev/null"].starts_with("char 1,3"));
}

/// A tar layer may list a hard link's directory before its target's, and the target after
/// other files: each name must still reach the file (a link once pointed at its own
/// directory, a loop that rdsquashfs and sifovl's reader refuse and unsquashfs extracts as
/// a directory).
#[test]
fn hard_links_to_files_listed_later_in_the_tar_reach_their_file() {
    let fixtures = require_fixtures!();
    require_tool!("unsquashfs");
    require_tool!("rdsquashfs");
    let work = tempfile::tempdir().unwrap();
    let dir = layout_copy(
        &fixtures,
        "whiteout-explicit-file",
        &work.path().join("links"),
    );
    let mut builder = tar::Builder::new(Vec::new());
    let header = |path: &str, kind: tar::EntryType, size: u64, link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        if let Some(target) = link {
            h.set_link_name(target).unwrap();
        }
        h.set_path(path).unwrap();
        h.set_cksum();
        h
    };
    for (path, kind, content, link) in [
        ("b/", tar::EntryType::Directory, &b""[..], None),
        ("b/f1", tar::EntryType::Regular, &b"one"[..], None),
        ("b/f0", tar::EntryType::Regular, &b"zero"[..], None),
        ("a/", tar::EntryType::Directory, &b""[..], None),
        ("a/f0", tar::EntryType::Link, &b""[..], Some("b/f0")),
        ("c/", tar::EntryType::Directory, &b""[..], None),
        ("c/f0", tar::EntryType::Link, &b""[..], Some("b/f0")),
    ] {
        let h = header(path, kind, content.len() as u64, link);
        builder.append(&h, content).unwrap();
    }
    let layer = gzip(&builder.into_inner().unwrap());
    with_layer(&dir, &layer, None);
    for args in [&[][..], &["--keep-layers"][..]] {
        let out = work.path().join(format!("out{}.sif", args.len()));
        import(args, dir.to_str().unwrap(), &out);
        let dest = work.path().join(format!("tree{}", args.len()));
        let got = squashfs_layer_tree(&out, 0, &dest);
        for name in ["/a/f0", "/b/f0", "/c/f0"] {
            assert_eq!(
                std::fs::read(dest.join(&name[1..])).unwrap(),
                b"zero",
                "{args:?} {name}: {got:?}"
            );
        }
        assert!(got["/c/f0"].starts_with("hardlink "), "{args:?}: {got:?}");
        run_ok(
            Command::new("rdsquashfs")
                .args(["-l", "/"])
                .arg(dest.with_extension("sqfs")),
        );
        run_ok(sifovl().args(["ls", "--layer", "0"]).arg(&out));
    }
}
