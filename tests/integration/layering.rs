//! The module layering of docs/architecture.md, enforced: a module may name only the
//! modules of its own layer or below. Fails when, say, the SIF codec starts to know OCI.

use std::path::Path;

/// Each top-level module and the crate modules it may name (`crate::X`).
const ALLOWED: &[(&str, &[&str])] = &[
    // Base layer: knows nothing of containers, formats or operations.
    ("error", &[]),
    ("digest", &["error", "progress", "interrupt"]),
    ("progress", &[]),
    ("time", &[]),
    ("interrupt", &["error"]),
    ("journal", &["error", "digest", "progress", "interrupt"]),
    // Codecs, each on its own over the base.
    ("sif", &["error", "digest", "time"]),
    ("fs", &["error", "digest", "progress", "interrupt"]),
    ("oci", &["error", "digest", "time"]),
    // How an OCI image lives in a SIF: sif + oci, never filesystems or journals.
    ("ocisif", &["error", "digest", "sif", "oci"]),
    // The OCI distribution client: HTTP and credentials, knows OCI media types, not SIF.
    ("registry", &["error", "digest", "progress", "oci"]),
    // The resolved view of an image and the operations over all of the above.
    (
        "ops",
        &[
            "error",
            "digest",
            "progress",
            "interrupt",
            "journal",
            "sif",
            "fs",
            "oci",
            "ocisif",
            "registry",
            "time",
        ],
    ),
];

fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn crate_paths(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // `sifovl::` in the bin is not `crate::`; `$crate::` in macros is skipped.
        if i > 0 && text.as_bytes()[i - 1] == b'$' {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c}`: every name at the start of an item.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_name_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else {
            // lib.rs, main.rs and the CLI sit on top and may name anything.
            assert!(
                matches!(module.as_str(), "lib" | "main" | "cli"),
                "{}: module `{module}` is missing from the layering table",
                rel.display()
            );
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        for name in crate_paths(&text) {
            if name != module && !allowed.contains(&name.as_str()) {
                violations.push(format!("{}: names crate::{name}", rel.display()));
            }
        }
        // The library never reaches the CLI or its crates.
        for forbidden in ["clap::", "indicatif::"] {
            if text.contains(forbidden) {
                violations.push(format!("{}: uses {forbidden}", rel.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_violations() {
    let names = crate_paths("use crate::{oci::Digest, error::Result};\nlet x = crate::ops::add;");
    assert_eq!(names, ["oci", "error", "ops"]);
    assert!(crate_paths("$crate::util::x").is_empty());
}
