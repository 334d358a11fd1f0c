#![no_main]
use libfuzzer_sys::fuzz_target;

// Placeholder until the codec lands; replaced by the real target.
fuzz_target!(|data: &[u8]| {
    let _ = data;
});
