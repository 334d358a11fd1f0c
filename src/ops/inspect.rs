//! `inspect`: the image at a glance.

use std::path::Path;

use serde::Serialize;

use super::{Format, Image};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::overlay::read_ext3_header;
use crate::oci::MediaType;

/// One OCI layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    /// Position in the manifest, bottom first.
    pub index: usize,
    /// The layer's media type.
    pub media_type: MediaType,
    /// Size in bytes, as the manifest records it.
    pub size: u64,
    /// The manifest's digest for it.
    pub digest: String,
    /// The SIF object that holds it.
    pub object: u32,
    /// Byte offset in the file.
    pub offset: u64,
}

/// The writable overlay.
#[derive(Debug, Clone, Serialize)]
pub struct OverlayInfo {
    /// The SIF object that holds it.
    pub object: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Its filesystem (`ext3`).
    pub filesystem: String,
    /// Whether the ext3 journal needs recovery (the writing job was killed).
    pub needs_recovery: bool,
    /// The digest the image records for it (OCI-SIF only).
    pub recorded_digest: Option<String>,
    /// Whether the recorded digests match the bytes (only with `--hash`).
    pub in_sync: Option<bool>,
}

/// A cosign signature or attestation entry of the RootIndex.
#[derive(Debug, Clone, Serialize)]
pub struct CosignInfo {
    /// Its `org.opencontainers.image.ref.name`.
    pub ref_name: String,
    /// The manifest it points at.
    pub digest: String,
}

/// What `inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// The image path.
    pub image: String,
    /// OCI-SIF or native SIF.
    pub format: Format,
    /// Number of SIF objects.
    pub objects: usize,
    /// File size in bytes.
    pub file_size: u64,
    /// Digest of the RootIndex bytes (OCI-SIF).
    pub index_digest: Option<String>,
    /// Media type of the image manifest (OCI-SIF).
    pub manifest_media_type: Option<MediaType>,
    /// Digest of the image manifest (OCI-SIF).
    pub manifest_digest: Option<String>,
    /// Media type of the config (OCI-SIF).
    pub config_media_type: Option<MediaType>,
    /// Digest of the config (OCI-SIF).
    pub config_digest: Option<String>,
    /// The OCI layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// The writable overlay, if any.
    pub overlay: Option<OverlayInfo>,
    /// Cosign entries of the RootIndex.
    pub cosign: Vec<CosignInfo>,
    /// SIF signature objects (PGP / DSSE / legacy).
    pub signatures: Vec<u32>,
}

/// Describe the image at `path`; with `hash`, also hash the overlay to tell whether its
/// recorded digests are in sync.
pub fn inspect(path: &Path, hash: bool) -> Result<InspectReport> {
    let opened = Image::open_read(path)?;
    let ctx = |e: Error| e.context(&opened.name);
    let file_size = opened.file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut report = InspectReport {
        image: opened.name.clone(),
        format: opened.format(),
        objects: opened.container.objects().count(),
        file_size,
        index_digest: None,
        manifest_media_type: None,
        manifest_digest: None,
        config_media_type: None,
        config_digest: None,
        layers: Vec::new(),
        overlay: None,
        cosign: Vec::new(),
        signatures: opened.container.signatures(),
    };
    if let Some(image) = &opened.oci {
        report.index_digest = Some(Digest::of(&image.index_bytes).to_string());
        report.manifest_media_type = Some(image.image.descriptor.media_type.clone());
        report.manifest_digest = Some(image.image.descriptor.digest.to_string());
        report.config_media_type = Some(image.config_descriptor.media_type.clone());
        report.config_digest = Some(image.config_descriptor.digest.to_string());
        report.layers = image
            .layers
            .iter()
            .enumerate()
            .map(|(index, l)| LayerInfo {
                index,
                media_type: l.descriptor.media_type.clone(),
                size: l.descriptor.size,
                digest: l.descriptor.digest.to_string(),
                object: l.object,
                offset: l.offset,
            })
            .collect();
        report.cosign = image
            .cosign
            .iter()
            .map(|c| CosignInfo {
                ref_name: c.ref_name.clone().unwrap_or_default(),
                digest: c.descriptor.digest.to_string(),
            })
            .collect();
    }
    if let Some(overlay) = opened.writable_overlay() {
        let header = read_ext3_header(&opened.file, overlay.offset, overlay.size).map_err(ctx)?;
        let (recorded_digest, in_sync) = match opened.require_oci_overlay() {
            Ok((image, layer)) => {
                let in_sync = if hash {
                    let actual = opened.hash_overlay().map_err(ctx)?;
                    Some(image.overlay_in_sync(layer, &actual))
                } else {
                    None
                };
                (Some(layer.descriptor.digest.to_string()), in_sync)
            }
            Err(_) => (None, None),
        };
        report.overlay = Some(OverlayInfo {
            object: overlay.object,
            offset: overlay.offset,
            size: overlay.size,
            filesystem: "ext3".into(),
            needs_recovery: header.needs_recovery,
            recorded_digest,
            in_sync,
        });
    }
    Ok(report)
}
