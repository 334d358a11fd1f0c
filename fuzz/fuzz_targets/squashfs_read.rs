#![no_main]
//! Any bytes as a squashfs image: reading must never panic, hang or allocate without bound.
use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use sifovl::fs::entry::{EntryKind, EntrySource};
use sifovl::fs::squashfs::SquashfsReader;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(data).expect("write");
    let Ok(reader) = SquashfsReader::open(&file, 0, data.len() as u64) else { return };
    let Ok(mut walk) = reader.walk() else { return };
    for _ in 0..10_000 {
        match walk.next_entry() {
            Ok(Some(entry)) => {
                if let EntryKind::File { size } = entry.kind {
                    if let Ok(content) = walk.read_content() {
                        let _ = content.take(size.min(1 << 20)).read_to_end(&mut Vec::new());
                    }
                }
            }
            _ => break,
        }
    }
});
