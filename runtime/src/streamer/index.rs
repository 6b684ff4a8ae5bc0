//! `streams.json`: where every chunk of every image file lives in the shards.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the index inside a streamed checkpoint.
pub const INDEX_FILE: &str = "streams.json";
/// Index format version written: 2 added `raw` chunks (stored uncompressed, with an
/// XXH64 of their bytes) and an XXH64 on lz4 chunks, whose block format has no checksum.
pub const INDEX_VERSION: u32 = 2;
/// Index versions this build reads.
pub const INDEX_VERSIONS_READ: [u32; 2] = [1, 2];
/// Largest chunk size an index may declare (cedana writes 4 MiB): restore allocates
/// buffers of a chunk's size, so a hostile index must not name more.
pub const MAX_CHUNK_BYTES: u64 = 256 << 20;

/// Most bytes a compressed chunk of `chunk_bytes` may take (above zstd's and lz4's bounds).
pub fn max_stored(chunk_bytes: u64) -> u64 {
    chunk_bytes + chunk_bytes / 64 + (64 << 10)
}

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
    /// Compressed bytes in a shard (a zstd frame with its content checksum, or an lz4
    /// block with the size prepended).
    Data {
        /// Shard number.
        shard: u32,
        /// Byte offset in the shard file.
        offset: u64,
        /// Compressed length.
        stored: u64,
        /// Uncompressed length.
        len: u64,
        /// XXH64 of the uncompressed bytes (lz4 chunks; zstd frames carry their own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xxh64: Option<u64>,
    },
    /// Bytes stored as they are (they did not compress), `len` of them at `offset`.
    Raw {
        /// Shard number.
        shard: u32,
        /// Byte offset in the shard file.
        offset: u64,
        /// Length (stored and uncompressed).
        len: u64,
        /// XXH64 of the bytes.
        xxh64: u64,
    },
}

impl ChunkRef {
    /// Uncompressed length.
    pub fn len(&self) -> u64 {
        match self {
            ChunkRef::Zero { len } | ChunkRef::Data { len, .. } | ChunkRef::Raw { len, .. } => *len,
        }
    }

    /// The shard holding the chunk's bytes (none for zero chunks).
    pub fn shard(&self) -> Option<u32> {
        match self {
            ChunkRef::Zero { .. } => None,
            ChunkRef::Data { shard, .. } | ChunkRef::Raw { shard, .. } => Some(*shard),
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
        Self::parse(&text)
    }

    /// Parses and checks an index. The version is checked before anything else, so an
    /// index from a newer cedana is refused as such, not as malformed.
    pub fn parse(text: &str) -> std::io::Result<StreamIndex> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_str(text)
            .map_err(|e| invalid(format!("stream index without a readable version: {e}")))?;
        if !INDEX_VERSIONS_READ.contains(&v.version) {
            return Err(invalid(if v.version > INDEX_VERSION {
                format!(
                    "stream index version {} is newer than this cedana reads (up to {INDEX_VERSION}); upgrade",
                    v.version
                )
            } else {
                format!(
                    "stream index version {} is not one this cedana knows",
                    v.version
                )
            }));
        }
        let idx: StreamIndex = serde_json::from_str(text)
            .map_err(|e| invalid(format!("stream index version {}: {e}", v.version)))?;
        if idx.version < 2
            && idx.files.iter().flat_map(|f| &f.chunks).any(|c| {
                matches!(
                    c,
                    ChunkRef::Raw { .. } | ChunkRef::Data { xxh64: Some(_), .. }
                )
            })
        {
            return Err(invalid(format!(
                "stream index version {} cannot hold raw or checksummed chunks",
                idx.version
            )));
        }
        let bad_shard = idx
            .files
            .iter()
            .flat_map(|f| &f.chunks)
            .any(|c| c.shard().is_some_and(|s| s as usize >= idx.shards.len()));
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
        idx.check_sizes().map_err(invalid)?;
        Ok(idx)
    }

    /// Checks that the chunk size is sane, every chunk fits in it, compressed chunks fit
    /// their bound, and each file's chunks add up to its size.
    fn check_sizes(&self) -> Result<(), String> {
        let cb = self.chunk_bytes;
        if cb == 0 || cb > MAX_CHUNK_BYTES {
            return Err(format!(
                "stream index chunk size {cb} is outside 1..={MAX_CHUNK_BYTES}"
            ));
        }
        for f in &self.files {
            let mut total = 0u64;
            for c in &f.chunks {
                if c.len() > cb {
                    return Err(format!(
                        "stream index: a chunk of {} holds {} bytes, more than the chunk size {cb}",
                        f.name,
                        c.len()
                    ));
                }
                if let ChunkRef::Data { stored, .. } = c {
                    if *stored > max_stored(cb) {
                        return Err(format!(
                            "stream index: a chunk of {} is stored in {stored} bytes, more than any compression of {cb} bytes",
                            f.name
                        ));
                    }
                }
                total = total.saturating_add(c.len());
            }
            if total != f.size {
                return Err(format!(
                    "stream index: the chunks of {} hold {total} bytes but its size is {}",
                    f.name, f.size
                ));
            }
        }
        Ok(())
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

/// XXH64 (seed 0) of `data`: the checksum of raw and lz4 chunks. The same function as
/// zstd's content checksum (whose frames keep its low 32 bits), at memory speed.
pub fn xxh64(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn word(b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
    }
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        let mut stripes = data.chunks_exact(32);
        for s in stripes.by_ref() {
            v[0] = round(v[0], word(&s[0..]));
            v[1] = round(v[1], word(&s[8..]));
            v[2] = round(v[2], word(&s[16..]));
            v[3] = round(v[3], word(&s[24..]));
        }
        rest = stripes.remainder();
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for x in v {
            h = merge(h, x);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(data.len() as u64);
    let mut words = rest.chunks_exact(8);
    for w in words.by_ref() {
        h = (h ^ round(0, word(w)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
    }
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let k = u32::from_le_bytes(rest[..4].try_into().unwrap_or([0; 4])) as u64;
        h = (h ^ k.wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        rest = &rest[4..];
    }
    for b in rest {
        h = (h ^ (*b as u64).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_known_values() {
        assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc"), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn xxh64_matches_zstd_content_checksums() {
        // zstd frames end with the low 32 bits of XXH64 of their content: check every
        // length up to a few stripes and a large buffer against it.
        let mut c = zstd::bulk::Compressor::new(1).expect("zstd");
        c.include_checksum(true).expect("checksum");
        let mut data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut lens: Vec<usize> = (0..100).collect();
        lens.push(data.len());
        for len in lens {
            let frame = c.compress(&data[..len]).expect("compress");
            let tail = u32::from_le_bytes(frame[frame.len() - 4..].try_into().expect("4"));
            assert_eq!(tail, xxh64(&data[..len]) as u32, "length {len}");
        }
        data[7] ^= 1;
        let frame = c.compress(&data).expect("compress");
        let tail = u32::from_le_bytes(frame[frame.len() - 4..].try_into().expect("4"));
        assert_eq!(tail, xxh64(&data) as u32);
    }

    fn index_text(version: u32, chunks: &str) -> String {
        format!(
            r#"{{"version":{version},"codec":"zstd","chunk_bytes":4194304,"shards":["shard-0.zst"],"files":[{{"name":"pages-1.img","size":8,"chunks":[{chunks}]}}]}}"#
        )
    }

    #[test]
    fn versions_are_checked_first() {
        let raw = r#"{"kind":"raw","shard":0,"offset":0,"len":8,"xxh64":1}"#;
        assert!(StreamIndex::parse(&index_text(2, raw)).is_ok());
        assert!(StreamIndex::parse(&index_text(1, r#"{"kind":"zero","len":8}"#)).is_ok());
        let e = StreamIndex::parse(&index_text(1, raw)).expect_err("raw in v1");
        assert!(e.to_string().contains("version 1"), "{e}");
        // A newer index is refused as newer, even when its chunks mean nothing to us.
        let e = StreamIndex::parse(&index_text(3, r#"{"kind":"future"}"#)).expect_err("v3");
        assert!(e.to_string().contains("newer"), "{e}");
        let e = StreamIndex::parse(&index_text(0, "")).expect_err("v0");
        assert!(e.to_string().contains("version 0"), "{e}");
        let bad = r#"{"kind":"raw","shard":1,"offset":0,"len":8,"xxh64":1}"#;
        assert!(StreamIndex::parse(&index_text(2, bad)).is_err());
    }
}
