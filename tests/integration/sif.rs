//! Integration tests: the SIF codec against the reference `siftool` goldens, byte-exact
//! rebuilds of the reference images, a property test of edits, and a malformed corpus.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sifovl::sif::{Container, CreateOptions, DataType, MemoryImage, ObjectSpec};

use crate::require_fixtures;
use crate::sifcheck;
use crate::util::{run_ok, sifovl};

/// `OneObjectOCIBlob` -> `one-object-oci-blob`.
pub fn kebab(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || chars[i - 1].is_ascii_digit()
                || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
        if boundary {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

pub fn goldens(fixtures: &Path, command: &str) -> Vec<(String, PathBuf)> {
    let dir = fixtures.join("sylabs-sif/goldens").join(command);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "golden"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

#[test]
fn list_and_header_equal_the_siftool_goldens() {
    let fixtures = require_fixtures!();
    let images = fixtures.join("sylabs-sif/images");
    let mut compared = 0;
    for command in ["list", "header"] {
        let dir = if command == "list" {
            "TestApp_List"
        } else {
            "TestApp_Header"
        };
        for (name, golden) in goldens(&fixtures, dir) {
            let image = images.join(format!("{}.sif", kebab(&name)));
            assert!(
                image.exists(),
                "{} has no image {}",
                golden.display(),
                image.display()
            );
            let ours = run_ok(sifovl().arg(command).arg(&image));
            assert_eq!(
                String::from_utf8_lossy(&ours),
                std::fs::read_to_string(&golden).unwrap(),
                "{command} {}",
                image.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 38, "only {compared} goldens compared");
}

/// The siftool `info` goldens of the fixtures: (golden, image, object id), from the
/// fixtures' README.
pub(crate) const INFO_GOLDENS: [(&str, &str, u32); 10] = [
    ("Time", "one-object-time", 1),
    ("GenericJSON", "one-object-generic-json", 1),
    ("CryptMessage", "one-object-crypt-message", 1),
    ("SBOM", "one-object-sbom", 1),
    ("OCIRootIndex", "one-object-oci-root-index", 1),
    ("OCIBlob", "one-object-oci-blob", 1),
    ("DataPartitionRaw", "two-groups-signed-pgp", 1),
    ("DataPartitionSquashFS", "two-groups-signed-pgp", 2),
    ("DataPartitionEXT3", "two-groups-signed-pgp", 3),
    ("DataSignature", "two-groups-signed-pgp", 4),
];

#[test]
fn info_and_dump_equal_the_siftool_goldens() {
    let fixtures = require_fixtures!();
    let images = fixtures.join("sylabs-sif/images");
    for (golden, image, id) in INFO_GOLDENS {
        let ours = run_ok(
            sifovl()
                .args(["info", &id.to_string()])
                .arg(images.join(format!("{image}.sif"))),
        );
        let expected = std::fs::read(
            fixtures.join(format!("sylabs-sif/goldens/TestApp_Info/{golden}.golden")),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected),
            "info {golden}"
        );
    }
    for (golden, id) in [("One", 1), ("Two", 2)] {
        let ours = run_ok(
            sifovl()
                .args(["dump", &id.to_string()])
                .arg(images.join("one-group.sif")),
        );
        let expected = std::fs::read(
            fixtures.join(format!("sylabs-sif/goldens/TestApp_Dump/{golden}.golden")),
        )
        .unwrap();
        assert_eq!(ours, expected, "dump {golden}");
    }
}

#[test]
fn every_fixture_loads_and_the_singularity_images_list() {
    let fixtures = require_fixtures!();
    let mut loaded = 0;
    for dir in ["sylabs-sif/images", "singularity"] {
        for entry in std::fs::read_dir(fixtures.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "sif") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let c =
                Container::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Our reading agrees with the independent decoder.
            let independent = sifcheck::parse(&bytes);
            let ours: Vec<(u32, u64, u64)> =
                c.objects().map(|d| (d.id, d.offset, d.size)).collect();
            let theirs: Vec<(u32, u64, u64)> = independent
                .objects
                .iter()
                .map(|d| (d.id, d.offset, d.size))
                .collect();
            assert_eq!(ours, theirs, "{}", path.display());
            loaded += 1;
        }
    }
    assert_eq!(loaded, 23);
    let busybox = String::from_utf8(run_ok(
        sifovl()
            .arg("list")
            .arg(fixtures.join("singularity/busybox_amd64.sif")),
    ))
    .unwrap();
    assert!(
        busybox.contains(
            "4    |1       |NONE    |45056-790528              |FS (Squashfs/*System/amd64)"
        ),
        "{busybox}"
    );
    assert!(
        busybox.contains("5    |NONE    |1   (G) |790528-792293             |Signature (SHA-256)")
    );
    let oci = String::from_utf8(run_ok(
        sifovl()
            .arg("list")
            .arg(fixtures.join("singularity/empty.oci.sif")),
    ))
    .unwrap();
    assert!(
        oci.contains("1    |1       |NONE    |32176-32179               |OCI.RootIndex"),
        "{oci}"
    );
}

/// Rebuild `bytes` from its parsed objects with our writer.
fn rebuild(bytes: &[u8]) -> Vec<u8> {
    let c = Container::from_bytes(bytes).unwrap();
    let h = c.header();
    let end = h
        .launch_script
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    let options = CreateOptions {
        capacity: h.descriptors_total as u32,
        deterministic: h.is_deterministic(),
        id: h.id,
        time: h.created_at,
        launch_script: h.launch_script[..end].to_vec(),
    };
    let mut image = MemoryImage::create(&options).unwrap();
    let mut previous_end = c.data_offset();
    let mut slots: Vec<_> = c.objects().cloned().collect();
    slots.sort_by_key(|d| d.offset);
    for d in &slots {
        // The reference aligns partitions to 4096 and nothing else (sylabs/sif >= 2.8).
        let alignment = if d.offset != previous_end { 4096 } else { 0 };
        let spec = ObjectSpec {
            data_type: d.data_type,
            group: d.group(),
            linked_id: d.linked_id,
            name: d.name.clone(),
            extra: d.extra.clone(),
            alignment,
            size: d.size,
        };
        let id = image
            .add(
                spec,
                &bytes[d.offset as usize..d.end() as usize],
                d.created_at,
            )
            .unwrap();
        assert_eq!(id, d.id);
        previous_end = d.end();
    }
    image.into_bytes()
}

#[test]
fn unsigned_fixture_images_rebuild_byte_for_byte() {
    let fixtures = require_fixtures!();
    let mut rebuilt = 0;
    for entry in std::fs::read_dir(fixtures.join("sylabs-sif/images")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains("signed") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let ours = rebuild(&bytes);
        assert!(ours == bytes, "{name}: rebuilt bytes differ");
        rebuilt += 1;
    }
    assert_eq!(rebuilt, 11);
    // Our own samples too.
    for name in ["sample.sif", "sample.oci.sif"] {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata")
                .join(name),
        )
        .unwrap();
        assert!(rebuild(&bytes) == bytes, "{name}");
    }
}

#[test]
fn malformed_corpus_gives_one_line_errors_and_exit_2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/malformed");
    let cases = std::fs::read_to_string(dir.join("cases.tsv")).unwrap();
    let mut count = 0;
    for line in cases
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let (file, args, expected) = (fields[0], fields[1], fields[2]);
        let path = dir.join(file);
        let before = std::fs::read(&path).unwrap();
        // The command the case names, and the siftool commands, must all refuse it cleanly
        // (list/header may succeed on a file whose damage is inside an OCI blob).
        let out = sifovl().args(args.split(' ')).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file} [{args}]: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{file}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{file} [{args}]: {stderr:?} lacks {expected:?}"
        );
        assert!(
            stderr.contains(file),
            "{file}: the error names the file: {stderr}"
        );
        for command in [
            &["list"][..],
            &["header"],
            &["info", "1"],
            &["inspect"],
            &["verify"],
        ] {
            let out = sifovl().args(command).arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{file} {command:?} panicked");
            assert!(
                matches!(out.status.code(), Some(0..=2)),
                "{file} {command:?}: {:?}",
                out.status
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "{file} changed");
        count += 1;
    }
    assert!(count >= 20, "only {count} malformed cases");
}

#[derive(Debug, Clone)]
enum EditOp {
    AddBlob(Vec<u8>),
    AddPartition {
        size: usize,
        primary: bool,
    },
    Delete {
        pick: usize,
        zero: bool,
        compact: bool,
    },
    SetDigest {
        pick: usize,
    },
    SetPrimary {
        pick: usize,
    },
}

fn edit_op() -> impl Strategy<Value = EditOp> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(EditOp::AddBlob),
        (0usize..5000, any::<bool>())
            .prop_map(|(size, primary)| EditOp::AddPartition { size, primary }),
        (any::<usize>(), any::<bool>(), any::<bool>()).prop_map(|(pick, zero, compact)| {
            EditOp::Delete {
                pick,
                zero,
                compact,
            }
        }),
        any::<usize>().prop_map(|pick| EditOp::SetDigest { pick }),
        any::<usize>().prop_map(|pick| EditOp::SetPrimary { pick }),
    ]
}

/// Loadable, and consistent by the independent decoder: counters, offsets, no overlaps.
fn assert_consistent(bytes: &[u8]) {
    let c = Container::from_bytes(bytes).expect("loads after every step");
    let sif = sifcheck::parse(bytes);
    assert_eq!(sif.free, sif.total - sif.objects.len() as i64);
    assert!(sif.unused_slots_zero);
    let mut ranges: Vec<(u64, u64)> = sif
        .objects
        .iter()
        .map(|d| (d.offset, d.offset + d.size))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 <= w[1].0 || w[0].0 == w[0].1 || w[1].0 == w[1].1,
            "overlap {w:?}"
        );
    }
    for d in &sif.objects {
        assert!(d.offset >= sif.data_offset as u64 && d.offset + d.size <= bytes.len() as u64);
        assert_eq!(d.id as usize, d.slot + 1);
    }
    assert!((sif.data_offset + sif.data_size) as u64 <= bytes.len() as u64);
    let primaries = c
        .objects()
        .filter(|d| {
            d.partition()
                .is_ok_and(|p| p.part_type == sifovl::sif::PartType::PrimSys)
        })
        .count();
    assert!(primaries <= 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_edits_keep_the_file_loadable_and_consistent(ops in proptest::collection::vec(edit_op(), 1..40)) {
        let time = sifovl::sif::GO_ZERO_TIME;
        let mut image = MemoryImage::create(&CreateOptions { capacity: 12, ..CreateOptions::default() }).unwrap();
        for op in ops {
            let before: Vec<sifovl::sif::Descriptor> = image.container.objects().cloned().collect();
            let ids: Vec<u32> = before.iter().map(|d| d.id).collect();
            let pick = |p: usize| ids.get(p % ids.len().max(1)).copied();
            let full = before.len() == 12;
            let has_primary = image.container.primary_partition().is_some();
            match op {
                EditOp::AddBlob(data) => {
                    let d = sifovl::oci::Digest::of(&data);
                    let result = image.add(ObjectSpec::oci_blob(DataType::OciBlob, &d, 0), &data, time);
                    // Refused exactly when the descriptor table is full.
                    prop_assert_eq!(result.is_err(), full, "{:?}", result);
                    if let Ok(id) = result {
                        let o = image.container.object(id).unwrap().clone();
                        prop_assert_eq!(&image.bytes()[o.offset as usize..(o.offset + o.size) as usize], &data[..]);
                        prop_assert_eq!(o.oci_digest().unwrap(), d);
                        prop_assert_eq!(image.container.objects().count(), before.len() + 1);
                    }
                }
                EditOp::AddPartition { size, primary } => {
                    let part = if primary { sifovl::sif::PartType::PrimSys } else { sifovl::sif::PartType::System };
                    let spec = ObjectSpec::partition(sifovl::sif::FsType::Raw, part, sifovl::sif::Arch::Amd64, 1, 0);
                    let result = image.add(spec, &vec![0xAB; size], time);
                    // Refused when full, or when a second primary partition is asked for.
                    prop_assert_eq!(result.is_err(), full || (primary && has_primary), "{:?}", result);
                    if let Ok(id) = result {
                        let o = image.container.object(id).unwrap().clone();
                        prop_assert!(image.bytes()[o.offset as usize..(o.offset + o.size) as usize].iter().all(|&b| b == 0xAB));
                    }
                }
                EditOp::Delete { pick: p, zero, compact } => {
                    if let Some(id) = pick(p) {
                        let gone = image.container.object(id).unwrap().clone();
                        image.delete(id, zero, compact, time).unwrap();
                        prop_assert!(image.container.object(id).is_err());
                        prop_assert_eq!(image.container.objects().count(), before.len() - 1);
                        if zero && !compact {
                            let end = (gone.offset + gone.size).min(image.bytes().len() as u64);
                            prop_assert!(image.bytes()[gone.offset as usize..end as usize].iter().all(|&b| b == 0));
                        }
                    }
                }
                EditOp::SetDigest { pick: p } => {
                    if let Some(id) = pick(p) {
                        let oci = matches!(image.container.object(id).unwrap().data_type, DataType::OciBlob | DataType::OciRootIndex);
                        let x = sifovl::oci::Digest::of(b"x");
                        let result = image.set_oci_digest(id, &x, time);
                        // Allowed exactly on OCI objects, and then the digest reads back.
                        prop_assert_eq!(result.is_ok(), oci, "{:?}", result);
                        if oci {
                            prop_assert_eq!(image.container.object(id).unwrap().oci_digest().unwrap(), x);
                        }
                    }
                }
                EditOp::SetPrimary { pick: p } => {
                    if let Some(id) = pick(p) {
                        let kind = image.container.object(id).unwrap().partition().ok().map(|q| q.part_type);
                        let result = image.set_primary_partition(id, time);
                        // Allowed on system partitions (and a no-op on the primary one).
                        let allowed = matches!(kind, Some(sifovl::sif::PartType::System | sifovl::sif::PartType::PrimSys));
                        prop_assert_eq!(result.is_ok(), allowed, "{:?}", result);
                        if allowed {
                            prop_assert_eq!(image.container.primary_partition().map(|d| d.id), Some(id));
                        }
                    }
                }
            }
            assert_consistent(image.bytes());
            // What is in memory is what loads from the bytes.
            prop_assert_eq!(&sifovl::sif::Container::from_bytes(image.bytes()).unwrap(), &image.container);
        }
    }
}
