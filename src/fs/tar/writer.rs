//! The tar layer writer: deterministic headers (PAX where ustar fields do not suffice),
//! compressed as it goes, with the layer digest, `diff_id` and size computed in the same
//! pass.

use std::io::{BufWriter, Read, Write};

use super::gzip::ParallelGzip;
use super::header::{BLOCK, MAX7, MAX11, UstarHeader, XATTR_PREFIX, encode_pax, padding, typeflag};
use super::{LayerDigests, TarCompression, io};
use crate::digest::HashingWriter;
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink};

enum Encoder<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(ParallelGzip<HashingWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<W>>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// Writes a tar layer in one streaming pass: entries in, compressed bytes out to `W`.
/// The layer's root directory is implied (not written), sockets are skipped (tar has
/// none), and [`finish`](Self::finish) returns the digests.
pub struct TarLayerWriter<W: Write> {
    /// tar bytes -> diff_id hash -> 1 MiB buffer -> compressor -> digest hash -> `W`.
    out: HashingWriter<BufWriter<Encoder<W>>>,
    /// Members written (the implied root is not one).
    members: u64,
}

/// The PAX records an entry needs: what its ustar fields cannot hold, and its xattrs.
fn pax_records(name: &[u8], entry: &Entry, size: u64, link: &[u8]) -> Vec<(String, Vec<u8>)> {
    let m = &entry.metadata;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if name.len() > 100 || !name.is_ascii() {
        pax.push(("path".into(), name.to_vec()));
    }
    if link.len() > 100 || !link.is_ascii() {
        pax.push(("linkpath".into(), link.to_vec()));
    }
    if m.uid as u64 > MAX7 {
        pax.push(("uid".into(), m.uid.to_string().into_bytes()));
    }
    if m.gid as u64 > MAX7 {
        pax.push(("gid".into(), m.gid.to_string().into_bytes()));
    }
    if size > MAX11 {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    if m.mtime < 0 || m.mtime as u64 > MAX11 {
        pax.push(("mtime".into(), m.mtime.to_string().into_bytes()));
    }
    for x in &m.xattrs {
        pax.push((
            format!("{XATTR_PREFIX}{}", String::from_utf8_lossy(&x.name)),
            x.value.clone(),
        ));
    }
    pax
}

impl<W: Write> TarLayerWriter<W> {
    /// The tar members written so far (what `tar -t` lists; the layer's root is implied).
    pub fn members(&self) -> u64 {
        self.members
    }

    /// A writer compressing with `compression` into `out`. The same entries give the same
    /// bytes: headers are deterministic and the gzip header is fixed (no name, mtime 0).
    pub fn new(out: W, compression: TarCompression) -> Result<TarLayerWriter<W>> {
        let stored = HashingWriter::new(out);
        let encoder = match compression {
            TarCompression::None => Encoder::Plain(stored),
            TarCompression::Gzip { level } => {
                // Members compressed on every core; libdeflate's fixed header (no name,
                // mtime 0) and the fixed chunking keep the output deterministic.
                Encoder::Gzip(ParallelGzip::new(stored, level).map_err(io("gzip"))?)
            }
            TarCompression::Zstd { level } => {
                let mut z = zstd::stream::write::Encoder::new(stored, level).map_err(io("zstd"))?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                z.multithread(threads).map_err(io("zstd threads"))?;
                Encoder::Zstd(z)
            }
        };
        let buffered = BufWriter::with_capacity(1 << 20, encoder);
        Ok(TarLayerWriter {
            members: 0,
            out: HashingWriter::new(buffered),
        })
    }

    /// A PAX extended header carrying `records` for the entry `name`.
    fn write_pax(&mut self, name: &[u8], records: &[(String, Vec<u8>)]) -> Result<()> {
        let records = encode_pax(records);
        let base = name
            .rsplit(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"entry");
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(88)]);
        let header = UstarHeader {
            name: &pax_name,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            typeflag: typeflag::PAX,
            link: b"",
            major: 0,
            minor: 0,
        };
        self.out
            .write_all(&header.encode())
            .map_err(io("writing"))?;
        self.out.write_all(&records).map_err(io("writing"))?;
        self.pad(records.len() as u64)
    }

    /// The entry's headers: a PAX header if needed, then the ustar header with every field
    /// that does not fit zeroed (or truncated, for names) in favour of the PAX record.
    fn write_header(
        &mut self,
        name: &[u8],
        entry: &Entry,
        typeflag: u8,
        size: u64,
        link: &[u8],
    ) -> Result<()> {
        let pax = pax_records(name, entry, size, link);
        if !pax.is_empty() {
            self.write_pax(name, &pax)?;
        }
        let m = &entry.metadata;
        let (major, minor) = match entry.kind {
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                (major, minor)
            }
            _ => (0, 0),
        };
        let header = UstarHeader {
            name,
            mode: m.permissions & 0o7777,
            uid: if m.uid as u64 > MAX7 { 0 } else { m.uid },
            gid: if m.gid as u64 > MAX7 { 0 } else { m.gid },
            size: if size > MAX11 { 0 } else { size },
            mtime: m.mtime.clamp(0, MAX11 as i64) as u64,
            typeflag,
            link,
            major,
            minor,
        };
        self.out.write_all(&header.encode()).map_err(io("writing"))
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let n = padding(len) as usize;
        self.out
            .write_all(&[0u8; BLOCK][..n])
            .map_err(io("writing"))
    }

    /// End the archive and the compression; returns digests and size.
    pub fn finish(mut self) -> Result<LayerDigests> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .map_err(io("writing"))?;
        let diff_id = self.out.digest();
        let encoder = self
            .out
            .into_inner()
            .into_inner()
            .map_err(|e| Error::io("tar: flushing", e.into_error()))?;
        let stored = match encoder {
            Encoder::Plain(w) => w,
            Encoder::Gzip(w) => w.finish().map_err(io("gzip"))?,
            Encoder::Zstd(w) => w.finish().map_err(io("zstd"))?,
        };
        let (digest, size) = (stored.digest(), stored.count());
        stored.into_inner().flush().map_err(io("flushing"))?;
        Ok(LayerDigests {
            digest,
            diff_id,
            size,
        })
    }
}

impl<W: Write> EntrySink for TarLayerWriter<W> {
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
        // Between entries, a stop asked by a signal is honoured.
        crate::interrupt::check()?;
        if entry.path.is_empty() {
            // The layer's root is implied, as sqfs2tar and Docker do.
            return Ok(());
        }
        self.members += 1;
        let mut name = entry.path.clone();
        match &entry.kind {
            EntryKind::Directory => {
                name.push(b'/');
                self.write_header(&name, entry, typeflag::DIRECTORY, 0, b"")
            }
            EntryKind::File { size } => {
                self.write_header(&name, entry, typeflag::FILE, *size, b"")?;
                let content = content.ok_or_else(|| {
                    Error::malformed(format!("tar: {}: no content", entry.display_path()))
                })?;
                let copied = std::io::copy(&mut content.take(*size), &mut self.out)
                    .map_err(io("writing content"))?;
                if copied != *size {
                    return Err(Error::malformed(format!(
                        "tar: {}: content shorter than {size} bytes",
                        entry.display_path()
                    )));
                }
                self.pad(*size)
            }
            EntryKind::Symlink { target } => {
                self.write_header(&name, entry, typeflag::SYMLINK, 0, target)
            }
            EntryKind::HardLink { target } => {
                self.write_header(&name, entry, typeflag::HARD_LINK, 0, target)
            }
            EntryKind::CharDevice { .. } => {
                self.write_header(&name, entry, typeflag::CHAR_DEVICE, 0, b"")
            }
            EntryKind::BlockDevice { .. } => {
                self.write_header(&name, entry, typeflag::BLOCK_DEVICE, 0, b"")
            }
            EntryKind::Fifo => self.write_header(&name, entry, typeflag::FIFO, 0, b""),
            // Tar has no sockets (GNU tar skips them too).
            EntryKind::Socket => Ok(()),
        }
    }
}
