//! One image, opened and resolved once: a native SIF or an OCI-SIF, with its writable
//! overlay, so every operation asks the same questions the same way ("which format", "where
//! is the overlay", "is it signed") instead of each writing its own.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use crate::digest::{Digest, hash_range_sparse};
use crate::error::{Error, Result};
use crate::fs::overlay::read_ext3_header;
use crate::journal;
use crate::ocisif::{self, Layer, OciImage};
use crate::sif::Container;

/// The two kinds of SIF sifovl edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// A SIF that embeds an OCI image (SingularityCE's `--oci` mode).
    #[serde(rename = "oci-sif")]
    OciSif,
    /// A native SIF: a root filesystem partition, perhaps overlay partitions.
    #[serde(rename = "native")]
    Native,
}

impl Format {
    /// How a person calls it.
    pub fn display_name(self) -> &'static str {
        match self {
            Format::OciSif => "OCI-SIF",
            Format::Native => "native SIF",
        }
    }
}

/// Where the writable ext3 overlay lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// SIF object id.
    pub object: u32,
    /// Byte offset of the ext3 image in the file.
    pub offset: u64,
    /// Size of the SIF object.
    pub size: u64,
}

/// An open image: its file (locked), its SIF metadata and, for an OCI-SIF, its image.
pub(crate) struct Image {
    /// The path as the user gave it, for messages.
    pub name: String,
    /// The open file, locked shared (read) or exclusive (edit).
    pub file: File,
    /// The SIF header and descriptors.
    pub container: Container,
    /// The resolved OCI image (`None` for a native SIF).
    pub oci: Option<OciImage>,
}

impl Image {
    /// Open to read: shared lock, interrupted edits recovered first.
    pub(crate) fn open_read(path: &Path) -> Result<Image> {
        let file = journal::open_for_read(path)?;
        Image::resolve(path, file)
    }

    /// Open to edit: exclusive lock, interrupted edits recovered first.
    pub(crate) fn open_edit(path: &Path) -> Result<Image> {
        let file = journal::open_for_edit(path)?;
        Image::resolve(path, file)
    }

    fn resolve(path: &Path, file: File) -> Result<Image> {
        let name = path.display().to_string();
        let container = super::objects::read_container(path, &file)?;
        let oci = if ocisif::is_oci_sif(&container).map_err(|e| e.context(&name))? {
            Some(ocisif::read_image(&file, &container).map_err(|e| e.context(&name))?)
        } else {
            None
        };
        Ok(Image {
            name,
            file,
            container,
            oci,
        })
    }

    /// Which kind of SIF this is.
    pub(crate) fn format(&self) -> Format {
        if self.oci.is_some() {
            Format::OciSif
        } else {
            Format::Native
        }
    }

    /// The OCI image, or the error an OCI-only operation gives on a native SIF.
    pub(crate) fn require_oci(&self) -> Result<&OciImage> {
        self.oci.as_ref().ok_or_else(|| {
            Error::unsupported(format!(
                "{}: not an OCI-SIF (no OCI.RootIndex object)",
                self.name
            ))
        })
    }

    /// The writable ext3 overlay: the last layer of an OCI-SIF when it is ext3, or the ext3
    /// overlay partition of a native SIF.
    pub(crate) fn writable_overlay(&self) -> Option<Overlay> {
        match &self.oci {
            Some(image) => image.overlay().map(|l| Overlay {
                object: l.object,
                offset: l.offset,
                size: l.object_size,
            }),
            None => self
                .container
                .writable_overlay_partition()
                .map(|d| Overlay {
                    object: d.id,
                    offset: d.offset,
                    size: d.size,
                }),
        }
    }

    /// The writable overlay, or the refusal of an operation that needs one.
    pub(crate) fn require_overlay(&self) -> Result<Overlay> {
        self.writable_overlay().ok_or_else(|| self.no_overlay())
    }

    fn no_overlay(&self) -> Error {
        Error::refused(match self.format() {
            Format::OciSif => format!(
                "{}: image does not contain a writable overlay (last layer is not ext3)",
                self.name
            ),
            Format::Native => format!(
                "{}: image does not contain a writable overlay partition",
                self.name
            ),
        })
    }

    /// SIF signature objects that still match. An edit that would invalidate them is
    /// refused unless `force`;
    /// `consequence` says what the edit would do ("sealing would invalidate them") and
    /// `action` names it for the hint ("seal").
    pub(crate) fn refuse_if_signed(
        &self,
        force: bool,
        consequence: &str,
        action: &str,
    ) -> Result<Vec<u32>> {
        // Signatures an earlier edit already broke cannot be broken again: only intact
        // ones need --force.
        let signatures = crate::sif::signature::intact_signatures(&self.file, &self.container);
        if !signatures.is_empty() && !force {
            return Err(Error::refused(format!(
                "{}: signed with SIF signatures (objects {signatures:?}); {consequence}. Use --force to {action} anyway",
                self.name
            )));
        }
        Ok(signatures)
    }

    /// The OCI image and its ext3 overlay layer, or the refusal of an operation on the
    /// overlay of an OCI-SIF (`reconcile`).
    pub(crate) fn require_oci_overlay(&self) -> Result<(&OciImage, &Layer)> {
        let image = self.require_oci()?;
        match image.overlay() {
            Some(layer) => Ok((image, layer)),
            None => Err(self.no_overlay()),
        }
    }

    /// sha256 of the writable overlay's bytes, checking on the way that its header is still
    /// one the runtime accepts (one sequential pass). Errors name the overlay object.
    pub(crate) fn hash_overlay(&self) -> Result<Digest> {
        let overlay = self.require_overlay()?;
        let what = format!("overlay (object {})", overlay.object);
        read_ext3_header(&self.file, overlay.offset, overlay.size)
            // Holes (a sparse overlay's unused blocks) are hashed without being read.
            .and_then(|_| hash_range_sparse(&self.file, overlay.offset, overlay.size))
            .map_err(|e| e.context(&what))
    }
}
