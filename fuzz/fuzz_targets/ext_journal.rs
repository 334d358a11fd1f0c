#![no_main]
//! Any bytes as an ext3 image whose journal needs recovery: opening (which computes the
//! journal replay), walking the replayed tree, reading every file and computing the recovery
//! must never panic, loop forever or allocate without bound; errors are fine. And when the
//! replayed view opens, the image as `recover-overlay` would leave it must open too, without
//! needing recovery.
//!
//! Encoding, so inputs stay small (a dirty ext3 is 2 MiB or more, mostly zeros): a `u32` LE
//! image length in KiB (at most 8 Mi), then records of a `u32` LE KiB offset and 1024 bytes
//! written there into a sparse file. `fuzz/make-ext-journal-seeds.py` turns the dirty
//! images the journal tests build into seeds.
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use sifovl::fs::entry::{EntryKind, EntrySource};
use sifovl::fs::ext::ExtFs;

const KIB: u64 = 1024;

fn image(data: &[u8]) -> Option<(std::fs::File, u64)> {
    let kib = u64::from(u32::from_le_bytes(data.get(..4)?.try_into().ok()?)).clamp(2, 1 << 13);
    let len = kib * KIB;
    let file = tempfile::tempfile().expect("temp file");
    file.set_len(len).expect("set_len");
    for record in data[4..].chunks(4 + KIB as usize) {
        if record.len() <= 4 {
            break;
        }
        let at = u64::from(u32::from_le_bytes(record[..4].try_into().ok()?)) % kib * KIB;
        let body = &record[4..];
        let n = body.len().min((len - at) as usize);
        file.write_all_at(&body[..n], at).expect("write");
    }
    Some((file, len))
}

fn walk(fs: &ExtFs<'_>) {
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
}

fuzz_target!(|data: &[u8]| {
    let Some((file, len)) = image(data) else { return };
    let Ok(fs) = ExtFs::open(&file, 0, len) else { return };
    walk(&fs);
    if fs.replay().is_none() {
        return;
    }
    // What recover-overlay writes, applied to a copy.
    let mut copy = tempfile::tempfile().expect("temp file");
    let mut all = vec![0u8; len as usize];
    file.read_exact_at(&mut all, 0).expect("read");
    copy.write_all(&all).expect("write");
    let bs = fs.block_size() as usize;
    let mut buf = vec![0u8; bs];
    for block in fs.recovery_blocks() {
        if fs.recovered_block(block, &mut buf).is_err() {
            return;
        }
        copy.write_all_at(&buf, block * bs as u64).expect("write");
    }
    let recovered = ExtFs::open(&copy, 0, len).expect("the recovered image opens");
    assert!(!recovered.needs_recovery(), "recovery left needs_recovery set");
    walk(&recovered);
});
