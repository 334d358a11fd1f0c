//! Whether each SIF signature still matches the data it signs (spec section 8).
//!
//! This is the integrity half of `siftool verify`: the digests a signature carries are
//! recomputed from the image as it is now. Whether the signature itself was made by a
//! trusted key is a separate, cryptographic question this module does not answer.
//!
//! * Current signatures (OpenPGP clear-signed, or a DSSE envelope) sign a JSON document with
//!   digests of the header, and of each object of one group: its descriptor (with a
//!   relative ID) and its bytes. The group must hold exactly the signed objects.
//! * Legacy signatures sign `SIFHASH:\n<hex>\n`: a digest of one object's bytes, or of the
//!   bytes of all objects of a group in slot order.

use std::fs::File;
use std::os::unix::fs::FileExt;

use base64::Engine;
use serde::Serialize;
use sha2::digest::DynDigest;

use super::raw::{MAGIC, VERSION};
use super::{Container, DataType, Descriptor, HashType, Link};
use crate::error::{Error, Result};

/// How a signature is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureFormat {
    /// OpenPGP clear-signed metadata JSON.
    Pgp,
    /// A DSSE envelope around the metadata JSON.
    Dsse,
    /// OpenPGP clear-signed `SIFHASH` of object data.
    Legacy,
}

/// One signature object and whether it still matches.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureState {
    /// The signature's object ID.
    pub object: u32,
    /// How it is encoded (`None` when it cannot be decoded).
    pub format: Option<SignatureFormat>,
    /// What it signs: "group 1", "object 2".
    pub signs: String,
    /// The signing key's fingerprint (hex), when the descriptor records one.
    pub fingerprint: Option<String>,
    /// Whether every digest it carries matches the image as it is now.
    pub matches: bool,
    /// Why it does not match (empty when it does).
    pub detail: String,
}

/// The state of every signature object of `container`, in slot order.
pub fn check_signatures(file: &File, container: &Container) -> Vec<SignatureState> {
    container
        .objects()
        .filter(|d| d.data_type == DataType::Signature)
        .map(|signature| check_one(file, container, signature, true))
        .collect()
}

/// The signature objects that may still match: those whose header, descriptor and group
/// checks pass, without hashing object data (cheap: an edit asks this before it starts).
/// A signature an earlier edit already broke (say, an overlay added to its group with
/// `--force`) is not among them, so a later edit need not be forced again.
pub fn intact_signatures(file: &File, container: &Container) -> Vec<u32> {
    container
        .objects()
        .filter(|d| d.data_type == DataType::Signature)
        .map(|signature| check_one(file, container, signature, false))
        .filter(|s| s.matches || s.format.is_none())
        .map(|s| s.object)
        .collect()
}

fn check_one(
    file: &File,
    container: &Container,
    signature: &Descriptor,
    hash_data: bool,
) -> SignatureState {
    let fingerprint = signature
        .extra
        .get(4..24)
        .filter(|f| f.iter().any(|&b| b != 0))
        .map(hex::encode_upper);
    let signs = match signature.link() {
        Link::Group(g) => format!("group {g}"),
        Link::Object(id) => format!("object {id}"),
        Link::None => "nothing".to_string(),
    };
    let mut state = SignatureState {
        object: signature.id,
        format: None,
        signs,
        fingerprint,
        matches: false,
        detail: String::new(),
    };
    let outcome = read_object(file, signature, 1 << 20).and_then(|payload| {
        let (format, plaintext) = decode(&payload)?;
        state.format = Some(format);
        match format {
            // A legacy signature covers data only: without hashing, it may still match.
            SignatureFormat::Legacy if !hash_data => Ok(Vec::new()),
            SignatureFormat::Legacy => check_legacy(file, container, signature, &plaintext),
            _ => check_metadata(file, container, signature, &plaintext, hash_data),
        }
    });
    match outcome {
        Ok(mismatches) if mismatches.is_empty() => state.matches = true,
        Ok(mismatches) => state.detail = mismatches.join("; "),
        Err(e) => state.detail = e.to_string(),
    }
    state
}

/// An object's bytes, refusing absurd sizes (signatures are a few KiB).
fn read_object(file: &File, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
    if d.size > max {
        return Err(Error::malformed(format!(
            "signature object of {} bytes is larger than any signature",
            d.size
        )));
    }
    let mut buf = vec![0u8; d.size as usize];
    file.read_exact_at(&mut buf, d.offset)
        .map_err(|e| Error::io(format!("reading object {}", d.id), e))?;
    Ok(buf)
}

/// The signed plaintext and its format.
fn decode(payload: &[u8]) -> Result<(SignatureFormat, Vec<u8>)> {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        let plaintext = clearsigned_text(text)?;
        let format = if plaintext.starts_with(b"SIFHASH:") {
            SignatureFormat::Legacy
        } else {
            SignatureFormat::Pgp
        };
        return Ok((format, plaintext));
    }
    if text.starts_with('{') {
        let envelope: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::malformed(format!("DSSE envelope: {e}")))?;
        let payload = envelope["payload"]
            .as_str()
            .ok_or_else(|| Error::malformed("DSSE envelope without a payload"))?;
        let plaintext = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(payload))
            .map_err(|_| Error::malformed("DSSE payload is not base64"))?;
        return Ok((SignatureFormat::Dsse, plaintext));
    }
    Err(Error::unsupported(
        "neither an OpenPGP clear-signed message nor a DSSE envelope",
    ))
}

/// The text of an OpenPGP clear-signed message (RFC 4880 7.1): after the armor headers,
/// up to the signature, dash-escaping undone, line ends as `\n`.
fn clearsigned_text(message: &str) -> Result<Vec<u8>> {
    let mut lines = message.lines();
    lines.next();
    // Armor headers ("Hash: SHA256") end at the first empty line.
    for line in lines.by_ref() {
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut body = Vec::new();
    for line in lines {
        if line.starts_with("-----BEGIN PGP SIGNATURE-----") {
            return Ok(body.join("\n").into_bytes());
        }
        body.push(
            line.strip_prefix("- ")
                .unwrap_or(line)
                .trim_end()
                .to_string(),
        );
    }
    Err(Error::malformed(
        "clear-signed message without its signature block",
    ))
}

/// A hash function by the name a digest string uses.
fn hasher_named(name: &str) -> Option<Box<dyn DynDigest>> {
    Some(match name {
        "sha224" => Box::new(sha2::Sha224::default()),
        "sha256" => Box::new(sha2::Sha256::default()),
        "sha384" => Box::new(sha2::Sha384::default()),
        "sha512" => Box::new(sha2::Sha512::default()),
        "sha512_224" => Box::new(sha2::Sha512_224::default()),
        "sha512_256" => Box::new(sha2::Sha512_256::default()),
        _ => return None,
    })
}

fn hasher_for(hash: HashType) -> Result<Box<dyn DynDigest>> {
    let name = match hash {
        HashType::Sha256 => "sha256",
        HashType::Sha384 => "sha384",
        HashType::Sha512 => "sha512",
        other => {
            return Err(Error::unsupported(format!(
                "legacy signature hash {other:?} is not supported"
            )));
        }
    };
    Ok(hasher_named(name).expect("known name"))
}

/// Feed the bytes of object `d` to `hasher`.
fn hash_object(file: &File, d: &Descriptor, hasher: &mut dyn DynDigest) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < d.size {
        let n = (d.size - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], d.offset + done)
            .map_err(|e| Error::io(format!("reading object {}", d.id), e))?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// A digest string (`sha256:hex`) recomputed over what `feed` gives, and compared.
fn digest_matches(
    expected: &str,
    feed: impl FnOnce(&mut dyn DynDigest) -> Result<()>,
) -> Result<bool> {
    let (name, hex_value) = expected
        .split_once(':')
        .ok_or_else(|| Error::malformed(format!("digest {expected:?} has no algorithm")))?;
    let mut hasher = hasher_named(name)
        .ok_or_else(|| Error::unsupported(format!("digest algorithm {name:?}")))?;
    feed(hasher.as_mut())?;
    Ok(hex::encode(hasher.finalize_reset()) == hex_value.to_ascii_lowercase())
}

/// The objects of group `group`, in slot order (signatures are never members).
fn group_members(container: &Container, group: u32) -> Vec<&Descriptor> {
    container
        .objects()
        .filter(|d| d.group() == Some(group) && d.data_type != DataType::Signature)
        .collect()
}

fn check_legacy(
    file: &File,
    container: &Container,
    signature: &Descriptor,
    plaintext: &[u8],
) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(plaintext);
    let signed = text
        .strip_prefix("SIFHASH:")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::malformed("legacy signature without a SIFHASH digest"))?;
    let objects = match signature.link() {
        Link::Object(id) => vec![container.object(id).map_err(|_| {
            Error::not_found(format!("signed object {id} is no longer in the image"))
        })?],
        Link::Group(g) => group_members(container, g),
        Link::None => return Err(Error::malformed("legacy signature linked to nothing")),
    };
    let mut hasher = hasher_for(signature.signature_hash())?;
    for d in &objects {
        hash_object(file, d, hasher.as_mut())?;
    }
    if hex::encode(hasher.finalize_reset()) == signed.to_ascii_lowercase() {
        Ok(Vec::new())
    } else {
        Ok(vec!["the signed data changed".to_string()])
    }
}

/// The 557 bytes a descriptor digest covers (spec 8.1).
fn descriptor_digest_input(d: &Descriptor, relative_id: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(557);
    b.extend_from_slice(&d.data_type.code().to_le_bytes());
    b.push(u8::from(d.used));
    b.extend_from_slice(&relative_id.to_le_bytes());
    b.extend_from_slice(&d.linked_id.to_le_bytes());
    b.extend_from_slice(&(d.size as i64).to_le_bytes());
    b.extend_from_slice(&d.created_at.to_le_bytes());
    b.extend_from_slice(&d.uid.to_le_bytes());
    b.extend_from_slice(&d.gid.to_le_bytes());
    let mut name = [0u8; 128];
    let n = d.name.len().min(128);
    name[..n].copy_from_slice(&d.name[..n]);
    b.extend_from_slice(&name);
    let mut extra = [0u8; 384];
    let n = d.extra.len().min(384);
    extra[..n].copy_from_slice(&d.extra[..n]);
    b.extend_from_slice(&extra);
    b
}

fn check_metadata(
    file: &File,
    container: &Container,
    signature: &Descriptor,
    plaintext: &[u8],
    hash_data: bool,
) -> Result<Vec<String>> {
    let metadata: serde_json::Value = serde_json::from_slice(plaintext)
        .map_err(|e| Error::malformed(format!("signed metadata is not JSON: {e}")))?;
    let Link::Group(group) = signature.link() else {
        return Err(Error::malformed("signature not linked to a group"));
    };
    let mut mismatches = Vec::new();
    let header_digest = metadata["header"]["digest"]
        .as_str()
        .ok_or_else(|| Error::malformed("signed metadata without a header digest"))?;
    let header = container.header();
    let header_ok = digest_matches(header_digest, |h| {
        h.update(&header.launch_script);
        h.update(MAGIC);
        h.update(VERSION);
        h.update(&header.id);
        Ok(())
    })?;
    if !header_ok {
        mismatches.push("the header (launch script or image ID) changed".to_string());
    }
    let members = group_members(container, group);
    let base = members.iter().map(|d| d.id).min().unwrap_or(0);
    let signed = metadata["objects"]
        .as_array()
        .ok_or_else(|| Error::malformed("signed metadata without objects"))?;
    let mut signed_ids = Vec::new();
    for entry in signed {
        let relative = entry["relativeId"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| Error::malformed("signed object without a relativeId"))?;
        signed_ids.push(relative);
        let Some(d) = members.iter().find(|d| d.id - base == relative) else {
            mismatches.push(format!(
                "signed object (relative ID {relative}) is no longer in group {group}"
            ));
            continue;
        };
        let descriptor = entry["descriptorDigest"].as_str().unwrap_or("");
        if !digest_matches(descriptor, |h| {
            h.update(&descriptor_digest_input(d, relative));
            Ok(())
        })? {
            mismatches.push(format!("object {}: its descriptor changed", d.id));
        }
        let object = entry["objectDigest"].as_str().unwrap_or("");
        if hash_data && !digest_matches(object, |h| hash_object(file, d, h))? {
            mismatches.push(format!("object {}: its data changed", d.id));
        }
    }
    for d in &members {
        if !signed_ids.contains(&(d.id - base)) {
            mismatches.push(format!(
                "object {} was added to group {group} after signing",
                d.id
            ));
        }
    }
    Ok(mismatches)
}
