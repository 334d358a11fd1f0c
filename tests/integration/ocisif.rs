//! Integration tests: add / reconcile / inspect / verify on OCI-SIF and native SIF images,
//! checked with an independent decoder (`sifcheck`), e2fsck and debugfs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::sifcheck::{self, assert_oci_sif_invariants, sha256};
use crate::util::{run_ok, sifovl};
use crate::{require_fixtures, require_tool};

pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// A scratch copy of a sample image.
pub fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(sample(name), &path).unwrap();
    (dir, path)
}

fn run(args: &[&str], image: &Path) -> Output {
    sifovl().args(args).arg(image).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert exit 2 with a one-line error mentioning `needle`, and the file unchanged.
fn assert_refused(args: &[&str], image: &Path, needle: &str) {
    let before = std::fs::read(image).unwrap();
    let out = run(args, image);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"));
    assert_eq!(
        std::fs::read(image).unwrap(),
        before,
        "{} changed",
        image.display()
    );
}

/// The overlay's (offset, size) from the independent decoder.
pub fn overlay_range(image: &Path) -> (u64, u64) {
    let bytes = std::fs::read(image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let o = sifcheck::oci(&sif, &bytes);
    let last = o.manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["mediaType"],
        "application/vnd.sylabs.image.layer.v1.ext3"
    );
    let d = sifcheck::blob(&sif, last["digest"].as_str().unwrap());
    (d.offset, d.size)
}

/// Simulate a `--writable` run: take the overlay out, change it with debugfs, put it back
/// at the same offset (what fuse2fs writing in place amounts to).
pub fn simulate_writable_run(image: &Path, debugfs_commands: &[&str]) {
    let (offset, size) = overlay_range(image);
    let mut bytes = std::fs::read(image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ext3 = dir.path().join("overlay.img");
    std::fs::write(&ext3, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    // One debugfs session; `mknod` only takes a name in the current directory.
    let mut script = String::new();
    for cmd in debugfs_commands {
        match cmd
            .strip_prefix("mknod ")
            .and_then(|rest| rest.split_once(' '))
        {
            Some((path, spec)) if path.contains('/') => {
                let (dir, name) = path.rsplit_once('/').unwrap();
                script.push_str(&format!(
                    "cd {}\nmknod {name} {spec}\ncd /\n",
                    if dir.is_empty() { "/" } else { dir }
                ));
            }
            _ => {
                script.push_str(cmd);
                script.push('\n');
            }
        }
    }
    let script_path = dir.path().join("debugfs.cmds");
    std::fs::write(&script_path, script).unwrap();
    let out = run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(&ext3),
    );
    let _ = out;
    let changed = std::fs::read(&ext3).unwrap();
    assert_eq!(changed.len() as u64, size);
    bytes[offset as usize..(offset + size) as usize].copy_from_slice(&changed);
    std::fs::write(image, bytes).unwrap();
}

fn e2fsck_overlay(image: &Path) {
    let (offset, size) = overlay_range(image);
    let bytes = std::fs::read(image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ext3 = dir.path().join("overlay.img");
    std::fs::write(&ext3, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    run_ok(Command::new("e2fsck").arg("-fn").arg(&ext3));
    let listing = String::from_utf8(run_ok(
        Command::new("debugfs").args(["-R", "ls -l /"]).arg(&ext3),
    ))
    .unwrap();
    for dir in ["upper", "work"] {
        let line = listing
            .lines()
            .find(|l| l.trim_end().ends_with(dir))
            .unwrap_or_else(|| panic!("{dir} missing: {listing}"));
        assert!(line.contains("40755"), "{dir} mode: {line}");
    }
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn add_appends_an_ext3_layer_that_keeps_every_invariant() {
    require_tool!("mke2fs");
    require_tool!("e2fsck");
    let (_dir, image) = scratch("sample.oci.sif");
    let before = std::fs::read(&image).unwrap();
    let old = sifcheck::parse(&before);
    let old_oci = sifcheck::oci(&old, &before);
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let after = std::fs::read(&image).unwrap();
    assert_oci_sif_invariants(&after, true);
    let sif = sifcheck::parse(&after);
    let o = sifcheck::oci(&sif, &after);
    // 12: one more layer, ext3 last, 64 MiB, diff_id = digest, history gained the zero entry.
    let layers = o.manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(
        layers[0], old_oci.manifest["layers"][0],
        "the old layer descriptor is unchanged"
    );
    assert_eq!(layers[1]["size"], 64 << 20);
    assert_eq!(
        layers[1].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["mediaType", "size", "digest"]
    );
    let history = o.config["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[1],
        serde_json::json!({"created": "0001-01-01T00:00:00Z"})
    );
    // Everything else in the config is as it was.
    let mut expected_config = old_oci.config.clone();
    expected_config["history"]
        .as_array_mut()
        .unwrap()
        .push(history[1].clone());
    expected_config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(layers[1]["digest"].clone());
    assert_eq!(o.config, expected_config);
    // 18: the squashfs layer kept its slot and offset; new blobs follow in slot order.
    assert_eq!(sif.objects[0], old.objects[0]);
    let overlay = sifcheck::blob(&sif, layers[1]["digest"].as_str().unwrap());
    assert_eq!(overlay.slot, 1);
    assert_eq!(overlay.offset, old.objects[0].offset + old.objects[0].size);
    let order: Vec<i32> = sif.objects.iter().map(|d| d.dtype).collect();
    assert_eq!(
        order,
        [
            sifcheck::BLOB,
            sifcheck::BLOB,
            sifcheck::BLOB,
            sifcheck::BLOB,
            sifcheck::ROOT_INDEX
        ]
    );
    e2fsck_overlay(&image);
    // --sparse: the overlay's unwritten blocks are holes.
    let meta = std::fs::metadata(&image).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < meta.len() / 2,
        "not sparse"
    );
    // verify agrees.
    let out = run(&["verify"], &image);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn writable_run_then_reconcile_then_verify() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(
        sifovl()
            .args(["add", "--sparse", "--create-dir", "/data"])
            .arg(&image),
    );
    let added = std::fs::read(&image).unwrap();
    let payload = dir.path().join("result.txt");
    std::fs::write(&payload, b"job output\n").unwrap();
    simulate_writable_run(
        &image,
        &[&format!(
            "write {} /upper/data/result.txt",
            payload.display()
        )],
    );
    let changed = std::fs::read(&image).unwrap();
    assert_ne!(added, changed);
    assert_oci_sif_invariants(&changed, false);

    // Before reconcile: both --check and verify report the mismatch.
    let check = run(&["reconcile", "--check"], &image);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let verify = run(&["verify"], &image);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&verify.stdout)
            .contains("FAIL  every object's digest matches its bytes")
    );
    let inspect = json(&run_ok(
        sifovl().args(["inspect", "--hash", "--json"]).arg(&image),
    ));
    assert_eq!(inspect["overlay"]["in_sync"], false);
    assert_eq!(
        std::fs::read(&image).unwrap(),
        changed,
        "--check and verify changed nothing"
    );

    let report = json(&run_ok(sifovl().args(["reconcile", "--json"]).arg(&image)));
    assert_eq!(report["updated"], true);
    assert!(report["bytes_written"].as_u64().unwrap() < 64 * 1024);
    let reconciled = std::fs::read(&image).unwrap();
    assert_oci_sif_invariants(&reconciled, true);
    assert_eq!(
        run(&["reconcile", "--check"], &image).status.code(),
        Some(0)
    );
    assert!(run(&["verify"], &image).status.success());

    // 13: only the overlay digest, config and manifest changed; the overlay did not move.
    let (a, b) = (sifcheck::parse(&changed), sifcheck::parse(&reconciled));
    let (oa, ob) = (sifcheck::oci(&a, &changed), sifcheck::oci(&b, &reconciled));
    assert_eq!(a.objects[1].offset, b.objects[1].offset);
    assert_eq!(a.objects[1].slot, b.objects[1].slot);
    assert_eq!(
        b.objects[1].digest(),
        sha256(b.objects[1].data(&reconciled))
    );
    let mut expected_config = oa.config.clone();
    expected_config["rootfs"]["diff_ids"][1] = serde_json::Value::from(b.objects[1].digest());
    assert_eq!(ob.config, expected_config);
    let mut expected_manifest = oa.manifest.clone();
    expected_manifest["layers"][1]["digest"] = serde_json::Value::from(b.objects[1].digest());
    expected_manifest["config"]["digest"] = serde_json::Value::from(sha256(&ob.config_bytes));
    expected_manifest["config"]["size"] = serde_json::Value::from(ob.config_bytes.len());
    assert_eq!(ob.manifest, expected_manifest);
    assert_eq!(
        &reconciled[b.objects[1].offset as usize..][..b.objects[1].size as usize],
        &changed[a.objects[1].offset as usize..][..a.objects[1].size as usize]
    );

    // 19: a second run writes nothing.
    let again = json(&run_ok(sifovl().args(["reconcile", "--json"]).arg(&image)));
    assert_eq!(again["updated"], false);
    assert_eq!(again["in_sync"], true);
    assert_eq!(std::fs::read(&image).unwrap(), reconciled);
}

#[test]
fn add_refuses_what_it_must_and_leaves_the_file_alone() {
    require_tool!("mke2fs");
    let fixtures = require_fixtures!();
    let (dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    assert_refused(&["add"], &image, "writable overlay already exists");
    assert_refused(
        &["add", "--size", "10"],
        &dir.path().join("sample.oci.sif"),
        "writable overlay already exists",
    );

    let (_d2, fresh) = scratch("sample.oci.sif");
    assert_refused(&["add", "--size", "10"], &fresh, "at least 64 MiB");

    // A SIF signed with SIF signatures.
    let signed = dir.path().join("signed.sif");
    std::fs::copy(
        fixtures.join("sylabs-sif/images/one-group-signed-pgp.sif"),
        &signed,
    )
    .unwrap();
    assert_refused(&["add", "--sparse"], &signed, "--force");
    let out = run(&["add", "--sparse", "--force"], &signed);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no longer verifies"));

    // A read-only file.
    let (_d3, ro) = scratch("sample.oci.sif");
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&ro, perms).unwrap();
    if rustix::process::geteuid().is_root() {
        // Root ignores permission bits: run sifovl as an unprivileged user instead.
        crate::require_tool!("setpriv");
        let parent = ro.parent().unwrap();
        std::fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let before = std::fs::read(&ro).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_sifovl"))
            .args(["add", "--sparse"])
            .arg(&ro)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
        assert_eq!(std::fs::read(&ro).unwrap(), before);
    } else {
        assert_refused(&["add", "--sparse"], &ro, "read-only");
    }
}

#[test]
fn an_image_with_two_images_or_broken_json_is_refused_cleanly() {
    require_tool!("mke2fs");
    let (_dir, image) = scratch("sample.oci.sif");
    let bytes = std::fs::read(&image).unwrap();
    let sif = sifcheck::parse(&bytes);
    let root = sif
        .objects
        .iter()
        .find(|d| d.dtype == sifcheck::ROOT_INDEX)
        .unwrap()
        .clone();
    // Break the RootIndex JSON in place (same length): invalid JSON.
    let mut broken = bytes.clone();
    broken[root.offset as usize] = b'[';
    broken[root.offset as usize + 1] = b'[';
    std::fs::write(&image, &broken).unwrap();
    // verify reports what it could check and fails the check that could not be made.
    for json in [false, true] {
        let args: &[&str] = if json {
            &["verify", "--json"]
        } else {
            &["verify"]
        };
        let out = run(args, &image);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if json {
            let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(report["ok"], false);
            let last = report["checks"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(last["ok"], false, "{report}");
            assert!(
                last["detail"].as_str().unwrap().contains("RootIndex"),
                "{report}"
            );
        } else {
            assert!(
                stdout.contains("ok    SIF header and descriptor table are readable")
                    && stdout
                        .contains("FAIL  OCI image (RootIndex, manifest, config) is readable: ")
                    && stdout.contains("RootIndex"),
                "{stdout}"
            );
        }
        assert_eq!(std::fs::read(&image).unwrap(), broken);
    }
    for args in [&["add", "--sparse"][..], &["reconcile"], &["inspect"]] {
        let out = run(args, &image);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("RootIndex") && err.contains(image.to_str().unwrap()),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1);
        assert_eq!(std::fs::read(&image).unwrap(), broken);
    }
    // A missing blob: point the manifest entry at a digest no object holds.
    let index = String::from_utf8(root.data(&bytes).to_vec()).unwrap();
    let o = sifcheck::oci(&sif, &bytes);
    let mdigest = o.index["manifests"][0]["digest"].as_str().unwrap();
    let bogus = format!("sha256:{}", "0".repeat(64));
    let patched = index.replace(mdigest, &bogus);
    let mut missing = bytes.clone();
    missing[root.offset as usize..][..patched.len()].copy_from_slice(patched.as_bytes());
    std::fs::write(&image, &missing).unwrap();
    assert_refused(&["add", "--sparse"], &image, "no OCI.Blob object holds it");
}

#[test]
fn native_sif_gets_an_overlay_partition_in_the_primary_group() {
    require_tool!("mke2fs");
    require_tool!("e2fsck");
    let fixtures = require_fixtures!();
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in [
        (
            "busybox.sif",
            fixtures.join("singularity/busybox_amd64.sif"),
        ),
        ("sample.sif", sample("sample.sif")),
    ] {
        let image = dir.path().join(name);
        std::fs::copy(&source, &image).unwrap();
        let before = std::fs::read(&image).unwrap();
        let old = sifcheck::parse(&before);
        let args: &[&str] = if name == "busybox.sif" {
            &["add", "--sparse", "--force"]
        } else {
            &["add", "--sparse"]
        };
        run_ok(sifovl().args(args).arg(&image));
        let after = std::fs::read(&image).unwrap();
        let sif = sifcheck::parse(&after);
        assert_eq!(sif.objects.len(), old.objects.len() + 1);
        assert_eq!(
            &sif.objects[..old.objects.len()],
            &old.objects[..],
            "existing descriptors unchanged"
        );
        let overlay = sif.objects.last().unwrap();
        assert_eq!(overlay.dtype, sifcheck::PARTITION);
        assert_eq!(
            &overlay.extra[..8],
            &[2, 0, 0, 0, 4, 0, 0, 0],
            "Ext3 / Overlay"
        );
        let primary = old
            .objects
            .iter()
            .find(|d| d.dtype == sifcheck::PARTITION && d.extra[4] == 2)
            .unwrap();
        assert_eq!(
            &overlay.extra[8..11],
            &primary.extra[8..11],
            "arch of the primary partition"
        );
        assert_eq!(overlay.group, primary.group);
        assert_eq!(overlay.offset % 4096, 0);
        assert_eq!(overlay.size, 64 << 20);
        assert_eq!(after.len() as u64, overlay.offset + overlay.size);
        assert_eq!(
            (sif.data_offset + sif.data_size) as u64,
            overlay.offset + overlay.size
        );
        assert_eq!(sif.free, old.free - 1);
        // The data before the overlay is byte-identical apart from the descriptor table and header.
        let table_end = (sif.desc_offset + sif.desc_size) as usize;
        assert_eq!(&after[table_end..before.len()], &before[table_end..]);
        let ext3 = dir.path().join("overlay.img");
        std::fs::write(&ext3, overlay.data(&after)).unwrap();
        run_ok(Command::new("e2fsck").arg("-fn").arg(&ext3));
        let listing = String::from_utf8(run_ok(sifovl().arg("list").arg(&image))).unwrap();
        assert!(listing.contains("|FS (Ext3/Overlay/amd64)"), "{listing}");
        assert_refused(
            &["add", "--sparse", "--force"],
            &image,
            "writable overlay already exists",
        );
        let inspect = json(&run_ok(sifovl().args(["inspect", "--json"]).arg(&image)));
        assert_eq!(inspect["overlay"]["offset"], overlay.offset);
    }
}

/// Build a deterministic OCI-SIF the way oci-tools lays it out: per image, layers, config,
/// manifest; then the RootIndex. `images` are (manifest JSON, config bytes, layers, ref name).
type ImageParts = (serde_json::Value, Vec<u8>, Vec<Vec<u8>>, Option<String>);

fn build_oci_sif(images: &[ImageParts]) -> Vec<u8> {
    use sifovl::oci::Digest;
    use sifovl::sif::{CreateOptions, DataType, MemoryImage, ObjectSpec};
    let blobs: usize = images.iter().map(|i| i.2.len() + 2).sum();
    let mut image = MemoryImage::create(&CreateOptions {
        capacity: blobs as u32 + 1 + 8,
        ..CreateOptions::default()
    })
    .unwrap();
    let time = sifovl::sif::GO_ZERO_TIME;
    let mut entries = Vec::new();
    for (manifest, config, layers, ref_name) in images {
        for layer in layers {
            image
                .add(
                    ObjectSpec::oci_blob(DataType::OciBlob, &Digest::of(layer), 0),
                    layer,
                    time,
                )
                .unwrap();
        }
        image
            .add(
                ObjectSpec::oci_blob(DataType::OciBlob, &Digest::of(config), 0),
                config,
                time,
            )
            .unwrap();
        let bytes = serde_json::to_vec(manifest).unwrap();
        image
            .add(
                ObjectSpec::oci_blob(DataType::OciBlob, &Digest::of(&bytes), 0),
                &bytes,
                time,
            )
            .unwrap();
        let mut entry = serde_json::json!({"mediaType": manifest["mediaType"], "size": bytes.len(), "digest": Digest::of(&bytes).to_string()});
        if let Some(name) = ref_name {
            entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
        }
        entries.push(entry);
    }
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})).unwrap();
    image
        .add(
            ObjectSpec::oci_blob(DataType::OciRootIndex, &Digest::of(&index), 0),
            &index,
            time,
        )
        .unwrap();
    image.into_bytes()
}

fn manifest_for(
    media_type: &str,
    config_type: &str,
    config: &[u8],
    layers: &[(&str, &[u8])],
) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": sha256(config)},
        "layers": layers.iter().map(|(t, l)| serde_json::json!({"mediaType": t, "size": l.len(), "digest": sha256(l)})).collect::<Vec<_>>(),
    })
}

/// The squashfs layer of the sample image.
fn sample_layer() -> Vec<u8> {
    let bytes = std::fs::read(sample("sample.oci.sif")).unwrap();
    let sif = sifcheck::parse(&bytes);
    sif.objects[0].data(&bytes).to_vec()
}

/// An OCI-SIF of the sample's layer with a cosign signature entry `_cosign:sha256-X.sig`
/// (no fixture holds one), written to `path`; returns the entry's name.
pub(crate) fn cosign_signed_image(path: &Path) -> String {
    let layer = sample_layer();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["DIFF"]},"config":{}}"#
        .to_vec();
    let config = String::from_utf8(config)
        .unwrap()
        .replace("DIFF", &sha256(&layer))
        .into_bytes();
    let main = manifest_for(
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        &config,
        &[("application/vnd.sylabs.image.layer.v1.squashfs", &layer)],
    );
    let main_digest = sha256(&serde_json::to_vec(&main).unwrap());
    let payload =
        format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{main_digest}"}}}}}}"#)
            .into_bytes();
    let sig_config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let sig = manifest_for(
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        &sig_config,
        &[("application/vnd.dev.cosign.simplesigning.v1+json", &payload)],
    );
    let name = format!(
        "_cosign:sha256-{}.sig",
        main_digest.trim_start_matches("sha256:")
    );
    let bytes = build_oci_sif(&[
        (main, config, vec![layer], None),
        (sig, sig_config, vec![payload], Some(name.clone())),
    ]);
    std::fs::write(path, &bytes).unwrap();
    name
}

#[test]
fn cosign_entries_are_reported_then_dropped_with_their_blobs() {
    require_tool!("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("signed.oci.sif");
    let name = cosign_signed_image(&image);

    let inspect = json(&run_ok(sifovl().args(["inspect", "--json"]).arg(&image)));
    assert_eq!(inspect["cosign"][0]["ref_name"], name.as_str());
    assert!(
        run(&["verify"], &image).status.success(),
        "a consistent signed image verifies"
    );

    let out = run(&["add", "--sparse"], &image);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed 1 cosign"),
        "{}",
        stderr(&out)
    );
    let after = std::fs::read(&image).unwrap();
    // The signature's three blobs are gone with its entry: nothing orphaned (invariant 21, 7).
    assert_oci_sif_invariants(&after, true);
    assert_eq!(sifcheck::parse(&after).objects.len(), 5);
}

#[test]
fn docker_v2_media_types_are_kept_and_unknown_config_fields_survive() {
    require_tool!("mke2fs");
    let layer = sample_layer();
    let config = format!(
        r#"{{"architecture":"amd64","container_config":{{"Hostname":"abc","Cmd":["/bin/sh"]}},"created":"2024-02-03T04:05:06.123456789Z","docker_version":"24.0.7","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{"Env":["A=<&>"]}},"x-vendor":{{"keep":true}}}}"#,
        sha256(&layer)
    )
    .into_bytes();
    let manifest = manifest_for(
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        &config,
        &[("application/vnd.sylabs.image.layer.v1.squashfs", &layer)],
    );
    let bytes = build_oci_sif(&[(manifest, config.clone(), vec![layer], None)]);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("docker.oci.sif");
    std::fs::write(&image, &bytes).unwrap();
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let after = std::fs::read(&image).unwrap();
    assert_oci_sif_invariants(&after, true);
    let o = sifcheck::oci(&sifcheck::parse(&after), &after);
    assert_eq!(
        o.manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        o.index["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        o.index["manifests"][0]["artifactType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let text = String::from_utf8(o.config_bytes.clone()).unwrap();
    // Unknown fields and their order are kept; Go's HTML escaping is applied.
    assert!(text.starts_with(r#"{"architecture":"amd64","container_config":{"Hostname":"abc","Cmd":["/bin/sh"]},"created":"2024-02-03T04:05:06.123456789Z","docker_version":"24.0.7","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"linux","rootfs":"#), "{text}");
    assert!(text.contains(r#""Env":["A=\u003c\u0026\u003e"]"#), "{text}");
    assert!(text.ends_with(r#","x-vendor":{"keep":true}}"#), "{text}");
}

#[test]
fn a_second_writer_is_told_the_file_is_in_use() {
    let (_dir, image) = scratch("sample.oci.sif");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
    assert_refused(&["add", "--sparse"], &image, "in use");
    assert_refused(&["reconcile"], &image, "in use");
}

#[test]
fn an_image_left_half_synced_by_the_reference_is_repaired_by_reconcile() {
    require_tool!("mke2fs");
    require_tool!("debugfs");
    let (_dir, image) = scratch("sample.oci.sif");
    run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    simulate_writable_run(&image, &["mkdir /upper/after-crash"]);
    // SingularityCE's `overlay sync` patches the overlay's SIF digest first, then rewrites
    // config, manifest and index; killed in between, it leaves this:
    let bytes = std::fs::read(&image).unwrap();
    let (offset, size) = overlay_range(&image);
    let actual = sha256(&bytes[offset as usize..(offset + size) as usize]);
    let mut sif = sifovl::sif::MemoryImage::load(bytes).unwrap();
    let overlay_id = sif
        .container
        .objects()
        .find(|d| d.offset == offset)
        .unwrap()
        .id;
    sif.set_oci_digest(
        overlay_id,
        &actual.parse().unwrap(),
        sifovl::sif::GO_ZERO_TIME,
    )
    .unwrap();
    std::fs::write(&image, sif.into_bytes()).unwrap();

    let out = run(&["verify"], &image);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("interrupted sync"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        run(&["reconcile", "--check"], &image).status.code(),
        Some(1)
    );
    run_ok(sifovl().arg("reconcile").arg(&image));
    assert!(run(&["verify"], &image).status.success());
    assert_oci_sif_invariants(&std::fs::read(&image).unwrap(), true);
}
