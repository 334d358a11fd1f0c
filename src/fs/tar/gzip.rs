//! gzip on every core: the input is cut into fixed 1 MiB chunks, each compressed on a worker
//! thread into a gzip member of its own, and the members are written in order. A gzip
//! stream of several members is one valid stream for every reader (RFC 1952 §2.2; `gzip -d`,
//! Go's `compress/gzip`, zlib's `inflate` with `MultiGzDecoder`), and because the chunking
//! does not depend on the thread count, the bytes are the same on any machine.
//!
//! The cost of independent members is a few bytes per MiB (an 18-byte header and trailer,
//! and no dictionary across the chunk boundary).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Input bytes per gzip member.
const CHUNK: usize = 1 << 20;

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// A `Write` that gzips what it is given on worker threads into `out`.
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
    max_in_flight: usize,
}

impl<W: Write> ParallelGzip<W> {
    /// Compress at `level` (1-9, as gzip's) with one worker per core.
    pub fn new(out: W, level: u32) -> io::Result<ParallelGzip<W>> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let lvl = libdeflater::CompressionLvl::new(level.clamp(1, 9) as i32)
            .map_err(|_| io::Error::other(format!("gzip level {level}")))?;
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done_rx) = sync_channel::<Done>(threads * 2);
        let workers = (0..threads)
            .map(|_| {
                let jobs = std::sync::Arc::clone(&job_rx);
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    let mut compressor = libdeflater::Compressor::new(lvl);
                    loop {
                        let job = match jobs.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else { return };
                        let mut packed = vec![0u8; compressor.gzip_compress_bound(data.len())];
                        let result = compressor
                            .gzip_compress(&data, &mut packed)
                            .map(|n| {
                                packed.truncate(n);
                                packed
                            })
                            .map_err(|e| io::Error::other(format!("gzip: {e}")));
                        if done.send((seq, result)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Ok(ParallelGzip {
            out: Some(out),
            buf: Vec::with_capacity(CHUNK),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: threads * 2,
        })
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip: stream already finished"))
    }

    /// Write the members that are ready, in order; with `block`, wait for one first.
    fn drain(&mut self, block: bool) -> io::Result<()> {
        if block && self.in_flight > 0 {
            let (seq, result) = self
                .results
                .recv()
                .map_err(|_| io::Error::other("gzip: a worker stopped"))?;
            self.ready.insert(seq, result?);
            self.in_flight -= 1;
        }
        while let Ok((seq, result)) = self.results.try_recv() {
            self.ready.insert(seq, result?);
            self.in_flight -= 1;
        }
        while let Some(member) = self.ready.remove(&self.next_write) {
            self.out()?.write_all(&member)?;
            self.next_write += 1;
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.in_flight >= self.max_in_flight {
            self.drain(true)?;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let seq = self.next_seq;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip: stream already finished"))?
            .send((seq, chunk))
            .map_err(|_| io::Error::other("gzip: a worker stopped"))?;
        self.next_seq += 1;
        self.in_flight += 1;
        self.drain(false)
    }

    /// Compress what is left, write every member, and give back the writer. An empty input
    /// still gives one (empty) member, so the output is always a gzip stream.
    pub fn finish(mut self) -> io::Result<W> {
        if self.next_seq == 0 && self.buf.is_empty() {
            let mut compressor =
                libdeflater::Compressor::new(libdeflater::CompressionLvl::fastest());
            let mut packed = vec![0u8; compressor.gzip_compress_bound(0)];
            let n = compressor
                .gzip_compress(&[], &mut packed)
                .map_err(|e| io::Error::other(format!("gzip: {e}")))?;
            self.out()?.write_all(&packed[..n])?;
        }
        self.submit()?;
        while self.in_flight > 0 {
            self.drain(true)?;
        }
        self.drain(false)?;
        self.jobs = None;
        for worker in std::mem::take(&mut self.workers) {
            let _ = worker.join();
        }
        self.out
            .take()
            .ok_or_else(|| io::Error::other("gzip: stream already finished"))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Members are only complete at chunk boundaries; flushing the writer underneath is
        // all that can be done without changing the output.
        self.drain(false)?;
        self.out()?.flush()
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Close the job queue so the workers end.
        self.jobs = None;
        for worker in std::mem::take(&mut self.workers) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_decode_as_one_stream_whatever_the_write_sizes() {
        let data: Vec<u8> = (0..3 * CHUNK + 12345)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        let mut a = ParallelGzip::new(Vec::new(), 6).unwrap();
        a.write_all(&data).unwrap();
        let a = a.finish().unwrap();
        let mut b = ParallelGzip::new(Vec::new(), 6).unwrap();
        for piece in data.chunks(1000) {
            b.write_all(piece).unwrap();
        }
        let b = b.finish().unwrap();
        assert_eq!(a, b, "the output does not depend on how the input arrives");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let empty = ParallelGzip::new(Vec::new(), 6).unwrap().finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty() && empty.starts_with(&[0x1f, 0x8b]));
    }
}
