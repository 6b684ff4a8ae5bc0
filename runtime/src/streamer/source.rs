//! Where a restore reads a streamed checkpoint's shards from: the shard files of a local
//! checkpoint, or a reader elsewhere (a kata guest reads them from the host over vsock,
//! so no shard is ever whole in the guest's memory). Chunks are read by (shard, offset)
//! in the order CRIU asks for images, which is not the order they were written in.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::index::StreamIndex;

/// Random access to a streamed checkpoint's shards.
pub trait ShardSource: Send + Sync {
    /// Fills `buf` with the bytes of shard number `shard` from `offset`.
    fn read_exact_at(&self, shard: u32, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// The shard files of a checkpoint directory.
pub struct ShardFiles(Vec<File>);

impl ShardFiles {
    /// Opens the shards `index` lists in `images`.
    pub fn open(images: &Path, index: &StreamIndex) -> io::Result<Self> {
        index
            .shards
            .iter()
            .map(|s| File::open(images.join(s)))
            .collect::<io::Result<_>>()
            .map(ShardFiles)
    }
}

impl ShardSource for ShardFiles {
    fn read_exact_at(&self, shard: u32, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let f = self.0.get(shard as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the stream index names shard {shard}, which does not exist"),
            )
        })?;
        f.read_exact_at(buf, offset)
    }
}

/// Shards a restore reads from somewhere other than its images directory (which then
/// holds only the index and metadata.json).
#[derive(Clone)]
pub struct RemoteShards(pub Arc<dyn ShardSource>);

impl std::fmt::Debug for RemoteShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteShards")
    }
}
