//! `sha256:<hex>` digests: parsing, formatting and streaming computation.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated sha256 content digest (the only algorithm OCI-SIF uses).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Hash everything `reader` yields; returns the digest and the byte count.
    pub fn of_reader(reader: &mut dyn Read) -> io::Result<(Self, u64)> {
        let mut hasher = Sha256Writer::default();
        let n = io::copy(reader, &mut hasher)?;
        Ok((hasher.finish(), n))
    }

    /// Parse `sha256:<64 lowercase hex>`, with the go-containerregistry rules the reference
    /// applies to SIF descriptors and JSON alike.
    pub fn parse(text: &str) -> Result<Self> {
        let Some((algorithm, hex_part)) = text.split_once(':') else {
            return Err(Error::malformed(format!("digest {text:?}: no algorithm")));
        };
        if algorithm != "sha256" {
            return Err(Error::unsupported(format!(
                "digest {text:?}: algorithm {algorithm:?} is not sha256"
            )));
        }
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::malformed(format!(
                "digest {text:?}: expected 64 lowercase hex digits"
            )));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).expect("validated hex");
        Ok(Digest(bytes))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

/// A `Write` sink that hashes what passes through it.
#[derive(Default, Clone)]
pub struct Sha256Writer {
    hasher: Sha256,
    written: u64,
}

impl Sha256Writer {
    pub fn finish(self) -> Digest {
        Digest(self.hasher.finalize().into())
    }

    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_of_empty_json_object() {
        // The ORAS config blob `{}`; its digest appears in the spec and in real registries.
        assert_eq!(
            Digest::of(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_forms() {
        let text = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(Digest::parse(text).unwrap().to_string(), text);
        for bad in [
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha512:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355B3678A1146AD16F7E8649E94FB4FC21FE77E8310C060F61CAAFF8A",
            "sha256:44136fa3",
            "sha256:",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn reader_hash_equals_slice_hash() {
        let data = vec![7u8; 100_000];
        let (d, n) = Digest::of_reader(&mut &data[..]).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(d, Digest::of(&data));
    }
}
