//! Capture (dump side): accept CRIU's connection on `streamer-capture.sock`, read every
//! image file from the pipe CRIU hands over, cut it into chunks, and compress the chunks
//! on N shard threads straight into N shard files. All-zero chunks are only recorded;
//! chunks that do not compress (judged by a few samples first, then by the result) are
//! stored raw with an XXH64, so neither side spends time on the codec for them.
//! No uncompressed copy of the image is written anywhere, and memory stays bounded:
//! each shard queue holds at most a few chunks, and readers wait when it is full
//! (`capture_pipeline.rs`). This module is the handle: where the capture runs, and how it
//! ends.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::capture_pipeline::run;
use super::child::{self, Child};
use super::index::Codec;
use super::socket;
use crate::image::metadata::FileDigest;
use crate::store::{ObjectWriter, StoreError};

/// CRIU's dump socket name inside the images directory.
pub const CAPTURE_SOCKET: &str = "streamer-capture.sock";

/// Settings of a capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Directory receiving the socket, the shards and the index.
    pub dir: PathBuf,
    /// Number of shards (and compression threads).
    pub shards: usize,
    /// Chunk codec.
    pub codec: Codec,
    /// zstd level (ignored for lz4).
    pub level: i32,
    /// Uncompressed chunk size.
    pub chunk_bytes: usize,
    /// Where shards go instead of files in `dir`: the checkpoint's upload to an object
    /// store. The socket and the index stay in `dir`.
    pub sink: Option<ShardSink>,
}

/// Opens object `rel` of the checkpoint's upload for writing.
pub type OpenObject = dyn Fn(&str) -> Result<Box<dyn ObjectWriter>, StoreError> + Send + Sync;

/// Opens a shard (by file name) in the checkpoint's upload: shards stream into an object
/// store while CRIU writes, with no local copy.
#[derive(Clone)]
pub struct ShardSink(pub Arc<OpenObject>);

impl std::fmt::Debug for ShardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardSink")
    }
}

/// What a capture produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Uncompressed image bytes received from CRIU.
    pub raw_bytes: u64,
    /// Bytes written to shards.
    pub stored_bytes: u64,
    /// Bytes in all-zero chunks (stored as nothing).
    pub zero_bytes: u64,
    /// sha256 and size of each shard file (by name), hashed as it was written.
    pub shard_digests: BTreeMap<String, FileDigest>,
}

/// A running capture: in a streamer process of its own where the relay binary is
/// installed (see `child.rs` for why), else on threads of this process.
pub struct Capture(Backend);

enum Backend {
    Threads(Threads),
    Process(Child),
}

/// A capture on threads of this process.
struct Threads {
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<CaptureStats>>,
    socket: PathBuf,
    /// CRIU's connection, once accepted: [`Capture::seal`] ends its request loop.
    conn: Arc<Mutex<Option<UnixStream>>>,
}

impl Capture {
    /// Binds the socket CRIU will connect to and starts serving it in the background.
    /// A capture into an object store's upload stays in this process, where the upload is.
    pub fn start(cfg: CaptureConfig) -> io::Result<Capture> {
        match child::locate().filter(|_| cfg.sink.is_none()) {
            Some(bin) => Child::capture(&bin, &cfg).map(|c| Capture(Backend::Process(c))),
            None => Capture::in_process(cfg),
        }
    }

    /// [`Capture::start`] on threads of this process (what the streamer child runs).
    pub fn in_process(cfg: CaptureConfig) -> io::Result<Capture> {
        let socket = cfg.dir.join(CAPTURE_SOCKET);
        let listener = socket::listen(&socket)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let conn_slot = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&conn_slot);
        let thread = std::thread::Builder::new()
            .name("stream-capture".into())
            .spawn(move || {
                let conn = socket::accept(&listener, &stop)?.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::Interrupted, "capture cancelled")
                })?;
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.try_clone()?);
                run(conn, &cfg)
            })?;
        Ok(Capture(Backend::Threads(Threads {
            cancel,
            thread,
            socket,
            conn: conn_slot,
        })))
    }

    /// Finishes the capture while CRIU still holds its connection: at CRIU's `post-dump`
    /// every image is written and closed and no other will be opened, so the request loop
    /// is ended as if CRIU had hung up, and the shards and index are completed now, before
    /// the dumped tree is let go.
    pub fn seal(self) -> io::Result<CaptureStats> {
        let t = match self.0 {
            Backend::Process(c) => return c.ask(child::SEAL),
            Backend::Threads(t) => t,
        };
        let conn = t.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        match conn {
            // Requests already queued are still read; then the loop sees end-of-file.
            Some(c) => c.shutdown(std::net::Shutdown::Read)?,
            None => {
                t.abort();
                return Err(io::Error::other("CRIU never connected to the capture"));
            }
        }
        t.finish()
    }

    /// Waits for CRIU to finish sending and writes the index. Call after CRIU exited
    /// successfully.
    pub fn finish(self) -> io::Result<CaptureStats> {
        match self.0 {
            Backend::Process(c) => c.ask(child::FINISH),
            Backend::Threads(t) => t.finish(),
        }
    }

    /// Stops waiting for CRIU (after it failed) and discards the result. Returns the
    /// capture's own failure, if it had one: when a shard could not be written (a full
    /// disk), CRIU only saw its pipe closed, and this is the cause to report.
    pub fn abort(self) -> Option<io::Error> {
        match self.0 {
            Backend::Process(c) => c.abort(),
            Backend::Threads(t) => t.abort(),
        }
    }
}

impl Threads {
    fn finish(self) -> io::Result<CaptureStats> {
        let r = self
            .thread
            .join()
            .map_err(|_| io::Error::other("capture thread panicked"));
        let _ = std::fs::remove_file(&self.socket);
        r?
    }

    fn abort(self) -> Option<io::Error> {
        self.cancel.store(true, Ordering::SeqCst);
        let joined = self.thread.join();
        let _ = std::fs::remove_file(&self.socket);
        match joined {
            Ok(Err(e)) if e.kind() != io::ErrorKind::Interrupted => Some(e),
            _ => None,
        }
    }
}
