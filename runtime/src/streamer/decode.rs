//! Decoding one chunk of a streamed checkpoint: read from its shard, decompressed, and
//! checked against its checksum (zstd frames carry their own; raw and lz4 chunks an XXH64
//! in the index). Shared by the restore stream and the lazy page server.

use std::io;

use super::index::{xxh64, ChunkRef, Codec};
use super::source::ShardSource;

/// One decoder thread's state, reused for every chunk: a zstd context and the buffer
/// for compressed bytes (fresh allocations per 4 MiB chunk cost page faults).
pub(super) struct Decoder {
    codec: Codec,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    packed: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Decoder {
    pub(super) fn new(codec: Codec) -> io::Result<Self> {
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

    /// Decodes one chunk into `out` (replacing its contents), checking its checksum.
    pub(super) fn decode(
        &mut self,
        c: &ChunkRef,
        shards: &dyn ShardSource,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        match *c {
            ChunkRef::Zero { len } => {
                out.clear();
                out.resize(len as usize, 0);
            }
            ChunkRef::Raw {
                shard,
                offset,
                len,
                xxh64: sum,
            } => {
                // Straight into the output buffer; resizing a reused buffer to the same
                // length touches nothing.
                out.resize(len as usize, 0);
                shards.read_exact_at(shard, out, offset)?;
                if xxh64(out) != sum {
                    return Err(bad("raw chunk does not match its checksum"));
                }
            }
            ChunkRef::Data {
                shard,
                offset,
                stored,
                len,
                xxh64: sum,
            } => {
                self.packed.resize(stored as usize, 0);
                shards.read_exact_at(shard, &mut self.packed, offset)?;
                match (self.codec, self.zstd.as_mut()) {
                    (Codec::Zstd, Some(d)) => {
                        // zstd checks the frame's content checksum itself.
                        out.clear();
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
                if sum.is_some_and(|sum| xxh64(out) != sum) {
                    return Err(bad("chunk does not match its checksum"));
                }
            }
        }
        Ok(())
    }
}
