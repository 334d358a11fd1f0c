#![no_main]
//! Any bytes as an ext2/3/4 image: opening, walking and reading every file must never
//! panic, loop forever or allocate without bound; errors are fine.
use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use sifovl::fs::entry::{EntryKind, EntrySource};
use sifovl::fs::ext::ExtFs;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(data).expect("write");
    let Ok(fs) = ExtFs::open(&file, 0, data.len() as u64) else { return };
    let Ok(mut walk) = fs.walk() else { return };
    for _ in 0..10_000 {
        match walk.next_entry() {
            Ok(Some(entry)) => {
                if let EntryKind::File { size } = entry.kind {
                    if let Ok(mut content) = walk.read_content() {
                        let mut sink = Vec::new();
                        let _ = content.by_ref().take(size.min(1 << 20)).read_to_end(&mut sink);
                    }
                }
            }
            _ => break,
        }
    }
});
