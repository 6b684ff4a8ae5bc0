//! Compression on every core for formats whose independently compressed pieces concatenate
//! into one valid stream: the byte stream is cut into fixed-size blocks, a small pool of
//! worker threads turns each block into its own gzip member or LZ4 frame, and the results
//! are written in order (as pigz does). The output is the same whatever the thread count.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::error::ImageError;

/// Uncompressed bytes per gzip member (deflate's work dominates; the 32 KiB window restarts
/// per member, which costs well under 0.1% of size at this block size).
const GZIP_BLOCK: usize = 1 << 20;
/// Uncompressed bytes per LZ4 frame: small enough that a block and its output stay in a
/// core's L2 cache, which measured faster than 1 MiB frames (lz4 is memory-bound).
const LZ4_BLOCK: usize = 256 << 10;

/// How each block is compressed: every block becomes one complete gzip member or LZ4 frame.
#[derive(Debug, Clone)]
pub(crate) enum BlockFormat {
    /// A gzip member at this level.
    Gzip(flate2::Compression),
    /// An LZ4 frame with these settings.
    Lz4(lz4_flex::frame::FrameInfo),
}

impl BlockFormat {
    /// Uncompressed bytes per block for this format.
    fn block_size(&self) -> usize {
        match self {
            BlockFormat::Gzip(_) => GZIP_BLOCK,
            BlockFormat::Lz4(_) => LZ4_BLOCK,
        }
    }

    /// Compresses `data` into `out` (empty, reused for its capacity) as one member or frame.
    fn compress(&self, data: &[u8], out: Vec<u8>) -> io::Result<Vec<u8>> {
        match self {
            BlockFormat::Gzip(level) => {
                let mut enc = flate2::write::GzEncoder::new(out, *level);
                enc.write_all(data)?;
                enc.finish()
            }
            BlockFormat::Lz4(info) => {
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info.clone(), out);
                enc.write_all(data)?;
                enc.finish().map_err(io::Error::other)
            }
        }
    }
}

/// What a worker applies to each block: input, an empty output buffer -> compressed bytes.
type CompressFn = dyn Fn(&[u8], Vec<u8>) -> io::Result<Vec<u8>> + Send + Sync;
/// The compressor shared by the workers.
type Compressor = Arc<CompressFn>;

/// A block handed to the workers: its place in the stream, its bytes, a buffer for the output.
struct Job {
    seq: u64,
    data: Vec<u8>,
    out: Vec<u8>,
}

/// A block back from a worker: its input buffer (for reuse) and the compressed bytes.
struct Done {
    seq: u64,
    data: Vec<u8>,
    out: io::Result<Vec<u8>>,
}

/// A [`Write`] that compresses blocks on worker threads and writes them, in order, to `W`.
///
/// At most 2 x threads blocks are in flight (queued, being compressed or waiting for their
/// turn to be written), plus the one being filled. Call [`finish`](Self::finish): dropping
/// the writer discards whatever was not yet written, and each worker stops after at most
/// one more block (its result has nowhere to go).
pub(crate) struct ParallelWriter<W: Write> {
    inner: W,
    /// The output, for errors.
    path: PathBuf,
    block: usize,
    /// The block being filled.
    buf: Vec<u8>,
    /// Emptied input and output buffers, for reuse.
    spare_in: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    jobs: Option<Sender<Job>>,
    /// The workers' side of `jobs`, kept to drop queued work on failure.
    queue: Arc<Mutex<Receiver<Job>>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    /// Compressed blocks that arrived before their turn.
    ready: BTreeMap<u64, Vec<u8>>,
    /// The next block to submit, and the next to write.
    next_seq: u64,
    next_write: u64,
    max_in_flight: u64,
    /// Set once anything failed: the stream is then unusable.
    failed: Option<String>,
}

impl<W: Write> ParallelWriter<W> {
    /// Starts the workers (as many as there are cores, at least 2); `path` names the output in errors.
    pub(crate) fn new(inner: W, path: &Path, format: BlockFormat) -> Result<Self, ImageError> {
        let threads = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let block = format.block_size();
        Self::with_compressor(
            inner,
            path,
            block,
            threads,
            Arc::new(move |data, out| format.compress(data, out)),
        )
    }

    fn with_compressor(
        inner: W,
        path: &Path,
        block: usize,
        threads: usize,
        compressor: Compressor,
    ) -> Result<Self, ImageError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (done_tx, done) = mpsc::channel::<Done>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (queue, done_tx, compressor) =
                (Arc::clone(&queue), done_tx.clone(), Arc::clone(&compressor));
            let spawned = thread::Builder::new()
                .name(format!("pack-compress-{i}"))
                .spawn(move || work(&queue, &done_tx, &*compressor));
            match spawned {
                Ok(handle) => workers.push(handle),
                // Dropping `jobs` on return stops the workers already started.
                Err(e) => return Err(ImageError::io(path, e)),
            }
        }
        Ok(ParallelWriter {
            inner,
            path: path.to_path_buf(),
            block,
            buf: Vec::with_capacity(block),
            spare_in: Vec::new(),
            spare_out: Vec::new(),
            jobs: Some(jobs),
            queue,
            done,
            workers,
            ready: BTreeMap::new(),
            next_seq: 0,
            next_write: 0,
            max_in_flight: 2 * threads as u64,
            failed: None,
        })
    }

    /// Compresses what is left, writes every block in order, stops the workers and returns the inner writer.
    pub(crate) fn finish(mut self) -> Result<W, ImageError> {
        let flushed = self.finish_blocks();
        // No more jobs: idle workers return. On failure, queued blocks are dropped unread.
        self.jobs = None;
        if flushed.is_err() {
            self.discard_queued();
        }
        let mut panicked = false;
        for handle in self.workers.drain(..) {
            panicked |= handle.join().is_err();
        }
        flushed.map_err(|e| ImageError::io(&self.path, e))?;
        if panicked {
            return Err(ImageError::io(
                &self.path,
                io::Error::other("a compression worker thread panicked"),
            ));
        }
        Ok(self.inner)
    }

    fn finish_blocks(&mut self) -> io::Result<()> {
        self.check()?;
        // An empty stream is still one (empty) member or frame, so the file is valid.
        if !self.buf.is_empty() || self.next_seq == 0 {
            self.submit()?;
        }
        while self.next_write < self.next_seq {
            self.collect(true)?;
        }
        self.inner.flush().map_err(|e| self.fail(e))
    }

    /// The error to return once the stream has failed.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(msg) => Err(io::Error::other(format!(
                "compressing the archive failed earlier: {msg}"
            ))),
            None => Ok(()),
        }
    }

    /// Records `e` as the stream's failure and returns it.
    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some(e.to_string());
        }
        e
    }

    /// Hands the filled block to the workers, first waiting while too many are in flight.
    fn submit(&mut self) -> io::Result<()> {
        while self.next_seq - self.next_write >= self.max_in_flight {
            self.collect(true)?;
        }
        let fresh = self
            .spare_in
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block));
        let data = std::mem::replace(&mut self.buf, fresh);
        let out = self.spare_out.pop().unwrap_or_default();
        let job = Job {
            seq: self.next_seq,
            data,
            out,
        };
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.fail(io::Error::other("the compression workers stopped")));
        }
        self.next_seq += 1;
        self.collect(false)
    }

    /// Takes finished blocks from the workers (with `wait`, at least the next one due) and
    /// writes those whose turn has come.
    fn collect(&mut self, wait: bool) -> io::Result<()> {
        loop {
            let done = if wait && !self.ready.contains_key(&self.next_write) {
                match self.done.recv() {
                    Ok(d) => d,
                    Err(_) => {
                        return Err(self.fail(io::Error::other("the compression workers stopped")))
                    }
                }
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            };
            let mut data = done.data;
            data.clear();
            self.spare_in.push(data);
            match done.out {
                Ok(out) => {
                    self.ready.insert(done.seq, out);
                }
                Err(e) => {
                    let e = io::Error::new(
                        e.kind(),
                        format!("compressing block {} failed: {e}", done.seq),
                    );
                    return Err(self.fail(e));
                }
            }
        }
        while let Some(mut out) = self.ready.remove(&self.next_write) {
            if let Err(e) = self.inner.write_all(&out) {
                return Err(self.fail(e));
            }
            self.next_write += 1;
            out.clear();
            self.spare_out.push(out);
        }
        Ok(())
    }

    /// Drops the blocks no worker has picked up yet.
    fn discard_queued(&self) {
        let queue = match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        while queue.try_recv().is_ok() {}
    }
}

impl<W: Write> Write for ParallelWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = data.len().min(self.block - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.block {
            self.submit()?;
        }
        Ok(n)
    }

    /// Writes the blocks already compressed; the block being filled is not cut short, so
    /// the output does not depend on when flush is called.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.collect(false)?;
        self.inner.flush().map_err(|e| self.fail(e))
    }
}

/// A worker: compresses jobs until the queue closes or the writer is gone; a panic in the
/// compressor comes back as that block's error, so the writer never waits for it in vain.
fn work(queue: &Mutex<Receiver<Job>>, done: &Sender<Done>, compressor: &CompressFn) {
    loop {
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(Job { seq, data, out }) = job else {
            return;
        };
        let out = panic::catch_unwind(AssertUnwindSafe(|| compressor(&data, out))).unwrap_or_else(
            |payload| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Err(io::Error::other(format!(
                    "the compression worker panicked: {what}"
                )))
            },
        );
        if done.send(Done { seq, data, out }).is_err() {
            return;
        }
    }
}

/// Reads concatenated LZ4 frames as one stream (lz4_flex's decoder stops at each frame's end).
pub(crate) struct Lz4Frames<R: BufRead> {
    /// The current frame's decoder; `None` only while switching to the next frame.
    dec: Option<lz4_flex::frame::FrameDecoder<R>>,
}

impl<R: BufRead> Lz4Frames<R> {
    /// Decodes the frames read from `r`.
    pub(crate) fn new(r: R) -> Self {
        Lz4Frames {
            dec: Some(lz4_flex::frame::FrameDecoder::new(r)),
        }
    }
}

impl<R: BufRead> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The end of a frame: no more input is the end of the stream, more is the next
            // frame (each pass consumes input or fails on it). A fresh decoder per frame,
            // since frames may differ in block size, which one decoder does not expect.
            if dec.get_mut().fill_buf()?.is_empty() {
                return Ok(0);
            }
            if let Some(done) = self.dec.take() {
                self.dec = Some(lz4_flex::frame::FrameDecoder::new(done.into_inner()));
            }
        }
    }
}

#[cfg(test)]
#[path = "parallel_tests.rs"]
mod tests;
