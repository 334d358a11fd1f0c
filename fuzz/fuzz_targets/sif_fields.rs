#![no_main]
//! Structure-aware: a valid image (testdata/sample.oci.sif or sample.sif) with header and
//! descriptor fields (offsets, sizes, counts, ids, links, types, extra bytes) and the file
//! length set by the input, where random bytes rarely get past the magic and the table.
//! Loading, formatting, `verify`, `inspect --hash`, `reconcile --check`, `ls` and `diff` must
//! not panic, must fail in one line, and must leave the file as it was.
//!
//! Encoding: byte 0 picks the image; then 10-byte records `[field, slot, value: i64 LE]`.
//! `field` < 0x80 sets the field to `value`; >= 0x80 adds `value % 2^16` minus 2^15 to it,
//! so offsets and sizes move a little around their valid values.
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sifovl::ops::{browse, inspect, reconcile, verify, view};
use sifovl::sif::{Container, siftool};

const OCI_SIF: &[u8] = include_bytes!("../../testdata/sample.oci.sif");
const NATIVE_SIF: &[u8] = include_bytes!("../../testdata/sample.sif");
const SLOT: usize = 585;

/// (offset in the header or slot, width in bytes); the header's are first.
const HEADER_FIELDS: &[(usize, usize)] =
    &[(64, 8), (72, 8), (80, 8), (88, 8), (96, 8), (104, 8), (112, 8), (120, 8), (45, 3)];
const SLOT_FIELDS: &[(usize, usize)] = &[
    (0, 4),   // data type
    (4, 1),   // used
    (5, 4),   // id
    (9, 4),   // group
    (13, 4),  // link
    (17, 8),  // offset
    (25, 8),  // size
    (33, 8),  // size with padding
    (57, 8),  // uid
    (201, 4), // extra: fs type / hash type / ...
    (205, 4), // extra: partition type / format / ...
    (209, 3), // extra: arch
    (73, 1),  // name's first byte
];

fn image_path() -> &'static PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().join("image.sif"))
}

fn one_line<T>(what: &str, r: sifovl::error::Result<T>) {
    if let Err(e) = r {
        let text = e.to_string();
        assert!(!text.contains('\n'), "{what}: error of more than one line: {text:?}");
    }
}

fn set(image: &mut [u8], at: usize, width: usize, op: u8, value: i64) {
    let Some(field) = image.get_mut(at..at + width) else { return };
    let mut current = [0u8; 8];
    current[..width].copy_from_slice(field);
    let new = if op < 0x80 {
        value
    } else {
        i64::from_le_bytes(current).wrapping_add((value & 0xffff) - 0x8000)
    };
    field.copy_from_slice(&new.to_le_bytes()[..width]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, records)) = data.split_first() else { return };
    let mut image = if pick & 1 == 0 { OCI_SIF.to_vec() } else { NATIVE_SIF.to_vec() };
    let table = i64::from_le_bytes(image[96..104].try_into().unwrap()) as usize;
    let slots = i64::from_le_bytes(image[88..96].try_into().unwrap()) as usize;
    for r in records.chunks_exact(10) {
        let (op, slot) = (r[0], r[1] as usize);
        let value = i64::from_le_bytes(r[2..10].try_into().unwrap());
        let field = (op & 0x7f) as usize % (HEADER_FIELDS.len() + SLOT_FIELDS.len() + 1);
        if field < HEADER_FIELDS.len() {
            let (at, width) = HEADER_FIELDS[field];
            set(&mut image, at, width, op, value);
        } else if field < HEADER_FIELDS.len() + SLOT_FIELDS.len() {
            let (at, width) = SLOT_FIELDS[field - HEADER_FIELDS.len()];
            set(&mut image, table + slot % slots.max(1) * SLOT + at, width, op, value);
        } else {
            // The file's length: cut or zero-extended, up to twice the image.
            // `max(1)`: an earlier record may have cut the file to nothing (a harness bug the
            // first campaign found).
            let len = (value as u64 % (2 * image.len() as u64).max(1)) as usize;
            image.resize(len, 0);
        }
    }
    if let Ok(c) = Container::from_bytes(&image) {
        let _ = siftool::header(&c);
        let _ = siftool::list(&c);
        let ids: Vec<u32> = c.objects().map(|d| d.id).collect();
        for id in ids {
            let _ = siftool::info(&c, id);
        }
    }
    let path = image_path();
    std::fs::write(path, &image).expect("write the image");
    one_line("inspect", inspect::inspect(path, true));
    one_line("verify", verify::verify(path));
    one_line("reconcile --check", reconcile::reconcile(path, true));
    one_line("ls", browse::list(path, browse::Target::Overlay, true));
    one_line("diff", view::diff(path, None));
    assert!(std::fs::read(path).expect("read the image") == image, "a read-only command changed the file");
});
