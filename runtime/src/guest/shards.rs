//! The host's side of a streamed restore: it serves the guest the ranges of the shards
//! CRIU asks for, one [`Fetch::Read`] at a time, each as a checked stream, until the
//! guest says it restored (or sends its error).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::GuestError;
use super::transport::Stream;
use super::wire::{self, Fetch, Restored, StreamSender};
use crate::adapters::commit::FAULT_ENV;
use crate::streamer::index::{max_stored, ChunkRef};
use crate::streamer::StreamIndex;

/// The fault (in [`FAULT_ENV`]) that damages the first chunk of the first memory image in
/// transit, for the tests: the restore must fail mid-way and leave nothing running.
pub const CORRUPT_FAULT: &str = "kata-corrupt-read";

/// A checkpoint's shards, open for the guest's reads.
pub struct Shards {
    files: Vec<(File, u64)>,
    /// The largest read a chunk can need: more is refused.
    max_read: u64,
    /// A read at (shard, offset) sent damaged (fault injection).
    damage: Option<(u32, u64)>,
}

impl Shards {
    /// Opens the shards `index` names in `dir`.
    pub fn open(dir: &Path, index: &StreamIndex) -> Result<Self, GuestError> {
        let mut files = Vec::new();
        for name in &index.shards {
            let path = dir.join(name);
            let f = File::open(&path).map_err(|e| GuestError::io(&path, e))?;
            let size = f.metadata().map_err(|e| GuestError::io(&path, e))?.len();
            files.push((f, size));
        }
        let faulty =
            std::env::var(FAULT_ENV).is_ok_and(|v| v.split(',').any(|f| f.trim() == CORRUPT_FAULT));
        let damage = faulty.then(|| first_page_chunk(index)).flatten();
        Ok(Shards {
            files,
            max_read: max_stored(index.chunk_bytes),
            damage,
        })
    }

    /// Answers the guest's reads until it has restored.
    pub fn serve(&self, s: &mut dyn Stream) -> Result<Restored, GuestError> {
        let mut buf = Vec::new();
        loop {
            let (shard, offset, len) = match wire::recv_msg::<Fetch, _>(s)? {
                Fetch::Restored(r) => return Ok(r),
                Fetch::Read { shard, offset, len } => (shard, offset, len),
            };
            let range = self
                .files
                .get(shard as usize)
                .filter(|(_, size)| len <= self.max_read && offset.saturating_add(len) <= *size);
            let Some((file, _)) = range else {
                let e = GuestError::Protocol(format!(
                    "the agent asked for {len} bytes at {offset} of shard {shard}, which the checkpoint does not have"
                ));
                let _ = wire::send_error(s, &e);
                return Err(e);
            };
            buf.resize(len as usize, 0);
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| GuestError::io(format!("shard {shard}"), e))?;
            if self.damage == Some((shard, offset)) {
                tracing::warn!("sending a damaged chunk ({FAULT_ENV}={CORRUPT_FAULT})");
                wire::send_damaged(s, &buf)?;
                continue;
            }
            let mut sender = StreamSender::default();
            sender.send(s, &buf)?;
            sender.finish(s)?;
        }
    }
}

/// Where the first stored chunk of the first memory image (`pages-*.img`) is.
fn first_page_chunk(index: &StreamIndex) -> Option<(u32, u64)> {
    index
        .files
        .iter()
        .filter(|f| f.name.starts_with("pages-"))
        .flat_map(|f| f.chunks.iter())
        .find_map(|c| match *c {
            ChunkRef::Data { shard, offset, .. } | ChunkRef::Raw { shard, offset, .. } => {
                Some((shard, offset))
            }
            ChunkRef::Zero { .. } => None,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::guest::wire::recv_stream;

    fn index() -> StreamIndex {
        StreamIndex::parse(
            r#"{"version":2,"codec":"lz4","chunk_bytes":4194304,"shards":["shard-0.lz4"],"files":[]}"#,
        )
        .expect("index")
    }

    /// The guest's side: a read, then its bytes.
    fn read(s: &mut UnixStream, offset: u64, len: u64) -> Result<Vec<u8>, GuestError> {
        wire::send_msg(
            s,
            &Fetch::Read {
                shard: 0,
                offset,
                len,
            },
        )?;
        let mut got = Vec::new();
        recv_stream(s, &mut got, Some(len))?;
        Ok(got)
    }

    #[test]
    fn ranges_are_served_and_a_range_past_the_shard_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("shard-0.lz4"), &data).expect("write");
        let shards = Shards::open(dir.path(), &index()).expect("open");
        let (mut host, mut guest) = UnixStream::pair().expect("pair");
        let served = std::thread::spawn(move || shards.serve(&mut host));
        // Several frames' worth, from the middle.
        let got = read(&mut guest, 1000, 2_500_000).expect("read");
        assert!(got == data[1000..2_501_000], "served bytes differ");
        let err = read(&mut guest, 2_999_000, 2000).unwrap_err();
        assert!(
            matches!(err, GuestError::Remote { .. }) && err.to_string().contains("does not have"),
            "{err}"
        );
        let err = served.join().expect("join").unwrap_err();
        assert!(matches!(err, GuestError::Protocol(_)), "{err}");
    }

    #[test]
    fn the_restored_message_ends_the_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("shard-0.lz4"), b"abc").expect("write");
        let shards = Shards::open(dir.path(), &index()).expect("open");
        let (mut host, mut guest) = UnixStream::pair().expect("pair");
        let served = std::thread::spawn(move || shards.serve(&mut host));
        assert_eq!(read(&mut guest, 1, 2).expect("read"), b"bc");
        let done = Restored {
            pid: 7,
            duration_ms: 1,
        };
        wire::send_msg(&mut guest, &Fetch::Restored(done)).expect("send");
        assert_eq!(served.join().expect("join").expect("served").pid, 7);
    }

    #[test]
    fn a_damaged_piece_is_caught_by_the_reader() {
        let mut wire_bytes = Vec::new();
        wire::send_damaged(&mut wire_bytes, b"some shard bytes").expect("send");
        let err = recv_stream(&mut wire_bytes.as_slice(), &mut Vec::new(), Some(16)).unwrap_err();
        assert!(
            matches!(err, GuestError::CorruptChunk { offset: 0 }),
            "{err}"
        );
    }
}
