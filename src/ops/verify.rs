//! `verify`: hash every blob (in parallel) and check every reference and the compatibility
//! invariants of the OCI-SIF spec (section 9) that can be checked on one file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use super::{Format, Image};
use crate::digest::{Digest, hash_ranges};
use crate::error::{Error, Result};
use crate::fs::overlay::read_ext3_header;
use crate::fs::squashfs;
use crate::fs::tar::decompressor;
use crate::oci::{Descriptor, Manifest, MediaType};
use crate::ocisif::{self, OciImage};
use crate::sif::signature::{SignatureFormat, check_signatures};
use crate::sif::{Container, DataType, FsType, PartType};

/// One named check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The image path.
    pub image: String,
    /// OCI-SIF or native SIF (`None` when not even the SIF structure could be read).
    pub format: Option<Format>,
    /// Whether every check passed.
    pub ok: bool,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Findings that fail no check but need attention (an overlay journal that needs
    /// recovery).
    pub warnings: Vec<String>,
}

struct Checks(Vec<Check>);

impl Checks {
    fn check(&mut self, name: impl Into<String>, failures: Vec<String>) {
        self.0.push(Check {
            name: name.into(),
            ok: failures.is_empty(),
            detail: failures.join("; "),
        });
    }
}

/// Verify the image at `path`. A file that cannot be opened is an error; one whose SIF
/// structure or OCI image cannot be read is a report whose last check failed.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let name = path.display().to_string();
    let file = crate::journal::open_for_read(path)?;
    // A directory is no image at all: an error (exit 2) as for every other command, not a
    // report whose first check failed (exit 1).
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(crate::error::Error::io(
            format!("{name}: reading global header"),
            std::io::ErrorKind::IsADirectory.into(),
        ));
    }
    let mut checks = Checks(Vec::new());
    let unreadable = |checks: Checks, format: Option<Format>| VerifyReport {
        image: name.clone(),
        format,
        ok: false,
        checks: checks.0,
        warnings: Vec::new(),
    };
    let container = match super::objects::read_container(path, &file) {
        Ok(container) => container,
        Err(e) => {
            checks.check(
                "SIF header and descriptor table are readable",
                vec![e.to_string()],
            );
            return Ok(unreadable(checks, None));
        }
    };
    checks.check("SIF header and descriptor table are readable", vec![]);
    let oci = match ocisif::is_oci_sif(&container).and_then(|is| {
        is.then(|| ocisif::read_image(&file, &container))
            .transpose()
    }) {
        Ok(oci) => oci,
        Err(e) => {
            checks.check(
                "OCI image (RootIndex, manifest, config) is readable",
                vec![e.to_string()],
            );
            return Ok(unreadable(checks, Some(Format::OciSif)));
        }
    };
    if oci.is_some() {
        checks.check(
            "OCI image (RootIndex, manifest, config) is readable",
            vec![],
        );
    }
    let opened = Image {
        name: name.clone(),
        file,
        container,
        oci,
    };
    let file_len = opened.file.metadata().map(|m| m.len()).unwrap_or(0);

    let end = opened.container.data_end();
    checks.check(
        "SIF structure: file ends at the end of the last object",
        if file_len == end {
            vec![]
        } else {
            vec![format!(
                "file is {file_len} bytes, last object ends at {end}"
            )]
        },
    );
    match &opened.oci {
        Some(image) => verify_oci(&opened.file, &opened.container, image, &mut checks),
        None => verify_native(&opened.file, &opened.container, &mut checks),
    }
    for signature in check_signatures(&opened.file, &opened.container) {
        let format = match signature.format {
            Some(SignatureFormat::Pgp) => "OpenPGP",
            Some(SignatureFormat::Dsse) => "DSSE",
            Some(SignatureFormat::Legacy) => "legacy OpenPGP",
            None => "undecodable",
        };
        let verdict = if signature.matches {
            "still matches the data it signs"
        } else {
            "no longer matches the data it signs"
        };
        checks.check(
            format!(
                "SIF signature object {} ({format}, signs {}): {verdict}",
                signature.object, signature.signs
            ),
            if signature.matches {
                vec![]
            } else {
                vec![signature.detail]
            },
        );
    }
    let ok = checks.0.iter().all(|c| c.ok);
    let mut warnings = Vec::new();
    if let Some(overlay) = opened.writable_overlay()
        && read_ext3_header(&opened.file, overlay.offset, overlay.size)
            .is_ok_and(|h| h.needs_recovery)
    {
        let warning = format!(
            "the overlay's ext3 journal needs recovery (a job writing it was killed): readers see \
             it replayed, its bytes are not; run `sifovl recover-overlay {}`",
            opened.name
        );
        warnings.push(warning);
    }
    Ok(VerifyReport {
        image: opened.name.clone(),
        format: Some(opened.format()),
        ok,
        checks: checks.0,
        warnings,
    })
}

fn verify_native(file: &File, container: &Container, checks: &mut Checks) {
    let mut failures = Vec::new();
    let primary_group = container.primary_partition().and_then(|d| d.group());
    for d in container.partitions(|p| p.part_type == PartType::Overlay) {
        let Ok(p) = d.partition() else { continue };
        if primary_group.is_some() && d.group() != primary_group {
            failures.push(format!(
                "overlay object {} is not in the primary partition's group, the runtime ignores it",
                d.id
            ));
        }
        let usable = match p.fs_type {
            FsType::Ext3 => read_ext3_header(file, d.offset, d.size).map(|_| ()),
            FsType::Squashfs => check_squashfs_magic(file, d.offset, d.size),
            _ => Ok(()),
        };
        if let Err(e) = usable {
            failures.push(format!("object {}: {e}", d.id));
        }
    }
    checks.check(
        "native overlay partitions are usable by the runtime",
        failures,
    );
}

fn check_squashfs_magic(file: &File, offset: u64, size: u64) -> Result<()> {
    if size < 2048 {
        return Err(Error::malformed(format!(
            "squashfs of {size} bytes is shorter than 2048"
        )));
    }
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, offset)
        .map_err(|e| Error::io("reading squashfs magic", e))?;
    if magic != squashfs::MAGIC {
        return Err(Error::malformed("no squashfs magic `hsqs`"));
    }
    Ok(())
}

/// The uncompressed digest of a compressed tar layer (for `diff_id` checks).
fn uncompressed_digest(file: &File, offset: u64, size: u64) -> Result<Digest> {
    let mut decoded = decompressor(BufReader::new(RangeReader {
        file,
        pos: offset,
        end: offset + size,
    }))?;
    Digest::of_reader(&mut decoded)
        .map(|(d, _)| d)
        .map_err(|e| Error::malformed(format!("decompressing layer: {e}")))
}

/// `end - pos` bytes of `file` from `pos`, as a reader.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn verify_oci(file: &File, container: &Container, image: &OciImage, checks: &mut Checks) {
    let oci_objects: Vec<&crate::sif::Descriptor> = container
        .objects()
        .filter(|d| matches!(d.data_type, DataType::OciBlob | DataType::OciRootIndex))
        .collect();
    checks.check(
        "only OCI.RootIndex and OCI.Blob objects",
        object_types(container),
    );
    checks.check(
        "OCI objects are in group 1, unlinked, unnamed and packed",
        object_framing(&oci_objects),
    );
    let (mismatches, duplicates) = object_digests(file, image, &oci_objects);
    checks.check("every object's digest matches its bytes", mismatches);
    checks.check("no two objects share a digest", duplicates);
    checks.check(
        "every reference resolves, with its size, and nothing is orphaned",
        references(file, container, image, &oci_objects),
    );
    checks.check(
        "RootIndex holds exactly one image entry describing the manifest",
        root_index(image),
    );
    checks.check(
        "config rootfs.diff_ids match the layers",
        diff_ids(file, image),
    );
    checks.check(
        "layers are squashfs, with at most a final ext3 overlay",
        layer_formats(file, image),
    );
}

/// Invariant 2: one RootIndex, everything else OCI.Blob (or a SIF signature).
fn object_types(container: &Container) -> Vec<String> {
    container
        .objects()
        .filter(|d| {
            !matches!(
                d.data_type,
                DataType::OciBlob | DataType::OciRootIndex | DataType::Signature
            )
        })
        .map(|d| format!("object {} is {:?}", d.id, d.data_type))
        .collect()
}

/// Invariant 3: OCI objects are group 1, unlinked, unnamed, unpadded.
fn object_framing(oci_objects: &[&crate::sif::Descriptor]) -> Vec<String> {
    oci_objects
        .iter()
        .filter(|d| {
            d.group() != Some(1)
                || d.linked_id != 0
                || !d.name.is_empty()
                || d.size_with_padding != d.size
        })
        .map(|d| format!("object {} (group/link/name/padding)", d.id))
        .collect()
}

/// Invariants 5 and 6: every object's recorded digest is the sha256 of its bytes, and no
/// two objects record the same digest. Returns (mismatches, duplicates).
fn object_digests(
    file: &File,
    image: &OciImage,
    oci_objects: &[&crate::sif::Descriptor],
) -> (Vec<String>, Vec<String>) {
    let jobs: Vec<(u32, u64, u64)> = oci_objects
        .iter()
        .map(|d| (d.id, d.offset, d.size))
        .collect();
    let hashes: HashMap<u32, Result<Digest>> = hash_ranges(file, &jobs).into_iter().collect();
    let mut mismatches = Vec::new();
    let mut by_digest: HashMap<Option<Digest>, Vec<u32>> = HashMap::new();
    for d in oci_objects {
        let recorded = d.oci_digest().ok();
        by_digest.entry(recorded).or_default().push(d.id);
        let recorded_text = recorded.map(|r| r.to_string()).unwrap_or_default();
        match &hashes[&d.id] {
            Ok(actual) if Some(*actual) == recorded => {}
            Ok(actual) => {
                // Name what the object is: only a changed overlay is reconcile's to fix.
                let layer = image.layers.iter().position(|l| l.object == d.id);
                let what = match layer {
                    Some(i) if image.overlay().is_some_and(|o| o.object == d.id) => format!(
                        " (layer {i}, the writable overlay, changed: run `sifovl reconcile`)"
                    ),
                    Some(i) => format!(
                        " (layer {i} is damaged; reconcile cannot repair it: restore the image)"
                    ),
                    None => String::new(),
                };
                mismatches.push(format!(
                    "object {} records {recorded_text} but holds {actual}{what}",
                    d.id
                ))
            }
            Err(e) => mismatches.push(format!("object {}: {e}", d.id)),
        }
    }
    let mut duplicates: Vec<String> = by_digest
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(d, ids)| {
            let text = d.map(|d| d.to_string()).unwrap_or_default();
            format!("{text} held by objects {ids:?}")
        })
        .collect();
    duplicates.sort();
    (mismatches, duplicates)
}

/// Invariant 7: references resolve with the right sizes; no orphans.
fn references(
    file: &File,
    container: &Container,
    image: &OciImage,
    oci_objects: &[&crate::sif::Descriptor],
) -> Vec<String> {
    let mut referenced = vec![
        image.index_object,
        image.manifest_object,
        image.config_object,
    ];
    let mut refs = Vec::new();
    let size_of = |id: u32| container.object(id).map(|d| d.size).unwrap_or(0);
    let check_size = |what: &str, desc: &Descriptor, id: u32, refs: &mut Vec<String>| {
        if desc.size != size_of(id) {
            refs.push(format!(
                "{what} {}: descriptor says {} bytes, object {id} holds {}",
                desc.digest,
                desc.size,
                size_of(id)
            ));
        }
    };
    check_size(
        "manifest",
        &image.image.descriptor,
        image.manifest_object,
        &mut refs,
    );
    check_size(
        "config",
        &image.config_descriptor,
        image.config_object,
        &mut refs,
    );
    for (i, l) in image.layers.iter().enumerate() {
        referenced.push(l.object);
        check_size("layer", &l.descriptor, l.object, &mut refs);
        if l.descriptor.digest != l.object_digest {
            refs.push(format!(
                "layer {i}: the manifest names {} but object {} records {} (an interrupted sync: run `sifovl reconcile`)",
                l.descriptor.digest, l.object, l.object_digest
            ));
        }
    }
    for c in &image.cosign {
        match cosign_objects(file, container, &c.descriptor) {
            Ok(ids) => referenced.extend(ids),
            Err(e) => refs.push(format!(
                "cosign entry {}: {e}",
                c.ref_name.as_deref().unwrap_or("")
            )),
        }
        let expected = format!("_cosign:sha256-{}", image.image.descriptor.digest.hex());
        if !c
            .ref_name
            .as_deref()
            .is_some_and(|n| n.starts_with(&expected))
        {
            refs.push(format!(
                "cosign entry {:?} does not name the image's manifest",
                c.ref_name
            ));
        }
    }
    let orphans: Vec<u32> = oci_objects
        .iter()
        .map(|d| d.id)
        .filter(|id| !referenced.contains(id))
        .collect();
    if !orphans.is_empty() {
        refs.push(format!(
            "objects {orphans:?} are referenced by nothing (orphans)"
        ));
    }
    refs
}

/// Invariants 8 and 9: the RootIndex entry describes the manifest bytes.
fn root_index(image: &OciImage) -> Vec<String> {
    let mut problems = Vec::new();
    if image.index.schema_version() != Some(2) {
        problems.push("schemaVersion is not 2".to_string());
    }
    if Digest::of(&image.manifest_bytes) != image.image.descriptor.digest {
        problems.push("manifest digest differs from its bytes".to_string());
    }
    if image
        .image
        .ref_name
        .as_deref()
        .is_some_and(|n| !n.is_empty())
    {
        problems.push(
            "the image entry carries a ref.name annotation: push would not find it".to_string(),
        );
    }
    problems
}

/// Invariant 11: one diff_id per layer, each the digest of the layer's uncompressed bytes.
fn diff_ids(file: &File, image: &OciImage) -> Vec<String> {
    let mut problems = Vec::new();
    if !image.has_image_config() {
        return problems;
    }
    let ids = image.config.diff_ids();
    if ids.len() != image.layers.len() {
        problems.push(format!(
            "{} diff_ids for {} layers",
            ids.len(),
            image.layers.len()
        ));
    }
    for (i, (l, id)) in image.layers.iter().zip(ids).enumerate() {
        let expected = match l.descriptor.media_type {
            MediaType::SquashfsLayer | MediaType::Ext3Layer => Ok(l.descriptor.digest),
            _ => uncompressed_digest(file, l.offset, l.object_size),
        };
        match expected {
            Ok(e) if e == *id => {}
            Ok(e) => problems.push(format!("layer {i}: diff_id {id}, expected {e}")),
            Err(e) => problems.push(format!("layer {i}: {e}")),
        }
    }
    problems
}

/// Invariants 15-17: runnable layer formats.
fn layer_formats(file: &File, image: &OciImage) -> Vec<String> {
    let mut problems = Vec::new();
    let n = image.layers.len();
    for (i, l) in image.layers.iter().enumerate() {
        let usable = match &l.descriptor.media_type {
            MediaType::SquashfsLayer => check_squashfs_magic(file, l.offset, l.object_size),
            MediaType::Ext3Layer if i + 1 == n => {
                read_ext3_header(file, l.offset, l.object_size).map(|_| ())
            }
            MediaType::Ext3Layer => Err(Error::malformed("ext3 layer is not the last one")),
            other => Err(Error::unsupported(format!(
                "{other} cannot be run by SingularityCE"
            ))),
        };
        if let Err(e) = usable {
            problems.push(format!("layer {i}: {e}"));
        }
    }
    problems
}

/// The objects a cosign entry uses (manifest, config, layers).
fn cosign_objects(file: &File, container: &Container, desc: &Descriptor) -> Result<Vec<u32>> {
    let manifest_id = ocisif::find_blob(container, &desc.digest)?;
    let bytes = ocisif::read_small_object(file, container, manifest_id, "cosign manifest")?;
    let manifest = Manifest::parse(&bytes, "cosign manifest")?;
    let mut ids = vec![
        manifest_id,
        ocisif::find_blob(container, &manifest.config().digest)?,
    ];
    for l in manifest.layers() {
        ids.push(ocisif::find_blob(container, &l.digest)?);
    }
    Ok(ids)
}
