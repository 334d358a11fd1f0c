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

    /// A compressor for one thread, its state kept from block to block. `block_size` is
    /// the image's data block size: xz's dictionary is that size, as mksquashfs sets it
    /// (a block never needs more, and preset 6's default 8 MiB dictionary would cost some
    /// 90 MiB of match-finder tables per thread for nothing).
    pub(crate) fn compressor(self, block_size: u32) -> Result<BlockCompressor> {
        let fail =
            |e: String| Error::refused(format!("squashfs: compressing a block with {self:?}: {e}"));
        let state = match self {
            Compression::Gzip { level } => {
                let level = i32::try_from(level)
                    .ok()
                    .and_then(|l| libdeflater::CompressionLvl::new(l).ok())
                    .ok_or_else(|| fail("no such level".into()))?;
                State::Gzip(Box::new(libdeflater::Compressor::new(level)))
            }
            Compression::Zstd { level } => State::Zstd(Box::new(
                zstd::bulk::Compressor::new(level).map_err(|e| fail(e.to_string()))?,
            )),
            Compression::Xz => {
                let mut options =
                    liblzma::stream::LzmaOptions::new_preset(6).map_err(|e| fail(e.to_string()))?;
                // liblzma's smallest dictionary is 4 KiB, the smallest block size.
                options.dict_size(block_size.max(4096));
                State::Xz(options)
            }
            Compression::Lz4 => State::Lz4,
        };
        Ok(BlockCompressor {
            compression: self,
            state,
        })
    }

    /// Decompress one block of at most `limit` bytes.
    pub(crate) fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        let fail = |e: String| Error::malformed(format!("squashfs: decompressing a block: {e}"));
        let mut out = Vec::new();
        match self {
            Compression::Gzip { .. } => {
                // libdeflate inflates a whole block about twice as fast as a streaming
                // zlib; one decompressor per thread (it is a few KiB of tables).
                thread_local! {
                    static INFLATE: std::cell::RefCell<libdeflater::Decompressor> =
                        std::cell::RefCell::new(libdeflater::Decompressor::new());
                }
                out = vec![0u8; limit];
                let n = INFLATE
                    .with(|d| d.borrow_mut().zlib_decompress(data, &mut out))
                    .map_err(|e| match e {
                        libdeflater::DecompressionError::InsufficientSpace => {
                            fail(format!("more than {limit} bytes"))
                        }
                        e => fail(e.to_string()),
                    })?;
                out.truncate(n);
                // Blocks are cached by their length (fragments, metadata): do not keep a
                // whole block's capacity behind a short one.
                if n < limit / 2 {
                    out.shrink_to_fit();
                }
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

/// One thread's compressor (see [`Compression::compressor`]): compressing a block never
/// allocates the compressor's tables anew, and its output depends only on the block.
pub(crate) struct BlockCompressor {
    compression: Compression,
    state: State,
}

enum State {
    // Boxed: the compressors' own structs are small, but keep the enum a pointer wide.
    Gzip(Box<libdeflater::Compressor>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Xz(liblzma::stream::LzmaOptions),
    Lz4,
}

impl BlockCompressor {
    /// Compress one block. Every block is given to the compressor: the caller stores the
    /// block uncompressed only when the compressor's output is not smaller. (There is no
    /// guess from samples: redundancy may lie farther apart than any sample, as in a file
    /// of one random 4 KiB block repeated.)
    pub(crate) fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let compression = self.compression;
        let fail = |e: String| {
            Error::refused(format!(
                "squashfs: compressing a block with {compression:?}: {e}"
            ))
        };
        Ok(match &mut self.state {
            State::Gzip(c) => {
                // libdeflate: a valid zlib stream, smaller and faster than zlib's at level 9.
                let mut out = vec![0u8; c.zlib_compress_bound(data.len())];
                let n = c
                    .zlib_compress(data, &mut out)
                    .map_err(|e| fail(e.to_string()))?;
                out.truncate(n);
                out
            }
            State::Zstd(c) => c.compress(data).map_err(|e| fail(e.to_string()))?,
            State::Xz(options) => {
                let mut filters = liblzma::stream::Filters::new();
                filters.lzma2(options);
                let stream = liblzma::stream::Stream::new_stream_encoder(
                    &filters,
                    liblzma::stream::Check::Crc32,
                )
                .map_err(|e| fail(e.to_string()))?;
                let mut out = Vec::with_capacity(data.len() / 2);
                let mut e = liblzma::write::XzEncoder::new_stream(&mut out, stream);
                e.write_all(data).map_err(|e| fail(e.to_string()))?;
                e.finish().map_err(|e| fail(e.to_string()))?;
                out
            }
            // liblz4 itself (`LZ4_compress_default`), as mksquashfs: lz4_flex's match
            // finder made images up to 1% larger on mixed data.
            State::Lz4 => {
                lz4::block::compress(data, None, false).map_err(|e| fail(e.to_string()))?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` pseudo-random bytes (xorshift), the same for the same seed.
    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn redundancy_farther_apart_than_a_sample_is_compressed() {
        let all = [
            Compression::Gzip { level: 9 },
            Compression::Zstd { level: 3 },
            Compression::Zstd { level: 15 },
            Compression::Xz,
            Compression::Lz4,
        ];
        // One random 4 KiB piece repeated over a 128 KiB block: each sample of it looks
        // random, the block is 32 copies.
        let piece = random(4096, 7);
        let repeated: Vec<u8> = piece.iter().copied().cycle().take(131072).collect();
        for c in all {
            let packed = c.compressor(131072).unwrap().compress(&repeated).unwrap();
            assert!(
                packed.len() < 131072 / 8,
                "{c:?}: {} bytes for 32 copies of 4 KiB",
                packed.len()
            );
            assert_eq!(c.decompress(&packed, repeated.len()).unwrap(), repeated);
        }
        // Truly random data does not shrink (the writer then stores it raw).
        let noise = random(131072, 11);
        for c in all {
            let packed = c.compressor(131072).unwrap().compress(&noise).unwrap();
            assert!(packed.len() >= noise.len(), "{c:?}");
        }
    }

    #[test]
    fn a_reused_compressor_gives_the_same_bytes_as_a_new_one() {
        let blocks = [random(131072, 3), vec![b'x'; 131072], random(5000, 4)];
        for c in [
            Compression::Gzip { level: 9 },
            Compression::Zstd { level: 15 },
            Compression::Xz,
            Compression::Lz4,
        ] {
            let mut reused = c.compressor(131072).unwrap();
            for block in &blocks {
                assert_eq!(
                    reused.compress(block).unwrap(),
                    c.compressor(131072).unwrap().compress(block).unwrap(),
                    "{c:?}"
                );
            }
        }
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
            let packed = c.compressor(131072).unwrap().compress(&data).unwrap();
            assert!(packed.len() < data.len(), "{c:?}");
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c:?}");
            assert!(
                c.decompress(&packed, 10).is_err(),
                "{c:?} ignores the limit"
            );
        }
        // A zlib block written by another tool (flate2's zlib, not libdeflate) inflates,
        // with bytes after the stream ignored as zlib's own inflate ignores them; a damaged
        // one is an error.
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut zlib, &data).unwrap();
        let mut packed = zlib.finish().unwrap();
        let gzip = Compression::Gzip { level: 9 };
        assert_eq!(gzip.decompress(&packed, data.len()).unwrap(), data);
        packed.extend_from_slice(b"trailing");
        assert_eq!(gzip.decompress(&packed, data.len()).unwrap(), data);
        let mid = packed.len() / 2;
        packed[mid] ^= 0xFF;
        assert!(gzip.decompress(&packed, data.len()).is_err());
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert!(Compression::parse("gzip:0").is_err());
        assert!(Compression::parse("brotli").is_err());
        assert!(
            Compression::Gzip { level: 99 }.compressor(131072).is_err(),
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
