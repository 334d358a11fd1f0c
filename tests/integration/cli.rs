//! The command line as a shell user meets it: pipes closed by the reader.

use std::process::Stdio;

use crate::ocisif::scratch;
use crate::util::{run_ok, sifovl};

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
        // Notes (ls says which layer it shows) are fine; nothing else.
        assert!(
            stderr.lines().all(|l| l.starts_with("sifovl: note: ")),
            "{args:?} printed: {stderr}"
        );
    }
    // A real failure still fails, pipe or not.
    let (code, stderr) = run_into_closed_pipe(&["ls", "/nonexistent.sif"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent.sif"), "{stderr}");
}

#[test]
fn mktar_compression_follows_the_file_name_and_counts_tar_members() {
    crate::require_tool!("tar");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/file.txt"), b"hello\n").unwrap();
    let magic = |path: &std::path::Path| std::fs::read(path).unwrap()[..4].to_vec();
    for (name, explicit, expected) in [
        ("plain.tar", None, "tar"),
        ("layer.tar.gz", None, "gzip"),
        ("layer.tgz", None, "gzip"),
        ("layer.tar.zst", None, "zstd"),
        ("forced.tar", Some("gzip:1"), "gzip"),
        ("forced.tar.gz", Some("none"), "tar"),
    ] {
        let out = dir.path().join(name);
        let mut cmd = sifovl();
        cmd.args(["mktar", "--json"]).arg(&tree).arg(&out);
        if let Some(c) = explicit {
            cmd.args(["--compression", c]);
        }
        let report: serde_json::Value =
            serde_json::from_slice(&crate::util::run_ok(&mut cmd)).unwrap();
        let bytes = magic(&out);
        let found = match bytes.as_slice() {
            [0x1f, 0x8b, ..] => "gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
            _ => "tar",
        };
        assert_eq!(found, expected, "{name} ({explicit:?}) holds {bytes:x?}");
        // The count is what `tar -t` lists: sub/ and sub/file.txt, the root is implied.
        let listing = crate::util::run_ok(std::process::Command::new("tar").arg("-tf").arg(&out));
        let members = String::from_utf8(listing).unwrap().lines().count();
        assert_eq!(members, 2, "{name}");
        assert_eq!(report["entries"], 2, "{name}: {report}");
    }
}

#[test]
fn sizes_take_units_and_absurd_sizes_are_refused_before_any_work() {
    let (_dir, image) = scratch("sample.oci.sif");
    let before = std::fs::read(&image).unwrap();
    for (size, needle) in [
        ("99999999", "beyond ext3's 16 TiB limit"),
        ("20T", "beyond ext3's 16 TiB limit"),
        ("1.5x", "unknown unit"),
        ("100K", "not a whole number of MiB"),
    ] {
        let out = sifovl()
            .args(["add", "--sparse", "--size", size])
            .arg(&image)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{size}: {stderr}");
        assert!(stderr.contains(needle), "{size}: {stderr}");
        assert_eq!(
            std::fs::read(&image).unwrap(),
            before,
            "{size}: image unchanged"
        );
    }
    // --from a directory is refused in words, not as "Is a directory".
    let out = sifovl()
        .args(["add", "--from"])
        .arg(dir_of(&image))
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--from takes an ext3 image file"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&image).unwrap(), before);
    // Without --sparse the whole overlay is written: more than the free space is refused,
    // naming the image.
    let out = sifovl()
        .args(["add", "--size", "15T"])
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(image.to_str().unwrap()) && stderr.contains("free space"),
        "{stderr}"
    );
    // Units work: 96M is 96 MiB of ext3 (checked by its superblock through inspect).
    crate::util::run_ok(
        sifovl()
            .args(["add", "--sparse", "--size", "96M"])
            .arg(&image),
    );
    let info: serde_json::Value = serde_json::from_slice(&crate::util::run_ok(
        sifovl().args(["inspect", "--json"]).arg(&image),
    ))
    .unwrap();
    assert_eq!(info["overlay"]["size"], 96 << 20);
    // And block sizes: 64K squashfs blocks (unsquashfs -s reads the superblock).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let out = dir.path().join("o.sqfs");
    crate::util::run_ok(
        sifovl()
            .args(["mksquashfs", "--block-size", "64K"])
            .arg(dir.path())
            .arg(&out),
    );
    let stat = crate::util::run_ok(std::process::Command::new("unsquashfs").arg("-s").arg(&out));
    assert!(String::from_utf8_lossy(&stat).contains("Block size 65536"));
}

#[test]
fn under_json_an_error_is_a_json_object_on_stdout_with_the_same_exit_code() {
    let (dir, image) = scratch("sample.oci.sif");
    let missing = dir.path().join("missing.sif");
    for (args, kind, file) in [
        (
            vec!["reconcile", "--json", image.to_str().unwrap()],
            "refused",
            Some(&image),
        ),
        (
            vec!["verify", "--json", missing.to_str().unwrap()],
            "io",
            None,
        ),
        (
            vec!["seal", "--json", image.to_str().unwrap()],
            "refused",
            Some(&image),
        ),
    ] {
        let out = sifovl().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {:?}", out.stdout));
        assert_eq!(report["kind"], kind, "{args:?}: {report}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            report["error"].as_str().unwrap(),
            stderr.trim().trim_start_matches("sifovl: "),
            "the same one-line message on both streams"
        );
        match file {
            Some(path) => assert_eq!(report["file"], path.to_str().unwrap()),
            None => assert!(report["file"].is_null()),
        }
    }
    // mksquashfs and recover take --json as the README says every command does.
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let out = crate::util::run_ok(
        sifovl()
            .args(["mksquashfs", "--json"])
            .arg(&tree)
            .arg(dir.path().join("t.sqfs")),
    );
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["entries"], 2);
    let out = crate::util::run_ok(sifovl().args(["recover", "--json"]).arg(&image));
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["recovered"], false);
}

#[test]
fn completions_are_valid_shell_and_the_man_page_renders() {
    crate::require_tool!("bash");
    crate::require_tool!("man");
    let dir = tempfile::tempdir().unwrap();
    let script = crate::util::run_ok(sifovl().args(["completions", "bash"]));
    let path = dir.path().join("sifovl.bash");
    std::fs::write(&path, &script).unwrap();
    // bash parses it, and completing `sifovl im` offers import.
    crate::util::run_ok(std::process::Command::new("bash").arg("-n").arg(&path));
    let offered = crate::util::run_ok(std::process::Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(sifovl im); COMP_CWORD=1; _sifovl sifovl im sifovl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    )));
    assert!(
        String::from_utf8_lossy(&offered)
            .lines()
            .any(|l| l == "import"),
        "{}",
        String::from_utf8_lossy(&offered)
    );
    let page = crate::util::run_ok(sifovl().arg("man"));
    let man = dir.path().join("sifovl.1");
    std::fs::write(&man, &page).unwrap();
    let rendered = crate::util::run_ok(
        std::process::Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&man)
            .env("MANWIDTH", "100"),
    );
    let text = String::from_utf8_lossy(&rendered);
    for needle in ["NAME", "sifovl", "reconcile", "import", "export"] {
        assert!(
            text.contains(needle),
            "{needle} missing from the man page:\n{text}"
        );
    }
}

/// Run `args` on copies of `old` with a fault before each durable step from 1 to `up_to`
/// (or until it completes); after each, `inspect` must report any recovery it does on
/// stderr, and say nothing otherwise. Returns the outcomes reported.
fn recovery_notes(
    old: &[u8],
    args: &[&str],
    up_to: u64,
) -> std::collections::BTreeSet<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.sif");
    let mut seen = std::collections::BTreeSet::new();
    for n in 1..=up_to {
        std::fs::write(&work, old).unwrap();
        let out = sifovl()
            .args(args)
            .arg(&work)
            .env("SIFOVL_FAULT_AT", n.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        let pending = sifovl::journal::pending(&work);
        let inspect = sifovl().arg("inspect").arg(&work).output().unwrap();
        assert!(inspect.status.success());
        let stderr = String::from_utf8_lossy(&inspect.stderr).into_owned();
        if pending {
            assert!(
                stderr.starts_with(&format!("sifovl: note: {}: ", work.display())),
                "{args:?} fault {n}: recovery not reported: {stderr:?}"
            );
            seen.insert(if stderr.contains("rolled back") {
                "rolled back"
            } else {
                "finished"
            });
        } else {
            assert!(
                stderr.is_empty(),
                "{args:?} fault {n}: nothing to recover, nothing said: {stderr:?}"
            );
        }
        assert!(!sifovl::journal::pending(&work));
    }
    seen
}

#[test]
fn automatic_recovery_says_what_it_did() {
    crate::require_tool!("debugfs");
    let (dir, image) = scratch("sample.oci.sif");
    // add stages the overlay before committing: faults there are rolled back.
    let rolled = recovery_notes(&std::fs::read(&image).unwrap(), &["add", "--sparse"], 8);
    assert!(rolled.contains("rolled back"), "{rolled:?}");
    // reconcile commits at once: faults after the commit point are finished.
    crate::util::run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let job = dir.path().join("result.txt");
    std::fs::write(&job, b"job output").unwrap();
    crate::ocisif::simulate_writable_run(
        &image,
        &[&format!("write {} /upper/r.txt", job.display())],
    );
    let finished = recovery_notes(&std::fs::read(&image).unwrap(), &["reconcile"], 100);
    assert!(finished.contains("finished"), "{finished:?}");
}

#[test]
fn verify_names_a_damaged_lower_layer_and_a_changed_overlay_apart() {
    crate::require_tool!("debugfs");
    let (dir, image) = scratch("sample.oci.sif");
    crate::util::run_ok(sifovl().args(["add", "--sparse"]).arg(&image));
    let info: serde_json::Value = serde_json::from_slice(&crate::util::run_ok(
        sifovl().args(["inspect", "--json"]).arg(&image),
    ))
    .unwrap();
    // A byte of layer 0 flipped: damage, not a job's writes.
    let damaged = dir.path().join("damaged.sif");
    let mut bytes = std::fs::read(&image).unwrap();
    let at = info["layers"][0]["offset"].as_u64().unwrap() as usize + 100;
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = sifovl().arg("verify").arg(&damaged).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("layer 0 is damaged"), "{text}");
    assert!(!text.contains("run `sifovl reconcile`"), "{text}");
    // The overlay written by a job: reconcile is the answer.
    let job = dir.path().join("r.txt");
    std::fs::write(&job, b"x").unwrap();
    crate::ocisif::simulate_writable_run(
        &image,
        &[&format!("write {} /upper/r.txt", job.display())],
    );
    let out = sifovl().arg("verify").arg(&image).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("layer 1, the writable overlay, changed: run `sifovl reconcile`"),
        "{text}"
    );
}

/// The subcommands `sifovl --help` lists.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(crate::util::run_ok(sifovl().arg("--help"))).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_argument_of_every_command_is_described_and_out_of_range_layers_name_the_range() {
    let commands = subcommands();
    assert!(commands.len() >= 15, "{commands:?}");
    for command in &commands {
        let help =
            String::from_utf8(crate::util::run_ok(sifovl().args([command, "--help"]))).unwrap();
        for line in help
            .lines()
            .skip_while(|l| !l.starts_with("Arguments:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(
                words.len() > 1,
                "{command}: argument without a description: {line:?}"
            );
        }
    }
    let sample = crate::ocisif::sample("sample.oci.sif");
    let out = sifovl()
        .args(["ls", "--layer", "3"])
        .arg(&sample)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no layer 3: layers are numbered 0 to 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_command_table_lists_exactly_the_commands_of_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: std::collections::BTreeSet<String> = readme
        .lines()
        .skip_while(|l| l.trim() != "## Commands")
        .take_while(|l| !l.starts_with("## ") || l.trim() == "## Commands")
        .filter(|l| l.starts_with("| `sifovl "))
        .flat_map(|l| {
            // A row may name several commands: `sifovl list IMAGE`, `info ID IMAGE`, ...
            let first_cell = l.split(" | ").next().unwrap_or("");
            first_cell
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|c| {
                    c.trim_start_matches("sifovl ")
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let help: std::collections::BTreeSet<String> = subcommands().into_iter().collect();
    assert_eq!(
        table, help,
        "README's command table and `sifovl --help` differ"
    );
}

fn dir_of(path: &std::path::Path) -> &std::path::Path {
    path.parent().unwrap()
}

#[test]
fn reconcile_check_of_an_image_without_overlay_is_in_sync() {
    let sample = crate::ocisif::sample("sample.oci.sif");
    let out = sifovl()
        .args(["reconcile", "--check", "--json"])
        .arg(&sample)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing to reconcile is in sync"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["has_overlay"], false);
    assert_eq!(report["in_sync"], true);
    // reconcile itself still refuses: there is nothing to do it on.
    let out = sifovl().arg("reconcile").arg(&sample).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_full_descriptor_table_says_what_to_do() {
    use sifovl::sif::{Arch, CreateOptions, FsType, MemoryImage, ObjectSpec, PartType};
    let mut sif = MemoryImage::create(&CreateOptions {
        capacity: 1,
        ..CreateOptions::default()
    })
    .unwrap();
    let mut spec = ObjectSpec::partition(FsType::Squashfs, PartType::PrimSys, Arch::Amd64, 1, 4096);
    spec.size = 4096;
    sif.add(spec, &[0u8; 4096], 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("full.sif");
    std::fs::write(&image, sif.bytes()).unwrap();
    let out = sifovl()
        .args(["add", "--sparse"])
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("all 1 descriptor slots are in use") && err.contains("remove an object"),
        "{err}"
    );
    assert_eq!(std::fs::read(&image).unwrap(), sif.bytes());
}

#[test]
fn quiet_and_verbose() {
    let (_dir, image) = crate::ocisif::scratch("sample.oci.sif");
    let out = sifovl()
        .args(["-q", "add", "--sparse"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    // --json reports stay under -q; listings too.
    let out = sifovl()
        .args(["verify", "-q", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok());
    let out = sifovl().args(["-q", "ls"]).arg(&image).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("/upper"));
    let out = sifovl()
        .args(["-v", "inspect"])
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("took") && err.contains("peak memory"), "{err}");
    // No colour, ever: no escape byte in any output that is not a terminal.
    assert!(!out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b));
    // A note (the layer ls shows without an overlay) is left out under -q.
    run_ok(sifovl().arg("remove-overlay").arg(&image));
    let out = sifovl().arg("ls").arg(&image).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("showing the top layer, layer 0"),
        "{out:?}"
    );
    let out = sifovl().args(["ls", "-q"]).arg(&image).output().unwrap();
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn several_images_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.oci.sif");
    let native = dir.path().join("native.sif");
    let bad = dir.path().join("bad.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &good).unwrap();
    std::fs::copy(crate::ocisif::sample("sample.sif"), &native).unwrap();
    std::fs::write(&bad, b"not a SIF at all").unwrap();
    let listing =
        |p: &std::path::Path| String::from_utf8(run_ok(sifovl().arg("list").arg(p))).unwrap();

    // Without --keep-going the first failure stops the run: native.sif is not tried.
    let out = sifovl()
        .args(["add", "--sparse"])
        .args([&good, &bad, &native])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.sif: reading global header"), "{err}");
    assert!(
        err.contains("3 images: 1 failed") && err.contains("1 not tried"),
        "{err}"
    );
    assert!(listing(&good).contains("OCI.Blob") && !listing(&native).contains("Overlay"));
    assert_eq!(std::fs::read(&bad).unwrap(), b"not a SIF at all");

    // With it, every image is tried, on two at once; one JSON report for all.
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &good).unwrap();
    let out = sifovl()
        .args(["add", "--sparse", "--keep-going", "--jobs", "2", "--json"])
        .args([&good, &bad, &native])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 3);
    assert_eq!(report["failed"], serde_json::json!([bad.to_str().unwrap()]));
    assert_eq!(
        report["results"][0]["report"]["format"], "oci-sif",
        "{report}"
    );
    assert_eq!(report["results"][1]["kind"], "malformed", "{report}");
    assert_eq!(
        report["results"][2]["report"]["format"], "native",
        "{report}"
    );
    assert!(listing(&native).contains("Overlay"));

    // A checker: exit 1 when one is found wanting, 0 when all pass.
    let out = sifovl()
        .arg("verify")
        .args([&good, &native])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = sifovl()
        .args(["verify", "--keep-going"])
        .args([&good, &bad, &native])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 found wanting") && err.contains("bad.sif"),
        "{err}"
    );
    // And reconcile --check || reconcile over a batch.
    let out = sifovl()
        .args(["reconcile", "--check"])
        .args([&good])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn inspect_resize_and_recover_overlay_take_several_images() {
    crate::require_tool!("debugfs");
    let (_dirty_dir, dirty, _) = crate::recover_overlay::dirty_overlay_image();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.oci.sif");
    let native = dir.path().join("native.sif");
    let bad = dir.path().join("bad.sif");
    std::fs::copy(crate::ocisif::sample("sample.oci.sif"), &good).unwrap();
    std::fs::copy(crate::ocisif::sample("sample.sif"), &native).unwrap();
    std::fs::write(&bad, b"not a SIF at all").unwrap();
    run_ok(sifovl().args(["add", "--sparse"]).args([&good, &native]));

    // inspect: one block per image, each naming its image; a bad one fails the run.
    let text = String::from_utf8(run_ok(sifovl().arg("inspect").args([&good, &native]))).unwrap();
    for image in [&good, &native] {
        assert!(
            text.contains(&format!("Image:      {}\n", image.display())),
            "{text}"
        );
    }
    let out = sifovl()
        .args(["inspect", "--keep-going", "--json", "--jobs", "2"])
        .args([&good, &bad, &native])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], serde_json::json!([bad.to_str().unwrap()]));
    assert_eq!(report["results"][0]["report"]["format"], "oci-sif");
    assert_eq!(report["results"][2]["report"]["format"], "native");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 images: 1 failed"), "{err}");

    // resize: both overlays become 96 MiB, on two at once; the independent decoder (the
    // OCI-SIF's layer size) and inspect of each agree, and both verify.
    let out = sifovl()
        .args(["resize", "--size", "96M", "--jobs", "2", "--json"])
        .args([&good, &native])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 2);
    for (i, image) in [&good, &native].iter().enumerate() {
        assert_eq!(report["results"][i]["report"]["new_size"], 96 << 20);
        let info: serde_json::Value =
            serde_json::from_slice(&run_ok(sifovl().args(["inspect", "--json"]).arg(image)))
                .unwrap();
        assert_eq!(info["overlay"]["size"], 96 << 20, "{}", image.display());
    }
    assert_eq!(crate::ocisif::overlay_range(&good).1, 96 << 20);
    run_ok(sifovl().arg("verify").args([&good, &native]));
    // Without --keep-going, a failure stops the run: native is not tried.
    let before = std::fs::read(&native).unwrap();
    let out = sifovl()
        .args(["resize", "--size", "128M"])
        .args([&bad, &native])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 not tried"));
    assert_eq!(std::fs::read(&native).unwrap(), before);

    // recover-overlay --check: exit 1 naming the image whose journal needs replaying.
    let out = sifovl()
        .args(["recover-overlay", "--check"])
        .args([&good, &dirty])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("1 found wanting ({})", dirty.display())),
        "{err}"
    );
    let out = run_ok(
        sifovl()
            .args(["recover-overlay", "--json", "--keep-going"])
            .args([&good, &dirty]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["results"][0]["report"]["recovered"], false);
    assert_eq!(report["results"][1]["report"]["recovered"], true);
    run_ok(
        sifovl()
            .args(["recover-overlay", "--check"])
            .args([&good, &dirty]),
    );
    run_ok(sifovl().arg("verify").arg(&dirty));
}
