//! Reading ahead on a thread of its own: a layer's decompression (and the hashing of its
//! compressed and uncompressed bytes) runs on one core while the tar reader and the
//! squashfs writer run on the others, instead of all taking turns on one thread.
//!
//! The thread fills chunks and hands them over a bounded channel, so at most
//! `DEPTH + 2` chunks (a few MiB) are ever held, whatever the layer's size.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes per chunk handed over.
const CHUNK: usize = 256 << 10;
/// Chunks read ahead at most.
const DEPTH: usize = 8;

/// A chunk, the end of the input (an empty chunk), or the error that stopped the reading.
type Chunk = io::Result<Vec<u8>>;

/// A `Read` whose input is read ahead on a thread (see the module documentation). Read
/// errors arrive in order, after the bytes read before them.
pub struct ReadAhead {
    chunks: Option<Receiver<Chunk>>,
    /// Chunks given back for the thread to fill again (no allocation per chunk).
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Start reading `inner` ahead.
    pub fn new<R: Read + Send + 'static>(mut inner: R) -> ReadAhead {
        let (tx, chunks) = sync_channel::<Chunk>(DEPTH);
        let (spare, spares) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let thread = std::thread::spawn(move || {
            loop {
                let mut buf = spares.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let mut filled = 0;
                let mut failed = None;
                while filled < CHUNK {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                buf.truncate(filled);
                let last = filled < CHUNK;
                // The bytes read before an error still come first.
                if filled > 0 && tx.send(Ok(buf)).is_err() {
                    return;
                }
                if let Some(e) = failed {
                    let _ = tx.send(Err(e));
                    return;
                }
                if last {
                    let _ = tx.send(Ok(Vec::new()));
                    return;
                }
            }
        });
        ReadAhead {
            chunks: Some(chunks),
            spare,
            current: Vec::new(),
            pos: 0,
            ended: false,
            thread: Some(thread),
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.ended {
            return Ok(0);
        }
        if self.pos == self.current.len() {
            let chunks = self
                .chunks
                .as_ref()
                .ok_or_else(|| io::Error::other("read-ahead: already stopped"))?;
            // A closed channel without the end marker: the thread died (a panic in the
            // decompressor); that must not look like the end of the input.
            let chunk = chunks
                .recv()
                .map_err(|_| io::Error::other("read-ahead: the reading thread stopped"))??;
            if chunk.is_empty() {
                self.ended = true;
                return Ok(0);
            }
            let done = std::mem::replace(&mut self.current, chunk);
            let _ = self.spare.try_send(done);
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next chunk; wait for it, so nothing
        // reads the input after its reader is gone.
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives `data` in reads of at most `step` bytes, then fails with `error` if set.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        error: Option<&'static str>,
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            if n == 0
                && let Some(message) = self.error.take()
            {
                return Err(io::Error::new(io::ErrorKind::InvalidData, message));
            }
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 257) as u8).collect()
    }

    #[test]
    fn every_byte_arrives_in_order_then_the_end() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK * DEPTH + 17] {
            let source = Source {
                data: data(n),
                pos: 0,
                step: 10_000,
                error: None,
            };
            let mut ahead = ReadAhead::new(source);
            let mut out = Vec::new();
            ahead.read_to_end(&mut out).unwrap();
            assert_eq!(out, data(n), "{n} bytes");
            assert_eq!(
                ahead.read(&mut [0u8; 8]).unwrap(),
                0,
                "the end stays the end"
            );
        }
    }

    #[test]
    fn an_error_comes_after_the_bytes_read_before_it() {
        let n = 2 * CHUNK + 5;
        let source = Source {
            data: data(n),
            pos: 0,
            step: 4096,
            error: Some("expands beyond the bound"),
        };
        let mut ahead = ReadAhead::new(source);
        let mut out = vec![0u8; n];
        ahead.read_exact(&mut out).unwrap();
        assert_eq!(out, data(n));
        let err = ahead.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "expands beyond the bound");
    }

    #[test]
    fn a_reader_dropped_early_stops_its_thread() {
        let source = Source {
            data: data(CHUNK * (DEPTH + 20)),
            pos: 0,
            step: CHUNK,
            error: None,
        };
        let mut ahead = ReadAhead::new(source);
        let mut first = [0u8; 100];
        ahead.read_exact(&mut first).unwrap();
        // Returns only once the thread has ended (it is joined).
        drop(ahead);
    }

    #[test]
    fn a_thread_that_panics_is_an_error_not_the_end() {
        struct Panics;
        impl Read for Panics {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("decompressor bug")
            }
        }
        let mut ahead = ReadAhead::new(Panics);
        let err = ahead.read(&mut [0u8; 8]).unwrap_err();
        assert!(err.to_string().contains("stopped"), "{err}");
    }
}
