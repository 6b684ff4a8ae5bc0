//! The capture's pipeline, on threads of whichever process runs it: CRIU's requests
//! read on one thread, a reader thread per image file cutting its pipe into chunks, and
//! N shard threads compressing the chunks into the shards; then the index.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::capture::{CaptureConfig, CaptureStats};
use super::index::{ChunkRef, Codec, StreamIndex, StreamedFile, INDEX_FILE, INDEX_VERSION};
use super::protocol;
use super::shard::{private_file, Compressor, Packing, ShardWriter};
use super::socket;
use crate::image::metadata::FileDigest;
use crate::store::ObjectWriter;

/// Chunks waiting per shard; with 4 MiB chunks, N shards buffer at most ~N x 12 MiB.
const QUEUE_DEPTH: usize = 2;

/// A chunk on its way to a shard thread.
struct Job {
    id: u64,
    data: Vec<u8>,
}

/// Where compressed chunks ended up, by chunk id.
type Locations = Arc<Mutex<Vec<Option<ChunkRef>>>>;

fn record(locs: &Locations, id: u64, c: ChunkRef) {
    let mut v = locs.lock().unwrap_or_else(|p| p.into_inner());
    let i = id as usize;
    if v.len() <= i {
        v.resize(i + 1, None);
    }
    v[i] = Some(c);
}

fn shard_name(n: usize, codec: Codec) -> String {
    match codec {
        Codec::Zstd => format!("shard-{n}.zst"),
        Codec::Lz4 => format!("shard-{n}.lz4"),
    }
}

/// Chunk buffers handed back by the shard threads for the readers to reuse: fresh 4 MiB
/// allocations would cost a page fault per 4 KiB, and page faults are dear in VMs.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// An empty buffer with room for `cap` bytes: one from the pool, else a fresh reservation.
/// Nothing is zero-filled: pages are touched only as data lands, so the many small images
/// of a dump (a few hundred bytes each, a reader thread each) cost no 4 MiB memset and
/// page faults apiece; with 20 dumps at once those kept ~80 threads runnable.
fn take(pool: &Pool, cap: usize) -> Vec<u8> {
    let mut buf = pool
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_default();
    buf.clear();
    buf.reserve_exact(cap);
    buf
}

fn give(pool: &Pool, buf: Vec<u8>) {
    pool.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
}

/// Where a shard thread writes: a local file, or the upload's object of that name.
enum Target {
    File(PathBuf),
    Remote(Box<dyn ObjectWriter>),
}

fn shard_worker(
    n: usize,
    target: Target,
    rx: Receiver<Job>,
    cfg: (Codec, i32),
    locs: Locations,
    pool: Pool,
) -> io::Result<FileDigest> {
    let mut out = match target {
        Target::File(path) => ShardWriter::create(&path)?,
        Target::Remote(w) => ShardWriter::remote(w),
    };
    let mut compressor = Compressor::new(cfg.0, cfg.1)?;
    let mut packed = Vec::new();
    let mut offset = 0u64;
    for job in rx {
        let (shard, len) = (n as u32, job.data.len() as u64);
        let chunk = match compressor.pack(&job.data, &mut packed)? {
            Packing::Compressed { xxh64 } => {
                out.write_all(&packed)?;
                ChunkRef::Data {
                    shard,
                    offset,
                    stored: packed.len() as u64,
                    len,
                    xxh64,
                }
            }
            Packing::Raw { xxh64 } => {
                out.write_all(&job.data)?;
                ChunkRef::Raw {
                    shard,
                    offset,
                    len,
                    xxh64,
                }
            }
        };
        offset += match chunk {
            ChunkRef::Data { stored, .. } => stored,
            _ => len,
        };
        record(&locs, job.id, chunk);
        give(&pool, job.data);
    }
    let digest = out.finish()?;
    debug_assert_eq!(digest.size, offset);
    Ok(digest)
}

/// Whether a chunk is all zero bytes (compared a word at a time).
fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(8);
    words
        .by_ref()
        .all(|w| u64::from_ne_bytes(<[u8; 8]>::try_from(w).unwrap_or([1; 8])) == 0)
        && words.remainder().iter().all(|b| *b == 0)
}

/// Reads one image file from its pipe into chunks.
fn read_file(
    name: String,
    pipe: OwnedFd,
    chunk_bytes: usize,
    next_id: &AtomicU64,
    shards: &[SyncSender<Job>],
    locs: &Locations,
    pool: &Pool,
) -> io::Result<(StreamedFile, Vec<u64>, u64)> {
    socket::widen_pipe(&pipe);
    let mut pipe = File::from(pipe);
    let mut ids = Vec::new();
    let mut size = 0u64;
    let mut zero_bytes = 0u64;
    loop {
        let mut buf = take(pool, chunk_bytes);
        // Reads into the spare capacity as it is (`File` needs no initialised buffer).
        let filled = (&mut pipe).take(chunk_bytes as u64).read_to_end(&mut buf)?;
        if filled == 0 {
            give(pool, buf);
            break;
        }
        size += filled as u64;
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        if is_zero(&buf) {
            zero_bytes += filled as u64;
            record(locs, id, ChunkRef::Zero { len: filled as u64 });
            give(pool, buf);
        } else {
            shards[(id as usize) % shards.len()]
                .send(Job { id, data: buf })
                .map_err(|_| io::Error::other("a shard writer stopped"))?;
        }
        ids.push(id);
        if filled < chunk_bytes {
            break;
        }
    }
    Ok((
        StreamedFile {
            name,
            size,
            chunks: Vec::new(),
        },
        ids,
        zero_bytes,
    ))
}

pub(super) fn run(mut conn: UnixStream, cfg: &CaptureConfig) -> io::Result<CaptureStats> {
    let locs: Locations = Arc::new(Mutex::new(Vec::new()));
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let names: Vec<String> = (0..cfg.shards).map(|n| shard_name(n, cfg.codec)).collect();
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let target = match &cfg.sink {
            Some(sink) => Target::Remote((sink.0)(name).map_err(io::Error::other)?),
            None => Target::File(cfg.dir.join(name)),
        };
        let (target, locs, codec, pool) = (
            target,
            Arc::clone(&locs),
            (cfg.codec, cfg.level),
            Arc::clone(&pool),
        );
        senders.push(tx);
        workers.push(
            std::thread::Builder::new()
                .name(format!("stream-shard-{n}"))
                .spawn(move || shard_worker(n, target, rx, codec, locs, pool))?,
        );
    }
    let senders = Arc::new(senders);
    let next_id = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    while let Some(name) = protocol::read_request(&mut conn)? {
        if name.contains('/') || name.is_empty() || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad image name {name:?}"),
            ));
        }
        let pipe = protocol::recv_pipe(&conn)?;
        let (senders, next_id, locs, pool) = (
            Arc::clone(&senders),
            Arc::clone(&next_id),
            Arc::clone(&locs),
            Arc::clone(&pool),
        );
        let chunk = cfg.chunk_bytes;
        readers.push(
            std::thread::Builder::new()
                .name("stream-read".into())
                .spawn(move || read_file(name, pipe, chunk, &next_id, &senders, &locs, &pool))?,
        );
    }
    let mut files = Vec::new();
    let mut reader_err = None;
    for r in readers {
        match r
            .join()
            .map_err(|_| io::Error::other("reader panicked"))
            .and_then(|x| x)
        {
            Ok(f) => files.push(f),
            Err(e) => reader_err = reader_err.or(Some(e)),
        }
    }
    drop(senders);
    let mut stored_bytes = 0;
    let mut shard_digests = BTreeMap::new();
    let mut writer_err = None;
    for (w, name) in workers.into_iter().zip(&names) {
        match w
            .join()
            .map_err(|_| io::Error::other("shard writer panicked"))
            .and_then(|x| x)
        {
            Ok(d) => {
                stored_bytes += d.size;
                shard_digests.insert(name.clone(), d);
            }
            Err(e) => writer_err = writer_err.or(Some(e)),
        }
    }
    // A writer's failure (ENOSPC) is the cause; the readers then only saw it stop.
    if let Some(e) = writer_err.or(reader_err) {
        return Err(e);
    }
    let locs = locs.lock().unwrap_or_else(|p| p.into_inner());
    let mut zero_bytes = 0;
    let mut out = Vec::new();
    for (mut file, ids, zeros) in files {
        zero_bytes += zeros;
        for id in ids {
            let c = locs.get(id as usize).cloned().flatten().ok_or_else(|| {
                io::Error::other(format!("chunk {id} of {} was never stored", file.name))
            })?;
            file.chunks.push(c);
        }
        out.push(file);
    }
    let index = StreamIndex {
        version: INDEX_VERSION,
        codec: cfg.codec,
        chunk_bytes: cfg.chunk_bytes as u64,
        shards: names,
        files: out,
    };
    write_index(&cfg.dir, &index)?;
    Ok(CaptureStats {
        raw_bytes: index.raw_bytes(),
        stored_bytes,
        zero_bytes,
        shard_digests,
    })
}

fn write_index(dir: &Path, index: &StreamIndex) -> io::Result<()> {
    let text = serde_json::to_vec(index).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{INDEX_FILE}.tmp"));
    let mut f = private_file(&tmp)?;
    f.write_all(&text)?;
    f.sync_data()?;
    std::fs::rename(tmp, dir.join(INDEX_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4099]));
        let mut b = vec![0u8; 4099];
        b[4098] = 1;
        assert!(!is_zero(&b));
        b[4098] = 0;
        b[3] = 7;
        assert!(!is_zero(&b));
    }
}
