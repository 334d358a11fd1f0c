//! `inspect`: the image at a glance.

use std::path::Path;

use serde::Serialize;

use super::{open_for_read, signature_objects};
use crate::error::Result;
use crate::fs::overlay::read_ext3_header;
use crate::ocisif;
use crate::sif::{DataType, FsType, PartType};

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub index: usize,
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    pub object: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverlayInfo {
    pub object: u32,
    pub offset: u64,
    pub size: u64,
    pub filesystem: String,
    /// Whether the ext3 journal needs recovery (the writing job was killed).
    pub needs_recovery: bool,
    /// The digest the image records for it (OCI-SIF only).
    pub recorded_digest: Option<String>,
    /// Whether the recorded digests match the bytes (only with `--hash`).
    pub in_sync: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CosignInfo {
    pub ref_name: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub image: String,
    /// `oci-sif` or `native`.
    pub format: &'static str,
    pub objects: usize,
    pub file_size: u64,
    pub index_digest: Option<String>,
    pub manifest_media_type: Option<String>,
    pub manifest_digest: Option<String>,
    pub config_media_type: Option<String>,
    pub config_digest: Option<String>,
    pub layers: Vec<LayerInfo>,
    pub overlay: Option<OverlayInfo>,
    pub cosign: Vec<CosignInfo>,
    /// SIF signature objects (PGP / DSSE / legacy).
    pub signatures: Vec<u32>,
}

/// Describe the image at `path`; with `hash`, also hash the overlay to tell whether its
/// recorded digests are in sync.
pub fn inspect(path: &Path, hash: bool) -> Result<InspectReport> {
    let name = path.display().to_string();
    let (file, container) = open_for_read(path)?;
    let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut report = InspectReport {
        image: name.clone(),
        format: "native",
        objects: container.objects().count(),
        file_size,
        index_digest: None,
        manifest_media_type: None,
        manifest_digest: None,
        config_media_type: None,
        config_digest: None,
        layers: Vec::new(),
        overlay: None,
        cosign: Vec::new(),
        signatures: signature_objects(&container),
    };
    if ocisif::is_oci_sif(&container).map_err(|e| e.context(&name))? {
        report.format = "oci-sif";
        let image = ocisif::read_image(&file, &container).map_err(|e| e.context(&name))?;
        report.index_digest = Some(crate::oci::Digest::of(&image.index_bytes).to_string());
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
        if let Some(layer) = image.overlay() {
            let header = read_ext3_header(&file, layer.offset, layer.object_size)
                .map_err(|e| e.context(&name))?;
            let in_sync = if hash {
                let actual =
                    super::reconcile::hash_overlay(&file, layer).map_err(|e| e.context(&name))?;
                let ids = image.config.diff_ids("config").unwrap_or_default();
                let diff_ok = !image.has_image_config() || ids.last() == Some(&actual);
                Some(actual == layer.descriptor.digest && actual == layer.object_digest && diff_ok)
            } else {
                None
            };
            report.overlay = Some(OverlayInfo {
                object: layer.object,
                offset: layer.offset,
                size: layer.object_size,
                filesystem: "ext3".into(),
                needs_recovery: header.needs_recovery,
                recorded_digest: Some(layer.descriptor.digest.to_string()),
                in_sync,
            });
        }
    } else if let Some(d) = container.objects().find(|d| {
        d.data_type == DataType::Partition
            && d.partition()
                .is_ok_and(|p| p.part_type == PartType::Overlay && p.fs_type == FsType::Ext3)
    }) {
        let header = read_ext3_header(&file, d.offset, d.size).map_err(|e| e.context(&name))?;
        report.overlay = Some(OverlayInfo {
            object: d.id,
            offset: d.offset,
            size: d.size,
            filesystem: "ext3".into(),
            needs_recovery: header.needs_recovery,
            recorded_digest: None,
            in_sync: None,
        });
    }
    Ok(report)
}

/// Human-readable form of a report.
pub fn render(report: &InspectReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Image:      {}", report.image);
    let _ = writeln!(
        s,
        "Format:     {}",
        if report.format == "oci-sif" {
            "OCI-SIF"
        } else {
            "native SIF"
        }
    );
    let _ = writeln!(
        s,
        "Objects:    {} ({} bytes)",
        report.objects, report.file_size
    );
    if let Some(d) = &report.manifest_digest {
        let _ = writeln!(
            s,
            "Manifest:   {d} ({})",
            report.manifest_media_type.as_deref().unwrap_or("")
        );
    }
    if let Some(d) = &report.config_digest {
        let _ = writeln!(
            s,
            "Config:     {d} ({})",
            report.config_media_type.as_deref().unwrap_or("")
        );
    }
    if !report.layers.is_empty() {
        let _ = writeln!(s, "Layers:");
        for l in &report.layers {
            let short = l.media_type.rsplit('.').next().unwrap_or(&l.media_type);
            let _ = writeln!(
                s,
                "  {:>2}  {:<9} {:>12} bytes  object {:<3} offset {:<10} {}",
                l.index, short, l.size, l.object, l.offset, l.digest
            );
        }
    }
    match &report.overlay {
        Some(o) => {
            let sync = match o.in_sync {
                Some(true) => ", digests in sync",
                Some(false) => ", digests OUT OF SYNC (run `sifovl reconcile`)",
                None => "",
            };
            let recovery = if o.needs_recovery {
                ", journal needs recovery"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "Overlay:    {} object {} at offset {}, {} bytes{recovery}{sync}",
                o.filesystem, o.object, o.offset, o.size
            );
        }
        None => {
            let _ = writeln!(s, "Overlay:    none");
        }
    }
    for c in &report.cosign {
        let _ = writeln!(s, "Cosign:     {} {}", c.ref_name, c.digest);
    }
    if !report.signatures.is_empty() {
        let _ = writeln!(
            s,
            "Signatures: SIF signature objects {:?}",
            report.signatures
        );
    }
    s
}
