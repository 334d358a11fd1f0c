//! An independent, minimal SIF/OCI-SIF decoder for tests, written from the spec without
//! using the library, so our writer is not checked only by our own reader.
#![allow(dead_code)]

use sha2::{Digest, Sha256};

pub const GO_ZERO: i64 = -62135596800;
pub const ROOT_INDEX: i32 = 0x400A;
pub const BLOB: i32 = 0x400B;
pub const PARTITION: i32 = 0x4004;
pub const SIGNATURE: i32 = 0x4005;

#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    pub slot: usize,
    pub dtype: i32,
    pub id: u32,
    pub group: u32,
    pub link: u32,
    pub offset: u64,
    pub size: u64,
    pub swp: u64,
    pub created: i64,
    pub modified: i64,
    pub name: Vec<u8>,
    pub extra: Vec<u8>,
}

impl Desc {
    pub fn digest(&self) -> String {
        let end = self
            .extra
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.extra.len());
        String::from_utf8(self.extra[..end].to_vec()).unwrap()
    }
    pub fn data<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.offset as usize..(self.offset + self.size) as usize]
    }
}

#[derive(Debug, Clone)]
pub struct Sif {
    pub launch: Vec<u8>,
    pub arch: [u8; 3],
    pub uuid: [u8; 16],
    pub created: i64,
    pub modified: i64,
    pub free: i64,
    pub total: i64,
    pub desc_offset: i64,
    pub desc_size: i64,
    pub data_offset: i64,
    pub data_size: i64,
    /// Used slots only, in slot order.
    pub objects: Vec<Desc>,
    /// Whether every unused slot is all zero.
    pub unused_slots_zero: bool,
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn parse(bytes: &[u8]) -> Sif {
    assert_eq!(&bytes[32..42], b"SIF_MAGIC\0", "magic");
    assert_eq!(&bytes[42..45], b"01\0", "version");
    let total = i64_at(bytes, 88);
    let desc_offset = i64_at(bytes, 96);
    let mut objects = Vec::new();
    let mut unused_slots_zero = true;
    for slot in 0..total as usize {
        let d = &bytes[desc_offset as usize + slot * 585..][..585];
        if d[4] == 0 {
            unused_slots_zero &= d.iter().all(|&b| b == 0);
            continue;
        }
        objects.push(Desc {
            slot,
            dtype: i32::from_le_bytes(d[0..4].try_into().unwrap()),
            id: u32_at(d, 5),
            group: u32_at(d, 9),
            link: u32_at(d, 13),
            offset: i64_at(d, 17) as u64,
            size: i64_at(d, 25) as u64,
            swp: i64_at(d, 33) as u64,
            created: i64_at(d, 41),
            modified: i64_at(d, 49),
            name: d[73..201].iter().copied().take_while(|&b| b != 0).collect(),
            extra: d[201..585].to_vec(),
        });
    }
    Sif {
        launch: bytes[..32].to_vec(),
        arch: bytes[45..48].try_into().unwrap(),
        uuid: bytes[48..64].try_into().unwrap(),
        created: i64_at(bytes, 64),
        modified: i64_at(bytes, 72),
        free: i64_at(bytes, 80),
        total,
        desc_offset,
        desc_size: i64_at(bytes, 104),
        data_offset: i64_at(bytes, 112),
        data_size: i64_at(bytes, 120),
        objects,
        unused_slots_zero,
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The resolved OCI image of an OCI-SIF, decoded with serde_json directly.
pub struct Oci {
    pub index: serde_json::Value,
    pub index_bytes: Vec<u8>,
    pub manifest: serde_json::Value,
    pub manifest_bytes: Vec<u8>,
    pub config: serde_json::Value,
    pub config_bytes: Vec<u8>,
}

pub fn blob<'a>(sif: &'a Sif, digest: &str) -> &'a Desc {
    let found: Vec<_> = sif
        .objects
        .iter()
        .filter(|d| d.dtype == BLOB && d.digest() == digest)
        .collect();
    assert_eq!(found.len(), 1, "exactly one object holds {digest}");
    found[0]
}

pub fn oci(sif: &Sif, file: &[u8]) -> Oci {
    let roots: Vec<_> = sif
        .objects
        .iter()
        .filter(|d| d.dtype == ROOT_INDEX)
        .collect();
    assert_eq!(roots.len(), 1, "exactly one RootIndex");
    let index_bytes = roots[0].data(file).to_vec();
    let index: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest_bytes = blob(sif, mdigest).data(file).to_vec();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let cdigest = manifest["config"]["digest"].as_str().unwrap();
    let config_bytes = blob(sif, cdigest).data(file).to_vec();
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    Oci {
        index,
        index_bytes,
        manifest,
        manifest_bytes,
        config,
        config_bytes,
    }
}

/// Spec section 9, invariants 1-11 and 15 for a deterministic OCI-SIF we wrote.
/// `verify_overlay_digest` is false between a changed overlay and the next reconcile.
pub fn assert_oci_sif_invariants(file: &[u8], verify_overlay_digest: bool) {
    let sif = parse(file);
    // 1: framing.
    assert_eq!(sif.desc_offset, 4096);
    assert_eq!(sif.desc_size, 585 * sif.total);
    assert_eq!(
        sif.free,
        sif.total - sif.objects.len() as i64,
        "DescriptorsFree"
    );
    assert!(sif.unused_slots_zero, "unused slots are zero");
    let end = sif.objects.iter().map(|d| d.offset + d.size).max().unwrap();
    assert_eq!(file.len() as u64, end, "file ends at the last object");
    assert_eq!(
        (sif.data_offset + sif.data_size) as u64,
        end,
        "DataOffset + DataSize"
    );
    // 2, 3: object kinds and framing.
    for d in &sif.objects {
        assert!(
            d.dtype == ROOT_INDEX || d.dtype == BLOB,
            "object {} type {:#x}",
            d.id,
            d.dtype
        );
        assert_eq!(d.group, 0xF000_0001, "object {} group", d.id);
        assert_eq!(d.link, 0);
        assert!(d.name.is_empty());
        assert_eq!(d.swp, d.size, "object {} packed", d.id);
        assert_eq!(d.id as usize, d.slot + 1, "id = slot + 1");
    }
    // 4: deterministic.
    assert_eq!(sif.uuid, [0; 16]);
    assert_eq!((sif.created, sif.modified), (GO_ZERO, GO_ZERO));
    assert!(sif.launch.iter().all(|&b| b == 0));
    assert_eq!(&sif.arch, b"00\0");
    for d in &sif.objects {
        assert_eq!(
            (d.created, d.modified),
            (GO_ZERO, GO_ZERO),
            "object {} times",
            d.id
        );
    }
    let o = oci(&sif, file);
    let layers = o.manifest["layers"].as_array().unwrap();
    let overlay_digest = layers
        .last()
        .filter(|l| l["mediaType"] == "application/vnd.sylabs.image.layer.v1.ext3")
        .map(|l| l["digest"].as_str().unwrap().to_string());
    // 5, 6: digests.
    let mut seen = std::collections::HashSet::new();
    for d in &sif.objects {
        let text = d.digest();
        assert!(
            text.starts_with("sha256:") && text.len() == 71,
            "digest text {text}"
        );
        assert!(d.extra[71..].iter().all(|&b| b == 0));
        assert!(seen.insert(text.clone()), "duplicate digest {text}");
        if verify_overlay_digest || Some(&text) != overlay_digest.as_ref() {
            assert_eq!(sha256(d.data(file)), text, "object {} digest", d.id);
        }
    }
    // 7: references resolve, no orphans.
    let mut referenced = vec![blob(&sif, o.index["manifests"][0]["digest"].as_str().unwrap()).id];
    referenced.push(blob(&sif, o.manifest["config"]["digest"].as_str().unwrap()).id);
    for l in layers {
        let d = blob(&sif, l["digest"].as_str().unwrap());
        assert_eq!(d.size, l["size"].as_u64().unwrap());
        referenced.push(d.id);
    }
    for d in &sif.objects {
        assert!(
            d.dtype == ROOT_INDEX || referenced.contains(&d.id),
            "orphan object {}",
            d.id
        );
    }
    // 8, 9: the RootIndex.
    assert_eq!(o.index["schemaVersion"], 2);
    assert_eq!(
        o.index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = o.index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let main = entries[0].as_object().unwrap();
    let keys: Vec<&str> = main.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["mediaType", "size", "digest", "artifactType"]);
    assert_eq!(
        main["size"].as_u64().unwrap(),
        o.manifest_bytes.len() as u64
    );
    assert_eq!(main["digest"].as_str().unwrap(), sha256(&o.manifest_bytes));
    let artifact = o
        .manifest
        .get("artifactType")
        .unwrap_or(&o.manifest["config"]["mediaType"]);
    assert_eq!(&main["artifactType"], artifact);
    // Compact JSON, no newline.
    assert!(!o.index_bytes.contains(&b'\n') && !o.manifest_bytes.contains(&b'\n'));
    // 11: diff_ids.
    let diff_ids = o.config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    for (l, id) in layers.iter().zip(diff_ids) {
        if verify_overlay_digest
            || Some(l["digest"].as_str().unwrap().to_string()) != overlay_digest
        {
            assert_eq!(l["digest"], *id);
        }
    }
    // 15: squashfs layers, optionally a final ext3.
    for (i, l) in layers.iter().enumerate() {
        let mt = l["mediaType"].as_str().unwrap();
        let last = i + 1 == layers.len();
        assert!(
            mt == "application/vnd.sylabs.image.layer.v1.squashfs"
                || (last && mt == "application/vnd.sylabs.image.layer.v1.ext3"),
            "layer {i}: {mt}"
        );
    }
}
