//! Serve (restore side): accept CRIU's connection on `streamer-serve.sock`, answer
//! whether each requested image exists, and write it into the pipe CRIU hands over,
//! decompressing its chunks on several threads (a bounded window ahead of the writer)
//! and producing zero chunks without reading anything.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::index::{ChunkRef, Codec, StreamIndex, StreamedFile};
use super::protocol;

/// CRIU's restore socket name inside the images directory.
pub const SERVE_SOCKET: &str = "streamer-serve.sock";
/// Decoded chunks waiting per decoder thread.
const WINDOW: usize = 2;
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

fn decode(c: &ChunkRef, shards: &[File], codec: Codec) -> io::Result<Vec<u8>> {
    match *c {
        ChunkRef::Zero { len } => Ok(vec![0u8; len as usize]),
        ChunkRef::Data {
            shard,
            offset,
            stored,
            len,
        } => {
            let mut packed = vec![0u8; stored as usize];
            shards[shard as usize].read_exact_at(&mut packed, offset)?;
            let out = match codec {
                Codec::Zstd => zstd::bulk::decompress(&packed, len as usize)?,
                Codec::Lz4 => lz4_flex::block::decompress_size_prepended(&packed)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            };
            if out.len() as u64 != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk decoded to the wrong size",
                ));
            }
            Ok(out)
        }
    }
}

/// Writes one file into CRIU's pipe, chunks decoded by `decoders` threads in turn.
fn serve_file(
    file: &StreamedFile,
    pipe: OwnedFd,
    shards: &Arc<Vec<File>>,
    codec: Codec,
    decoders: usize,
) -> io::Result<()> {
    let mut out = File::from(pipe);
    let n = file.chunks.len();
    let workers = decoders.min(n.max(1));
    let mut rxs = Vec::new();
    let mut handles = Vec::new();
    for k in 0..workers {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(WINDOW);
        let chunks: Vec<ChunkRef> = file
            .chunks
            .iter()
            .skip(k)
            .step_by(workers)
            .cloned()
            .collect();
        let shards = Arc::clone(shards);
        handles.push(std::thread::spawn(move || {
            for c in &chunks {
                if tx.send(decode(c, &shards, codec)).is_err() {
                    return;
                }
            }
        }));
        rxs.push(rx);
    }
    let mut result = Ok(());
    for i in 0..n {
        let chunk = rxs[i % workers]
            .recv()
            .map_err(|_| io::Error::other("decoder stopped"))
            .and_then(|r| r);
        match chunk.and_then(|data| out.write_all(&data)) {
            Ok(()) => {}
            Err(e) => {
                result = Err(io::Error::new(
                    e.kind(),
                    format!("serving {}: {e}", file.name),
                ));
                break;
            }
        }
    }
    drop(rxs);
    for h in handles {
        let _ = h.join();
    }
    result
}
