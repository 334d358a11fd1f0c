//! Little-endian fields, read and written: the one place the on-disk codecs in `fs` (ext and
//! squashfs) turn bytes into numbers and back.
//!
//! Reading never panics: [`Fields`] reports a short buffer as `None`, and each format turns
//! that into an error that names what it was decoding.

/// A cursor over a byte slice that reads little-endian fields in order.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields { buf, at: 0 }
    }

    /// A cursor starting at byte `at` (past the end: every read gives `None`).
    pub(crate) fn at(buf: &'a [u8], at: usize) -> Fields<'a> {
        Fields { buf, at }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.buf.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Some(a)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// The little-endian `u16` at byte `at` of `b`, `None` past the end.
pub(crate) fn le16(b: &[u8], at: usize) -> Option<u16> {
    Fields::at(b, at).u16()
}

/// The little-endian `u32` at byte `at` of `b`, `None` past the end.
pub(crate) fn le32(b: &[u8], at: usize) -> Option<u32> {
    Fields::at(b, at).u32()
}

/// Appends little-endian fields to a buffer.
pub(crate) trait Put {
    fn put_u16(&mut self, v: u16);
    fn put_i16(&mut self, v: i16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
}

impl Put for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i16(&mut self, v: i16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_in_order_and_stop_at_the_end() {
        let mut out = Vec::new();
        out.put_u16(0x0102);
        out.put_u32(0x03040506);
        out.put_u64(7);
        out.put_i16(-2);
        let mut f = Fields::new(&out);
        assert_eq!(f.u16(), Some(0x0102));
        assert_eq!(f.u32(), Some(0x03040506));
        assert_eq!(f.u64(), Some(7));
        assert_eq!(f.remaining(), 2);
        assert_eq!(f.i16(), Some(-2));
        assert_eq!(f.u16(), None);
        assert_eq!(le16(&out, 0), Some(0x0102));
        assert_eq!(le32(&out, 2), Some(0x03040506));
        assert_eq!(le32(&out, out.len() - 3), None);
        assert_eq!(le32(&out, usize::MAX), None);
        assert_eq!(Fields::at(&out, usize::MAX).bytes(1), None);
    }
}
