//! Text forms of the operations' reports, for a person at a terminal (`--json` gives the
//! same facts to scripts).

use sifovl::oci::MediaType;
use sifovl::ops::browse::{Listed, ListedKind};
use sifovl::ops::inspect::InspectReport;
use sifovl::ops::verify::VerifyReport;

/// Human-readable form of a report.
pub fn inspect(report: &InspectReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Image:      {}", report.image);
    let _ = writeln!(s, "Format:     {}", report.format.display_name());
    let _ = writeln!(
        s,
        "Objects:    {} ({} bytes)",
        report.objects, report.file_size
    );
    if let Some(d) = &report.manifest_digest {
        let _ = writeln!(
            s,
            "Manifest:   {d} ({})",
            report
                .manifest_media_type
                .as_ref()
                .map_or("", MediaType::as_str)
        );
    }
    if let Some(d) = &report.config_digest {
        let _ = writeln!(
            s,
            "Config:     {d} ({})",
            report
                .config_media_type
                .as_ref()
                .map_or("", MediaType::as_str)
        );
    }
    if !report.layers.is_empty() {
        let _ = writeln!(s, "Layers:");
        for l in &report.layers {
            let short = l.media_type.short_name();
            let _ = writeln!(
                s,
                "  {:>2}  {:<9} {:>12} bytes  object {:<3} offset {:<10} {}",
                l.index, short, l.size, l.object, l.offset, l.digest
            );
        }
    }
    match &report.overlay {
        Some(o) => {
            let sync = match o.in_sync {
                Some(true) => ", digests in sync",
                Some(false) => ", digests OUT OF SYNC (run `sifovl reconcile`)",
                None => "",
            };
            let recovery = if o.needs_recovery {
                ", journal needs recovery"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "Overlay:    {} object {} at offset {}, {} bytes{recovery}{sync}",
                o.filesystem, o.object, o.offset, o.size
            );
        }
        None => {
            let _ = writeln!(s, "Overlay:    none");
        }
    }
    for c in &report.cosign {
        let _ = writeln!(s, "Cosign:     {} {}", c.ref_name, c.digest);
    }
    if !report.signatures.is_empty() {
        let _ = writeln!(
            s,
            "Signatures: SIF signature objects {:?}",
            report.signatures
        );
    }
    s
}

/// Human-readable form.
pub fn verify(report: &VerifyReport) -> String {
    let mut s = String::new();
    for c in &report.checks {
        if c.ok {
            s.push_str(&format!("ok    {}\n", c.name));
        } else {
            s.push_str(&format!("FAIL  {}: {}\n", c.name, c.detail));
        }
    }
    for w in &report.warnings {
        s.push_str(&format!("warn  {w}\n"));
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        s.push_str(&format!(
            "{}: all {} checks passed\n",
            report.image,
            report.checks.len()
        ));
    } else {
        s.push_str(&format!(
            "{}: {failed} of {} checks failed\n",
            report.image,
            report.checks.len()
        ));
    }
    s
}

/// Text form: `ls -l`-like lines.
pub fn listing(entries: &[Listed]) -> String {
    let mut s = String::new();
    for e in entries {
        let t = type_letter(e.kind);
        let mut line = format!(
            "{t}{:04o} {:>6}:{:<6} {:>12} {}",
            e.mode, e.uid, e.gid, e.size, e.path
        );
        if let Some(target) = &e.target {
            let arrow = match e.kind {
                ListedKind::Symlink => " -> ",
                ListedKind::Hardlink => " link to ",
                _ => " device ",
            };
            line.push_str(arrow);
            line.push_str(target);
        }
        if let Some(deleted) = &e.deletes {
            line.push_str("  (whiteout of ");
            line.push_str(deleted);
            line.push(')');
        } else if e.whiteout {
            line.push_str("  (whiteout)");
        }
        if e.marker {
            line.push_str("  (marker)");
        }
        if e.opaque {
            line.push_str("  (opaque)");
        }
        if let Some(h) = &e.sha256 {
            line.push_str("  ");
            line.push_str(h);
        }
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// The type letter of `ls -l` (hard links show as regular files).
fn type_letter(kind: ListedKind) -> char {
    match kind {
        ListedKind::Dir => 'd',
        ListedKind::Symlink => 'l',
        ListedKind::Char => 'c',
        ListedKind::Block => 'b',
        ListedKind::Fifo => 'p',
        ListedKind::Socket => 's',
        ListedKind::File | ListedKind::Hardlink => '-',
    }
}
