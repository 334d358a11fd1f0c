//! The tar format, written down once: the 512-byte ustar header (encoded by the writer,
//! decoded by the reader, GNU base-256 numbers included), PAX extended-header records, and
//! the padding of data to whole blocks.

use crate::error::{Error, Result};

/// Size of a tar block: headers and padded data.
pub(super) const BLOCK: usize = 512;
/// PAX key prefix of an extended attribute (the GNU tar / libarchive convention).
pub(super) const XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Largest value of a 7-digit octal field (uid, gid, mode).
pub(super) const MAX7: u64 = 0o7777777;
/// Largest value of an 11-digit octal field (size, mtime).
pub(super) const MAX11: u64 = 0o77777777777;

/// Padding after `len` bytes of data, up to the next block.
pub(super) fn padding(len: u64) -> u64 {
    (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64
}

/// Type flags (`typeflag`, byte 156).
pub(super) mod typeflag {
    pub(in crate::fs::tar) const FILE: u8 = b'0';
    /// Pre-POSIX regular file.
    pub(in crate::fs::tar) const OLD_FILE: u8 = 0;
    pub(in crate::fs::tar) const HARD_LINK: u8 = b'1';
    pub(in crate::fs::tar) const SYMLINK: u8 = b'2';
    pub(in crate::fs::tar) const CHAR_DEVICE: u8 = b'3';
    pub(in crate::fs::tar) const BLOCK_DEVICE: u8 = b'4';
    pub(in crate::fs::tar) const DIRECTORY: u8 = b'5';
    pub(in crate::fs::tar) const FIFO: u8 = b'6';
    /// Contiguous file (read as a regular file).
    pub(in crate::fs::tar) const CONTIGUOUS: u8 = b'7';
    /// PAX extended header for the next entry.
    pub(in crate::fs::tar) const PAX: u8 = b'x';
    /// PAX global extended header.
    pub(in crate::fs::tar) const PAX_GLOBAL: u8 = b'g';
    /// GNU long name of the next entry.
    pub(in crate::fs::tar) const GNU_LONG_NAME: u8 = b'L';
    /// GNU long link target of the next entry.
    pub(in crate::fs::tar) const GNU_LONG_LINK: u8 = b'K';
}

/// A ustar header's fields, as the writer fills them (each already fits its field).
pub(super) struct UstarHeader<'a> {
    /// At most 100 bytes.
    pub(super) name: &'a [u8],
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) size: u64,
    pub(super) mtime: u64,
    pub(super) typeflag: u8,
    /// At most 100 bytes.
    pub(super) link: &'a [u8],
    /// Device numbers, written for device entries only.
    pub(super) major: u32,
    pub(super) minor: u32,
}

impl UstarHeader<'_> {
    pub(super) fn encode(&self) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        let octal = |h: &mut [u8; BLOCK], at: usize, len: usize, v: u64| {
            let s = format!("{:0width$o}", v, width = len - 1);
            h[at..at + len - 1].copy_from_slice(&s.as_bytes()[s.len() - (len - 1)..]);
        };
        let name = &self.name[..self.name.len().min(100)];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h, 100, 8, self.mode as u64);
        octal(&mut h, 108, 8, self.uid as u64);
        octal(&mut h, 116, 8, self.gid as u64);
        octal(&mut h, 124, 12, self.size);
        octal(&mut h, 136, 12, self.mtime);
        h[156] = self.typeflag;
        let link = &self.link[..self.link.len().min(100)];
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(
            self.typeflag,
            typeflag::CHAR_DEVICE | typeflag::BLOCK_DEVICE
        ) {
            octal(&mut h, 329, 8, self.major as u64 & MAX7);
            octal(&mut h, 337, 8, self.minor as u64 & MAX7);
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        h
    }
}

/// A numeric header field: octal text, or GNU base-256 (high bit of the first byte set).
pub(super) fn parse_number(field: &[u8], what: &str) -> Result<u64> {
    if let Some((&first, rest)) = field.split_first()
        && first & 0x80 != 0
    {
        let mut v: u64 = (first & 0x7f) as u64;
        for &b in rest {
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

/// A header block whose checksum holds. Only the type and size are decoded up front: an
/// extension header (PAX, GNU long name) need not have valid ownership fields.
pub(super) struct HeaderBlock([u8; BLOCK]);

/// The fields of an entry's own header (not an extension header).
pub(super) struct HeaderFields {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: i64,
    pub(super) mode: u32,
    pub(super) major: u64,
    pub(super) minor: u64,
}

impl HeaderBlock {
    /// Check the header checksum (the sum of all bytes with the checksum field as spaces).
    pub(super) fn check(h: [u8; BLOCK]) -> Result<HeaderBlock> {
        let stored = parse_number(&h[148..156], "checksum")?;
        let sum: u64 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&b| b as u64)
            .sum::<u64>()
            + 8 * b' ' as u64;
        if stored != sum {
            return Err(Error::malformed(
                "tar: header checksum mismatch (not a tar stream, or corrupt)",
            ));
        }
        Ok(HeaderBlock(h))
    }

    pub(super) fn typeflag(&self) -> u8 {
        self.0[156]
    }

    pub(super) fn size(&self) -> Result<u64> {
        parse_number(&self.0[124..136], "size")
    }

    /// A NUL-terminated text field.
    fn text(&self, r: std::ops::Range<usize>) -> Vec<u8> {
        self.0[r].iter().take_while(|&&b| b != 0).copied().collect()
    }

    /// The entry name, with the ustar prefix field joined in front.
    pub(super) fn name(&self) -> Vec<u8> {
        let name = self.text(0..100);
        if &self.0[257..262] == b"ustar" && self.0[345] != 0 {
            let mut full = self.text(345..500);
            full.push(b'/');
            full.extend_from_slice(&name);
            return full;
        }
        name
    }

    /// The link target field.
    pub(super) fn link(&self) -> Vec<u8> {
        self.text(157..257)
    }

    /// The numeric fields, in header order of their checks.
    pub(super) fn fields(&self) -> Result<HeaderFields> {
        let h = &self.0;
        Ok(HeaderFields {
            uid: parse_number(&h[108..116], "uid")?,
            gid: parse_number(&h[116..124], "gid")?,
            mtime: parse_number(&h[136..148], "mtime")? as i64,
            mode: parse_number(&h[100..108], "mode")? as u32,
            major: parse_number(&h[329..337], "devmajor")?,
            minor: parse_number(&h[337..345], "devminor")?,
        })
    }
}

/// Encode PAX records: `LEN KEY=VALUE\n` each, where LEN counts the whole record.
pub(super) fn encode_pax(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body + body.to_string().len();
        if len.to_string().len() != body.to_string().len() {
            len += 1;
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Decode PAX records.
pub(super) fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_through_its_checksum() {
        let h = UstarHeader {
            name: b"dir/file",
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            size: 12345,
            mtime: 1_700_000_000,
            typeflag: typeflag::FILE,
            link: b"",
            major: 0,
            minor: 0,
        }
        .encode();
        let block = HeaderBlock::check(h).unwrap();
        assert_eq!(block.typeflag(), typeflag::FILE);
        assert_eq!(block.size().unwrap(), 12345);
        assert_eq!(block.name(), b"dir/file");
        let f = block.fields().unwrap();
        assert_eq!(
            (f.uid, f.gid, f.mode, f.mtime),
            (1000, 100, 0o4755, 1_700_000_000)
        );
        let mut bad = h;
        bad[0] ^= 1;
        assert!(HeaderBlock::check(bad).is_err());
    }

    #[test]
    fn numbers_are_octal_or_base_256() {
        assert_eq!(parse_number(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(parse_number(b"\0\0\0", "mode").unwrap(), 0);
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 1, 0], "size").unwrap(),
            256
        );
        assert!(parse_number(b"9", "mode").is_err());
        assert!(parse_number(&[0xff; 12], "size").is_err(), "overflow");
    }

    #[test]
    fn pax_records_round_trip_and_count_their_own_length() {
        let records = vec![
            ("path".to_string(), vec![b'p'; 95]),
            ("SCHILY.xattr.user.k".to_string(), b"v\n=".to_vec()),
        ];
        let data = encode_pax(&records);
        assert!(data.starts_with(b"105 path="), "{:?}", &data[..10]);
        assert_eq!(parse_pax(&data).unwrap(), records);
        assert!(parse_pax(b"5 a=b\n").is_err());
        assert!(parse_pax(b"x").is_err());
    }
}
