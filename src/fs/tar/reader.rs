//! The tar layer reader: ustar, GNU and PAX archives, plain or compressed (chosen by magic
//! bytes), as an entry stream that refuses entries escaping the layer's root.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use super::header::{BLOCK, HeaderBlock, XATTR_PREFIX, padding, parse_pax, typeflag};
use super::io;
use crate::error::{Error, Result};
use crate::fs::entry::{Entry, EntryKind, EntrySource, Metadata, Xattr, display_path};

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd's frame magic.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// `input` decompressed, the format chosen by its first bytes: gzip (several members are
/// read as one stream, as `gzip -d` does), zstd, or anything else as it is (plain tar).
///
/// The magic is looked for in what the first read of `input` returns (64 KiB buffered).
pub fn decompressor<'a>(input: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 16, input);
    let magic = buffered.fill_buf().map_err(io("reading"))?;
    Ok(if magic.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(io("zstd"))?)
    } else {
        Box::new(buffered)
    })
}

/// Reads a tar layer (plain, gzip — several members too — or zstd, chosen by magic bytes)
/// as an entry stream. Paths are normalised (no `./`, no trailing `/`); absolute paths,
/// `..` and entries written through a symlink of the same layer are refused.
pub struct TarLayerReader<R: Read> {
    input: Box<dyn Read>,
    /// Bytes of the current entry's data not yet consumed (plus padding).
    remaining: u64,
    padding: u64,
    /// Records of PAX global headers so far (they apply to every later entry).
    global: Vec<(String, Vec<u8>)>,
    /// Paths this layer made symlinks.
    symlinks: HashSet<Vec<u8>>,
    _marker: std::marker::PhantomData<R>,
}

/// What the extension headers before an entry (PAX, GNU long name and link) say about it.
#[derive(Default)]
struct Extensions {
    pax: Vec<(String, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// An entry's header with its extension headers applied.
struct Header {
    typeflag: u8,
    name: Vec<u8>,
    link: Vec<u8>,
    size: u64,
    uid: u64,
    gid: u64,
    mtime: i64,
    mode: u32,
    major: u64,
    minor: u64,
    xattrs: Vec<Xattr>,
}

impl Header {
    /// The entry's own header block, amended by the global PAX records, then its own
    /// extension headers.
    fn resolve(
        block: &HeaderBlock,
        size: u64,
        ext: Extensions,
        global: &[(String, Vec<u8>)],
    ) -> Result<Header> {
        let fields = block.fields()?;
        let mut h = Header {
            typeflag: block.typeflag(),
            name: ext.long_name.unwrap_or_else(|| block.name()),
            link: ext.long_link.unwrap_or_else(|| block.link()),
            size,
            uid: fields.uid,
            gid: fields.gid,
            mtime: fields.mtime,
            mode: fields.mode,
            major: fields.major,
            minor: fields.minor,
            xattrs: Vec::new(),
        };
        for (k, v) in global.iter().chain(ext.pax.iter()) {
            h.apply_pax(k, v)?;
        }
        h.xattrs.sort();
        Ok(h)
    }

    fn apply_pax(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let text = || String::from_utf8_lossy(value).into_owned();
        let number = |what: &str| {
            text()
                .parse::<u64>()
                .map_err(|_| Error::malformed(format!("tar: bad PAX {what}")))
        };
        match key {
            "path" => self.name = value.to_vec(),
            "linkpath" => self.link = value.to_vec(),
            "size" => self.size = number("size")?,
            "uid" => self.uid = number("uid")?,
            "gid" => self.gid = number("gid")?,
            "mtime" => {
                // Fractional seconds are dropped.
                self.mtime = text()
                    .split('.')
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .map_err(|_| Error::malformed("tar: bad PAX mtime"))?
            }
            k if k.starts_with(XATTR_PREFIX) => self.xattrs.push(Xattr {
                name: k.as_bytes()[XATTR_PREFIX.len()..].to_vec(),
                value: value.to_vec(),
            }),
            _ => {}
        }
        Ok(())
    }

    /// The entry kind the type flag names (`path` is the cleaned path, for messages).
    fn kind(&self, path: &[u8]) -> Result<EntryKind> {
        Ok(match self.typeflag {
            typeflag::FILE | typeflag::OLD_FILE | typeflag::CONTIGUOUS => {
                if self.name.ends_with(b"/") {
                    EntryKind::Directory
                } else {
                    EntryKind::File { size: self.size }
                }
            }
            typeflag::HARD_LINK => {
                // The target may be in this layer or a lower one (OCI allows both);
                // it only has to stay inside the root.
                let target = clean_path(&self.link, "hard link target")?;
                if target.is_empty() {
                    return Err(Error::refused(format!(
                        "tar: hard link {} points at the root",
                        display_path(path)
                    )));
                }
                EntryKind::HardLink { target }
            }
            typeflag::SYMLINK => EntryKind::Symlink {
                target: self.link.clone(),
            },
            typeflag::CHAR_DEVICE => EntryKind::CharDevice {
                major: self.major as u32,
                minor: self.minor as u32,
            },
            typeflag::BLOCK_DEVICE => EntryKind::BlockDevice {
                major: self.major as u32,
                minor: self.minor as u32,
            },
            typeflag::DIRECTORY => EntryKind::Directory,
            typeflag::FIFO => EntryKind::Fifo,
            other => {
                return Err(Error::unsupported(format!(
                    "tar: entry {} has type {:?}",
                    display_path(path),
                    other as char
                )));
            }
        })
    }
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

/// The text of a GNU long name or link: up to its first NUL.
fn nul_terminated(mut data: Vec<u8>) -> Vec<u8> {
    data.truncate(data.iter().position(|&b| b == 0).unwrap_or(data.len()));
    data
}

impl<R: Read + Send + 'static> TarLayerReader<R> {
    /// A reader of `input`, decompressed by [`decompressor`].
    pub fn new(input: R) -> Result<TarLayerReader<R>> {
        Ok(TarLayerReader {
            input: decompressor(input)?,
            remaining: 0,
            padding: 0,
            global: Vec::new(),
            symlinks: HashSet::new(),
            _marker: std::marker::PhantomData,
        })
    }
}

impl<R: Read> TarLayerReader<R> {
    /// Read whatever follows the end-of-archive blocks to the end of the input, so that a
    /// hashing reader under the decompressor has seen the whole stream (and a gzip trailer
    /// has been checked).
    pub fn drain(&mut self) -> Result<u64> {
        self.skip_rest()?;
        std::io::copy(&mut self.input, &mut std::io::sink()).map_err(io("reading"))
    }

    fn skip_rest(&mut self) -> Result<()> {
        // Saturating: a header may claim any size up to u64::MAX.
        let n = self.remaining.saturating_add(self.padding);
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
        std::io::copy(
            &mut (&mut self.input).take(padding(size)),
            &mut std::io::sink(),
        )
        .map_err(io("reading"))?;
        Ok(buf)
    }

    /// The next entry's own header block and data size, with the extension headers read
    /// before it; `None` at the end of the archive.
    fn next_header(&mut self) -> Result<Option<(HeaderBlock, u64, Extensions)>> {
        let mut ext = Extensions::default();
        loop {
            let Some(h) = self.read_block()? else {
                return Ok(None);
            };
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let block = HeaderBlock::check(h)?;
            let size = block.size()?;
            match block.typeflag() {
                typeflag::PAX => {
                    let records = parse_pax(&self.read_data(size, "a PAX header")?)?;
                    ext.pax.extend(records);
                }
                typeflag::PAX_GLOBAL => {
                    let records = parse_pax(&self.read_data(size, "a PAX global header")?)?;
                    self.global.extend(records);
                }
                typeflag::GNU_LONG_NAME => {
                    ext.long_name = Some(nul_terminated(self.read_data(size, "a GNU long name")?));
                }
                typeflag::GNU_LONG_LINK => {
                    ext.long_link = Some(nul_terminated(
                        self.read_data(size, "a GNU long link name")?,
                    ));
                }
                _ => return Ok(Some((block, size, ext))),
            }
        }
    }

    /// Nothing may be written through a symlink the layer itself created.
    fn check_not_through_symlink(&self, path: &[u8]) -> Result<()> {
        let mut prefix = Vec::new();
        for c in path.split(|&b| b == b'/') {
            if !prefix.is_empty() {
                if self.symlinks.contains(&prefix) {
                    return Err(Error::refused(format!(
                        "tar: entry {} would be written through the symlink {}",
                        display_path(path),
                        display_path(&prefix)
                    )));
                }
                prefix.push(b'/');
            }
            prefix.extend_from_slice(c);
        }
        Ok(())
    }
}

impl<R: Read> EntrySource for TarLayerReader<R> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.skip_rest()?;
        let Some((block, size, ext)) = self.next_header()? else {
            return Ok(None);
        };
        let header = Header::resolve(&block, size, ext, &self.global)?;
        let path = clean_path(&header.name, "entry")?;
        self.check_not_through_symlink(&path)?;
        let kind = header.kind(&path)?;
        if matches!(kind, EntryKind::Symlink { .. }) {
            self.symlinks.insert(path.clone());
        } else {
            self.symlinks.remove(&path);
        }
        let data_len = if matches!(kind, EntryKind::File { .. }) {
            header.size
        } else {
            0
        };
        self.remaining = data_len;
        self.padding = padding(data_len);
        let metadata = Metadata {
            permissions: header.mode & 0o7777,
            uid: header.uid as u32,
            gid: header.gid as u32,
            mtime: header.mtime,
            mtime_nsec: 0,
            xattrs: header.xattrs,
        };
        Ok(Some(Entry {
            path,
            kind,
            metadata,
        }))
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
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}
