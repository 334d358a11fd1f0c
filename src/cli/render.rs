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
    if !report.partitions.is_empty() {
        let _ = writeln!(s, "Arch:       {}", report.arch);
        let _ = writeln!(s, "Partitions:");
        for p in &report.partitions {
            let group = p.group.map_or("none".to_string(), |g| g.to_string());
            let _ = writeln!(
                s,
                "  object {:<3} {:<9} {:<8} {:<6} group {group:<4} offset {:<10} {} bytes",
                p.object, p.filesystem, p.partition_type, p.arch, p.offset, p.size
            );
        }
    }
    if !report.labels.is_empty() {
        let _ = writeln!(s, "Labels:");
        for (k, v) in &report.labels {
            let _ = writeln!(s, "  {k}: {v}");
        }
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
        None if !report.sealed_overlays.is_empty() => {
            let _ = writeln!(
                s,
                "Overlay:    sealed (read-only squashfs overlay partition, object {})",
                report
                    .sealed_overlays
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        None => {
            let _ = writeln!(s, "Overlay:    none");
        }
    }
    for c in &report.cosign {
        let _ = writeln!(s, "Cosign:     {} {}", c.ref_name, c.digest);
    }
    for sig in &report.signatures {
        let key = sig
            .fingerprint
            .as_ref()
            .map_or(String::new(), |f| format!(", key {f}"));
        let state = match (sig.matches, &sig.detail) {
            (Some(true), _) => "still matches the data it signs".to_string(),
            (Some(false), Some(why)) => format!("NO LONGER MATCHES the data it signs: {why}"),
            (Some(false), None) => "NO LONGER MATCHES the data it signs".to_string(),
            (None, _) => "not checked (--hash or `sifovl verify` check it)".to_string(),
        };
        let _ = writeln!(
            s,
            "Signature:  object {} signs {}{key}; {state}",
            sig.object, sig.signs
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
