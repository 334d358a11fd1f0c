#![no_main]
//! A sifovl edit journal beside an image, with a valid checksum but any numbers: state,
//! lengths and operations (writes, copies, zeroings) chosen by the input. Recovery must
//! never panic, its errors are one line, and a journal it refuses leaves the image as it
//! was. Numbers take any value: a journal sifovl could not have written (a zeroing of a
//! petabyte, a final length far past the file and the bytes the journal carries) must be
//! refused before anything is touched, so a recovery never grows the image by more than
//! the journal's bytes plus 16 MiB of alignment slack.
use std::os::unix::fs::MetadataExt;

use libfuzzer_sys::fuzz_target;
use sifovl::digest::Digest;

const MAGIC: &[u8; 16] = b"SIFOVL-JOURNAL1\n";

/// Reads the input as a stream of choices; zeros once it runs out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }

    /// A number: mostly near the image's size, sometimes up to 16 MiB, sometimes anything.
    fn number(&mut self) -> u64 {
        match self.byte() % 8 {
            0 => u64::from_le_bytes(self.bytes(8).try_into().unwrap_or([0xff; 8])),
            1 | 2 => u64::from_le_bytes(self.bytes(8).try_into().unwrap_or([0xff; 8])) % (16 << 20),
            _ => u64::from(u16::from_le_bytes([self.byte(), self.byte()])),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices(data);
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("image.sif");
    let initial: Vec<u8> = (0..usize::from(u16::from_le_bytes([c.byte(), c.byte()])))
        .map(|i| i as u8)
        .collect();
    std::fs::write(&image, &initial).expect("image");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .expect("open");
    let meta = file.metadata().expect("metadata");

    let mut journal = MAGIC.to_vec();
    journal.push(c.byte() % 3);
    let (old_len, final_len, count) = (c.number(), c.number(), c.byte() % 6);
    for v in [meta.dev(), meta.ino(), old_len, final_len, u64::from(count)] {
        journal.extend_from_slice(&v.to_le_bytes());
    }
    for _ in 0..count {
        match c.byte() % 3 {
            0 => {
                let offset = c.number();
                let n = usize::from(c.byte() % 64);
                let bytes = c.bytes(n);
                journal.push(1);
                journal.extend_from_slice(&offset.to_le_bytes());
                journal.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                journal.extend_from_slice(&bytes);
            }
            1 => {
                journal.push(2);
                for v in [c.number(), c.number(), c.number()] {
                    journal.extend_from_slice(&v.to_le_bytes());
                }
                journal.push(c.byte() % 2);
            }
            _ => {
                journal.push(3);
                for v in [c.number(), c.number()] {
                    journal.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    let sum = Digest::of(&journal);
    journal.extend_from_slice(sum.as_bytes());
    std::fs::write(sifovl::journal::journal_path(&image), &journal).expect("journal");

    match sifovl::journal::recover(&image, &file) {
        Ok(_) => {
            assert!(!sifovl::journal::pending(&image), "journal left after recovery");
            let len = std::fs::metadata(&image).expect("metadata").len();
            let bound = initial.len() as u64 + journal.len() as u64 + (16 << 20);
            assert!(len <= bound, "recovery grew the image to {len} bytes (bound {bound})");
        }
        Err(e) => {
            assert!(!e.message().contains('\n'), "a multi-line error: {e}");
            if e.message().contains("damaged") || e.message().contains("could have written") {
                assert_eq!(std::fs::read(&image).expect("read"), initial, "refused, yet changed");
            }
        }
    }
});
