//! Several images in one command, for job epilogues and admins: `sifovl verify *.sif`.
//!
//! Each image is done as if alone. Without `--keep-going` the first failure stops the run;
//! with it, every image is tried and a summary names the failures. Under `--json` the
//! per-image reports are gathered into one document. `--jobs N` works on N images at once.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clap::Args;
use sifovl::Result;

use super::Outcome;
use super::output::{print_json, quiet};

/// Options shared by the commands that take several images.
#[derive(Args, Clone, Copy)]
pub struct BatchArgs {
    /// With several images: go on past an image that fails; a summary names the failures.
    #[arg(long)]
    pub keep_going: bool,
    /// With several images: work on N of them at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

thread_local! {
    /// Under `--json` with several images: the reports of the image being done, instead of
    /// standard output.
    static COLLECTED: RefCell<Option<Vec<serde_json::Value>>> = const { RefCell::new(None) };
}

/// Take `value` for the combined report when one is being gathered on this thread.
pub fn collect(value: &serde_json::Value) -> bool {
    COLLECTED.with(|c| match c.borrow_mut().as_mut() {
        Some(reports) => {
            reports.push(value.clone());
            true
        }
        None => false,
    })
}

/// What one image gave.
struct Done {
    outcome: Result<Outcome>,
    reports: Vec<serde_json::Value>,
}

/// Run `one` on every image (see the module documentation).
pub fn run(
    images: &[PathBuf],
    batch: BatchArgs,
    json: bool,
    one: impl Fn(&Path) -> Result<Outcome> + Sync,
) -> Result<Outcome> {
    if images.len() == 1 {
        return one(&images[0]);
    }
    let results: Mutex<Vec<Option<Done>>> = Mutex::new(images.iter().map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let work = || {
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(image) = images.get(i) else { break };
            if json {
                COLLECTED.with(|c| *c.borrow_mut() = Some(Vec::new()));
            }
            let outcome = one(image);
            let reports = COLLECTED
                .with(|c| c.borrow_mut().take())
                .unwrap_or_default();
            if let Err(e) = &outcome {
                // Said as it happens, as a single image's error is.
                eprintln!("sifovl: {}", e.to_string().replace('\n', " "));
                if !batch.keep_going {
                    stop.store(true, Ordering::SeqCst);
                }
            }
            if let Ok(mut slots) = results.lock() {
                slots[i] = Some(Done { outcome, reports });
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..batch.jobs.min(images.len() as u16) {
            scope.spawn(work);
        }
        work();
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());

    let mut failed = Vec::new();
    // Checked and found wanting (exit 1 on its own).
    let mut wanting = Vec::new();
    let mut checks_failed = false;
    let mut skipped = 0;
    let mut entries = Vec::new();
    for (image, done) in images.iter().zip(results) {
        let name = image.display().to_string();
        let Some(done) = done else {
            skipped += 1;
            entries.push(serde_json::json!({"image": name, "skipped": true}));
            continue;
        };
        match done.outcome {
            Ok(outcome) => {
                let ok = matches!(outcome, Outcome::Success);
                if !ok {
                    checks_failed = true;
                    wanting.push(name.clone());
                }
                let report = match done.reports.len() {
                    1 => done.reports.into_iter().next().unwrap_or_default(),
                    _ => serde_json::Value::Array(done.reports),
                };
                entries.push(serde_json::json!({"image": name, "ok": ok, "report": report}));
            }
            Err(e) => {
                entries.push(serde_json::json!({
                    "image": name,
                    "ok": false,
                    "error": e.to_string(),
                    "kind": e.kind().name(),
                }));
                failed.push(name);
            }
        }
    }
    if json {
        print_json(&serde_json::json!({
            "images": images.len(),
            "failed": failed,
            "found_wanting": wanting,
            "skipped": skipped,
            "results": entries,
        }))?;
    }
    if !quiet() || !failed.is_empty() || !wanting.is_empty() {
        let mut summary = format!("sifovl: {} images: {} failed", images.len(), failed.len());
        if !failed.is_empty() {
            summary.push_str(&format!(" ({})", failed.join(", ")));
        }
        if !wanting.is_empty() {
            summary.push_str(&format!(
                ", {} found wanting ({})",
                wanting.len(),
                wanting.join(", ")
            ));
        }
        if skipped > 0 {
            summary.push_str(&format!(
                ", {skipped} not tried (--keep-going tries every one)"
            ));
        }
        eprintln!("{summary}");
    }
    Ok(if !failed.is_empty() {
        Outcome::Failed
    } else if checks_failed {
        Outcome::CheckFailed
    } else {
        Outcome::Success
    })
}
