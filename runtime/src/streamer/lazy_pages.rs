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
use std::sync::Arc;

use super::decode::Decoder;
use super::index::{ChunkRef, StreamIndex, StreamedFile};
use super::source::{ShardFiles, ShardSource};
use super::unpack::{create_image, unpack_files};
use crate::criu::page_server::PageSource;
use crate::criu::pagemap::{Pagemap, PAGE_SIZE};

/// Decoded chunks kept per page image: lazy-pages interleaves faults at random addresses
/// with its sequential background push.
const CACHED_CHUNKS: usize = 4;

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
        })
    }

    /// The bytes of chunk `i`, decoded and checked (or from the cache).
    fn chunk(&mut self, i: usize) -> io::Result<&[u8]> {
        if let Some(pos) = self.cache.iter().position(|(n, _)| *n == i) {
            let hit = self.cache.remove(pos);
            self.cache.insert(0, hit);
        } else {
            let mut buf = if self.cache.len() >= CACHED_CHUNKS {
                self.cache.pop().map(|(_, b)| b).unwrap_or_default()
            } else {
                Vec::new()
            };
            self.decoder
                .decode(&self.chunks[i], self.shards.as_ref(), &mut buf)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} bytes {}..{} failed their check ({e}); the checkpoint is damaged",
                            self.name,
                            self.starts[i],
                            self.starts[i] + self.chunks[i].len()
                        ),
                    )
                })?;
            self.cache.insert(0, (i, buf));
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

/// The task a `pagemap-PID.img` belongs to (shmem pagemaps are not tasks').
fn task_of(name: &str) -> Option<u32> {
    name.strip_prefix("pagemap-")?
        .strip_suffix(".img")?
        .parse()
        .ok()
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

    #[test]
    fn task_pagemaps_are_told_from_shmem_ones() {
        assert_eq!(task_of("pagemap-42.img"), Some(42));
        assert_eq!(task_of("pagemap-shmem-1234.img"), None);
        assert_eq!(task_of("pages-1.img"), None);
    }
}
