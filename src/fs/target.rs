//! Where a filesystem writer's bytes go: a range of a file, optionally with its first bytes
//! diverted elsewhere.
//!
//! A new overlay's final place in a SIF usually begins over the old image's last objects
//! (its JSON blobs), which must stay intact until the edit commits, and continues past the
//! file's old end, where nothing lives. Writing the image straight to that place but for
//! those first bytes (the *head*, staged apart and copied in at commit) spares a second
//! write of all its content.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A positioned write through which a caller routes a writer's writes (an edit's journal
/// makes each one a fault point and records it for its crash tests).
pub type WriteHook = fn(&File, &[u8], u64) -> io::Result<()>;

/// The bytes of a new image, positions 0.., as they map onto a file.
#[derive(Debug, Clone, Copy)]
pub struct Target<'f> {
    file: &'f File,
    /// Where position 0 of the image lands.
    offset: u64,
    /// Positions below `head_len` land at `head_at + pos` instead.
    head_at: u64,
    head_len: u64,
    /// Issues every write, when set.
    hook: Option<WriteHook>,
}

impl<'f> Target<'f> {
    /// The image at `offset` of `file`, in one piece.
    pub fn at(file: &'f File, offset: u64) -> Target<'f> {
        Target {
            file,
            offset,
            head_at: 0,
            head_len: 0,
            hook: None,
        }
    }

    /// The image at `offset` of `file`, except its first `head_len` bytes, at `head_at`.
    pub fn split(file: &'f File, offset: u64, head_at: u64, head_len: u64) -> Target<'f> {
        Target {
            file,
            offset,
            head_at,
            head_len,
            hook: None,
        }
    }

    /// Issue every write through `hook`.
    pub fn with_write_hook(mut self, hook: WriteHook) -> Target<'f> {
        self.hook = Some(hook);
        self
    }

    /// Write `bytes` at file offset `at`, through the hook if there is one.
    fn write_file_at(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        match self.hook {
            Some(hook) => hook(self.file, bytes, at),
            None => self.file.write_all_at(bytes, at),
        }
    }

    /// The file written to.
    pub fn file(&self) -> &'f File {
        self.file
    }

    /// The file ranges `(offset, len)` that hold the image's first `len` bytes, in order.
    pub fn pieces(&self, len: u64) -> Vec<(u64, u64)> {
        let head = self.head_len.min(len);
        let mut out = Vec::new();
        if head > 0 {
            out.push((self.head_at, head));
        }
        if len > head {
            out.push((self.offset + head, len - head));
        }
        out
    }

    /// Write `bytes` at image position `pos`.
    pub fn write_all_at(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let mut done = 0;
        for (at, n) in self.map(pos, bytes.len() as u64) {
            self.write_file_at(&bytes[done..done + n as usize], at)?;
            done += n as usize;
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at image position `pos`.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let mut done = 0;
        for (at, n) in self.map(pos, buf.len() as u64) {
            self.file
                .read_exact_at(&mut buf[done..done + n as usize], at)?;
            done += n as usize;
        }
        Ok(())
    }

    /// The file ranges of image positions `pos..pos + len`.
    fn map(&self, pos: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(2);
        let end = pos + len;
        if pos < self.head_len {
            let n = end.min(self.head_len) - pos;
            out.push((self.head_at + pos, n));
        }
        let rest = pos.max(self.head_len);
        if end > rest {
            out.push((self.offset + rest, end - rest));
        }
        out
    }

    /// Make the file long enough to hold the image's first `len` bytes.
    pub fn set_len_at_least(&self, len: u64) -> io::Result<()> {
        let need = self
            .pieces(len)
            .iter()
            .map(|&(at, n)| at + n)
            .max()
            .unwrap_or(0);
        if self.file.metadata()?.len() < need {
            self.file.set_len(need)?;
        }
        Ok(())
    }

    /// Make image positions `pos..pos + len` read as zeros: holes where the filesystem can
    /// punch them, written zeros elsewhere.
    pub fn zero(&self, pos: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        for (at, n) in self.map(pos, len) {
            if fallocate(
                self.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                at,
                n,
            )
            .is_ok()
            {
                continue;
            }
            let zeros = vec![0u8; 1 << 20];
            let mut done = 0;
            while done < n {
                let k = (n - done).min(zeros.len() as u64) as usize;
                self.write_file_at(&zeros[..k], at + done)?;
                done += k as u64;
            }
        }
        Ok(())
    }
}

impl Target<'_> {
    /// Give the image's first `len` bytes disk blocks (without changing what they read), so
    /// later writes into it cannot run out of space: `fallocate` where the filesystem has
    /// it, else zeros written over the holes.
    pub fn allocate(&self, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        for (at, n) in self.pieces(len) {
            if fallocate(self.file, FallocateFlags::empty(), at, n).is_ok() {
                continue;
            }
            // Without fallocate: rewrite every all-zero chunk as written zeros (content
            // unchanged, blocks allocated).
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0;
            while done < n {
                let k = (n - done).min(buf.len() as u64) as usize;
                self.file.read_exact_at(&mut buf[..k], at + done)?;
                if buf[..k].iter().all(|&b| b == 0) {
                    self.write_file_at(&buf[..k], at + done)?;
                }
                done += k as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_target_puts_the_head_apart_and_the_rest_in_place() {
        let file = tempfile::tempfile().unwrap();
        let target = Target::split(&file, 100, 1000, 10);
        target.set_len_at_least(30).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 1010);
        let image: Vec<u8> = (1..=30).collect();
        // Written in pieces that straddle the head's end.
        target.write_all_at(&image[..7], 0).unwrap();
        target.write_all_at(&image[7..25], 7).unwrap();
        target.write_all_at(&image[25..], 25).unwrap();
        let mut back = vec![0u8; 30];
        target.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, image);
        let mut head = [0u8; 10];
        file.read_exact_at(&mut head, 1000).unwrap();
        assert_eq!(head, image[..10]);
        let mut rest = [0u8; 20];
        file.read_exact_at(&mut rest, 110).unwrap();
        assert_eq!(rest, image[10..]);
        let mut before = [0u8; 10];
        file.read_exact_at(&mut before, 100).unwrap();
        assert_eq!(before, [0u8; 10], "the head's final place is not touched");
        assert_eq!(target.pieces(30), vec![(1000, 10), (110, 20)]);
        assert_eq!(target.pieces(4), vec![(1000, 4)]);
        target.zero(5, 10).unwrap();
        target.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..5], &image[..5]);
        assert_eq!(&back[5..15], &[0u8; 10]);
        assert_eq!(&back[15..], &image[15..]);
    }

    #[test]
    fn a_hook_issues_every_write() {
        fn refuse(_: &File, _: &[u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("refused by the hook"))
        }
        let file = tempfile::tempfile().unwrap();
        let target = Target::split(&file, 100, 1000, 10).with_write_hook(refuse);
        assert!(target.write_all_at(b"abc", 0).is_err());
        assert!(target.write_all_at(b"abc", 50).is_err());
        assert_eq!(
            file.metadata().unwrap().len(),
            0,
            "nothing written around it"
        );
    }

    #[test]
    fn a_whole_target_is_one_piece() {
        let file = tempfile::tempfile().unwrap();
        let target = Target::at(&file, 4096);
        target.write_all_at(b"abc", 1).unwrap();
        assert_eq!(target.pieces(8), vec![(4096, 8)]);
        let mut b = [0u8; 3];
        file.read_exact_at(&mut b, 4097).unwrap();
        assert_eq!(&b, b"abc");
    }
}
