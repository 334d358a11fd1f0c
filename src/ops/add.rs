//! `add`: give an image a writable ext3 overlay — the last layer of an OCI-SIF (the
//! reference's `overlay create`), or an overlay partition of a native SIF.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Format, Image, replace_with_new_layer};
use crate::digest::HashingReader;
use crate::digest::hash_range_sparse;
use crate::error::{Error, Result, ResultExt};
use crate::fs::overlay::{CreateOverlay, Fixed, read_ext3_header, write_overlay};
use crate::journal::Edit;
use crate::oci::{Descriptor, MediaType};
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
    let source = match &options.from {
        Some(from) => stage_existing(&mut edit, from, options.sparse)?,
        None => {
            // Written straight past the live data, only its metadata and files: the rest
            // stays holes, so hashing it is the one pass over its size.
            let create = CreateOverlay {
                size_mib: options.size_mib,
                create_dirs: options.create_dirs.clone(),
                uid: options.uid,
                gid: options.gid,
                from_dir: options.from_dir.clone(),
                fixed: options.fixed,
            };
            // Staged beyond where the final layout can reach (the old end plus the
            // overlay), so the commit never moves it.
            let reach = edit.old_len() + create.size_mib.saturating_mul(1 << 20) + (1 << 20);
            let (staged, size) = edit
                .stage_with_at(reach, |f, at| write_overlay(f, at, &create))
                .map_err(|e| e.context(&name))?;
            read_ext3_header(&file, staged, size).map_err(|e| e.context(&name))?;
            let digest = if oci.is_some() {
                Some(hash_range_sparse(&file, staged, size)?)
            } else {
                None
            };
            NewOverlay {
                staged,
                size,
                digest,
                sparse: options.sparse,
            }
        }
    };
    report.size = source.size;
    match &oci {
        Some(image) => add_oci_layer(image, &mut container, &mut edit, &source, &mut report),
        None => add_native_partition(&mut container, &mut edit, &source, &mut report),
    }
    .map_err(|e| super::with_capacity_hint(report.format, e).context(&name))?;
    edit.commit()?;
    Ok(report)
}

/// Stage the existing ext3 image `from`, hashing it on the way.
fn stage_existing(edit: &mut Edit<'_>, from: &Path, sparse: bool) -> Result<NewOverlay> {
    let source = File::open(from).with_context(|| from.display())?;
    let size = source.metadata().with_context(|| from.display())?.len();
    let header = read_ext3_header(&source, 0, size).map_err(|e| e.context(from.display()))?;
    if header.needs_recovery {
        return Err(Error::refused(format!(
            "{}: the ext3 journal needs recovery; run `e2fsck -fy` on it first",
            from.display()
        )));
    }
    // One pass over the overlay: staged past the live data and hashed on the way.
    let mut reader = HashingReader::new(&source);
    let reach = edit.old_len() + size + (1 << 20);
    let staged = edit.stage(&mut reader, size, reach, sparse)?;
    Ok(NewOverlay {
        staged,
        size,
        digest: Some(reader.digest()),
        sparse,
    })
}

/// The ext3 image to add, staged past the live data.
struct NewOverlay {
    staged: u64,
    size: u64,
    /// Its digest (computed for OCI-SIF).
    digest: Option<crate::digest::Digest>,
    /// Leave its all-zero blocks as holes.
    sparse: bool,
}

fn add_oci_layer(
    image: &OciImage,
    container: &mut Container,
    edit: &mut Edit<'_>,
    source: &NewOverlay,
    report: &mut AddReport,
) -> Result<()> {
    let NewOverlay {
        staged,
        size,
        sparse,
        ..
    } = *source;
    let digest = match source.digest {
        Some(d) => d,
        None => crate::digest::hash_range_sparse(edit.file(), staged, size)?,
    };
    let layer = Descriptor {
        media_type: MediaType::Ext3Layer,
        size,
        digest,
    };
    let mut manifest = image.manifest.clone();
    manifest.push_layer(&layer);
    let mut config = image.config.clone();
    if image.has_image_config() {
        config.push_diff_id(&digest);
        config.push_empty_history();
    }
    let new_blob = NewBlob {
        digest,
        size,
        data: BlobData::Staged {
            offset: staged,
            sparse,
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
    let NewOverlay { size, sparse, .. } = *source;
    // The runtime only stacks overlay partitions of the primary partition's group.
    let (group, arch) = match container.primary_partition() {
        Some(p) => (p.group().unwrap_or(1), p.partition()?.arch),
        None => (1, container.header().arch),
    };
    let arch = if arch == Arch::Unknown {
        Arch::host()
    } else {
        arch
    };
    let old_metadata = container.metadata_bytes();
    let time = container.time_for_edit();
    let placed = container.plan_add(
        ObjectSpec::partition(FsType::Ext3, PartType::Overlay, arch, group, size),
        time,
    )?;
    edit.copy(source.staged, placed.offset, size, sparse);
    edit.set_final_len(container.data_end());
    edit.write_changed_sectors(&old_metadata, &container.metadata_bytes());
    report.object = placed.id;
    report.offset = placed.offset;
    Ok(())
}
