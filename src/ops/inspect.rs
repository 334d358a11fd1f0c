//! `inspect`: the image at a glance.

use std::path::Path;

use serde::Serialize;

use super::{Format, Image};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::overlay::read_ext3_header;
use crate::oci::MediaType;
use crate::sif::signature::check_signatures;
use crate::sif::{DataType, Link, PartType};

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

/// One partition of a native SIF.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    /// The SIF object.
    pub object: u32,
    /// Its object group (`None`: no group).
    pub group: Option<u32>,
    /// Filesystem (`Squashfs`, `Ext3`, ...).
    pub filesystem: String,
    /// Partition type (`*System` for the primary, `Overlay`, ...).
    pub partition_type: String,
    /// Architecture.
    pub arch: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A SIF signature object.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    /// The signature's object.
    pub object: u32,
    /// What it signs ("group 1", "object 2").
    pub signs: String,
    /// The signing key's fingerprint, when recorded.
    pub fingerprint: Option<String>,
    /// Whether its digests still match the image (only with `--hash`; `verify` checks it
    /// too).
    pub matches: Option<bool>,
    /// Why it does not match.
    pub detail: Option<String>,
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
    /// Native SIF: its filesystem partitions, in descriptor order.
    pub partitions: Vec<PartitionInfo>,
    /// Native SIF: a read-only (sealed) overlay partition on top of the root filesystem.
    pub sealed_overlays: Vec<u32>,
    /// Native SIF: the image's labels (from SingularityCE's metadata object).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The header's architecture.
    pub arch: String,
    /// SIF signature objects (PGP / DSSE / legacy).
    pub signatures: Vec<SignatureInfo>,
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
        partitions: Vec::new(),
        sealed_overlays: Vec::new(),
        labels: Default::default(),
        arch: opened.container.header().arch.to_string(),
        signatures: Vec::new(),
    };
    report.signatures = if hash {
        check_signatures(&opened.file, &opened.container)
            .into_iter()
            .map(|s| SignatureInfo {
                object: s.object,
                signs: s.signs,
                fingerprint: s.fingerprint,
                matches: Some(s.matches),
                detail: (!s.matches).then_some(s.detail),
            })
            .collect()
    } else {
        opened
            .container
            .objects()
            .filter(|d| d.data_type == DataType::Signature)
            .map(|d| SignatureInfo {
                object: d.id,
                signs: match d.link() {
                    Link::Group(g) => format!("group {g}"),
                    Link::Object(id) => format!("object {id}"),
                    Link::None => "nothing".into(),
                },
                fingerprint: d
                    .extra
                    .get(4..24)
                    .filter(|f| f.iter().any(|&b| b != 0))
                    .map(hex::encode_upper),
                matches: None,
                detail: None,
            })
            .collect()
    };
    if opened.oci.is_none() {
        describe_native(&opened, &mut report);
    }
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

/// Partitions, sealed overlays and labels of a native SIF.
fn describe_native(opened: &Image, report: &mut InspectReport) {
    let primary_group = opened.container.primary_partition().and_then(|d| d.group());
    for d in opened.container.partitions(|_| true) {
        let Ok(p) = d.partition() else { continue };
        report.partitions.push(PartitionInfo {
            object: d.id,
            group: d.group(),
            filesystem: p.fs_type.display_name().unwrap_or("Unknown").to_string(),
            partition_type: p.part_type.display_name().unwrap_or("Unknown").to_string(),
            arch: p.arch.to_string(),
            offset: d.offset,
            size: d.size,
        });
        if p.part_type == PartType::Overlay
            && p.fs_type == crate::sif::FsType::Squashfs
            && d.group() == primary_group
        {
            report.sealed_overlays.push(d.id);
        }
    }
    // SingularityCE's metadata: a JSON.Generic object with data.attributes.labels.
    for d in opened
        .container
        .objects()
        .filter(|d| d.data_type == DataType::GenericJson && d.size <= 1 << 20)
    {
        let mut buf = vec![0u8; d.size as usize];
        if std::os::unix::fs::FileExt::read_exact_at(&opened.file, &mut buf, d.offset).is_err() {
            continue;
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&buf) else {
            continue;
        };
        if let Some(labels) = json["data"]["attributes"]["labels"].as_object() {
            for (k, v) in labels {
                let value = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                report.labels.insert(k.clone(), value);
            }
        }
    }
}
