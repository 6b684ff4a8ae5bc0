//! What a shard thread does with a chunk: pack it (compressed, or raw when samples show
//! it will not shrink) and append it to its shard file, hashing and starting writeback
//! as it goes (or uploading it, for a checkpoint in an object store). Split from `capture.rs`, which reads CRIU's images and hands out chunks.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::index::{xxh64, Codec};
use crate::image::metadata::FileDigest;
use crate::image::writeback::WritebackFile;
use crate::store::ObjectWriter;

/// Samples tried before compressing a chunk, and their size: when none of them shrinks
/// below `INCOMPRESSIBLE`, the chunk is stored raw without compressing the rest.
const SAMPLES: usize = 4;
const SAMPLE_BYTES: usize = 16 << 10;
/// A chunk (or sample) packed to at least this fraction of its size, in 1/64ths, counts as
/// incompressible and is stored raw: a few % of size for skipping the codec on both sides.
const INCOMPRESSIBLE: usize = 62;

/// How a chunk went into its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Packing {
    /// The codec's output (in the `packed` buffer); XXH64 of the input for lz4 blocks.
    Compressed { xxh64: Option<u64> },
    /// The input bytes as they are.
    Raw { xxh64: u64 },
}

fn incompressible(packed: usize, raw: usize) -> bool {
    packed * 64 >= raw * INCOMPRESSIBLE
}

/// One shard thread's compressor, reused for every chunk (a zstd context is megabytes).
pub(super) enum Compressor {
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Lz4,
}

impl Compressor {
    pub(super) fn new(codec: Codec, level: i32) -> io::Result<Self> {
        Ok(match codec {
            Codec::Zstd => {
                let mut c = zstd::bulk::Compressor::new(level)?;
                c.include_checksum(true)?;
                Compressor::Zstd(Box::new(c))
            }
            Codec::Lz4 => Compressor::Lz4,
        })
    }

    /// Packs `data`: compressed into `out` (replacing its contents), or raw when samples
    /// spread over it, or the whole result, do not shrink.
    pub(super) fn pack(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<Packing> {
        let raw = |data: &[u8]| Packing::Raw { xxh64: xxh64(data) };
        if data.len() >= 2 * SAMPLES * SAMPLE_BYTES {
            let step = data.len() / SAMPLES;
            let mut all = true;
            for k in 0..SAMPLES {
                let sample = &data[k * step..k * step + SAMPLE_BYTES];
                self.compress(sample, out)?;
                if !incompressible(out.len(), sample.len()) {
                    all = false;
                    break;
                }
            }
            if all {
                out.clear();
                return Ok(raw(data));
            }
        }
        self.compress(data, out)?;
        if incompressible(out.len(), data.len()) {
            out.clear();
            return Ok(raw(data));
        }
        Ok(Packing::Compressed {
            xxh64: matches!(self, Compressor::Lz4).then(|| xxh64(data)),
        })
    }

    /// Compresses `data` into `out` (replacing its contents).
    fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        match self {
            Compressor::Zstd(c) => {
                out.reserve(zstd::zstd_safe::compress_bound(data.len()));
                c.compress_to_buffer(data, out)?;
            }
            Compressor::Lz4 => {
                // The size-prepended block format of lz4_flex::block::compress_prepend_size.
                let max = lz4_flex::block::get_maximum_output_size(data.len());
                out.resize(4 + max, 0);
                out[..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
                let n = lz4_flex::block::compress_into(data, &mut out[4..])
                    .map_err(io::Error::other)?;
                out.truncate(4 + n);
            }
        }
        Ok(())
    }
}

/// Where a shard's bytes go.
enum Out {
    /// A local file, written back as it grows.
    File(WritebackFile),
    /// A file of the checkpoint's upload (an object store): its parts go up while CRIU
    /// still writes, and nothing of the shard is kept on local disk.
    Remote(Box<dyn ObjectWriter>),
}

/// Appends to a shard: a local file written back as it grows, so the disk works while
/// CRIU still dumps and the fdatasync at the end has little left to do; or a remote
/// object being uploaded.
pub(super) struct ShardWriter {
    out: Out,
    written: u64,
    /// sha256 of everything written: the checkpoint's digest of this shard, without
    /// reading it back after the dump.
    hasher: Sha256,
}

impl ShardWriter {
    pub(super) fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::with(Out::File(WritebackFile::new(
            private_file(path)?,
            1 << 20,
        ))))
    }

    /// A shard written into `remote` (a file of the checkpoint's upload).
    pub(super) fn remote(remote: Box<dyn ObjectWriter>) -> Self {
        Self::with(Out::Remote(remote))
    }

    fn with(out: Out) -> Self {
        ShardWriter {
            out,
            written: 0,
            hasher: Sha256::new(),
        }
    }

    pub(super) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        match &mut self.out {
            Out::Remote(w) => w.write_all(data),
            Out::File(out) => out.write_all(data),
        }
    }

    /// Writes what is buffered and syncs the data (a remote shard: uploads its last
    /// parts and completes it); returns the shard's digest.
    pub(super) fn finish(self) -> io::Result<FileDigest> {
        match self.out {
            Out::File(out) => out.into_file()?.sync_data()?,
            Out::Remote(w) => {
                let size = w.finish().map_err(io::Error::other)?;
                if size != self.written {
                    return Err(io::Error::other(format!(
                        "the store took {size} bytes of a {} byte shard",
                        self.written
                    )));
                }
            }
        }
        Ok(FileDigest {
            size: self.written,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// Creates a file only the owner can read: shards hold process memory.
pub(super) fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
