//! `verify`: hash every blob (in parallel) and check every reference and the compatibility
//! invariants of the OCI-SIF spec (section 9) that can be checked on one file.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use super::open_for_read;
use super::reconcile::hash_range;
use crate::error::{Error, Result};
use crate::fs::overlay::check_ext3_header;
use crate::oci::Digest;
use crate::oci::model::{self, Descriptor};
use crate::ocisif::{self, OciImage};
use crate::sif::{Container, DataType, FsType, PartType};

/// One named check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub image: String,
    pub format: &'static str,
    pub ok: bool,
    pub checks: Vec<Check>,
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

/// Verify the image at `path`.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let name = path.display().to_string();
    let (file, container) = open_for_read(path)?;
    let mut checks = Checks(Vec::new());
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);

    let end = container.data_end();
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
    let oci = ocisif::is_oci_sif(&container).map_err(|e| e.context(&name))?;
    if oci {
        // An image that cannot even be resolved is bad input, not a failed check.
        let image = ocisif::read_image(&file, &container).map_err(|e| e.context(&name))?;
        verify_oci(&file, &container, &image, &mut checks)?;
    } else {
        verify_native(&file, &container, &mut checks);
    }
    let ok = checks.0.iter().all(|c| c.ok);
    Ok(VerifyReport {
        image: name,
        format: if oci { "oci-sif" } else { "native" },
        ok,
        checks: checks.0,
    })
}

fn verify_native(file: &File, container: &Container, checks: &mut Checks) {
    let mut failures = Vec::new();
    let primary_group = container
        .objects()
        .find(|d| {
            d.data_type == DataType::Partition
                && d.partition()
                    .is_ok_and(|p| p.part_type == PartType::PrimSys)
        })
        .and_then(|d| d.group());
    for d in container
        .objects()
        .filter(|d| d.data_type == DataType::Partition)
    {
        let Ok(p) = d.partition() else { continue };
        if p.part_type != PartType::Overlay {
            continue;
        }
        if primary_group.is_some() && d.group() != primary_group {
            failures.push(format!(
                "overlay object {} is not in the primary partition's group, the runtime ignores it",
                d.id
            ));
        }
        match p.fs_type {
            FsType::Ext3 => {
                if let Err(e) = crate::fs::overlay::read_ext3_header(file, d.offset, d.size) {
                    failures.push(format!("object {}: {e}", d.id));
                }
            }
            FsType::Squashfs => {
                if let Err(e) = check_squashfs_magic(file, d.offset, d.size) {
                    failures.push(format!("object {}: {e}", d.id));
                }
            }
            _ => {}
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
    if &magic != b"hsqs" {
        return Err(Error::malformed("no squashfs magic `hsqs`"));
    }
    Ok(())
}

/// Hash every OCI object, spreading the objects over the available cores.
fn hash_objects(file: &File, jobs: &[(u32, u64, u64)]) -> HashMap<u32, Result<Digest>> {
    let queue = Mutex::new(jobs.iter());
    let results = Mutex::new(HashMap::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let Some(&(id, offset, size)) = queue.lock().unwrap().next() else {
                        break;
                    };
                    let digest = hash_range(file, offset, size);
                    results.lock().unwrap().insert(id, digest);
                }
            });
        }
    });
    results.into_inner().unwrap()
}

/// The uncompressed digest of a compressed tar layer (for `diff_id` checks).
fn uncompressed_digest(file: &File, offset: u64, size: u64) -> Result<Digest> {
    let mut reader = std::io::BufReader::new(ReadAt {
        file,
        pos: offset,
        end: offset + size,
    });
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, offset)
        .map_err(|e| Error::io("reading layer", e))?;
    let mut decoded: Box<dyn Read + '_> = if magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(&mut reader))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(&mut reader).map_err(|e| Error::io("zstd", e))?)
    } else {
        Box::new(&mut reader)
    };
    Digest::of_reader(&mut decoded)
        .map(|(d, _)| d)
        .map_err(|e| Error::malformed(format!("decompressing layer: {e}")))
}

struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
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

fn verify_oci(
    file: &File,
    container: &Container,
    image: &OciImage,
    checks: &mut Checks,
) -> Result<()> {
    // Invariant 2: one RootIndex, everything else OCI.Blob.
    let others: Vec<String> = container
        .objects()
        .filter(|d| {
            !matches!(
                d.data_type,
                DataType::OciBlob | DataType::OciRootIndex | DataType::Signature
            )
        })
        .map(|d| format!("object {} is {:?}", d.id, d.data_type))
        .collect();
    checks.check("only OCI.RootIndex and OCI.Blob objects", others);

    // Invariant 3: OCI objects are group 1, unlinked, unnamed, unpadded.
    let oci_objects: Vec<_> = container
        .objects()
        .filter(|d| matches!(d.data_type, DataType::OciBlob | DataType::OciRootIndex))
        .collect();
    let framing: Vec<String> = oci_objects
        .iter()
        .filter(|d| {
            d.group() != Some(1)
                || d.linked_id != 0
                || !d.name.is_empty()
                || d.size_with_padding != d.size
        })
        .map(|d| format!("object {} (group/link/name/padding)", d.id))
        .collect();
    checks.check(
        "OCI objects are in group 1, unlinked, unnamed and packed",
        framing,
    );

    // Invariant 5: every object's recorded digest is the sha256 of its bytes.
    let jobs: Vec<(u32, u64, u64)> = oci_objects
        .iter()
        .map(|d| (d.id, d.offset, d.size))
        .collect();
    let hashes = hash_objects(file, &jobs);
    let mut mismatches = Vec::new();
    let mut by_digest: HashMap<String, Vec<u32>> = HashMap::new();
    for d in &oci_objects {
        let recorded = d.oci_digest().unwrap_or_default();
        by_digest.entry(recorded.clone()).or_default().push(d.id);
        match &hashes[&d.id] {
            Ok(actual) if actual.to_string() == recorded => {}
            Ok(actual) => mismatches.push(format!(
                "object {} records {recorded} but holds {actual}",
                d.id
            )),
            Err(e) => mismatches.push(format!("object {}: {e}", d.id)),
        }
    }
    let overlay_hint = if image.overlay().is_some() && !mismatches.is_empty() {
        " (a changed overlay: run `sifovl reconcile`)"
    } else {
        ""
    };
    if !mismatches.is_empty() {
        let last = mismatches.len() - 1;
        mismatches[last].push_str(overlay_hint);
    }
    checks.check("every object's digest matches its bytes", mismatches);

    // Invariant 6: unique digests.
    let dups: Vec<String> = by_digest
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(d, ids)| format!("{d} held by objects {ids:?}"))
        .collect();
    checks.check("no two objects share a digest", dups);

    // Invariant 7: references resolve with the right sizes; no orphans.
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
    checks.check(
        "every reference resolves, with its size, and nothing is orphaned",
        refs,
    );

    // Invariants 8-9: the RootIndex entry describes the manifest bytes.
    let mut index_problems = Vec::new();
    if image
        .index
        .value()
        .get("schemaVersion")
        .and_then(|v| v.as_u64())
        != Some(2)
    {
        index_problems.push("schemaVersion is not 2".to_string());
    }
    if Digest::of(&image.manifest_bytes) != image.image.descriptor.digest {
        index_problems.push("manifest digest differs from its bytes".to_string());
    }
    if image
        .image
        .ref_name
        .as_deref()
        .is_some_and(|n| !n.is_empty())
    {
        index_problems.push(
            "the image entry carries a ref.name annotation: push would not find it".to_string(),
        );
    }
    checks.check(
        "RootIndex holds exactly one image entry describing the manifest",
        index_problems,
    );

    // Invariant 11: diff_ids.
    let mut diff_problems = Vec::new();
    if image.has_image_config() {
        let ids = image.config.diff_ids("config").unwrap_or_default();
        if ids.len() != image.layers.len() {
            diff_problems.push(format!(
                "{} diff_ids for {} layers",
                ids.len(),
                image.layers.len()
            ));
        }
        for (i, (l, id)) in image.layers.iter().zip(&ids).enumerate() {
            let expected = match l.descriptor.media_type.as_str() {
                model::SQUASHFS_LAYER | model::EXT3_LAYER => Ok(l.descriptor.digest),
                _ => uncompressed_digest(file, l.offset, l.object_size),
            };
            match expected {
                Ok(e) if e == *id => {}
                Ok(e) => diff_problems.push(format!("layer {i}: diff_id {id}, expected {e}")),
                Err(e) => diff_problems.push(format!("layer {i}: {e}")),
            }
        }
    }
    checks.check("config rootfs.diff_ids match the layers", diff_problems);

    // Invariants 15-17: runnable layer formats.
    let mut format_problems = Vec::new();
    let n = image.layers.len();
    for (i, l) in image.layers.iter().enumerate() {
        match l.descriptor.media_type.as_str() {
            model::SQUASHFS_LAYER => {
                if let Err(e) = check_squashfs_magic(file, l.offset, l.object_size) {
                    format_problems.push(format!("layer {i}: {e}"));
                }
            }
            model::EXT3_LAYER if i + 1 == n => {
                let mut header = [0u8; 2048];
                let r = file
                    .read_exact_at(&mut header, l.offset)
                    .map_err(|e| Error::io("reading", e))
                    .and_then(|_| check_ext3_header(&header));
                if let Err(e) = r {
                    format_problems.push(format!("layer {i}: {e}"));
                }
            }
            model::EXT3_LAYER => {
                format_problems.push(format!("layer {i}: ext3 layer is not the last one"))
            }
            other => {
                format_problems.push(format!("layer {i}: {other} cannot be run by SingularityCE"))
            }
        }
    }
    checks.check(
        "layers are squashfs, with at most a final ext3 overlay",
        format_problems,
    );
    Ok(())
}

/// The objects a cosign entry uses (manifest, config, layers).
fn cosign_objects(file: &File, container: &Container, desc: &Descriptor) -> Result<Vec<u32>> {
    let manifest_id = ocisif::find_blob(container, &desc.digest)?;
    let bytes = ocisif::read_small_object(file, container, manifest_id, "cosign manifest")?;
    let manifest = model::Manifest::parse(&bytes, "cosign manifest")?;
    let mut ids = vec![
        manifest_id,
        ocisif::find_blob(container, &manifest.config("cosign manifest")?.digest)?,
    ];
    for l in manifest.layers("cosign manifest")? {
        ids.push(ocisif::find_blob(container, &l.digest)?);
    }
    Ok(ids)
}

/// Human-readable form.
pub fn render(report: &VerifyReport) -> String {
    let mut s = String::new();
    for c in &report.checks {
        if c.ok {
            s.push_str(&format!("ok    {}\n", c.name));
        } else {
            s.push_str(&format!("FAIL  {}: {}\n", c.name, c.detail));
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        s.push_str(&format!(
            "{}: all {} checks passed\n",
            report.image,
            report.checks.len()
        ));
    } else {
        s.push_str(&format!(
            "{}: {failed} of {} checks failed\n",
            report.image,
            report.checks.len()
        ));
    }
    s
}
