//! `streams.json`: where every chunk of every image file lives in the shards.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the index inside a streamed checkpoint.
pub const INDEX_FILE: &str = "streams.json";
/// Index format version.
pub const INDEX_VERSION: u32 = 1;

/// How shard chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// zstd frames with content checksums.
    Zstd,
    /// lz4 blocks with the size prepended (the fast option).
    Lz4,
}

/// One chunk of an image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChunkRef {
    /// All zero bytes: nothing stored.
    Zero {
        /// Uncompressed length.
        len: u64,
    },
    /// Compressed bytes in a shard.
    Data {
        /// Shard number.
        shard: u32,
        /// Byte offset in the shard file.
        offset: u64,
        /// Compressed length.
        stored: u64,
        /// Uncompressed length.
        len: u64,
    },
}

impl ChunkRef {
    /// Uncompressed length.
    pub fn len(&self) -> u64 {
        match self {
            ChunkRef::Zero { len } | ChunkRef::Data { len, .. } => *len,
        }
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One image file CRIU wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamedFile {
    /// File name as CRIU asked for it.
    pub name: String,
    /// Uncompressed size.
    pub size: u64,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// The whole index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamIndex {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// Chunk compression.
    pub codec: Codec,
    /// Uncompressed chunk size.
    pub chunk_bytes: u64,
    /// Shard file names, by number.
    pub shards: Vec<String>,
    /// Image files, in the order CRIU opened them.
    pub files: Vec<StreamedFile>,
}

impl StreamIndex {
    /// Reads and checks an index from a checkpoint directory.
    pub fn load(dir: &Path) -> std::io::Result<StreamIndex> {
        let text = std::fs::read_to_string(dir.join(INDEX_FILE))?;
        let idx: StreamIndex = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if idx.version > INDEX_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "stream index version {} is newer than this cedana; upgrade",
                    idx.version
                ),
            ));
        }
        let bad_shard = idx.files.iter().flat_map(|f| &f.chunks).any(
            |c| matches!(c, ChunkRef::Data { shard, .. } if *shard as usize >= idx.shards.len()),
        );
        let bad_name = idx
            .shards
            .iter()
            .chain(idx.files.iter().map(|f| &f.name))
            .any(|n| n.is_empty() || n.contains('/') || n == "." || n == "..");
        if bad_shard || bad_name {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream index names a shard or file that cannot be in this checkpoint",
            ));
        }
        Ok(idx)
    }

    /// The entry for a file CRIU asks for.
    pub fn file(&self, name: &str) -> Option<&StreamedFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Total uncompressed bytes.
    pub fn raw_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}
