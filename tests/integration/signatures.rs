//! SIF signatures: `verify` and `inspect --hash` recompute the digests each signature
//! carries (header, descriptors, objects; or a legacy SIFHASH) from the image as it is now.
//! The oracle is the reference: the signed fixtures were written by sylabs/sif's own signer,
//! so every one of their signatures must still match, and an edit that the spec says breaks
//! a signature must be reported as such.

use std::path::Path;

use crate::require_fixtures;
use crate::util::{run_ok, sifovl};

fn verify(image: &Path) -> (i32, String) {
    let out = sifovl().arg("verify").arg(image).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn writable_copy(from: &Path, dir: &Path) -> std::path::PathBuf {
    let to = dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap();
    let mut perm = std::fs::metadata(&to).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    std::fs::set_permissions(&to, perm).unwrap();
    to
}

#[test]
fn every_signature_of_the_reference_fixtures_still_matches() {
    let fixtures = require_fixtures!();
    let images = fixtures.join("sylabs-sif/images");
    let mut seen = 0;
    for entry in std::fs::read_dir(&images).unwrap() {
        let path = entry.unwrap().path();
        let listing = String::from_utf8(run_ok(sifovl().arg("list").arg(&path))).unwrap();
        let signatures = listing.matches("|Signature (").count();
        if signatures == 0 {
            continue;
        }
        let (code, report) = verify(&path);
        assert_eq!(code, 0, "{}: {report}", path.display());
        assert_eq!(
            report.matches("still matches the data it signs").count(),
            signatures,
            "{}: {report}",
            path.display()
        );
        seen += signatures;
    }
    // 10 signed images, 14 signatures (pgp, dsse, legacy object and group links).
    assert_eq!(seen, 14);
}

#[test]
fn edits_that_break_a_signature_are_reported() {
    let fixtures = require_fixtures!();
    let images = fixtures.join("sylabs-sif/images");
    let dir = tempfile::tempdir().unwrap();

    // An overlay partition added to the signed group: the group no longer is what was signed.
    let pgp = writable_copy(&images.join("one-group-signed-pgp.sif"), dir.path());
    run_ok(sifovl().args(["add", "--sparse", "--force"]).arg(&pgp));
    let (code, report) = verify(&pgp);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(
            "FAIL  SIF signature object 3 (OpenPGP, signs group 1): no longer matches the data it signs: object 4 was added to group 1 after signing"
        ),
        "{report}"
    );
    let inspect: serde_json::Value = serde_json::from_slice(&run_ok(
        sifovl().args(["inspect", "--hash", "--json"]).arg(&pgp),
    ))
    .unwrap();
    assert_eq!(inspect["signatures"][0]["matches"], false, "{inspect}");
    let text = String::from_utf8(run_ok(sifovl().args(["inspect", "--hash"]).arg(&pgp))).unwrap();
    assert!(text.contains("NO LONGER MATCHES"), "{text}");

    // Already broken: the next edit needs no second --force; and with nothing to seal,
    // that is what seal says first.
    let report: serde_json::Value =
        serde_json::from_slice(&run_ok(sifovl().args(["seal", "--json"]).arg(&pgp))).unwrap();
    assert_eq!(
        report["invalidated_signatures"],
        serde_json::json!([]),
        "{report}"
    );
    let intact = writable_copy(&images.join("two-groups-signed-pgp.sif"), dir.path());
    let out = sifovl().arg("seal").arg(&intact).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("does not contain a writable overlay"), "{err}");
    let out = sifovl()
        .args(["add", "--sparse"])
        .arg(&intact)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("objects [4, 5]") && err.contains("--force"),
        "{err}"
    );

    // One byte of a signed object (legacy: data only), and of the image ID (DSSE: header).
    let legacy = writable_copy(&images.join("one-group-signed-legacy.sif"), dir.path());
    flip_byte(&legacy, 36864);
    let (code, report) = verify(&legacy);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("the signed data changed"), "{report}");
    let dsse = writable_copy(&images.join("one-group-signed-dsse.sif"), dir.path());
    flip_byte(&dsse, 48);
    let (code, report) = verify(&dsse);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("the header (launch script or image ID) changed"),
        "{report}"
    );
    // A byte of the unsigned padding after the header changes nothing.
    let pgp2 = writable_copy(&images.join("two-groups-signed-pgp.sif"), dir.path());
    flip_byte(&pgp2, 200);
    let (code, report) = verify(&pgp2);
    assert_eq!(code, 0, "{report}");
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}
