#![no_main]
//! Any bytes as an image file, through the read-only commands: `inspect --hash`, `verify`,
//! `reconcile --check`, `ls` of the overlay and `diff`. None may panic; every error is one
//! line; and none may change the file (they open it read-only, but a regression that
//! repaired or recovered it in passing would show here).
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sifovl::ops::{browse, inspect, reconcile, verify, view};

/// One directory for the whole run: the image is rewritten at the same path each time.
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

fuzz_target!(|data: &[u8]| {
    let path = image_path();
    std::fs::write(path, data).expect("write the image");
    one_line("inspect", inspect::inspect(path, true));
    one_line("verify", verify::verify(path));
    one_line("reconcile --check", reconcile::reconcile(path, true));
    one_line("ls", browse::list(path, browse::Target::Overlay, true));
    one_line("diff", view::diff(path, None));
    assert!(std::fs::read(path).expect("read the image") == data, "a read-only command changed the file");
});
