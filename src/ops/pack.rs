//! Packing pipelines: a directory into a squashfs image or a tar layer, and an image's
//! squashfs layer into a tar layer with AUFS whiteouts (what Docker and Podman run).

use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use super::browse::{self, Target};
use crate::error::{Error, Result, ResultExt};
use crate::fs::dir::DirSource;
use crate::fs::entry::{EntrySource, copy_entries};
use crate::fs::ext::ExtFs;
use crate::fs::squashfs::{SquashfsReader, SquashfsWriter, WriterOptions};
use crate::fs::tar::{LayerDigests, TarCompression, TarLayerWriter};
use crate::fs::whiteout::{ToAufs, UpperToOverlayfs};

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
    /// Tar members written (as `tar -t` lists them; the root is implied).
    pub entries: u64,
    /// sha256 of the layer as stored (compressed): its OCI digest.
    pub digest: String,
    /// sha256 of the uncompressed tar stream: its `diff_id`.
    pub diff_id: String,
    /// Stored size.
    pub size: u64,
    /// Entries of an overlay's upper/ handled by a fallback rule of the AUFS-marker
    /// conversion (docs/whiteouts.md); empty for squashfs layers and directories.
    pub warnings: Vec<String>,
}

/// The output of a packer: a temporary file beside it (0666 less the umask, as any new
/// file), renamed over it once complete by [`Output::finish`]. A failure or a signal then
/// leaves no partial output (the temporary file goes when dropped), and a file that is
/// both input and output is never truncated before it is read.
struct Output {
    temp: tempfile::NamedTempFile,
}

impl Output {
    fn create(output: &Path) -> Result<Output> {
        if output.is_dir() {
            return Err(Error::io(
                output.display().to_string(),
                std::io::ErrorKind::IsADirectory.into(),
            ));
        }
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".sifovl-pack-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .with_context(|| format!("{}: creating a temporary file", dir.display()))?;
        Ok(Output { temp })
    }

    /// An output inside the directory being packed is not packed into itself (as
    /// mksquashfs leaves out its destination): neither it nor the temporary file.
    fn exclude_from(&self, source: &mut DirSource, output: &Path) {
        source.exclude(output);
        source.exclude(self.temp.path());
    }

    fn file(&self) -> &File {
        self.temp.as_file()
    }

    fn finish(self, output: &Path) -> Result<()> {
        self.temp.persist(output).map_err(|e| {
            Error::io(
                format!(
                    "{}: renaming the finished file into place",
                    output.display()
                ),
                e.error,
            )
        })?;
        Ok(())
    }
}

/// Pack the directory `dir` into the squashfs image `output` (created or overwritten).
pub fn mksquashfs(dir: &Path, output: &Path, options: WriterOptions) -> Result<SquashfsReport> {
    let mut source = DirSource::new(dir)?;
    let out = Output::create(output)?;
    out.exclude_from(&mut source, output);
    let mut writer = SquashfsWriter::new(out.file(), 0, options)?;
    let entries = copy_entries(&mut source, &mut writer)?;
    let size = writer.finish()?;
    out.file().set_len(size).with_context(|| output.display())?;
    out.finish(output)?;
    Ok(SquashfsReport {
        output: output.display().to_string(),
        entries,
        size,
    })
}

/// The compression a tar layer's file name asks for: `.tar` none, `.tar.zst`/`.tzst` zstd,
/// `.tar.gz`/`.tgz` (and anything else) gzip, as Docker and Podman write layers.
pub fn tar_compression_for(output: &Path) -> TarCompression {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar") {
        TarCompression::None
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        TarCompression::Zstd { level: 3 }
    } else {
        TarCompression::Gzip { level: 6 }
    }
}

/// Pack the directory `dir` into the tar layer `output` (created or overwritten).
pub fn mktar(dir: &Path, output: &Path, compression: TarCompression) -> Result<LayerReport> {
    let mut source = DirSource::new(dir)?;
    let out = Output::create(output)?;
    out.exclude_from(&mut source, output);
    write_tar(&mut source, out, output, compression)
}

/// Write squashfs layer `target` of the image at `image` as a tar layer with AUFS
/// whiteouts: the tar conversion a registry push needs. When `target` is the writable ext3
/// overlay, its `upper/` is the layer, read as both overlay drivers write it
/// (`UpperToOverlayfs`).
pub fn export_layer(
    image: &Path,
    target: Target,
    output: &Path,
    compression: TarCompression,
) -> Result<LayerReport> {
    let (file, offset, size) = browse::locate(image, target)?;
    // Replacing the image by one of its layers is never what was meant.
    if let (Ok(a), Ok(b)) = (file.metadata(), std::fs::metadata(output))
        && (a.dev(), a.ino()) == (b.dev(), b.ino())
    {
        return Err(Error::refused(format!(
            "{}: is the image itself; refusing to overwrite it with a layer",
            output.display()
        )));
    }
    let out = Output::create(output)?;
    let tar = layer_as_tar(&file, offset, size, BufWriter::new(out.file()), compression)
        .map_err(|e| e.context(format!("{}: layer", image.display())))?;
    out.finish(output)?;
    Ok(LayerReport {
        output: output.display().to_string(),
        entries: tar.members,
        digest: tar.digests.digest.to_string(),
        diff_id: tar.digests.diff_id.to_string(),
        size: tar.digests.size,
        warnings: tar.warnings,
    })
}

/// A layer converted to tar.
pub(crate) struct TarLayer {
    pub digests: LayerDigests,
    /// Tar members written.
    pub members: u64,
    /// Fallback rules the overlay's AUFS-marker conversion applied.
    pub warnings: Vec<String>,
}

/// The squashfs layer or ext3 overlay at `offset` (`size` bytes) of `file` as a tar layer
/// with AUFS whiteouts, written to `out`. An ext3 overlay's `upper/` is the layer.
pub(crate) fn layer_as_tar<W: std::io::Write>(
    file: &File,
    offset: u64,
    size: u64,
    out: W,
    compression: TarCompression,
) -> Result<TarLayer> {
    let mut magic = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut magic, offset)
        .map_err(|e| Error::io("reading the layer", e))?;
    let mut writer = TarLayerWriter::new(out, compression)?;
    let warnings = if magic == crate::fs::squashfs::MAGIC {
        let reader = SquashfsReader::open(file, offset, size)?;
        let mut source = ToAufs::new(reader.walk()?);
        copy_entries(&mut source, &mut writer)?;
        Vec::new()
    } else {
        let ext = ExtFs::open(file, offset, size)?;
        let upper = UpperToOverlayfs::new(ext.walk_dir(b"upper")?);
        let mut source = ToAufs::new(upper);
        copy_entries(&mut source, &mut writer)?;
        source.into_inner().into_report().warnings
    };
    let members = writer.members();
    Ok(TarLayer {
        digests: writer.finish()?,
        members,
        warnings,
    })
}

fn write_tar(
    source: &mut dyn EntrySource,
    out: Output,
    output: &Path,
    compression: TarCompression,
) -> Result<LayerReport> {
    let mut writer = TarLayerWriter::new(BufWriter::new(out.file()), compression)?;
    copy_entries(source, &mut writer)?;
    let entries = writer.members();
    let digests = writer.finish()?;
    out.finish(output)?;
    Ok(LayerReport {
        output: output.display().to_string(),
        entries,
        digest: digests.digest.to_string(),
        diff_id: digests.diff_id.to_string(),
        size: digests.size,
        warnings: Vec::new(),
    })
}
