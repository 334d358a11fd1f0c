//! Packing pipelines: a directory into a squashfs image or a tar layer, and an image's
//! squashfs layer into a tar layer with AUFS whiteouts (what Docker and Podman run).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use serde::Serialize;

use super::browse::{self, Target};
use crate::error::{Result, ResultExt};
use crate::fs::dir::DirSource;
use crate::fs::entry::{EntrySource, copy_entries};
use crate::fs::squashfs::{SquashfsReader, SquashfsWriter, WriterOptions};
use crate::fs::tar::{TarCompression, TarLayerWriter};
use crate::fs::whiteout::ToAufs;

/// What `mksquashfs` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SquashfsReport {
    /// The image written.
    pub output: String,
    /// Entries packed.
    pub entries: u64,
    /// Bytes of the image.
    pub size: u64,
}

/// What a tar-layer pipeline wrote.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The layer written.
    pub output: String,
    /// Entries packed.
    pub entries: u64,
    /// sha256 of the layer as stored (compressed): its OCI digest.
    pub digest: String,
    /// sha256 of the uncompressed tar stream: its `diff_id`.
    pub diff_id: String,
    /// Stored size.
    pub size: u64,
}

/// Pack the directory `dir` into the squashfs image `output` (created or overwritten).
pub fn mksquashfs(dir: &Path, output: &Path, options: WriterOptions) -> Result<SquashfsReport> {
    let mut source = DirSource::new(dir)?;
    let file = File::create(output).with_context(|| output.display())?;
    let mut writer = SquashfsWriter::new(&file, 0, options)?;
    let entries = copy_entries(&mut source, &mut writer)?;
    let size = writer.finish()?;
    file.set_len(size).with_context(|| output.display())?;
    Ok(SquashfsReport {
        output: output.display().to_string(),
        entries,
        size,
    })
}

/// Pack the directory `dir` into the tar layer `output` (created or overwritten).
pub fn mktar(dir: &Path, output: &Path, compression: TarCompression) -> Result<LayerReport> {
    let mut source = DirSource::new(dir)?;
    write_tar(&mut source, output, compression)
}

/// Write squashfs layer `target` of the image at `image` as a tar layer with AUFS
/// whiteouts: the tar conversion a registry push needs.
pub fn export_layer(
    image: &Path,
    target: Target,
    output: &Path,
    compression: TarCompression,
) -> Result<LayerReport> {
    let (file, offset, size) = browse::locate(image, target)?;
    let reader = SquashfsReader::open(&file, offset, size)
        .map_err(|e| e.context(format!("{}: layer", image.display())))?;
    let mut source = ToAufs::new(reader.walk()?);
    write_tar(&mut source, output, compression)
}

fn write_tar(
    source: &mut dyn EntrySource,
    output: &Path,
    compression: TarCompression,
) -> Result<LayerReport> {
    let file = File::create(output).with_context(|| output.display())?;
    let mut writer = TarLayerWriter::new(BufWriter::new(file), compression)?;
    let entries = copy_entries(source, &mut writer)?;
    let digests = writer.finish()?;
    Ok(LayerReport {
        output: output.display().to_string(),
        entries,
        digest: digests.digest.to_string(),
        diff_id: digests.diff_id.to_string(),
        size: digests.size,
    })
}
