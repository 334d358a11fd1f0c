#![no_main]
//! Any bytes: loading must never panic, and whatever loads must format and re-encode.
use libfuzzer_sys::fuzz_target;
use sifovl::sif::{Container, siftool};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Container::from_bytes(data) {
        let _ = siftool::header(&c);
        let _ = siftool::list(&c);
        let ids: Vec<u32> = c.objects().map(|d| d.id).collect();
        for id in ids {
            let _ = siftool::info(&c, id);
        }
        // What we encode loads back to the same metadata.
        let meta = c.metadata_bytes();
        let mut again = data.to_vec();
        again[..meta.len()].copy_from_slice(&meta);
        assert_eq!(Container::from_bytes(&again).expect("re-encoded metadata loads"), c);
    }
});
