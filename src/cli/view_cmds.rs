//! Commands that read the image's files without mounting: `cat`, `extract`, `diff`.

use std::path::PathBuf;

use clap::Args;
use sifovl::Result;
use sifovl::ops;
use sifovl::ops::view::{DiffReport, ExtractOptions, ExtractReport, Scope};

use super::Outcome;
use super::output::{emit, print_json, write_out};

fn scope(layer: Option<usize>) -> Scope {
    match layer {
        Some(n) => Scope::Layer(n),
        None => Scope::Merged,
    }
}

#[derive(Args)]
#[command(
    after_help = "Reads the files as the container sees them: every layer, the overlay's \
upper/ on top, deletions applied; symlinks are followed inside the image.

Examples:
  sifovl cat job.oci.sif /etc/os-release
  sifovl cat --layer 0 job.oci.sif /etc/os-release   # as the bottom layer has it"
)]
pub struct CatArgs {
    /// The SIF or OCI-SIF image to read.
    pub image: PathBuf,
    /// The file's path in the container (`/etc/os-release`).
    pub path: String,
    /// Read layer N alone (as `sifovl ls --layer` numbers them) instead of the merged view.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
}

pub fn cat(args: CatArgs) -> Result<Outcome> {
    let mut out = std::io::stdout().lock();
    ops::view::cat(&args.image, &args.path, scope(args.layer), &mut out)?;
    std::io::Write::flush(&mut out)
        .map_err(|e| sifovl::error::Error::io("writing to standard output", e))?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "A directory's contents go into DEST (created if missing, else it must be \
empty); a file, symlink or device becomes DEST (which must not exist), or DEST/NAME when DEST is \
a directory. Nothing is ever written outside DEST: symlinks of the image are created, never \
followed. Owners are restored when run as root.

Examples:
  sifovl extract job.oci.sif /results ./results
  sifovl extract job.oci.sif / rootfs/                # the whole merged tree
  sifovl extract --layer 2 job.oci.sif /etc/passwd ."
)]
pub struct ExtractArgs {
    /// The SIF or OCI-SIF image to read.
    pub image: PathBuf,
    /// The path in the container to extract (`/` for everything).
    pub path: String,
    /// Where to write it.
    pub dest: PathBuf,
    /// Read layer N alone (as `sifovl ls --layer` numbers them; its whiteouts come out as
    /// 0/0 character devices) instead of the merged view.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Do not restore extended attributes.
    #[arg(long)]
    pub no_xattrs: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn extract(args: ExtractArgs) -> Result<Outcome> {
    let report = ops::view::extract(
        &args.image,
        &args.path,
        &args.dest,
        ExtractOptions {
            scope: scope(args.layer),
            same_owner: rustix::process::geteuid().is_root(),
            xattrs: !args.no_xattrs,
        },
    )?;
    emit(args.json, &report, render_extract)?;
    Ok(Outcome::Success)
}

fn render_extract(r: &ExtractReport) -> String {
    let mut s = format!(
        "extracted {} to {}: {} entries, {} bytes",
        r.path, r.destination, r.written.entries, r.written.bytes
    );
    for line in &r.written.skipped {
        s.push_str("\n  skipped: ");
        s.push_str(line);
    }
    s
}

#[derive(Args)]
#[command(
    after_help = "One line per change: A added, M modified (with what differs: content, \
mode, owner, xattrs, mtime, type, target, device), D deleted, O opaque directory (replaces the \
directory below as a whole). Directories whose only change is their contents are not listed.

Examples:
  sifovl diff job.oci.sif                  # what the job wrote into the overlay
  sifovl diff --layer 2 job.oci.sif        # what sealed layer 2 changes
  sifovl diff --json job.oci.sif | jq '.changes[] | select(.change == \"deleted\")'"
)]
pub struct DiffArgs {
    /// The SIF or OCI-SIF image to compare.
    pub image: PathBuf,
    /// Compare layer N (as `sifovl ls --layer` numbers them) instead of the writable overlay.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn diff(args: DiffArgs) -> Result<Outcome> {
    let report = ops::view::diff(&args.image, args.layer)?;
    if args.json {
        print_json(&report)?;
    } else {
        write_out(&render_diff(&report))?;
    }
    Ok(Outcome::Success)
}

fn render_diff(r: &DiffReport) -> String {
    let mut s = String::new();
    for c in &r.changes {
        s.push(c.change.letter());
        s.push(' ');
        s.push_str(&c.path);
        if !c.fields.is_empty() {
            s.push_str(" (");
            s.push_str(&c.fields.join(", "));
            s.push(')');
        }
        s.push('\n');
    }
    s
}

#[derive(Args)]
#[command(
    after_help = "The undo of `add`: an OCI-SIF loses its ext3 last layer (manifest, config \
and index follow), a native SIF its ext3 overlay partition. Whatever the job wrote into the \
overlay is gone: `sifovl extract` or `sifovl seal` it first to keep it.

Examples:
  sifovl remove-overlay job.oci.sif
  sifovl remove-overlay --force signed.sif   # signatures will no longer verify"
)]
pub struct RemoveOverlayArgs {
    /// The image whose writable overlay is removed; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Remove even if SIF signatures will no longer verify.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn remove_overlay(args: RemoveOverlayArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        remove_overlay_one(&args, image)
    })
}

fn remove_overlay_one(args: &RemoveOverlayArgs, image: &std::path::Path) -> Result<Outcome> {
    let report = ops::remove_overlay::remove_overlay(
        image,
        &ops::remove_overlay::RemoveOptions { force: args.force },
    )?;
    super::overlay_cmds::warn_invalidated(
        &report.invalidated_signatures,
        report.dropped_cosign_entries,
    );
    emit(args.json, &report, |r| {
        format!(
            "{}: removed the {} MiB overlay (object {}); file {} -> {} bytes",
            r.image,
            r.overlay_size >> 20,
            r.object,
            r.file_size_before,
            r.file_size_after
        )
    })?;
    Ok(Outcome::Success)
}
