//! Block compressors as squashfs uses them: which ones, their superblock ids and option
//! blocks, compressing data and metadata blocks for the writer and decompressing them for
//! the reader.

use std::io::Write;

use crate::error::{Error, Result};

/// A squashfs compressor and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zlib stream (squashfs "gzip"); mksquashfs uses level 9, window 15.
    Gzip {
        /// 1 (fast) to 9 (small, the default).
        level: u32,
    },
    /// Zstandard; mksquashfs's default level is 15.
    Zstd {
        /// 1 to 22.
        level: i32,
    },
    /// xz (LZMA2, preset 6, CRC32 check), as mksquashfs writes it.
    Xz,
    /// LZ4 block format, legacy version 1 (what the kernel reads).
    Lz4,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 9 }
    }
}

impl Compression {
    /// The superblock compression id.
    pub(crate) fn id(self) -> u16 {
        match self {
            Compression::Gzip { .. } => 1,
            Compression::Xz => 4,
            Compression::Lz4 => 5,
            Compression::Zstd { .. } => 6,
        }
    }

    /// The compressor a superblock's id names, with the level a reader needs no more than
    /// to decompress (mksquashfs's default).
    pub(crate) fn from_id(id: u16) -> Option<Compression> {
        Some(match id {
            1 => Compression::Gzip { level: 9 },
            4 => Compression::Xz,
            5 => Compression::Lz4,
            6 => Compression::Zstd { level: 15 },
            _ => return None,
        })
    }

    /// Compressor options stored after the superblock, when the format needs them.
    pub(crate) fn options(self) -> Option<Vec<u8>> {
        match self {
            // The kernel's lz4 support requires the options: version 1 (legacy), no flags.
            Compression::Lz4 => Some([1i32.to_le_bytes(), 0i32.to_le_bytes()].concat()),
            // Non-default levels are recorded so tools can report them.
            Compression::Gzip { level } if level != 9 => Some(
                [
                    level.to_le_bytes().as_slice(),
                    &15u16.to_le_bytes(),
                    &0u16.to_le_bytes(),
                ]
                .concat(),
            ),
            Compression::Zstd { level } if level != 15 => Some(level.to_le_bytes().to_vec()),
            _ => None,
        }
    }

    /// Parse a command-line name: `gzip`, `zstd`, `zstd:19`, `xz`, `lz4`, `gzip:6`.
    pub fn parse(text: &str) -> Result<Compression> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        let bad = || {
            Error::refused(format!(
                "compression {text:?}: expected gzip[:1-9], zstd[:1-22], xz or lz4"
            ))
        };
        // The level after the colon, if any, within `range`.
        let level_in = |range: std::ops::RangeInclusive<i64>, default: i64| {
            let level = level
                .map(|l| l.parse::<i64>().map_err(|_| bad()))
                .transpose()?
                .unwrap_or(default);
            if range.contains(&level) {
                Ok(level)
            } else {
                Err(bad())
            }
        };
        Ok(match name {
            "gzip" => Compression::Gzip {
                level: level_in(1..=9, 9)? as u32,
            },
            "zstd" => Compression::Zstd {
                level: level_in(1..=22, 15)? as i32,
            },
            "xz" if level.is_none() => Compression::Xz,
            "lz4" if level.is_none() => Compression::Lz4,
            _ => return Err(bad()),
        })
    }

    /// Whether a block is so clearly incompressible (already compressed or random data)
    /// that compressing it would only cost time: eight 1 KiB samples spread over the block,
    /// none of which shrinks under fast deflate. Slow compressors (gzip level 9, xz) spend
    /// most of their time on such data for nothing; the block is then stored as is, which
    /// is what the compressor's output would have been replaced by anyway.
    pub(crate) fn clearly_incompressible(self, data: &[u8]) -> bool {
        const SAMPLE: usize = 1024;
        const SAMPLES: usize = 8;
        if matches!(self, Compression::Zstd { .. } | Compression::Lz4)
            || data.len() < 4 * SAMPLES * SAMPLE
        {
            return false;
        }
        let stride = (data.len() - SAMPLE) / (SAMPLES - 1);
        (0..SAMPLES).all(|i| {
            let sample = &data[i * stride..i * stride + SAMPLE];
            let mut e = flate2::write::DeflateEncoder::new(
                Vec::with_capacity(SAMPLE),
                flate2::Compression::fast(),
            );
            // Writing to memory cannot fail; if it did, compress the block to find out.
            e.write_all(sample).is_ok() && e.finish().is_ok_and(|out| out.len() >= SAMPLE)
        })
    }

    /// Compress one block. The caller stores the block uncompressed when the result is
    /// not smaller. Fails only for a level the compressor does not have.
    pub(crate) fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        let fail =
            |e: String| Error::refused(format!("squashfs: compressing a block with {self:?}: {e}"));
        Ok(match self {
            Compression::Gzip { level } => {
                // libdeflate: a valid zlib stream, smaller and faster than zlib's at level 9.
                let level = i32::try_from(level)
                    .ok()
                    .and_then(|l| libdeflater::CompressionLvl::new(l).ok())
                    .ok_or_else(|| fail("no such level".into()))?;
                let mut c = libdeflater::Compressor::new(level);
                let mut out = vec![0u8; c.zlib_compress_bound(data.len())];
                let n = c
                    .zlib_compress(data, &mut out)
                    .map_err(|e| fail(e.to_string()))?;
                out.truncate(n);
                out
            }
            Compression::Zstd { level } => {
                zstd::bulk::compress(data, level).map_err(|e| fail(e.to_string()))?
            }
            Compression::Xz => {
                let mut out = Vec::with_capacity(data.len() / 2);
                let stream =
                    liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc32)
                        .map_err(|e| fail(e.to_string()))?;
                let mut e = liblzma::write::XzEncoder::new_stream(&mut out, stream);
                e.write_all(data).map_err(|e| fail(e.to_string()))?;
                e.finish().map_err(|e| fail(e.to_string()))?;
                out
            }
            Compression::Lz4 => lz4_flex::block::compress(data),
        })
    }

    /// Decompress one block of at most `limit` bytes.
    pub(crate) fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        let fail = |e: String| Error::malformed(format!("squashfs: decompressing a block: {e}"));
        let mut out = Vec::new();
        match self {
            Compression::Gzip { .. } => {
                flate2::read::ZlibDecoder::new(data)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| fail(e.to_string()))?;
            }
            Compression::Zstd { .. } => {
                zstd::stream::read::Decoder::new(data)
                    .map_err(|e| fail(e.to_string()))?
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| fail(e.to_string()))?;
            }
            Compression::Xz => {
                liblzma::read::XzDecoder::new(data)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| fail(e.to_string()))?;
            }
            Compression::Lz4 => {
                out = lz4_flex::block::decompress(data, limit).map_err(|e| fail(e.to_string()))?;
            }
        }
        if out.len() > limit {
            return Err(fail(format!("more than {limit} bytes")));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_random_blocks_are_judged_incompressible() {
        let gzip = Compression::default();
        let mut state = 0x9E3779B97F4A7C15u64;
        let random: Vec<u8> = (0..131072)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(gzip.clearly_incompressible(&random));
        assert!(
            gzip.compress(&random).unwrap().len() >= random.len(),
            "deflate agrees"
        );
        let mut mixed = random.clone();
        mixed[60_000..85_000].fill(b'a');
        assert!(
            !gzip.clearly_incompressible(&mixed),
            "a compressible stretch longer than the sample stride is noticed"
        );
        assert!(!gzip.clearly_incompressible(&vec![0u8; 131072]));
        assert!(!Compression::Zstd { level: 3 }.clearly_incompressible(&random));
    }

    #[test]
    fn every_compressor_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        for c in [
            Compression::Gzip { level: 9 },
            Compression::Zstd { level: 3 },
            Compression::Xz,
            Compression::Lz4,
        ] {
            let packed = c.compress(&data).unwrap();
            assert!(packed.len() < data.len(), "{c:?}");
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c:?}");
            assert!(
                c.decompress(&packed, 10).is_err(),
                "{c:?} ignores the limit"
            );
        }
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert!(Compression::parse("gzip:0").is_err());
        assert!(Compression::parse("brotli").is_err());
        assert!(
            Compression::Gzip { level: 99 }.compress(&data).is_err(),
            "a level libdeflate lacks is an error, not a panic"
        );
        for c in [
            Compression::Gzip { level: 9 },
            Compression::Xz,
            Compression::Lz4,
        ] {
            assert_eq!(Compression::from_id(c.id()), Some(c));
        }
        assert_eq!(
            Compression::from_id(6),
            Some(Compression::Zstd { level: 15 })
        );
        assert_eq!(Compression::from_id(2), None, "lzma is not supported");
    }
}
