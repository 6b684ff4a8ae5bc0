//! Serve (restore side): accept CRIU's connection on `streamer-serve.sock`, answer
//! whether each requested image exists, and write it into the pipe CRIU hands over,
//! decompressing its chunks on several threads (a bounded window ahead of the writer),
//! reading raw chunks straight into the buffer the writer takes, checking every stored
//! chunk's checksum, and splicing zero chunks from one read-only zero buffer.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::child::{self, Child};
use super::decode::Decoder;
use super::feed::PipeFeed;
use super::hollow;
use super::index::{ChunkRef, Codec, StreamIndex, StreamedFile};
use super::protocol;
use super::socket;
use super::source::{ShardFiles, ShardSource};

/// CRIU's restore socket name inside the images directory.
pub const SERVE_SOCKET: &str = "streamer-serve.sock";
/// Decoded chunks waiting per decoder thread.
const WINDOW: usize = 2;

/// A running server: in a streamer process of its own where the relay binary is
/// installed (see `child.rs`), else on threads of this process.
pub struct Serve(Backend);

enum Backend {
    Threads {
        cancel: Arc<AtomicBool>,
        thread: JoinHandle<io::Result<()>>,
        socket: PathBuf,
    },
    Process(Child),
}

impl Serve {
    /// Binds `socket_dir/streamer-serve.sock` and serves the checkpoint in `images`.
    pub fn start(
        socket_dir: &Path,
        images: &Path,
        index: StreamIndex,
        decoders: usize,
    ) -> io::Result<Serve> {
        match child::locate() {
            // The child reads the index itself, from the same directory.
            Some(bin) => {
                Child::serve(&bin, socket_dir, images, decoders).map(|c| Serve(Backend::Process(c)))
            }
            None => Serve::in_process(socket_dir, images, index, decoders),
        }
    }

    /// [`Serve::start`] on threads of this process (what the streamer child runs).
    pub fn in_process(
        socket_dir: &Path,
        images: &Path,
        index: StreamIndex,
        decoders: usize,
    ) -> io::Result<Serve> {
        let shards: Arc<dyn ShardSource> = Arc::new(ShardFiles::open(images, &index)?);
        Serve::from_source(socket_dir, shards, index, decoders)
    }

    /// Serves CRIU on `socket_dir/streamer-serve.sock` from `shards` (a kata guest: the
    /// host's files, read over vsock), on threads of this process.
    pub fn from_source(
        socket_dir: &Path,
        shards: Arc<dyn ShardSource>,
        index: StreamIndex,
        decoders: usize,
    ) -> io::Result<Serve> {
        let socket = socket_dir.join(SERVE_SOCKET);
        let listener = socket::listen(&socket)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let thread = std::thread::Builder::new()
            .name("stream-serve".into())
            .spawn(move || {
                let Some(conn) = socket::accept(&listener, &stop)? else {
                    return Ok(());
                };
                run(conn, shards, Arc::new(index), decoders.max(1))
            })?;
        Ok(Serve(Backend::Threads {
            cancel,
            thread,
            socket,
        }))
    }

    /// Waits until CRIU has taken everything it asked for.
    pub fn finish(self) -> io::Result<()> {
        let (cancel, thread, socket) = match self.0 {
            Backend::Process(c) => return c.ask(child::FINISH),
            Backend::Threads {
                cancel,
                thread,
                socket,
            } => (cancel, thread, socket),
        };
        cancel.store(true, Ordering::SeqCst);
        let r = thread
            .join()
            .map_err(|_| io::Error::other("serve thread panicked"));
        let _ = std::fs::remove_file(&socket);
        r?
    }
}

fn run(
    mut conn: UnixStream,
    shards: Arc<dyn ShardSource>,
    index: Arc<StreamIndex>,
    decoders: usize,
) -> io::Result<()> {
    let mut writers = Vec::new();
    // Page images to serve shortened, their pagemaps having been served without the
    // zero pages left out (`hollow.rs`); and those already served whole, whose pagemaps
    // must then stay whole too.
    let mut shortened: HashMap<String, StreamedFile> = HashMap::new();
    let mut served_whole: HashSet<String> = HashSet::new();
    while let Some(name) = protocol::read_request(&mut conn)? {
        let mut file = shortened.get(&name).or_else(|| index.file(&name)).cloned();
        let mut pagemap = None;
        if file.is_some() {
            match hollow::hollow(&index, &shards, &name) {
                Ok(Some(h)) if !served_whole.contains(&h.pages.name) => {
                    tracing::debug!(image = %name, bytes = h.left_out, "zero pages left out");
                    pagemap = Some(h.pagemap);
                    shortened.insert(h.pages.name.clone(), h.pages);
                }
                Ok(_) => {}
                // An image this cannot read is served as it is; CRIU reads it all.
                Err(e) => tracing::debug!(image = %name, error = %e, "zero pages kept"),
            }
        }
        if name.starts_with("pages-") && !shortened.contains_key(&name) {
            served_whole.insert(name.clone());
        }
        protocol::write_reply(&mut conn, file.is_some())?;
        let Some(file) = file.take() else { continue };
        let pipe = protocol::recv_pipe(&conn)?;
        let (shards, codec) = (Arc::clone(&shards), index.codec);
        writers.push(
            std::thread::Builder::new()
                .name("stream-write".into())
                .spawn(move || match pagemap {
                    Some(bytes) => PipeFeed::new(File::from(pipe)).data(bytes, 0),
                    None => serve_file(&file, pipe, &shards, codec, decoders),
                })?,
        );
    }
    for w in writers {
        w.join()
            .map_err(|_| io::Error::other("writer panicked"))??;
    }
    Ok(())
}

/// Writes one file into CRIU's pipe: zero chunks from the zero buffer, the others decoded
/// by `decoders` threads in turn; each thread cycles through its buffers, which the feed
/// hands back once the pipe no longer holds them.
pub(super) fn serve_file(
    file: &StreamedFile,
    pipe: OwnedFd,
    shards: &Arc<dyn ShardSource>,
    codec: Codec,
    decoders: usize,
) -> io::Result<()> {
    socket::widen_pipe(&pipe);
    let mut feed = PipeFeed::new(File::from(pipe));
    let stored: Vec<ChunkRef> = file
        .chunks
        .iter()
        .filter(|c| c.shard().is_some())
        .cloned()
        .collect();
    // Every stored chunk but the last is full-size: what the pipe can hold of them bounds
    // how many buffers it keeps from the decoders.
    let full = stored.iter().map(ChunkRef::len).max().unwrap_or(1);
    let buffers = WINDOW + 1 + feed.in_flight(full);
    let workers = decoders.min(stored.len().max(1));
    let mut lanes = Vec::new();
    let mut handles = Vec::new();
    for k in 0..workers {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(WINDOW);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        for _ in 0..buffers {
            let _ = back_tx.send(Vec::new());
        }
        let chunks: Vec<ChunkRef> = stored.iter().skip(k).step_by(workers).cloned().collect();
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
                let r = decoder.decode(c, shards.as_ref(), &mut buf).map(|()| buf);
                if tx.send(r).is_err() {
                    return;
                }
            }
        }));
        lanes.push((rx, back_tx));
    }
    let mut result = Ok(());
    let mut next = 0;
    for c in &file.chunks {
        let r = match c {
            ChunkRef::Zero { len } => feed.zeros(*len),
            _ => {
                let lane = next % workers;
                next += 1;
                lanes[lane]
                    .0
                    .recv()
                    .map_err(|_| io::Error::other("decoder stopped"))
                    .and_then(|r| r)
                    .and_then(|data| feed.data(data, lane))
            }
        };
        while let Some((lane, buf)) = feed.reusable() {
            let _ = lanes[lane].1.send(buf);
        }
        if let Err(e) = r {
            result = Err(io::Error::new(
                e.kind(),
                format!("serving {}: {e}", file.name),
            ));
            break;
        }
    }
    drop(lanes);
    for h in handles {
        let _ = h.join();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streamer::capture::{Capture, CaptureConfig, CAPTURE_SOCKET};
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use prost::Message;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    fn request(sock: &mut UnixStream, name: &str) {
        let body = protocol::RequestEntry {
            filename: name.into(),
        }
        .encode_to_vec();
        let mut msg = (body.len() as u32).to_le_bytes().to_vec();
        msg.extend_from_slice(&body);
        sock.write_all(&msg).expect("request");
    }

    fn send_fd(sock: &UnixStream, fd: &OwnedFd) {
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[io::IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("send pipe");
    }

    fn connect(path: &Path) -> UnixStream {
        for _ in 0..400 {
            if let Ok(s) = UnixStream::connect(path) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("no socket at {}", path.display());
    }

    /// Plays CRIU: streams `data` in as `pages-1.img`, then reads it back.
    fn round_trip(
        codec: Codec,
        data: &[u8],
        damage: impl Fn(&Path, &StreamIndex),
    ) -> io::Result<Vec<u8>> {
        let dir = tempfile::tempdir().expect("tmp");
        let capture = Capture::start(CaptureConfig {
            dir: dir.path().to_path_buf(),
            shards: 2,
            codec,
            level: 3,
            chunk_bytes: 1 << 20,
            sink: None,
        })
        .expect("capture");
        let mut sock = connect(&dir.path().join(CAPTURE_SOCKET));
        request(&mut sock, "pages-1.img");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        send_fd(&sock, &r);
        drop(r);
        File::from(w).write_all(data).expect("write image");
        drop(sock);
        let stats = capture.finish().expect("finish");
        assert_eq!(stats.raw_bytes, data.len() as u64);
        let index = StreamIndex::load(dir.path()).expect("index");
        damage(dir.path(), &index);
        let work = tempfile::tempdir().expect("tmp");
        let serve = Serve::start(work.path(), dir.path(), index, 2).expect("serve");
        let mut sock = connect(&work.path().join(SERVE_SOCKET));
        request(&mut sock, "pages-1.img");
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).expect("reply len");
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        sock.read_exact(&mut body).expect("reply");
        assert!(
            protocol::ReplyEntry::decode(body.as_slice())
                .expect("decode")
                .exists
        );
        let (r, w) = nix::unistd::pipe().expect("pipe");
        send_fd(&sock, &w);
        drop(w);
        drop(sock);
        let mut back = Vec::new();
        let read = File::from(r).read_to_end(&mut back);
        serve.finish()?;
        read?;
        Ok(back)
    }

    /// 1 MiB chunks: random, text, zeros, random, a short text tail.
    fn image() -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect()
        };
        let text =
            |n: usize| -> Vec<u8> { b"GET / 200 OK\n".iter().copied().cycle().take(n).collect() };
        let mut data = random(1 << 20);
        data.extend(text(1 << 20));
        data.extend(vec![0u8; 2 << 20]);
        data.extend(random(1 << 20));
        data.extend(text(12345));
        data
    }

    #[test]
    fn raw_zero_and_compressed_chunks_round_trip() {
        let data = image();
        for codec in [Codec::Zstd, Codec::Lz4] {
            let back = round_trip(codec, &data, |_, index| {
                let kinds: Vec<&str> = index.files[0]
                    .chunks
                    .iter()
                    .map(|c| match c {
                        ChunkRef::Zero { .. } => "zero",
                        ChunkRef::Raw { .. } => "raw",
                        ChunkRef::Data { .. } => "data",
                    })
                    .collect();
                assert_eq!(kinds, ["raw", "data", "zero", "zero", "raw", "data"]);
            })
            .expect("round trip");
            assert!(back == data, "{codec:?}: restored bytes differ");
        }
    }

    #[test]
    fn damaged_raw_chunk_is_refused() {
        let data = image();
        let r = round_trip(Codec::Zstd, &data, |dir, index| {
            let Some(ChunkRef::Raw { shard, offset, .. }) = index.files[0].chunks.first() else {
                panic!("first chunk not raw");
            };
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(&index.shards[*shard as usize]))
                .expect("open shard");
            f.write_all_at(&[0xFF, 0x00, 0xFF], offset + 1000)
                .expect("damage");
        });
        let e = r.expect_err("damaged chunk served");
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
