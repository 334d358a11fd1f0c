#![no_main]
//! Any bytes as a (possibly compressed) tar layer: reading must never panic or hang, and
//! every path it yields must stay inside the root.
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sifovl::fs::entry::{EntryKind, EntrySource};
use sifovl::fs::tar::TarLayerReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = TarLayerReader::new(std::io::Cursor::new(data.to_vec())) else { return };
    for _ in 0..10_000 {
        match reader.next_entry() {
            Ok(Some(entry)) => {
                assert!(!entry.path.starts_with(b"/"));
                assert!(!entry.path.split(|&b| b == b'/').any(|c| c == b".."));
                if let EntryKind::File { size } = entry.kind {
                    if let Ok(content) = reader.read_content() {
                        let _ = content.take(size.min(1 << 20)).read_to_end(&mut Vec::new());
                    }
                }
            }
            _ => break,
        }
    }
});
