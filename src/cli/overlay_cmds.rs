//! Overlay commands: add, reconcile, inspect, verify, recover.

use std::path::{Path, PathBuf};

use clap::Args;

use sifovl::Result;
use sifovl::ops;

use super::Outcome;
use super::output::{emit, print_json, write_out};

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl add image.oci.sif                      # 64 MiB overlay as the last OCI layer
  sifovl add --size 1G --sparse image.oci.sif   # 1 GiB, unwritten blocks kept as holes
  sifovl add --create-dir /data native.sif      # overlay partition of a native SIF
  sifovl add --from-dir ./tree image.oci.sif    # overlay already holding ./tree in upper/
  sifovl add --from my-overlay.img image.oci.sif

The overlay is written by sifovl itself (no mke2fs): ext3 with a journal, 4 KiB blocks,
the features SingularityCE accepts; upper/ and work/ owned by you.")]
pub struct AddArgs {
    /// The SIF or OCI-SIF image to edit in place; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Overlay size: MiB, or with a unit (512M, 1G, 1.5G); at least 64 MiB.
    #[arg(short, long, default_value = "64", value_parser = super::units::mib, value_name = "SIZE")]
    pub size: u64,
    /// Keep unwritten overlay blocks as holes in the image file.
    #[arg(short = 'S', long)]
    pub sparse: bool,
    /// Create this directory inside the overlay's upper/ (repeatable).
    #[arg(long = "create-dir", value_name = "DIR")]
    pub create_dir: Vec<String>,
    /// Use an existing ext3 image instead of creating one.
    #[arg(long, value_name = "EXT3_IMAGE", conflicts_with_all = ["size", "create_dir", "from_dir"])]
    pub from: Option<PathBuf>,
    /// Put this directory's tree (files, links, devices, owners, modes, times, xattrs) in
    /// the new overlay's upper/.
    #[arg(long = "from-dir", value_name = "DIR")]
    pub from_dir: Option<PathBuf>,
    /// Add even if SIF signatures will no longer verify.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Entries of an overlay's upper/ that the AUFS-marker conversion handled by a fallback
/// rule (docs/whiteouts.md), on standard error.
fn warn_upper(warnings: &[String]) {
    for warning in warnings {
        eprintln!("sifovl: warning: overlay upper{warning}");
    }
}

/// What an edit invalidated, on standard error.
pub(super) fn warn_invalidated(signatures: &[u32], dropped_cosign: usize) {
    for id in signatures {
        eprintln!("sifovl: warning: SIF signature object {id} no longer verifies");
    }
    if dropped_cosign > 0 {
        eprintln!(
            "sifovl: warning: removed {dropped_cosign} cosign signature/attestation entries (the new manifest invalidates them)"
        );
    }
}

pub fn add(args: AddArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        add_one(&args, image)
    })
}

fn add_one(args: &AddArgs, image: &Path) -> Result<Outcome> {
    let options = ops::add::AddOptions {
        size_mib: args.size,
        sparse: args.sparse,
        create_dirs: args.create_dir.clone(),
        from: args.from.clone(),
        from_dir: args.from_dir.clone(),
        force: args.force,
        // Reproducible builds' convention, as seal: the overlay's times, and its UUID and
        // hash seed derived from that, so the same inputs give the same bytes.
        fixed: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(sifovl::fs::overlay::Fixed::from_epoch),
        ..Default::default()
    };
    let report = ops::add::add_overlay(image, &options)?;
    warn_invalidated(
        &report.invalidated_signatures,
        report.dropped_cosign_entries,
    );
    emit(args.json, &report, |r| {
        format!(
            "{}: added a {} MiB ext3 overlay as object {} at offset {}{}",
            r.image,
            r.size >> 20,
            r.object,
            r.offset,
            r.digest
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Both directions happen in place where they can, as resize2fs does them. Growing
keeps the content where it is, adds block groups after it and writes only metadata, so it
takes about as long for a full overlay as for an empty one. Shrinking moves the blocks that
lie past the new end below it (read once, written once) and gives the inodes of the dropped
block groups free numbers below it (their content, owners, times and xattrs stay; the
report counts them as renumbered_inodes). Filesystems whose layout is not resized in place
(meta_bg, 64bit, checksummed metadata, extents, a descriptor table with no room left) are
rewritten instead: the whole tree is read and written into a new ext3 filesystem of the
new size (sifovl's own writer): files, holes, links, devices, owners, modes, modification
times, xattrs, whiteouts and work/ are kept, and so are the filesystem UUID and hash seed;
inode numbers change, and access and change times become the modification time. The report
says which was done, and why not in place. Either way it is one crash-safe edit. A size
below what the content needs is refused; so is an overlay whose journal needs recovery
(run `sifovl recover-overlay` first).

Examples:
  sifovl resize --size 4G image.oci.sif     # grow the OCI-SIF's overlay layer to 4 GiB
  sifovl resize --size 128M native.sif      # shrink a native SIF's overlay partition"
)]
pub struct ResizeArgs {
    /// The SIF or OCI-SIF image whose overlay to resize, in place; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// New overlay size: MiB, or with a unit (512M, 4G); at least 64 MiB.
    #[arg(short, long, value_parser = super::units::mib, value_name = "SIZE")]
    pub size: u64,
    /// Resize even if SIF signatures will no longer verify.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn resize(args: ResizeArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        resize_one(&args, image)
    })
}

fn resize_one(args: &ResizeArgs, image: &Path) -> Result<Outcome> {
    let options = ops::resize::ResizeOptions {
        size_mib: args.size,
        force: args.force,
        // Reproducible builds' convention, as seal.
        time: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let report = ops::resize::resize(image, &options)?;
    warn_invalidated(
        &report.invalidated_signatures,
        report.dropped_cosign_entries,
    );
    emit(args.json, &report, |r| {
        let grew = r.new_size > r.old_size;
        let how = match (r.method, grew) {
            ("in place", true) => "grown in place",
            ("in place", false) => "shrunk in place",
            _ => "resized",
        };
        let copied = match (r.method, grew) {
            ("in place", true) => "content left where it was".to_string(),
            ("in place", false) => format!(
                "{} MiB of content moved below the new end, {} inodes renumbered",
                r.data_bytes >> 20,
                r.renumbered_inodes
            ),
            _ => format!("{} MiB of file data rewritten", r.data_bytes >> 20),
        };
        let because = r
            .rewritten_because
            .as_deref()
            .map(|why| format!("\n  not resized in place: {why}"))
            .unwrap_or_default();
        format!(
            "{}: overlay {how} from {} MiB to {} MiB (object {} at offset {}; {} inodes, {copied}){}{because}",
            r.image,
            r.old_size >> 20,
            r.new_size >> 20,
            r.object,
            r.offset,
            r.inodes,
            r.digest
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Exit status with --check: 0 in sync, 1 out of sync, 2 error.

Examples:
  sifovl reconcile image.oci.sif          # after a --writable run, before a push
  sifovl reconcile --check image.oci.sif  # is it needed?"
)]
pub struct ReconcileArgs {
    /// The OCI-SIF image whose overlay changed; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Change nothing; exit 1 if the image is out of sync.
    #[arg(long)]
    pub check: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn reconcile(args: ReconcileArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        reconcile_one(&args, image)
    })
}

fn reconcile_one(args: &ReconcileArgs, image: &Path) -> Result<Outcome> {
    let report = ops::reconcile::reconcile(image, args.check)?;
    warn_invalidated(
        &report.invalidated_signatures,
        report.dropped_cosign_entries,
    );
    emit(args.json, &report, |r| {
        if !r.has_overlay {
            format!("{}: no writable overlay, nothing to reconcile", r.image)
        } else if r.in_sync {
            format!(
                "{}: overlay digest in sync ({}), nothing to do",
                r.image, r.actual_digest
            )
        } else if args.check {
            format!(
                "{}: out of sync: overlay holds {} but the image records {}",
                r.image, r.actual_digest, r.recorded_digest
            )
        } else {
            format!(
                "{}: overlay {} -> {}; manifest now {} ({} bytes written)",
                r.image, r.recorded_digest, r.actual_digest, r.manifest_digest, r.bytes_written
            )
        }
    })?;
    Ok(if args.check && !report.in_sync {
        Outcome::CheckFailed
    } else {
        Outcome::Success
    })
}

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl inspect image.oci.sif
  sifovl inspect --hash --json image.oci.sif | jq .overlay")]
pub struct InspectArgs {
    /// The SIF or OCI-SIF image to describe; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Also hash the overlay to tell whether its digests are in sync.
    #[arg(long)]
    pub hash: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        inspect_one(&args, image)
    })
}

fn inspect_one(args: &InspectArgs, image: &Path) -> Result<Outcome> {
    let report = ops::inspect::inspect(image, args.hash)?;
    // Several images: a blank line after each (each starts with its `Image:` line).
    let gap = if args.images.len() > 1 { "\n" } else { "" };
    emit(args.json, &report, |r| {
        format!("{}{gap}", super::render::inspect(r).trim_end())
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 when every check passes, 1 when one fails, 2 on error.

Example:
  sifovl verify image.oci.sif"
)]
pub struct VerifyArgs {
    /// The SIF or OCI-SIF image to check; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(args: VerifyArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        verify_one(&args, image)
    })
}

fn verify_one(args: &VerifyArgs, image: &Path) -> Result<Outcome> {
    let report = ops::verify::verify(image)?;
    emit(args.json, &report, |r| {
        super::render::verify(r).trim_end().to_string()
    })?;
    Ok(if report.ok {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

#[derive(Args)]
#[command(
    after_help = "Every sifovl command recovers an interrupted edit on its own; this does only that."
)]
pub struct RecoverArgs {
    /// The image whose interrupted edit to finish or roll back; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn recover(args: RecoverArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        recover_one(&args, image)
    })
}

fn recover_one(args: &RecoverArgs, image: &Path) -> Result<Outcome> {
    let report = ops::recover::recover(image)?;
    emit(args.json, &report, |r| {
        if r.recovered {
            format!("{}: interrupted edit recovered", r.image)
        } else {
            format!("{}: no interrupted edit pending", r.image)
        }
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "A job killed while it wrote the overlay (`--writable`) leaves committed transactions in the \
ext3 journal. Readers (ls, seal, export) already see them replayed; this writes them home, clears \
needs_recovery as e2fsck does, and (OCI-SIF) updates the overlay digest, manifest and config so the \
image verifies. Crash-safe: a killed run leaves the image as before or as after.

Exit status with --check: 0 no recovery needed, 1 recovery needed, 2 error.

Examples:
  sifovl recover-overlay image.oci.sif           # replay the journal, fix the digests
  sifovl recover-overlay --check image.oci.sif   # is it needed?
  sifovl recover-overlay --json native.sif       # native SIF: overlay partition"
)]
pub struct RecoverOverlayArgs {
    /// The image whose overlay's journal to replay; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// Change nothing; exit 1 if the overlay's journal needs recovery.
    #[arg(long)]
    pub check: bool,
    /// Recover even if SIF signatures will no longer verify.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn recover_overlay(args: RecoverOverlayArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        recover_overlay_one(&args, image)
    })
}

fn recover_overlay_one(args: &RecoverOverlayArgs, image: &Path) -> Result<Outcome> {
    let options = ops::recover_overlay::RecoverOverlayOptions {
        check_only: args.check,
        force: args.force,
    };
    let report = ops::recover_overlay::recover_overlay(image, &options)?;
    warn_invalidated(
        &report.invalidated_signatures,
        report.dropped_cosign_entries,
    );
    emit(args.json, &report, |r| {
        let what = match (r.first_transaction, r.last_transaction) {
            (Some(first), Some(last)) => format!(
                "{} committed transaction{} ({first}..={last}), {} block{}",
                r.transactions,
                if r.transactions == 1 { "" } else { "s" },
                r.blocks_replayed,
                if r.blocks_replayed == 1 { "" } else { "s" }
            ),
            _ => "no committed transactions".to_string(),
        };
        if !r.needs_recovery {
            format!("{}: the overlay's journal needs no recovery", r.image)
        } else if !r.recovered {
            format!("{}: the overlay's journal needs recovery: {what}", r.image)
        } else {
            let digests = match (&r.overlay_digest, &r.manifest_digest) {
                (Some(o), Some(m)) => format!("; overlay now {o}, manifest {m}"),
                _ => String::new(),
            };
            format!(
                "{}: replayed {what} into the overlay ({} bytes written){digests}",
                r.image, r.bytes_written
            )
        }
    })?;
    Ok(if args.check && report.needs_recovery {
        Outcome::CheckFailed
    } else {
        Outcome::Success
    })
}

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl seal image.oci.sif                     # gzip squashfs layer, owners kept
  sifovl seal --root-owned image.oci.sif        # every owner 0:0, as SingularityCE does
  sifovl seal --compression zstd:19 image.oci.sif
  sifovl seal --keep-aufs-markers image.oci.sif # .wh.* files kept, as SingularityCE does
  sifovl seal --force native.sif                # native SIF: squashfs overlay partition")]
pub struct SealArgs {
    /// The image whose writable overlay becomes read-only; several may be given.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub batch: super::batch::BatchArgs,
    /// gzip[:1-9] (default, as mksquashfs), zstd[:1-22], xz or lz4.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Squashfs block size: bytes, or with a unit (128K, 1M); a power of two from 4K to 1M.
    #[arg(long, default_value = "128K", value_parser = super::units::block, value_name = "SIZE")]
    pub block_size: u32,
    /// Map every owner to 0:0, as the reference `overlay seal` does.
    #[arg(long)]
    pub root_owned: bool,
    /// Keep fuse-overlayfs's AUFS markers (.wh.NAME, .wh..wh..opq files) as they are, as
    /// the reference does; by default they become OverlayFS whiteouts and opaque xattrs,
    /// which the kernel's overlayfs honours too.
    #[arg(long)]
    pub keep_aufs_markers: bool,
    /// Seal even if SIF signatures will no longer verify.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn seal(args: SealArgs) -> Result<Outcome> {
    super::batch::run(&args.images, args.batch, args.json, |image| {
        seal_one(&args, image)
    })
}

fn seal_one(args: &SealArgs, image: &Path) -> Result<Outcome> {
    let options = ops::seal::SealOptions {
        compression: sifovl::fs::squashfs::Compression::parse(&args.compression)?,
        block_size: args.block_size,
        root_owned: args.root_owned,
        force: args.force,
        // Reproducible builds' convention; otherwise the current time, as mksquashfs.
        mkfs_time: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok()),
        keep_aufs_markers: args.keep_aufs_markers,
    };
    let report = ops::seal::seal(image, &options)?;
    warn_invalidated(
        &report.invalidated_signatures,
        report.dropped_cosign_entries,
    );
    warn_upper(&report.aufs_markers.warnings);
    emit(args.json, &report, |r| {
        let mut text = format!(
            "{}: sealed {} entries of a {} MiB overlay into a {}-byte squashfs (object {} at offset {}); file {} -> {} bytes",
            r.image,
            r.entries,
            r.overlay_size >> 20,
            r.squashfs_size,
            r.object,
            r.offset,
            r.file_size_before,
            r.file_size_after
        );
        let c = &r.aufs_markers;
        if c.whiteouts + c.opaque_markers > 0 {
            text.push_str(&format!(
                "\n  fuse-overlayfs markers converted: {} .wh. files -> 0/0 whiteouts, {} .wh..wh..opq -> opaque xattrs",
                c.whiteouts, c.opaque_markers
            ));
        }
        text
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl mksquashfs rootfs/ layer.sqfs
  sifovl mksquashfs --compression zstd:19 --mkfs-time 0 rootfs/ layer.sqfs   # reproducible")]
pub struct MksquashfsArgs {
    /// Directory to pack (symlinks are stored, not followed; xattrs and hard links kept).
    pub dir: PathBuf,
    /// The squashfs image to create (overwritten).
    pub output: PathBuf,
    /// gzip[:1-9] (default, as mksquashfs), zstd[:1-22], xz or lz4.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Block size: bytes, or with a unit (128K, 1M); a power of two from 4K to 1M.
    #[arg(long, default_value = "128K", value_parser = super::units::block, value_name = "SIZE")]
    pub block_size: u32,
    /// Superblock time (seconds since the epoch); default now.
    #[arg(long)]
    pub mkfs_time: Option<u32>,
    /// Compression threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn mksquashfs(args: MksquashfsArgs) -> Result<Outcome> {
    use sifovl::fs::squashfs::{Compression, WriterOptions};
    let report = ops::pack::mksquashfs(
        &args.dir,
        &args.output,
        WriterOptions {
            compression: Compression::parse(&args.compression)?,
            block_size: args.block_size,
            mkfs_time: args.mkfs_time,
            threads: args.threads,
        },
    )?;
    emit(args.json, &report, |r| {
        format!("{}: {} entries, {} bytes", r.output, r.entries, r.size)
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl ls image.oci.sif                 # what the writable overlay holds (upper/ and work/)
  sifovl ls --layer 0 --hash image.oci.sif
  sifovl ls --json image.sif | jq '.[] | select(.whiteout)'")]
pub struct LsArgs {
    /// The SIF or OCI-SIF image to list.
    pub image: PathBuf,
    /// List OCI layer N (or partition N of a native SIF) instead of the overlay.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Also print the sha256 of every file.
    #[arg(long)]
    pub hash: bool,
    /// Print the entries as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn ls(args: LsArgs) -> Result<Outcome> {
    let target = match args.layer {
        Some(n) => ops::browse::Target::Layer(n),
        None => ops::browse::Target::Overlay,
    };
    let entries = ops::browse::list(&args.image, target, args.hash)?;
    if args.json {
        print_json(&entries)?;
    } else {
        write_out(&super::render::listing(&entries))?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(after_help = "Examples:
  sifovl mktar rootfs/ layer.tar.gz
  sifovl mktar --compression zstd:3 rootfs/ layer.tar.zst")]
pub struct MktarArgs {
    /// Directory to pack.
    pub dir: PathBuf,
    /// The tar layer to create (overwritten).
    pub output: PathBuf,
    /// none, gzip[:1-9] or zstd[:1-22]; default from OUTPUT's name: `.tar` none,
    /// `.tar.zst` zstd:3, otherwise gzip:6.
    #[arg(long)]
    pub compression: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn print_layer(report: &ops::pack::LayerReport, json: bool) -> Result<()> {
    emit(json, report, |r| {
        format!(
            "{}: {} entries, {} bytes\n  digest  {}\n  diff_id {}",
            r.output, r.entries, r.size, r.digest, r.diff_id
        )
    })
}

pub fn mktar(args: MktarArgs) -> Result<Outcome> {
    let report = ops::pack::mktar(
        &args.dir,
        &args.output,
        tar_compression(args.compression.as_deref(), &args.output)?,
    )?;
    print_layer(&report, args.json)?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "The layer's OverlayFS whiteouts (0/0 devices, opaque xattrs) become AUFS
whiteouts (.wh.NAME, .wh..wh..opq), as Docker and Podman expect in tar layers. Without
--layer, the last layer; when that is the writable ext3 overlay, its upper/ is exported
(fuse-overlayfs's markers read as deletions and opaque directories).

Examples:
  sifovl export-layer --layer 0 image.oci.sif layer0.tar.gz
  sifovl export-layer --layer 1 --compression zstd image.oci.sif top.tar.zst"
)]
pub struct ExportLayerArgs {
    /// The SIF or OCI-SIF image holding the layer.
    pub image: PathBuf,
    /// The tar layer to create (overwritten).
    pub output: PathBuf,
    /// OCI layer index (default: the last layer, or the writable overlay's upper/).
    #[arg(long)]
    pub layer: Option<usize>,
    /// none, gzip[:1-9] or zstd[:1-22]; default from OUTPUT's name: `.tar` none,
    /// `.tar.zst` zstd:3, otherwise gzip:6.
    #[arg(long)]
    pub compression: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn export_layer(args: ExportLayerArgs) -> Result<Outcome> {
    let target = match args.layer {
        Some(n) => ops::browse::Target::Layer(n),
        None => ops::browse::Target::Overlay,
    };
    let report = ops::pack::export_layer(
        &args.image,
        target,
        &args.output,
        tar_compression(args.compression.as_deref(), &args.output)?,
    )?;
    warn_upper(&report.warnings);
    print_layer(&report, args.json)?;
    Ok(Outcome::Success)
}

/// An explicit `--compression` wins; otherwise the output file's name decides.
fn tar_compression(
    explicit: Option<&str>,
    output: &std::path::Path,
) -> Result<sifovl::fs::tar::TarCompression> {
    match explicit {
        Some(text) => sifovl::fs::tar::TarCompression::parse(text),
        None => Ok(ops::pack::tar_compression_for(output)),
    }
}
