//! SHA-256 content digests and the ways to compute them: over a slice, through a reader or
//! writer adaptor, or over a byte range of a file with reading and hashing overlapped.
//!
//! This is base layer: the SIF container (descriptor digests), the filesystem codecs (tar
//! layer digests) and the OCI model all use it, and it knows none of them.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated sha256 content digest (the only algorithm OCI-SIF uses).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest whose 32 bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Hash everything `reader` yields; returns the digest and the byte count.
    pub fn of_reader(reader: &mut dyn Read) -> io::Result<(Self, u64)> {
        let mut hasher = HashingWriter::new(io::sink());
        let n = io::copy(reader, &mut hasher)?;
        Ok((hasher.digest(), n))
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
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| Error::malformed(format!("digest {text:?}: not hex")))?;
        Ok(Digest(bytes))
    }

    /// The 64 lowercase hex digits (without `sha256:`).
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

/// A writer that hashes and counts what passes through it to `inner`
/// (`HashingWriter::new(io::sink())` only hashes).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> HashingWriter<W> {
    /// Hash what is written through to `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything written so far.
    pub fn digest(&self) -> Digest {
        Digest(self.hasher.clone().finalize().into())
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Give back the wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a [`SharedHashingReader`] has seen, readable after the reader was handed on.
#[derive(Clone)]
pub struct HashHandle(std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>);

impl HashHandle {
    /// The digest of everything read so far.
    pub fn digest(&self) -> Digest {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Digest(state.0.clone().finalize().into())
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// A hashing reader for pipelines that take ownership of their input (a decompressor, a
/// tar reader): the digest is read through the [`HashHandle`] kept aside. Reading more
/// than `limit` bytes fails (`InvalidData`), which bounds what a decompressor may expand
/// to.
pub struct SharedHashingReader<R> {
    inner: R,
    state: HashHandle,
    limit: u64,
    beyond: String,
}

impl<R> SharedHashingReader<R> {
    /// Hash what is read from `inner`, failing beyond `limit` bytes with the message
    /// `beyond`.
    pub fn new(inner: R, limit: u64, beyond: impl Into<String>) -> (Self, HashHandle) {
        let state = HashHandle(std::sync::Arc::new(std::sync::Mutex::new((
            Sha256::new(),
            0,
        ))));
        (
            SharedHashingReader {
                inner,
                state: state.clone(),
                limit,
                beyond: beyond.into(),
            },
            state,
        )
    }
}

impl<R: Read> Read for SharedHashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0.update(&buf[..n]);
        state.1 += n as u64;
        if state.1 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                self.beyond.clone(),
            ));
        }
        Ok(n)
    }
}

/// A reader that hashes and counts what it reads from `inner`.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    /// Hash what is read from `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest of everything read so far.
    pub fn digest(&self) -> Digest {
        Digest(self.hasher.clone().finalize().into())
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// sha256 of `len` bytes of `file` at `offset`, reading in large blocks on a second thread
/// so that reading and hashing overlap. Reports progress as "hashing".
pub fn hash_range(file: &File, offset: u64, len: u64) -> Result<Digest> {
    use std::sync::mpsc::sync_channel;
    const BLOCK: usize = 4 << 20;
    let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(2);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        // A fresh channel with room for three: cannot fail.
        let _ = empty_tx.send(vec![0u8; BLOCK]);
    }
    // `move`: on an early return (an error, a stop) the channels' ends drop with this
    // closure, which ends the reader thread before the scope waits for it.
    std::thread::scope(move |scope| {
        scope.spawn(move || {
            let mut done = 0u64;
            while done < len {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let n = (len - done).min(BLOCK as u64) as usize;
                let result = file
                    .read_exact_at(&mut buf[..n], offset + done)
                    .map(|_| (buf, n));
                let failed = result.is_err();
                if full_tx.send(result).is_err() || failed {
                    return;
                }
                done += n as u64;
            }
        });
        let mut hasher = Sha256::new();
        let progress = crate::progress::task("hashing", len);
        let mut done = 0u64;
        while done < len {
            crate::interrupt::check()?;
            let (buf, n) = full_rx
                .recv()
                .map_err(|_| Error::io("reading", io::Error::other("reader thread stopped")))?
                .map_err(|e| {
                    Error::io(
                        format!("reading bytes {}..{}", offset + done, offset + len),
                        e,
                    )
                })?;
            hasher.update(&buf[..n]);
            progress.advance(n as u64);
            done += n as u64;
            let _ = empty_tx.send(buf);
        }
        Ok(Digest(hasher.finalize().into()))
    })
}

/// The data regions of `len` bytes of `file` at `offset`, as `(start, end)` offsets relative
/// to `offset`; everything else reads as zeros (holes). Where the filesystem cannot tell
/// (no `SEEK_DATA`), the whole range is one region.
pub fn data_extents(file: &File, offset: u64, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let end = offset + len;
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, len)],
        };
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(end),
            Err(_) => return vec![(0, len)],
        };
        if hole <= data {
            return vec![(0, len)];
        }
        out.push((data - offset, hole - offset));
        pos = hole;
    }
    out
}

/// sha256 of `len` bytes of `file` at `offset` like [`hash_range`], but holes are hashed as
/// zeros without being read (a sparse overlay costs one hash pass, not a read of its size).
pub fn hash_range_sparse(file: &File, offset: u64, len: u64) -> Result<Digest> {
    hash_pieces_sparse(file, &[(offset, len)])
}

/// sha256 of the file ranges `(offset, len)` of `pieces` one after the other (an image
/// written in two places, see `fs::target`), holes hashed as zeros without being read.
pub fn hash_pieces_sparse(file: &File, pieces: &[(u64, u64)]) -> Result<Digest> {
    const BLOCK: usize = 4 << 20;
    let zeros = vec![0u8; BLOCK];
    let mut buf = vec![0u8; BLOCK];
    let mut hasher = Sha256::new();
    let progress = crate::progress::task("hashing", pieces.iter().map(|p| p.1).sum());
    for &(offset, len) in pieces {
        let mut pos = 0u64;
        let mut extents = data_extents(file, offset, len);
        extents.push((len, len));
        for (start, end) in extents {
            while pos < start {
                crate::interrupt::check()?;
                let n = (start - pos).min(BLOCK as u64) as usize;
                hasher.update(&zeros[..n]);
                progress.advance(n as u64);
                pos += n as u64;
            }
            while pos < end {
                crate::interrupt::check()?;
                let n = (end - pos).min(BLOCK as u64) as usize;
                file.read_exact_at(&mut buf[..n], offset + pos)
                    .map_err(|e| {
                        Error::io(
                            format!("reading bytes {}..{}", offset + pos, offset + len),
                            e,
                        )
                    })?;
                hasher.update(&buf[..n]);
                progress.advance(n as u64);
                pos += n as u64;
            }
        }
    }
    Ok(Digest(hasher.finalize().into()))
}

/// Hash several byte ranges `(key, offset, len)` of `file`, spreading them over the cores.
/// Returns one result per range, in the order given.
pub fn hash_ranges<K: Copy + Send + Sync>(
    file: &File,
    ranges: &[(K, u64, u64)],
) -> Vec<(K, Result<Digest>)> {
    use std::sync::Mutex;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Digest>>>> =
        Mutex::new((0..ranges.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(ranges.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(_, offset, len)) = ranges.get(i) else {
                        break;
                    };
                    // A range with holes (a sparse overlay) is hashed without reading
                    // them; a dense one with reading and hashing overlapped.
                    let dense = len == 0 || data_extents(file, offset, len) == [(0, len)];
                    let digest = if dense {
                        hash_range(file, offset, len)
                    } else {
                        hash_range_sparse(file, offset, len)
                    };
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(digest);
                    }
                }
            });
        }
    });
    let slots = results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    ranges
        .iter()
        .zip(slots)
        .map(|(&(key, _, _), slot)| {
            let result = slot.unwrap_or_else(|| {
                Err(Error::io(
                    "hashing",
                    io::Error::other("hashing thread stopped"),
                ))
            });
            (key, result)
        })
        .collect()
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
    fn range_hashes_equal_slice_hashes() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        assert_eq!(
            hash_range(&file, 5, 9_000_000).unwrap(),
            Digest::of(&data[5..9_000_005])
        );
        let results = hash_ranges(&file, &[(1u32, 0, 10), (2, 100, 0), (3, 7, 8_000_000)]);
        assert_eq!(results[0].1.as_ref().unwrap(), &Digest::of(&data[..10]));
        assert_eq!(results[1].1.as_ref().unwrap(), &Digest::of(&[]));
        assert_eq!(results[2].0, 3);
        assert_eq!(
            results[2].1.as_ref().unwrap(),
            &Digest::of(&data[7..8_000_007])
        );
        // Past the end of the file: an error naming the range, not a panic.
        assert!(hash_range(&file, 9_999_990, 100).is_err());
    }

    #[test]
    fn adaptors_hash_what_passes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.count(), 11);
        assert_eq!(w.digest(), Digest::of(b"hello world"));
        let mut r = HashingReader::new(&b"hello world"[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!((r.digest(), r.count()), (Digest::of(b"hello world"), 11));
    }

    #[test]
    fn reader_hash_equals_slice_hash() {
        let data = vec![7u8; 100_000];
        let (d, n) = Digest::of_reader(&mut &data[..]).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(d, Digest::of(&data));
    }
}
