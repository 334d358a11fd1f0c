//! The field-level mutation engine shared by `ext_fields` and `squashfs_fields` (not a fuzz
//! target itself: each includes it with `#[path]`).
//!
//! A base image is described once, at start-up, as classes of objects (the superblock, each
//! inode, each directory entry, ...), each object a list of fields, each field the image
//! positions of its bytes (not always contiguous: a squashfs inode may straddle two metadata
//! blocks, whose 2-byte headers lie between). The fuzzer's input is byte 0 picking the base,
//! then 12-byte records `[class, field, selector: u16 LE, value: i64 LE]`: object `selector`
//! of class `class`, its field `field & 0x7f`; `field` < 0x80 sets the field to `value`,
//! >= 0x80 adds `value % 2^16` minus 2^15 to it, so offsets, sizes and counts move a little
//! around their valid values. Moduli keep every record meaningful.
//!
//! The base image lives in a file that is patched in place and put back after each run
//! (copying a 6 MiB image per run would dominate the time).
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;

/// One field: where its bytes are, least significant first unless `big_endian`.
#[derive(Debug, Clone)]
pub struct Field {
    pub bytes: Vec<u64>,
    pub big_endian: bool,
}

impl Field {
    /// `width` contiguous little-endian bytes at `at`.
    pub fn le(at: u64, width: usize) -> Field {
        Field {
            bytes: (at..at + width as u64).collect(),
            big_endian: false,
        }
    }

    /// `width` contiguous big-endian bytes at `at` (the jbd2 journal's numbers).
    pub fn be(at: u64, width: usize) -> Field {
        Field {
            bytes: (at..at + width as u64).collect(),
            big_endian: true,
        }
    }
}

/// A class of objects, e.g. "inode": each object is a list of fields.
#[derive(Debug, Default, Clone)]
pub struct Class {
    pub name: &'static str,
    pub objects: Vec<Vec<Field>>,
}

/// A base image in its file, and what can be changed in it.
pub struct Base {
    pub name: &'static str,
    pub image: Vec<u8>,
    pub file: File,
    /// Where the image starts in `file`.
    pub offset: u64,
    /// The file as a path, when it is a SIF the commands can open.
    pub sif: Option<std::path::PathBuf>,
    pub classes: Vec<Class>,
}

/// What the records changed, to put back.
pub struct Patched<'b> {
    base: &'b Base,
    touched: Vec<u64>,
    /// The length the reader is told the image has (a record may cut it).
    pub len: u64,
}

impl Drop for Patched<'_> {
    fn drop(&mut self) {
        for &at in &self.touched {
            let byte = self.base.image[at as usize];
            self.base
                .file
                .write_all_at(&[byte], self.base.offset + at)
                .expect("restore the base image");
        }
    }
}

/// Count the objects, for the start-up report.
pub fn describe(base: &Base) -> String {
    let parts: Vec<String> = base
        .classes
        .iter()
        .map(|c| format!("{} {}", c.objects.len(), c.name))
        .collect();
    format!(
        "{} ({} bytes): {}",
        base.name,
        base.image.len(),
        parts.join(", ")
    )
}

/// Apply the records of `data` to `base`'s file; the returned guard puts the bytes back.
/// Class number `classes.len()` is the length the reader is given (`value` modulo the
/// image's length plus one).
pub fn apply<'b>(base: &'b Base, records: &[u8]) -> Patched<'b> {
    let len = base.image.len() as u64;
    let mut patched = Patched {
        base,
        touched: Vec::new(),
        len,
    };
    for r in records.chunks_exact(12) {
        let class = r[0] as usize % (base.classes.len() + 1);
        let value = i64::from_le_bytes(r[4..12].try_into().unwrap());
        if class == base.classes.len() {
            patched.len = (value as u64) % (len + 1);
            continue;
        }
        let objects = &base.classes[class].objects;
        if objects.is_empty() {
            continue;
        }
        let object = &objects[u16::from_le_bytes([r[2], r[3]]) as usize % objects.len()];
        if object.is_empty() {
            continue;
        }
        let field = &object[(r[1] & 0x7f) as usize % object.len()];
        set(&mut patched, field, r[1] >= 0x80, value);
    }
    patched
}

fn set(patched: &mut Patched<'_>, field: &Field, nudge: bool, value: i64) {
    let base = patched.base;
    let width = field.bytes.len();
    let mut current = [0u8; 8];
    for (i, &at) in field.bytes.iter().enumerate() {
        let mut b = [0u8];
        base.file
            .read_exact_at(&mut b, base.offset + at)
            .expect("read the image");
        current[i] = b[0];
    }
    if field.big_endian {
        current[..width].reverse();
    }
    let new = if nudge {
        i64::from_le_bytes(current).wrapping_add((value & 0xffff) - 0x8000)
    } else {
        value
    };
    let mut bytes = new.to_le_bytes();
    if field.big_endian {
        bytes[..width].reverse();
    }
    for (i, &at) in field.bytes.iter().enumerate() {
        base.file
            .write_all_at(&bytes[i..i + 1], base.offset + at)
            .expect("patch the image");
        patched.touched.push(at);
    }
}

/// An error must be one line.
pub fn one_line<T>(what: &str, r: sifovl::error::Result<T>) {
    if let Err(e) = r {
        let text = e.to_string();
        assert!(
            !text.contains('\n'),
            "{what}: error of more than one line: {text:?}"
        );
    }
}

/// A sink that takes at most `left` bytes, then fails (a crafted size must not make a
/// command write without bound, and the harness must not hold it all).
pub struct Capped {
    pub left: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("the fuzz harness's output cap"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Walk every entry of `source` (at most 10,000), reading at most `budget` bytes of content
/// in all, each file's through `read_content`.
pub fn walk_all(source: &mut dyn sifovl::fs::entry::EntrySource, mut budget: u64) {
    use sifovl::fs::entry::EntryKind;
    use std::io::Read;
    for _ in 0..10_000 {
        match source.next_entry() {
            Ok(Some(entry)) => {
                if let EntryKind::File { size } = entry.kind {
                    match source.read_content() {
                        Ok(mut content) => {
                            let want = size.min(budget);
                            let mut sink = std::io::sink();
                            if let Ok(n) =
                                std::io::copy(&mut content.by_ref().take(want), &mut sink)
                            {
                                budget -= n.min(budget);
                            }
                        }
                        Err(e) => one_line("read_content", Err::<(), _>(e)),
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                one_line("next_entry", Err::<(), _>(e));
                break;
            }
        }
    }
}

/// Decode the `u32 KiB length, then (u32 KiB offset, 1 KiB)` chunk encoding of the
/// committed seed images (zeros are most of an ext image).
pub fn unchunk(data: &[u8]) -> Vec<u8> {
    let kib = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let mut image = vec![0u8; kib * 1024];
    for chunk in data[4..].chunks_exact(4 + 1024) {
        let at = u32::from_le_bytes(chunk[..4].try_into().unwrap()) as usize * 1024;
        image[at..at + 1024].copy_from_slice(&chunk[4..]);
    }
    image
}
