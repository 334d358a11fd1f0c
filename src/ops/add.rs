//! `add`: give an image a writable ext3 overlay — the last layer of an OCI-SIF (the
//! reference's `overlay create`), or an overlay partition of a native SIF.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Format, Image, new_layer_offset, replace_with_new_layer};
use crate::digest::{Digest, HashingReader, hash_pieces_sparse};
use crate::error::{Error, Result, ResultExt};
use crate::fs::overlay::{
    CreateOverlay, Fixed, HEADER_LEN, check_ext3_header, read_ext3_header, write_overlay,
};
use crate::fs::target::Target;
use crate::journal::Edit;
use crate::oci::{Config, Descriptor, Manifest, MediaType};
use crate::ocisif::{BlobData, NewBlob, OciImage};
use crate::sif::{Arch, Container, FsType, ObjectSpec, PartType};

/// The largest ext3 filesystem (2^32 blocks of 4 KiB), in MiB.
const EXT3_MAX_MIB: u64 = 16 << 20;

/// Refuse a size that cannot work before any work is done: beyond ext3's limit, or (when
/// not sparse) more than the free space where the image lives.
fn check_room(path: &Path, name: &str, options: &AddOptions) -> Result<()> {
    let mib = options.size_mib;
    if mib > EXT3_MAX_MIB {
        return Err(Error::refused(format!(
            "{name}: an overlay of {mib} MiB is beyond ext3's 16 TiB limit"
        )));
    }
    if !options.sparse {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(stat) = rustix::fs::statvfs(dir) {
            let free_mib = stat.f_bavail.saturating_mul(stat.f_frsize) >> 20;
            if mib > free_mib {
                return Err(Error::refused(format!(
                    "{name}: an overlay of {mib} MiB needs that much free space beside the image; {free_mib} MiB available (--sparse writes only the blocks in use)"
                )));
            }
        }
    }
    Ok(())
}

/// Options of `sifovl add`.
#[derive(Debug, Clone)]
pub struct AddOptions {
    /// Overlay size in MiB.
    pub size_mib: u64,
    /// Leave unwritten overlay blocks as holes in the SIF.
    pub sparse: bool,
    /// Directories to create inside `upper/` (absolute or relative to it).
    pub create_dirs: Vec<String>,
    /// Use this existing ext3 image instead of making one.
    pub from: Option<PathBuf>,
    /// Make the overlay with this host directory's tree in `upper/`.
    pub from_dir: Option<PathBuf>,
    /// Fixed UUID, hash seed and time for the new overlay (reproducible output).
    pub fixed: Option<Fixed>,
    /// Add even though SIF signatures will no longer verify.
    pub force: bool,
    /// Owner of `upper/` and `work/`.
    pub uid: u32,
    /// Group of `upper/` and `work/`.
    pub gid: u32,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            size_mib: crate::fs::overlay::MIN_OVERLAY_MIB,
            sparse: false,
            create_dirs: Vec::new(),
            from: None,
            from_dir: None,
            fixed: None,
            force: false,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }
}

/// What `add` did.
#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    /// The image path.
    pub image: String,
    /// OCI-SIF or native SIF.
    pub format: Format,
    /// The SIF object that holds the overlay.
    pub object: u32,
    /// Byte offset of the overlay in the file.
    pub offset: u64,
    /// Overlay size in bytes.
    pub size: u64,
    /// The overlay's digest (OCI-SIF only).
    pub digest: Option<String>,
    /// The new manifest's digest (OCI-SIF only).
    pub manifest_digest: Option<String>,
    /// Cosign entries dropped because the new manifest invalidates them.
    pub dropped_cosign_entries: usize,
    /// SIF signature objects that no longer verify after the edit.
    pub invalidated_signatures: Vec<u32>,
}

/// Add an overlay to the image at `path`.
pub fn add_overlay(path: &Path, options: &AddOptions) -> Result<AddReport> {
    let Image {
        name,
        file,
        mut container,
        oci,
    } = {
        let image = Image::open_edit(path)?;
        // Refuse early, before building an overlay.
        image.refuse_if_signed(options.force, "an overlay would invalidate them", "add it")?;
        if let Some(existing) = image.writable_overlay() {
            let hint = match image.format() {
                Format::OciSif => "",
                Format::Native => "; remove it first with `sifovl remove-overlay`",
            };
            return Err(Error::refused(format!(
                "{}: writable overlay already exists in image (object {}){hint}",
                image.name, existing.object
            )));
        }
        image
    };
    let signatures = container.signatures();
    match &options.from {
        None => check_room(path, &name, options)?,
        Some(from) if from.is_dir() => {
            return Err(Error::refused(format!(
                "{}: a directory; --from takes an ext3 image file (for a directory's tree in the overlay, use --from-dir)",
                from.display()
            )));
        }
        Some(_) => {}
    }
    if let Some(dir) = &options.from_dir
        && !dir.is_dir()
    {
        return Err(Error::refused(format!(
            "{}: --from-dir takes a directory",
            dir.display()
        )));
    }

    let mut report = AddReport {
        image: name.clone(),
        format: if oci.is_some() {
            Format::OciSif
        } else {
            Format::Native
        },
        object: 0,
        offset: 0,
        size: 0,
        digest: None,
        manifest_digest: None,
        dropped_cosign_entries: 0,
        invalidated_signatures: signatures,
    };
    let mut edit = Edit::begin(path, &file)?;
    // A full descriptor table shows here already: the overlay's place is planned first.
    let source = write_overlay_in_place(&mut edit, &container, oci.as_ref(), options)
        .map_err(|e| super::with_capacity_hint(report.format, e).context(&name))?;
    report.size = source.size;
    match &oci {
        Some(image) => add_oci_layer(image, &mut container, &mut edit, &source, &mut report),
        None => add_native_partition(&mut container, &mut edit, &source, &mut report),
    }
    .map_err(|e| super::with_capacity_hint(report.format, e).context(&name))?;
    edit.commit()?;
    Ok(report)
}

/// The new overlay, written to its final place in the image but for its head (the bytes
/// over the old image's last objects, staged apart until the commit copies them in).
struct NewOverlay {
    /// Its final place.
    dst: u64,
    /// Where its first `head_len` bytes are staged.
    head_at: u64,
    head_len: u64,
    size: u64,
    /// Its digest (computed for OCI-SIF).
    digest: Option<Digest>,
    /// Leave its all-zero blocks as holes.
    sparse: bool,
}

/// Write the overlay (made by our ext3 writer, or copied from `--from`) straight to where
/// the image's layout will put it: its content is written once, and a new overlay's unused
/// blocks are never written at all, so hashing it is the one pass over its size.
fn write_overlay_in_place(
    edit: &mut Edit<'_>,
    container: &Container,
    oci: Option<&OciImage>,
    options: &AddOptions,
) -> Result<NewOverlay> {
    let from = match &options.from {
        Some(from) => Some(open_existing(from)?),
        None => None,
    };
    let size = match &from {
        Some((_, size)) => *size,
        None => options.size_mib.saturating_mul(1 << 20),
    };
    let dst = match oci {
        Some(image) => {
            let placeholder = Digest::of(b"sifovl: the overlay's digest, not yet known");
            let (manifest, config) = with_overlay_layer(image, &placeholder, size);
            new_layer_offset(container, image, manifest, &config, placeholder, size)?
        }
        None => {
            let mut probe = container.clone();
            let time = probe.time_for_edit();
            probe
                .plan_add(overlay_partition(container, size)?, time)?
                .offset
        }
    };
    let (head_at, head_len) = edit.place_directly(dst, size)?;
    let target = Target::split(edit.file(), dst, head_at, head_len)
        .with_write_hook(crate::journal::staged_write);
    let digest = match from {
        Some((source, _)) => {
            let digest = copy_existing(&source, target, size, options.sparse)?;
            oci.map(|_| digest)
        }
        None => {
            let create = CreateOverlay {
                size_mib: options.size_mib,
                create_dirs: options.create_dirs.clone(),
                uid: options.uid,
                gid: options.gid,
                from_dir: options.from_dir.clone(),
                fixed: options.fixed,
            };
            write_overlay(target, &create)?;
            // Never hand the runtime a header it would refuse.
            let mut header = [0u8; HEADER_LEN];
            target
                .read_exact_at(&mut header, 0)
                .context("reading back the new overlay's header")?;
            check_ext3_header(&header)?;
            if !options.sparse {
                target
                    .allocate(size)
                    .context("allocating the overlay's blocks")?;
            }
            match oci {
                Some(_) => Some(hash_pieces_sparse(edit.file(), &target.pieces(size))?),
                None => None,
            }
        }
    };
    Ok(NewOverlay {
        dst,
        head_at,
        head_len,
        size,
        digest,
        sparse: options.sparse,
    })
}

/// The ext3 image of `--from`, checked, and its size.
fn open_existing(from: &Path) -> Result<(File, u64)> {
    let source = File::open(from).with_context(|| from.display())?;
    let size = source.metadata().with_context(|| from.display())?.len();
    let header = read_ext3_header(&source, 0, size).map_err(|e| e.context(from.display()))?;
    if header.needs_recovery {
        return Err(Error::refused(format!(
            "{}: the ext3 journal needs recovery; run `e2fsck -fy` on it first",
            from.display()
        )));
    }
    Ok((source, size))
}

/// Copy `size` bytes of `source` to `target`, hashing them on the way (one read, one
/// write); with `sparse`, all-zero chunks are left as holes.
fn copy_existing(source: &File, target: Target<'_>, size: u64, sparse: bool) -> Result<Digest> {
    const CHUNK: usize = 1 << 20;
    let mut reader = HashingReader::new(source);
    let mut buf = vec![0u8; CHUNK];
    let progress = crate::progress::task("writing", size);
    target
        .set_len_at_least(size)
        .context("extending the image for the overlay")?;
    let mut done = 0u64;
    while done < size {
        crate::interrupt::check()?;
        let n = (size - done).min(CHUNK as u64) as usize;
        reader
            .read_exact(&mut buf[..n])
            .context("reading the --from image")?;
        if !(sparse && buf[..n].iter().all(|&b| b == 0)) {
            target
                .write_all_at(&buf[..n], done)
                .context("writing the overlay")?;
        }
        progress.advance(n as u64);
        done += n as u64;
    }
    Ok(reader.digest())
}

/// `image`'s manifest and config with the overlay layer `digest` on top.
fn with_overlay_layer(image: &OciImage, digest: &Digest, size: u64) -> (Manifest, Config) {
    let mut manifest = image.manifest.clone();
    let mut config = image.config.clone();
    manifest.push_layer(&Descriptor {
        media_type: MediaType::Ext3Layer,
        size,
        digest: *digest,
    });
    if image.has_image_config() {
        config.push_diff_id(digest);
        config.push_empty_history();
    }
    (manifest, config)
}

/// The overlay partition of a native SIF: in the primary partition's group, which is the
/// only one the runtime stacks overlays of, with its architecture.
fn overlay_partition(container: &Container, size: u64) -> Result<ObjectSpec> {
    let (group, arch) = match container.primary_partition() {
        Some(p) => (p.group().unwrap_or(1), p.partition()?.arch),
        None => (1, container.header().arch),
    };
    let arch = if arch == Arch::Unknown {
        Arch::host()
    } else {
        arch
    };
    Ok(ObjectSpec::partition(
        FsType::Ext3,
        PartType::Overlay,
        arch,
        group,
        size,
    ))
}

/// The layout must put the overlay where it was written; anything else is a bug.
fn check_place(overlay: &NewOverlay, offset: u64) -> Result<()> {
    if overlay.dst == offset {
        Ok(())
    } else {
        Err(Error::malformed(format!(
            "internal: the overlay was written at {} but the layout puts it at {offset}",
            overlay.dst
        )))
    }
}

fn add_oci_layer(
    image: &OciImage,
    container: &mut Container,
    edit: &mut Edit<'_>,
    source: &NewOverlay,
    report: &mut AddReport,
) -> Result<()> {
    let size = source.size;
    let digest = source
        .digest
        .ok_or_else(|| Error::malformed("internal: an OCI-SIF overlay without its digest"))?;
    let (manifest, config) = with_overlay_layer(image, &digest, size);
    let offset = new_layer_offset(container, image, manifest.clone(), &config, digest, size)?;
    check_place(source, offset)?;
    let new_blob = NewBlob {
        digest,
        size,
        data: BlobData::Placed {
            head_at: source.head_at,
            head_len: source.head_len,
            sparse: source.sparse,
        },
    };
    let placed = replace_with_new_layer(
        container, edit, image, manifest, &config, new_blob, "overlay",
    )?;
    report.manifest_digest = Some(placed.manifest_digest.to_string());
    report.object = placed.object;
    report.offset = placed.offset;
    report.digest = Some(digest.to_string());
    report.dropped_cosign_entries = image.cosign.len();
    Ok(())
}

fn add_native_partition(
    container: &mut Container,
    edit: &mut Edit<'_>,
    source: &NewOverlay,
    report: &mut AddReport,
) -> Result<()> {
    let old_metadata = container.metadata_bytes();
    let time = container.time_for_edit();
    let placed = container.plan_add(overlay_partition(container, source.size)?, time)?;
    check_place(source, placed.offset)?;
    if source.head_len > 0 {
        edit.copy(
            source.head_at,
            placed.offset,
            source.head_len,
            source.sparse,
        );
    }
    edit.set_final_len(container.data_end());
    edit.write_changed_sectors(&old_metadata, &container.metadata_bytes());
    report.object = placed.id;
    report.offset = placed.offset;
    Ok(())
}
