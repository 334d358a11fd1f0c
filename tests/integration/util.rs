//! Shared test helpers: fixture lookup, external tools, the built binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `../shared/fixtures` beside the checkout, if present.
pub fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    dir.is_dir().then(|| dir.canonicalize().unwrap())
}

/// Whether the suite runs under CI (`CI` set, as CI runners do), where nothing may be
/// skipped: a missing fixture or tool is a failure there, not a reason to pass.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Return early from a test (with a clear message) when `../shared/fixtures` is absent;
/// under CI, fail instead, so CI can never pass without them.
#[macro_export]
macro_rules! require_fixtures {
    () => {
        match $crate::util::fixtures() {
            Some(dir) => dir,
            None => {
                if $crate::util::under_ci() {
                    panic!(
                        "../shared/fixtures is required under CI (it must sit beside the checkout)"
                    );
                }
                eprintln!("SKIPPED: ../shared/fixtures is absent beside the checkout");
                return;
            }
        }
    };
}

/// Whether an external program is on PATH.
pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Return early when an external oracle is missing; under CI (CI=true) a missing tool is a
/// failure, because the install script must have provided it.
#[macro_export]
macro_rules! require_tool {
    ($name:expr) => {
        if !$crate::util::have_tool($name) {
            if $crate::util::under_ci() {
                panic!(
                    "{} is required under CI: run scripts/install-test-deps.sh",
                    $name
                );
            }
            eprintln!(
                "SKIPPED: {} not installed (scripts/install-test-deps.sh installs it)",
                $name
            );
            return;
        }
    };
}

/// The sifovl binary built for these tests.
pub fn sifovl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sifovl"))
}

/// Run a command, panic with its output unless it succeeds, return stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Pseudo-random bytes (xorshift of `seed`, which must not be 0): incompressible test data
/// that is the same in every run.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
