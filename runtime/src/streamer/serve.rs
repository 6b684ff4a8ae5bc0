//! Serve (restore side): accept CRIU's connection on `streamer-serve.sock`, answer
//! whether each requested image exists, and write it into the pipe CRIU hands over,
//! decompressing its chunks on several threads (a bounded window ahead of the writer)
//! and producing zero chunks without reading anything.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::index::{ChunkRef, Codec, StreamIndex, StreamedFile};
use super::protocol;

/// CRIU's restore socket name inside the images directory.
pub const SERVE_SOCKET: &str = "streamer-serve.sock";
/// Decoded chunks waiting per decoder thread.
const WINDOW: usize = 2;
/// Pipe buffer we ask for (the default 64 KiB costs a wake-up per 64 KiB).
const PIPE_BYTES: i32 = 1 << 20;
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// A running server.
pub struct Serve {
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
    socket: PathBuf,
}

impl Serve {
    /// Binds `socket_dir/streamer-serve.sock` and serves the checkpoint in `images`.
    pub fn start(
        socket_dir: &Path,
        images: &Path,
        index: StreamIndex,
        decoders: usize,
    ) -> io::Result<Serve> {
        let socket = socket_dir.join(SERVE_SOCKET);
        let listener = UnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let images = images.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("stream-serve".into())
            .spawn(move || {
                let conn = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if stop.load(Ordering::SeqCst) {
                                return Ok(());
                            }
                            std::thread::sleep(ACCEPT_POLL);
                        }
                        Err(e) => return Err(e),
                    }
                };
                conn.set_nonblocking(false)?;
                run(conn, &images, Arc::new(index), decoders.max(1))
            })?;
        Ok(Serve {
            cancel,
            thread,
            socket,
        })
    }

    /// Waits until CRIU has taken everything it asked for.
    pub fn finish(self) -> io::Result<()> {
        self.cancel.store(true, Ordering::SeqCst);
        let r = self
            .thread
            .join()
            .map_err(|_| io::Error::other("serve thread panicked"));
        let _ = std::fs::remove_file(&self.socket);
        r?
    }
}

fn run(
    mut conn: UnixStream,
    images: &Path,
    index: Arc<StreamIndex>,
    decoders: usize,
) -> io::Result<()> {
    let shards: Arc<Vec<File>> = Arc::new(
        index
            .shards
            .iter()
            .map(|s| File::open(images.join(s)))
            .collect::<io::Result<_>>()?,
    );
    let mut writers = Vec::new();
    while let Some(name) = protocol::read_request(&mut conn)? {
        let file = index.file(&name).cloned();
        protocol::write_reply(&mut conn, file.is_some())?;
        let Some(file) = file else { continue };
        let pipe = protocol::recv_pipe(&conn)?;
        let (shards, codec) = (Arc::clone(&shards), index.codec);
        writers.push(
            std::thread::Builder::new()
                .name("stream-write".into())
                .spawn(move || serve_file(&file, pipe, &shards, codec, decoders))?,
        );
    }
    for w in writers {
        w.join()
            .map_err(|_| io::Error::other("writer panicked"))??;
    }
    Ok(())
}

/// One decoder thread's state, reused for every chunk: a zstd context and the buffer
/// for compressed bytes (fresh allocations per 4 MiB chunk cost page faults).
struct Decoder {
    codec: Codec,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    packed: Vec<u8>,
}

impl Decoder {
    fn new(codec: Codec) -> io::Result<Self> {
        let zstd = match codec {
            Codec::Zstd => Some(zstd::bulk::Decompressor::new()?),
            Codec::Lz4 => None,
        };
        Ok(Decoder {
            codec,
            zstd,
            packed: Vec::new(),
        })
    }

    /// Decodes one chunk into `out` (replacing its contents).
    fn decode(&mut self, c: &ChunkRef, shards: &[File], out: &mut Vec<u8>) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        out.clear();
        match *c {
            ChunkRef::Zero { len } => out.resize(len as usize, 0),
            ChunkRef::Data {
                shard,
                offset,
                stored,
                len,
            } => {
                self.packed.resize(stored as usize, 0);
                shards[shard as usize].read_exact_at(&mut self.packed, offset)?;
                match (self.codec, self.zstd.as_mut()) {
                    (Codec::Zstd, Some(d)) => {
                        out.reserve(len as usize);
                        d.decompress_to_buffer(&self.packed, out)?;
                    }
                    _ => {
                        let (size, body) = self.packed.split_at(4.min(self.packed.len()));
                        let size = <[u8; 4]>::try_from(size).map_err(|_| bad("short lz4 chunk"))?;
                        if u32::from_le_bytes(size) as u64 != len {
                            return Err(bad("lz4 chunk size does not match the index"));
                        }
                        out.resize(len as usize, 0);
                        let n = lz4_flex::block::decompress_into(body, out)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        out.truncate(n);
                    }
                }
                if out.len() as u64 != len {
                    return Err(bad("chunk decoded to the wrong size"));
                }
            }
        }
        Ok(())
    }
}

/// Writes one file into CRIU's pipe, chunks decoded by `decoders` threads in turn; each
/// thread cycles through `WINDOW + 1` buffers the writer hands back.
fn serve_file(
    file: &StreamedFile,
    pipe: OwnedFd,
    shards: &Arc<Vec<File>>,
    codec: Codec,
    decoders: usize,
) -> io::Result<()> {
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure only means smaller writes.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
    let mut out = File::from(pipe);
    let n = file.chunks.len();
    let workers = decoders.min(n.max(1));
    let mut lanes = Vec::new();
    let mut handles = Vec::new();
    for k in 0..workers {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(WINDOW);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        for _ in 0..=WINDOW {
            let _ = back_tx.send(Vec::new());
        }
        let chunks: Vec<ChunkRef> = file
            .chunks
            .iter()
            .skip(k)
            .step_by(workers)
            .cloned()
            .collect();
        let shards = Arc::clone(shards);
        handles.push(std::thread::spawn(move || {
            let mut decoder = match Decoder::new(codec) {
                Ok(d) => d,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            for c in &chunks {
                let Ok(mut buf) = back_rx.recv() else { return };
                let r = decoder.decode(c, &shards, &mut buf).map(|()| buf);
                if tx.send(r).is_err() {
                    return;
                }
            }
        }));
        lanes.push((rx, back_tx));
    }
    let mut result = Ok(());
    for i in 0..n {
        let (rx, back) = &lanes[i % workers];
        let chunk = rx
            .recv()
            .map_err(|_| io::Error::other("decoder stopped"))
            .and_then(|r| r);
        match chunk.and_then(|data| out.write_all(&data).map(|()| data)) {
            Ok(data) => {
                let _ = back.send(data);
            }
            Err(e) => {
                result = Err(io::Error::new(
                    e.kind(),
                    format!("serving {}: {e}", file.name),
                ));
                break;
            }
        }
    }
    drop(lanes);
    for h in handles {
        let _ = h.join();
    }
    result
}
