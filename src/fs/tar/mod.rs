//! Tar layers: a deterministic streaming writer (PAX headers, `SCHILY.xattr.*`, hard links,
//! devices, long names; plain, gzip or zstd) that computes the layer digest, `diff_id` and
//! size in the same pass, and a streaming reader (ustar, GNU and PAX; compression chosen by
//! magic bytes) that refuses entries escaping the root.
//!
//! Both are written here rather than taken from the `tar` crate: the writer must control
//! every header byte to be deterministic, and the reader must be an [`EntrySource`] that
//! owns its input (the crate's entry iterator borrows the archive).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySink, EntrySource, Metadata, Xattr, display_path};

const BLOCK: usize = 512;
const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Compression of a tar layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
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

enum Encoder<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(flate2::write::GzEncoder<HashingWriter<W>>),
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

/// Writes a tar layer in one streaming pass.
pub struct TarLayerWriter<W: Write> {
    /// tar bytes -> diff_id hash -> 1 MiB buffer -> compressor -> digest hash -> `W`.
    out: HashingWriter<std::io::BufWriter<Encoder<W>>>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("tar: {what}"), e)
}

impl<W: Write> TarLayerWriter<W> {
    pub fn new(out: W, compression: TarCompression) -> Result<TarLayerWriter<W>> {
        let stored = HashingWriter::new(out);
        let encoder = match compression {
            TarCompression::None => Encoder::Plain(stored),
            TarCompression::Gzip { level } => {
                // A fixed header (no name, mtime 0) keeps the output deterministic.
                let gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(stored, flate2::Compression::new(level));
                Encoder::Gzip(gz)
            }
            TarCompression::Zstd { level } => {
                let mut z = zstd::stream::write::Encoder::new(stored, level).map_err(io("zstd"))?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                z.multithread(threads).map_err(io("zstd threads"))?;
                Encoder::Zstd(z)
            }
        };
        let buffered = std::io::BufWriter::with_capacity(1 << 20, encoder);
        Ok(TarLayerWriter {
            out: HashingWriter::new(buffered),
        })
    }

    fn write_header(
        &mut self,
        name: &[u8],
        entry: &Entry,
        typeflag: u8,
        size: u64,
        link: &[u8],
    ) -> Result<()> {
        let m = &entry.metadata;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if name.len() > 100 || !name.is_ascii() {
            pax.push(("path".into(), name.to_vec()));
        }
        if link.len() > 100 || !link.is_ascii() {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        const MAX7: u64 = 0o7777777;
        const MAX11: u64 = 0o77777777777;
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
        if !pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &pax {
                // "LEN KEY=VALUE\n", where LEN counts itself.
                let body = 1 + k.len() + 1 + v.len() + 1;
                let mut len = body + body.to_string().len();
                if len.to_string().len() != body.to_string().len() {
                    len += 1;
                }
                records.extend_from_slice(format!("{len} {k}=").as_bytes());
                records.extend_from_slice(v);
                records.push(b'\n');
            }
            let base = name
                .rsplit(|&b| b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"entry");
            let mut pax_name = b"PaxHeaders/".to_vec();
            pax_name.extend_from_slice(&base[..base.len().min(88)]);
            let header = ustar_header(
                &pax_name,
                0o644,
                0,
                0,
                records.len() as u64,
                0,
                b'x',
                b"",
                0,
                0,
            );
            self.out.write_all(&header).map_err(io("writing"))?;
            self.out.write_all(&records).map_err(io("writing"))?;
            self.pad(records.len() as u64)?;
        }
        let (major, minor) = match entry.kind {
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                (major, minor)
            }
            _ => (0, 0),
        };
        let short = |b: &[u8], max: usize| {
            if b.len() > max || !b.is_ascii() {
                b[..b.len().min(max)].to_vec()
            } else {
                b.to_vec()
            }
        };
        let header = ustar_header(
            &short(name, 100),
            m.permissions & 0o7777,
            if m.uid as u64 > MAX7 { 0 } else { m.uid },
            if m.gid as u64 > MAX7 { 0 } else { m.gid },
            if size > MAX11 { 0 } else { size },
            m.mtime.clamp(0, MAX11 as i64) as u64,
            typeflag,
            &short(link, 100),
            major,
            minor,
        );
        self.out.write_all(&header).map_err(io("writing"))
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0u8; BLOCK][..BLOCK - rem])
                .map_err(io("writing"))?;
        }
        Ok(())
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

#[allow(clippy::too_many_arguments)]
fn ustar_header(
    name: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &[u8],
    major: u32,
    minor: u32,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let octal = |h: &mut [u8; BLOCK], at: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}", v, width = len - 1);
        h[at..at + len - 1].copy_from_slice(&s.as_bytes()[s.len() - (len - 1)..]);
    };
    h[..name.len()].copy_from_slice(name);
    octal(&mut h, 100, 8, mode as u64);
    octal(&mut h, 108, 8, uid as u64);
    octal(&mut h, 116, 8, gid as u64);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, mtime);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if matches!(typeflag, b'3' | b'4') {
        octal(&mut h, 329, 8, major as u64 & 0o7777777);
        octal(&mut h, 337, 8, minor as u64 & 0o7777777);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl<W: Write> EntrySink for TarLayerWriter<W> {
    fn add_entry(&mut self, entry: &Entry, content: Option<&mut dyn Read>) -> Result<()> {
        if entry.path.is_empty() {
            // The layer's root is implied, as sqfs2tar and Docker do.
            return Ok(());
        }
        let mut name = entry.path.clone();
        match &entry.kind {
            EntryKind::Directory => {
                name.push(b'/');
                self.write_header(&name, entry, b'5', 0, b"")
            }
            EntryKind::File { size } => {
                self.write_header(&name, entry, b'0', *size, b"")?;
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
            EntryKind::Symlink { target } => self.write_header(&name, entry, b'2', 0, target),
            EntryKind::HardLink { target } => self.write_header(&name, entry, b'1', 0, target),
            EntryKind::CharDevice { .. } => self.write_header(&name, entry, b'3', 0, b""),
            EntryKind::BlockDevice { .. } => self.write_header(&name, entry, b'4', 0, b""),
            EntryKind::Fifo => self.write_header(&name, entry, b'6', 0, b""),
            // Tar has no sockets (GNU tar skips them too).
            EntryKind::Socket => Ok(()),
        }
    }
}

// ------------------------------------------------------------------------- reader

/// Reads a tar layer (plain, gzip — several members too — or zstd, chosen by magic bytes).
pub struct TarLayerReader<R: Read> {
    input: Box<dyn Read>,
    /// Bytes of the current entry's data not yet consumed (plus padding).
    remaining: u64,
    padding: u64,
    global: Vec<(String, Vec<u8>)>,
    symlinks: HashSet<Vec<u8>>,
    _marker: std::marker::PhantomData<R>,
}

fn parse_number(field: &[u8], what: &str) -> Result<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        // GNU base-256.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or_else(|| Error::malformed(format!("tar: {what} overflows")))?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .map_err(|_| Error::malformed(format!("tar: {what} {text:?} is not octal")))
}

/// Normalise an archive path: drop `./` and trailing `/`; refuse absolute paths and `..`.
fn clean_path(raw: &[u8], what: &str) -> Result<Vec<u8>> {
    if raw.first() == Some(&b'/') {
        return Err(Error::refused(format!(
            "tar: {what} {:?} is absolute",
            String::from_utf8_lossy(raw)
        )));
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::refused(format!(
                    "tar: {what} {:?} climbs out of the layer with ..",
                    String::from_utf8_lossy(raw)
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out.join(&b'/'))
}

impl<R: Read + 'static> TarLayerReader<R> {
    /// Detect the compression from the first bytes.
    pub fn new(input: R) -> Result<TarLayerReader<R>> {
        let mut buffered = BufReader::with_capacity(1 << 16, input);
        let magic = buffered.fill_buf().map_err(io("reading"))?.to_vec();
        let input: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(buffered))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(io("zstd"))?)
        } else {
            Box::new(buffered)
        };
        Ok(TarLayerReader {
            input,
            remaining: 0,
            padding: 0,
            global: Vec::new(),
            symlinks: HashSet::new(),
            _marker: std::marker::PhantomData,
        })
    }
}

impl<R: Read> TarLayerReader<R> {
    fn skip_rest(&mut self) -> Result<()> {
        let n = self.remaining + self.padding;
        let copied = std::io::copy(&mut (&mut self.input).take(n), &mut std::io::sink())
            .map_err(io("reading"))?;
        if copied != n {
            return Err(Error::malformed("tar: archive ends inside an entry"));
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut h = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            let n = self.input.read(&mut h[got..]).map_err(io("reading"))?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(Error::malformed("tar: archive ends inside a header"))
                };
            }
            got += n;
        }
        Ok(Some(h))
    }

    fn read_data(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > 16 << 20 {
            return Err(Error::malformed(format!(
                "tar: {what} of {size} bytes is too large"
            )));
        }
        let mut buf = vec![0u8; size as usize];
        self.input
            .read_exact(&mut buf)
            .map_err(|_| Error::malformed(format!("tar: archive ends inside {what}")))?;
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        std::io::copy(&mut (&mut self.input).take(pad), &mut std::io::sink())
            .map_err(io("reading"))?;
        Ok(buf)
    }
}

fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| Error::malformed("tar: bad PAX record"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::malformed("tar: bad PAX record length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(Error::malformed("tar: bad PAX record length"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| Error::malformed("tar: PAX record without ="))?;
        out.push((
            String::from_utf8_lossy(&record[..eq]).into_owned(),
            record[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

impl<R: Read> EntrySource for TarLayerReader<R> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.skip_rest()?;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let Some(h) = self.read_block()? else {
                return Ok(None);
            };
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let stored = parse_number(&h[148..156], "checksum")?;
            let mut sum: u64 = h.iter().map(|&b| b as u64).sum();
            sum -= h[148..156].iter().map(|&b| b as u64).sum::<u64>();
            sum += 8 * b' ' as u64;
            if stored != sum {
                return Err(Error::malformed(
                    "tar: header checksum mismatch (not a tar stream, or corrupt)",
                ));
            }
            let typeflag = h[156];
            let mut size = parse_number(&h[124..136], "size")?;
            match typeflag {
                b'x' => {
                    pax.extend(parse_pax(&self.read_data(size, "a PAX header")?)?);
                    continue;
                }
                b'g' => {
                    let records = parse_pax(&self.read_data(size, "a PAX global header")?)?;
                    self.global.extend(records);
                    continue;
                }
                b'L' => {
                    let mut n = self.read_data(size, "a GNU long name")?;
                    n.truncate(n.iter().position(|&b| b == 0).unwrap_or(n.len()));
                    long_name = Some(n);
                    continue;
                }
                b'K' => {
                    let mut n = self.read_data(size, "a GNU long link name")?;
                    n.truncate(n.iter().position(|&b| b == 0).unwrap_or(n.len()));
                    long_link = Some(n);
                    continue;
                }
                _ => {}
            }
            let field = |r: std::ops::Range<usize>| {
                h[r.clone()]
                    .iter()
                    .take_while(|&&b| b != 0)
                    .copied()
                    .collect::<Vec<u8>>()
            };
            let mut name = field(0..100);
            if &h[257..262] == b"ustar" && h[345] != 0 {
                let mut full = field(345..500);
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
            let mut link = field(157..257);
            let mut uid = parse_number(&h[108..116], "uid")?;
            let mut gid = parse_number(&h[116..124], "gid")?;
            let mut mtime = parse_number(&h[136..148], "mtime")? as i64;
            let mode = parse_number(&h[100..108], "mode")? as u32;
            let (major, minor) = (
                parse_number(&h[329..337], "devmajor")?,
                parse_number(&h[337..345], "devminor")?,
            );
            if let Some(n) = long_name.take() {
                name = n;
            }
            if let Some(l) = long_link.take() {
                link = l;
            }
            let mut xattrs = Vec::new();
            for (k, v) in self.global.iter().chain(pax.iter()) {
                let text = || String::from_utf8_lossy(v).into_owned();
                match k.as_str() {
                    "path" => name = v.clone(),
                    "linkpath" => link = v.clone(),
                    "size" => {
                        size = text()
                            .parse()
                            .map_err(|_| Error::malformed("tar: bad PAX size"))?
                    }
                    "uid" => {
                        uid = text()
                            .parse()
                            .map_err(|_| Error::malformed("tar: bad PAX uid"))?
                    }
                    "gid" => {
                        gid = text()
                            .parse()
                            .map_err(|_| Error::malformed("tar: bad PAX gid"))?
                    }
                    "mtime" => {
                        mtime = text()
                            .split('.')
                            .next()
                            .unwrap_or("0")
                            .parse()
                            .map_err(|_| Error::malformed("tar: bad PAX mtime"))?
                    }
                    k if k.starts_with(XATTR_PREFIX) => xattrs.push(Xattr {
                        name: k.as_bytes()[XATTR_PREFIX.len()..].to_vec(),
                        value: v.clone(),
                    }),
                    _ => {}
                }
            }
            xattrs.sort();
            let path = clean_path(&name, "entry")?;
            // Nothing may be written through a symlink the layer itself created.
            let mut prefix = Vec::new();
            for c in path.split(|&b| b == b'/') {
                if !prefix.is_empty() {
                    if self.symlinks.contains(&prefix) {
                        return Err(Error::refused(format!(
                            "tar: entry {} would be written through the symlink {}",
                            display_path(&path),
                            display_path(&prefix)
                        )));
                    }
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(c);
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' => {
                    if name.ends_with(b"/") {
                        EntryKind::Directory
                    } else {
                        EntryKind::File { size }
                    }
                }
                b'1' => {
                    // The target may be in this layer or a lower one (OCI allows both);
                    // it only has to stay inside the root.
                    let target = clean_path(&link, "hard link target")?;
                    if target.is_empty() {
                        return Err(Error::refused(format!(
                            "tar: hard link {} points at the root",
                            display_path(&path)
                        )));
                    }
                    EntryKind::HardLink { target }
                }
                b'2' => EntryKind::Symlink { target: link },
                b'3' => EntryKind::CharDevice {
                    major: major as u32,
                    minor: minor as u32,
                },
                b'4' => EntryKind::BlockDevice {
                    major: major as u32,
                    minor: minor as u32,
                },
                b'5' => EntryKind::Directory,
                b'6' => EntryKind::Fifo,
                other => {
                    return Err(Error::unsupported(format!(
                        "tar: entry {} has type {:?}",
                        display_path(&path),
                        other as char
                    )));
                }
            };
            if matches!(kind, EntryKind::Symlink { .. }) {
                self.symlinks.insert(path.clone());
            } else {
                self.symlinks.remove(&path);
            }
            self.remaining = if matches!(kind, EntryKind::File { .. }) {
                size
            } else {
                0
            };
            let data_len = if matches!(kind, EntryKind::File { .. }) {
                size
            } else {
                0
            };
            self.padding = (BLOCK as u64 - data_len % BLOCK as u64) % BLOCK as u64;
            let metadata = Metadata {
                permissions: mode & 0o7777,
                uid: uid as u32,
                gid: gid as u32,
                mtime,
                mtime_nsec: 0,
                xattrs,
            };
            return Ok(Some(Entry {
                path,
                kind,
                metadata,
            }));
        }
    }

    fn read_content(&mut self) -> Result<Box<dyn Read + '_>> {
        let n = self.remaining;
        self.remaining = 0;
        Ok(Box::new(ExactReader {
            inner: (&mut self.input).take(n),
            left: n,
        }))
    }
}

/// Fails instead of ending early when the archive is cut short.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "tar: archive ends inside a file",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
