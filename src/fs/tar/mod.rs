//! Tar layers: a deterministic streaming writer (PAX headers, `SCHILY.xattr.*`, hard links,
//! devices, long names; plain, gzip or zstd) that computes the layer digest, `diff_id` and
//! size in the same pass, and a streaming reader (ustar, GNU and PAX; compression chosen by
//! magic bytes) that refuses entries escaping the root.
//!
//! Both are written here rather than taken from the `tar` crate: the writer must control
//! every header byte to be deterministic, and the reader must be an [`EntrySource`] that
//! owns its input (the crate's entry iterator borrows the archive).
//!
//! Modules: `header` holds the format (ustar header, numbers, PAX records) both sides
//! share, `writer` and `reader` use it; `gzip` compresses on every core; `ahead` decompresses
//! a layer on a thread of its own. This file holds the compression choice, the
//! digests a layer yields, and [`decompressor`], the detection of compression by magic.
//!
//! [`EntrySource`]: crate::fs::entry::EntrySource

mod ahead;
mod gzip;
mod header;
mod reader;
mod writer;

pub use ahead::ReadAhead;
pub use gzip::ParallelGzip;
pub use reader::{TarLayerReader, decompressor};
pub use writer::TarLayerWriter;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Compression of a tar layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    /// A plain tar stream.
    None,
    /// gzip (one member, fixed header), `level` as zlib's.
    Gzip {
        /// zlib level.
        level: u32,
    },
    /// zstd, multithreaded.
    Zstd {
        /// zstd level.
        level: i32,
    },
}

impl TarCompression {
    /// Parse a command-line name: `none`, `gzip` (level 6), `gzip:N`, `zstd` (level 3),
    /// `zstd:N`. A level must be a number; an empty one (`gzip:`) takes the default, and
    /// `none` ignores one.
    pub fn parse(text: &str) -> Result<TarCompression> {
        let (name, level) = text.split_once(':').unwrap_or((text, ""));
        let bad = || {
            Error::refused(format!(
                "compression {text:?}: expected none, gzip[:1-9] or zstd[:1-22]"
            ))
        };
        Ok(match name {
            "none" => TarCompression::None,
            "gzip" => TarCompression::Gzip {
                level: if level.is_empty() {
                    6
                } else {
                    level.parse().map_err(|_| bad())?
                },
            },
            "zstd" => TarCompression::Zstd {
                level: if level.is_empty() {
                    3
                } else {
                    level.parse().map_err(|_| bad())?
                },
            },
            _ => return Err(bad()),
        })
    }
}

/// What one pass over a layer yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the bytes as stored (compressed).
    pub digest: Digest,
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Stored (compressed) size.
    pub size: u64,
}

/// An I/O error while doing `what` with a tar layer.
fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("tar: {what}"), e)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn compression_names_parse_as_the_cli_always_did() {
        let parse = |t: &str| TarCompression::parse(t).unwrap();
        assert_eq!(parse("none"), TarCompression::None);
        assert_eq!(parse("gzip"), TarCompression::Gzip { level: 6 });
        assert_eq!(parse("gzip:1"), TarCompression::Gzip { level: 1 });
        assert_eq!(parse("gzip:9"), TarCompression::Gzip { level: 9 });
        assert_eq!(parse("zstd"), TarCompression::Zstd { level: 3 });
        assert_eq!(parse("zstd:19"), TarCompression::Zstd { level: 19 });
        assert_eq!(parse("zstd:-1"), TarCompression::Zstd { level: -1 });
        // Kept as the CLI's parser had them: an empty level is the default, `none`
        // ignores a level, and levels are not range-checked here.
        assert_eq!(parse("gzip:"), TarCompression::Gzip { level: 6 });
        assert_eq!(parse("none:5"), TarCompression::None);
        assert_eq!(parse("gzip:0"), TarCompression::Gzip { level: 0 });
        for bad in ["", "xz", "gz", "gzip:x", "gzip:-1", "zstd:3.5", "GZIP"] {
            let err = TarCompression::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("compression {bad:?}: expected none, gzip[:1-9] or zstd[:1-22]")
            );
            assert_eq!(err.kind(), crate::error::ErrorKind::Refused);
        }
    }

    fn decompressed(stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompressor(stored).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn decompressor_tells_gzip_members_zstd_and_plain_apart_by_magic() {
        let text = b"ustar-ish plain bytes, long enough to be more than a magic".repeat(10);
        assert_eq!(decompressed(&text), text, "plain passes through");
        assert_eq!(decompressed(b""), b"", "empty input is plain");
        let gzip = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut two_members = gzip(&text[..100]);
        two_members.extend_from_slice(&gzip(&text[100..]));
        assert_eq!(
            decompressed(&two_members),
            text,
            "every gzip member is read"
        );
        let zstd = zstd::bulk::compress(&text, 3).unwrap();
        assert_eq!(decompressed(&zstd), text);
        let mut broken = gzip(&text);
        broken.truncate(20);
        let mut out = Vec::new();
        assert!(
            decompressor(&broken[..])
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn an_entry_claiming_the_largest_size_is_an_error_not_a_panic() {
        use crate::fs::entry::{EntryKind, EntrySource};
        use header::{UstarHeader, typeflag};
        let mut h = UstarHeader {
            name: b"f",
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            typeflag: typeflag::FILE,
            link: b"",
            major: 0,
            minor: 0,
        }
        .encode();
        // GNU base-256: u64::MAX bytes.
        h[124..136].copy_from_slice(&[
            0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut archive = h.to_vec();
        archive.extend_from_slice(&[7u8; 1024]);
        let mut reader = TarLayerReader::new(std::io::Cursor::new(archive)).unwrap();
        let entry = reader.next_entry().unwrap().unwrap();
        assert_eq!(entry.kind, EntryKind::File { size: u64::MAX });
        assert!(
            reader.next_entry().is_err(),
            "the archive ends inside the entry"
        );
    }
}
