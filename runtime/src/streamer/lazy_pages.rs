//! A streamed checkpoint made ready for a lazy restore without decoding its memory first.
//! Every image but the tasks' page images is decoded into files (they are small); each
//! task's page image is written sparse, holding only the ranges the restorer reads itself
//! (its pagemap's non-lazy ones); the lazy ranges are served to `criu lazy-pages` from the
//! shards as it asks for them ([`StreamedPages`], behind `criu/page_server.rs`), every
//! chunk checked against its checksum on the way. So a large process runs again after
//! reading a few megabytes, not after decoding all of its memory.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::decode::Decoder;
use super::hollow::task_of;
use super::index::{ChunkRef, Codec, StreamIndex, StreamedFile};
use super::source::{ShardFiles, ShardSource};
use super::unpack::{create_image, unpack_files};
use crate::criu::page_server::PageSource;
use crate::criu::pagemap::{Pagemap, PAGE_SIZE};

/// Decoded chunks kept per page image: lazy-pages interleaves faults at random addresses
/// with its sequential background push.
const CACHED_CHUNKS: usize = 4;

/// Decodes the chunk after the one just served on a thread of its own, while lazy-pages
/// copies the pages it got: its background push asks for the image in order.
struct ReadAhead {
    ask: SyncSender<(usize, Vec<u8>)>,
    done: Receiver<(usize, io::Result<Vec<u8>>)>,
    in_flight: Option<usize>,
}

impl ReadAhead {
    fn start(
        chunks: Vec<ChunkRef>,
        shards: Arc<dyn ShardSource>,
        codec: Codec,
    ) -> io::Result<ReadAhead> {
        let (ask, asked) = sync_channel::<(usize, Vec<u8>)>(1);
        let (give, done) = sync_channel(1);
        let mut decoder = Decoder::new(codec)?;
        // Ends when the reader (holding `ask`) goes.
        std::thread::Builder::new()
            .name("page-read-ahead".into())
            .spawn(move || {
                for (i, mut buf) in asked {
                    let r = match chunks.get(i) {
                        Some(c) => decoder.decode(c, shards.as_ref(), &mut buf).map(|()| buf),
                        None => Err(io::ErrorKind::InvalidInput.into()),
                    };
                    if give.send((i, r)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(ReadAhead {
            ask,
            done,
            in_flight: None,
        })
    }

    /// The chunk in flight, once decoded.
    fn take(&mut self) -> Option<(usize, io::Result<Vec<u8>>)> {
        self.in_flight.take()?;
        self.done.recv().ok()
    }
}

/// Random access to one streamed image file, chunk by chunk.
struct FileReader {
    name: String,
    size: u64,
    /// Each chunk's first byte in the file.
    starts: Vec<u64>,
    chunks: Vec<ChunkRef>,
    shards: Arc<dyn ShardSource>,
    decoder: Decoder,
    /// (chunk number, its bytes), most recently used first.
    cache: Vec<(usize, Vec<u8>)>,
    ahead: ReadAhead,
}

impl FileReader {
    fn new(
        f: &StreamedFile,
        index: &StreamIndex,
        shards: &Arc<dyn ShardSource>,
    ) -> io::Result<Self> {
        let mut starts = Vec::with_capacity(f.chunks.len());
        let mut at = 0u64;
        for c in &f.chunks {
            starts.push(at);
            at += c.len();
        }
        if at != f.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: its chunks add up to {at} bytes, not {}",
                    f.name, f.size
                ),
            ));
        }
        Ok(FileReader {
            name: f.name.clone(),
            size: f.size,
            starts,
            chunks: f.chunks.clone(),
            shards: Arc::clone(shards),
            decoder: Decoder::new(index.codec)?,
            cache: Vec::new(),
            ahead: ReadAhead::start(f.chunks.clone(), Arc::clone(shards), index.codec)?,
        })
    }

    /// Names the image and the bytes of chunk `i` in a decoding error.
    fn failed(&self, i: usize, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!(
                "{} bytes {}..{} failed their check ({e}); the checkpoint is damaged",
                self.name,
                self.starts[i],
                self.starts[i] + self.chunks[i].len()
            ),
        )
    }

    /// Keeps `buf` as chunk `i`'s bytes, most recent first; returns a buffer to reuse.
    fn keep(&mut self, i: usize, buf: Vec<u8>) -> Vec<u8> {
        self.cache.insert(0, (i, buf));
        if self.cache.len() > CACHED_CHUNKS {
            return self.cache.pop().map(|(_, b)| b).unwrap_or_default();
        }
        Vec::new()
    }

    /// The bytes of chunk `i`, decoded and checked (or from the cache), with the next
    /// one set decoding meanwhile.
    fn chunk(&mut self, i: usize) -> io::Result<&[u8]> {
        let mut spare = Vec::new();
        if let Some(pos) = self.cache.iter().position(|(n, _)| *n == i) {
            let hit = self.cache.remove(pos);
            self.cache.insert(0, hit);
        } else {
            let buf = match self.ahead.in_flight {
                Some(j) if j == i => self.ahead.take().map(|(_, r)| r),
                _ => None,
            };
            let buf = match buf {
                Some(r) => r.map_err(|e| self.failed(i, e))?,
                None => {
                    let mut buf = Vec::new();
                    self.decoder
                        .decode(&self.chunks[i], self.shards.as_ref(), &mut buf)
                        .map_err(|e| self.failed(i, e))?;
                    buf
                }
            };
            spare = self.keep(i, buf);
        }
        let next = i + 1;
        if next < self.chunks.len()
            && self.ahead.in_flight != Some(next)
            && !self.cache.iter().any(|(n, _)| *n == next)
        {
            // One in flight at a time: one never asked for is kept all the same.
            if let Some((j, Ok(buf))) = self.ahead.take() {
                spare = self.keep(j, buf);
            }
            // The cache's head stays chunk `i` (kept above, or moved to the front).
            if let Some(pos) = self.cache.iter().position(|(n, _)| *n == i) {
                let hit = self.cache.remove(pos);
                self.cache.insert(0, hit);
            }
            if self.ahead.ask.send((next, spare)).is_ok() {
                self.ahead.in_flight = Some(next);
            }
        }
        Ok(&self.cache[0].1)
    }

    /// Appends `len` bytes from `off` to `out`.
    fn read_at(&mut self, mut off: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
        let end = off
            .checked_add(len)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the pagemap names bytes {off}..{} of a {}-byte image",
                        self.name,
                        off.saturating_add(len),
                        self.size
                    ),
                )
            })?;
        while off < end {
            let i = self.starts.partition_point(|s| *s <= off) - 1;
            let within = (off - self.starts[i]) as usize;
            let take = (end - off).min(self.chunks[i].len() - within as u64) as usize;
            out.extend_from_slice(&self.chunk(i)?[within..within + take]);
            off += take as u64;
        }
        Ok(())
    }
}

/// The lazy ranges of a streamed checkpoint's tasks, served from its shards.
pub struct StreamedPages {
    /// Task (as the images name it) to its pagemap and the reader of its page image.
    tasks: HashMap<u32, (Pagemap, FileReader)>,
}

impl PageSource for StreamedPages {
    fn pages(&mut self, pid: u32, vaddr: u64, nr: u32, out: &mut Vec<u8>) -> io::Result<u32> {
        let Some((pm, reader)) = self.tasks.get_mut(&pid) else {
            return Ok(0);
        };
        let Some(r) = pm.find(vaddr) else {
            return Ok(0);
        };
        let skip = vaddr - r.vaddr;
        let n = u64::from(nr).min((r.bytes() - skip) / PAGE_SIZE);
        reader.read_at(r.offset + skip, n * PAGE_SIZE, out)?;
        Ok(n as u32)
    }
}

fn is_pages(f: &StreamedFile) -> bool {
    f.name.starts_with("pages-")
}

/// Writes the streamed checkpoint in `images` into `out` for a lazy restore (see the
/// module's doc) and returns what serves the rest. `None`: pages in a parent checkpoint,
/// which this server does not follow; then every image is decoded whole, for lazy-pages
/// to read itself.
pub fn prepare(images: &Path, out: &Path, decoders: usize) -> io::Result<Option<StreamedPages>> {
    let index = StreamIndex::load(images)?;
    let shards: Arc<dyn ShardSource> = Arc::new(ShardFiles::open(images, &index)?);
    unpack_files(&index, &shards, out, decoders, |f| !is_pages(f))?;
    let mut maps = HashMap::new();
    for f in &index.files {
        if let Some(pid) = task_of(&f.name) {
            maps.insert(pid, Pagemap::read(&out.join(&f.name))?);
        }
    }
    if maps.values().any(Pagemap::has_parent_pages) {
        unpack_files(&index, &shards, out, decoders, is_pages)?;
        return Ok(None);
    }
    let mut tasks = HashMap::new();
    for f in index.files.iter().filter(|f| is_pages(f)) {
        let owner = maps
            .iter()
            .find(|(_, pm)| f.name == format!("pages-{}.img", pm.pages_id))
            .map(|(pid, _)| *pid);
        let Some(pid) = owner else {
            // Not a task's (shmem): the restorer reads all of it.
            unpack_files(&index, &shards, out, decoders, |g| g.name == f.name)?;
            continue;
        };
        let Some(pm) = maps.remove(&pid) else {
            continue;
        };
        let mut reader = FileReader::new(f, &index, &shards)?;
        let file = create_image(out, f)?;
        let mut buf = Vec::new();
        for (off, len) in pm.eager_extents() {
            buf.clear();
            reader.read_at(off, len, &mut buf)?;
            file.write_all_at(&buf, off)?;
        }
        file.set_len(f.size)?;
        tasks.insert(pid, (pm, reader));
    }
    Ok(Some(StreamedPages { tasks }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page image of five raw chunks in one shard, its bytes, and the index.
    fn raw_image(dir: &Path) -> (StreamedFile, StreamIndex, Vec<u8>) {
        const CHUNK: u64 = 3 * PAGE_SIZE;
        let data: Vec<u8> = (0..5 * CHUNK).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("shard-0"), &data).unwrap();
        let chunks = data
            .chunks(CHUNK as usize)
            .enumerate()
            .map(|(k, c)| ChunkRef::Raw {
                shard: 0,
                offset: k as u64 * CHUNK,
                len: CHUNK,
                xxh64: super::super::index::xxh64(c),
            })
            .collect();
        let f = StreamedFile {
            name: "pages-1.img".into(),
            size: data.len() as u64,
            chunks,
        };
        let index = StreamIndex {
            version: 2,
            codec: Codec::Zstd,
            chunk_bytes: CHUNK,
            shards: vec!["shard-0".into()],
            files: vec![f.clone()],
        };
        (f, index, data)
    }

    #[test]
    fn any_range_reads_back_across_chunks_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let (f, index, data) = raw_image(dir.path());
        let shards: Arc<dyn ShardSource> = Arc::new(ShardFiles::open(dir.path(), &index).unwrap());
        let mut r = FileReader::new(&f, &index, &shards).unwrap();
        let chunk = 3 * PAGE_SIZE;
        for (off, len) in [
            (0, 10),
            (chunk - 5, 10),
            (3 * chunk + 1, chunk + 100),
            (100, 4 * chunk),
            (0, 5 * chunk),
            (4 * chunk, chunk),
        ] {
            let mut out = Vec::new();
            r.read_at(off, len, &mut out).unwrap();
            assert_eq!(
                out,
                &data[off as usize..(off + len) as usize],
                "{off}+{len}"
            );
        }
        let mut out = Vec::new();
        assert!(
            r.read_at(5 * chunk - 1, 2, &mut out).is_err(),
            "past the end"
        );
    }

    #[test]
    fn a_damaged_chunk_is_named_with_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (f, index, _) = raw_image(dir.path());
        let chunk = 3 * PAGE_SIZE;
        let shard = dir.path().join("shard-0");
        let mut bytes = std::fs::read(&shard).unwrap();
        bytes[(2 * chunk + 1) as usize] ^= 0xff;
        std::fs::write(&shard, bytes).unwrap();
        let shards: Arc<dyn ShardSource> = Arc::new(ShardFiles::open(dir.path(), &index).unwrap());
        let mut r = FileReader::new(&f, &index, &shards).unwrap();
        let mut out = Vec::new();
        // Chunk 1 reads (and sets chunk 2 decoding ahead); chunk 2 fails its check.
        r.read_at(chunk, 10, &mut out).unwrap();
        let e = r.read_at(2 * chunk, 10, &mut out).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pages-1.img bytes {}..{}", 2 * chunk, 3 * chunk)),
            "{msg}"
        );
        assert!(msg.contains("failed their check"), "{msg}");
    }

    #[test]
    fn task_pagemaps_are_told_from_shmem_ones() {
        assert_eq!(task_of("pagemap-42.img"), Some(42));
        assert_eq!(task_of("pagemap-shmem-1234.img"), None);
        assert_eq!(task_of("pages-1.img"), None);
    }
}
