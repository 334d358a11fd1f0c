//! The command line as a shell user meets it: pipes closed by the reader.

use std::process::Stdio;

use crate::ocisif::scratch;
use crate::util::sifovl;

/// Run sifovl with standard output a pipe whose reading end is already closed, as
/// `sifovl ls IMAGE | head -0` leaves it; returns (exit code, stderr).
fn run_into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = sifovl()
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_success() {
    let (_dir, image) = scratch("sample.oci.sif");
    let image = image.to_str().unwrap();
    for args in [
        vec!["ls", image],
        vec!["ls", "--json", image],
        vec!["inspect", image],
        vec!["inspect", "--json", image],
        vec!["verify", image],
        vec!["list", image],
        vec!["header", image],
        vec!["info", "1", image],
        vec!["dump", "1", image],
    ] {
        let (code, stderr) = run_into_closed_pipe(&args);
        assert_eq!(code, Some(0), "{args:?}: stderr {stderr}");
        assert!(stderr.is_empty(), "{args:?} printed: {stderr}");
    }
    // A real failure still fails, pipe or not.
    let (code, stderr) = run_into_closed_pipe(&["ls", "/nonexistent.sif"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent.sif"), "{stderr}");
}
