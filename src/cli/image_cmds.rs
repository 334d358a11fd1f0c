//! Image conversion commands: import and export between OCI layouts/archives and OCI-SIF.

use std::path::PathBuf;

use clap::Args;

use sifovl::Result;
use sifovl::fs::squashfs::{Compression, WriterOptions};
use sifovl::oci::Platform;
use sifovl::ops;

use super::Outcome;
use super::output::emit;

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention, when set.
fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
}

#[derive(Args)]
#[command(
    after_help = "SOURCE is an OCI image layout directory (DIR or oci:DIR[:TAG]), an OCI
archive (oci-archive:FILE[:TAG]) or a `docker save` archive (docker-archive:FILE[:NAME:TAG]).

By default every layer is squashed into one squashfs layer, as `singularity pull --oci`
does: whiteouts applied, hard links kept, nothing unpacked to disk. An image whose layers
are squashfs already (an exported OCI-SIF) is stored unmodified, digests and all.
SOURCE_DATE_EPOCH, when set, fixes every time sifovl writes (reproducible images).

Examples:
  sifovl import ./layout app.oci.sif
  sifovl import oci:./layout:v1.2 app.oci.sif
  skopeo copy docker://alpine:3 oci-archive:alpine.tar && sifovl import oci-archive:alpine.tar alpine.oci.sif
  docker save app:latest -o app.tar && sifovl import docker-archive:app.tar app.oci.sif
  sifovl import --keep-layers --platform linux/arm64 ./layout app-arm64.oci.sif"
)]
pub struct ImportArgs {
    /// The image to import (see below).
    pub source: String,
    /// The OCI-SIF to create.
    pub output: PathBuf,
    /// One squashfs layer per source layer instead of one for the whole image.
    #[arg(long)]
    pub keep_layers: bool,
    /// os/arch[/variant] to pick from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Squashfs compression: gzip[:1-9] (default, as SingularityCE), zstd[:1-22], xz or lz4.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn import(args: ImportArgs) -> Result<Outcome> {
    let source = ops::import::ImportSource::parse(&args.source)?;
    let epoch = source_date_epoch();
    let options = ops::import::ImportOptions {
        keep_layers: args.keep_layers,
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        squashfs: WriterOptions {
            compression: Compression::parse(&args.compression)?,
            mkfs_time: epoch.map(|t| t.clamp(0, u32::MAX as i64) as u32),
            ..WriterOptions::default()
        },
        created: epoch,
        force: args.force,
        ..ops::import::ImportOptions::default()
    };
    let report = ops::import::import(&source, &args.output, &options)?;
    for warning in &report.warnings {
        eprintln!("sifovl: warning: {warning}");
    }
    emit(args.json, &report, |r| {
        let mut text = format!(
            "{}: {} layer(s) {}, {} bytes\n  from {} (manifest {})\n  manifest {}",
            r.output,
            r.layers.len(),
            match r.mode {
                ops::import::ImportMode::Unmodified => "stored unmodified",
                ops::import::ImportMode::Squashed => "squashed into squashfs",
                ops::import::ImportMode::KeepLayers => "converted to squashfs",
            },
            r.size,
            r.source,
            r.source_manifest,
            r.manifest
        );
        for layer in &r.layers {
            text.push_str(&format!(
                "\n  layer {} {} bytes {}",
                layer.digest, layer.size, layer.media_type
            ));
        }
        text
    })?;
    Ok(Outcome::Success)
}

#[derive(Args)]
#[command(
    after_help = "DEST is an OCI image layout directory (DIR or oci:DIR[:TAG]; created, or the
image is added to it), an OCI archive (oci-archive:FILE[:TAG]) or a `docker load`-able
archive (docker-archive:FILE[:NAME:TAG]).

--layer-format squashfs (the default, except for docker-archive) copies every blob byte for
byte: the manifest digest stays the SIF's. --layer-format tar makes an image Docker and
Podman run: squashfs layers become gzip tar layers with AUFS whiteouts, and a writable ext3
overlay becomes a tar layer of its upper/ as it is now (no seal or reconcile needed).

Examples:
  sifovl export app.oci.sif ./layout                       # OCI layout, squashfs layers
  sifovl export --layer-format tar app.oci.sif oci-archive:app.tar:v1
  sifovl export app.oci.sif docker-archive:app.tar:app:v1 && docker load -i app.tar
  skopeo copy oci-archive:app.tar docker://registry.example.org/app:v1"
)]
pub struct ExportArgs {
    /// The OCI-SIF to export.
    pub image: PathBuf,
    /// Where to write it (see below).
    pub dest: String,
    /// squashfs (as stored) or tar (Docker/Podman-runnable).
    #[arg(long, value_name = "FORMAT")]
    pub layer_format: Option<String>,
    /// Tag the image (overrides a tag given in DEST).
    #[arg(long)]
    pub tag: Option<String>,
    /// Tar layer compression: gzip[:1-9] (default gzip:6), zstd[:1-22] (OCI manifests only) or none.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Replace an existing archive file.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn export(args: ExportArgs) -> Result<Outcome> {
    use ops::export::{ExportDest, ExportOptions, LayerFormat};
    let (dest, tag) = ExportDest::parse(&args.dest)?;
    let layer_format = match args.layer_format.as_deref() {
        Some("squashfs") => LayerFormat::Squashfs,
        Some("tar") => LayerFormat::Tar,
        Some(other) => {
            return Err(sifovl::error::Error::refused(format!(
                "--layer-format {other}: expected squashfs or tar"
            )));
        }
        // Docker cannot run squashfs layers: a docker archive gets tar unless asked.
        None if matches!(dest, ExportDest::DockerArchive { .. }) => LayerFormat::Tar,
        None => LayerFormat::Squashfs,
    };
    let options = ExportOptions {
        layer_format,
        tag: args.tag.or(tag),
        compression: sifovl::fs::tar::TarCompression::parse(&args.compression)?,
        force: args.force,
    };
    let report = ops::export::export(&args.image, &dest, &options)?;
    for warning in &report.warnings {
        eprintln!("sifovl: warning: {warning}");
    }
    emit(args.json, &report, |r| {
        let mut text = format!(
            "{}{}: {} layer(s) as {}\n  manifest {}",
            r.destination,
            r.tag
                .as_deref()
                .map(|t| format!(" (tag {t})"))
                .unwrap_or_default(),
            r.layers.len(),
            match r.layer_format {
                ops::export::LayerFormat::Squashfs => "stored (squashfs)",
                ops::export::LayerFormat::Tar => "tar",
            },
            r.manifest
        );
        for layer in &r.layers {
            text.push_str(&format!(
                "\n  layer {} {} bytes {}",
                layer.digest, layer.size, layer.media_type
            ));
        }
        text
    })?;
    Ok(Outcome::Success)
}
