//! Writing archives: the tar of a walked checkpoint directory, `manifest.json` first and
//! (when packing with a trailer) metadata.json last, compressed per format.

use std::cell::Cell;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::manifest::MANIFEST_FILE;
use super::{create_new_file, open_nofollow, Trailer, ARCHIVE_MODE, BUF, ZSTD_LEVEL};
use crate::image::compression::Compression;
use crate::image::error::ImageError;
use crate::image::metadata::METADATA_FILE;
use crate::image::parallel::{BlockFormat, ParallelWriter};
use crate::image::walk::{Entry, Kind};

/// What goes around the walked entries: the manifest before them, metadata.json after.
pub(super) struct Frame<'a> {
    /// `manifest.json`'s bytes.
    pub manifest: Vec<u8>,
    /// metadata.json's producer, and the most bytes it may produce (as declared in the manifest).
    pub trailer: Option<(Trailer<'a>, u64)>,
}

/// Writes the tar (compressed per `c`) of `entries` to the new file `path`, then the
/// trailer's metadata.json if any; returns its size.
pub(super) fn write_archive(
    entries: &[Entry],
    path: &Path,
    c: Compression,
    frame: Frame<'_>,
) -> Result<u64, ImageError> {
    let io_err = |e: io::Error| ImageError::io(path, e);
    // Archives hold process memory: owner-only, like checkpoint directories.
    let file = create_new_file(path, ARCHIVE_MODE).map_err(io_err)?;
    let w = encode(entries, BufWriter::with_capacity(BUF, file), path, c, frame)?;
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    Ok(len)
}

/// Writes the tar (compressed per `c`) of `entries` and the trailer's metadata.json, if
/// any, into `w` (`out` names the archive in errors); returns `w`, flushed.
pub(super) fn encode<W: Write>(
    entries: &[Entry],
    w: W,
    out: &Path,
    c: Compression,
    frame: Frame<'_>,
) -> Result<W, ImageError> {
    let io_err = |e: io::Error| ImageError::io(out, e);
    let mut w = match c {
        Compression::None | Compression::Tar => tar_into(entries, w, out, frame)?,
        // Compressed on every core: one gzip member / LZ4 frame per block, concatenated.
        Compression::Gzip => {
            let format = BlockFormat::Gzip(flate2::Compression::fast());
            let enc = ParallelWriter::new(w, out, format)?;
            tar_into(entries, enc, out, frame)?.finish()?
        }
        Compression::Lz4 => {
            // 64 KiB blocks, as the single-stream encoder chose from tar's first 512-byte write.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .content_checksum(true);
            let enc = ParallelWriter::new(w, out, BlockFormat::Lz4(info))?;
            tar_into(entries, enc, out, frame)?.finish()?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL).map_err(io_err)?;
            enc.include_checksum(true).map_err(io_err)?;
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            enc.multithread(u32::try_from(workers).unwrap_or(1))
                .map_err(io_err)?;
            tar_into(entries, enc, out, frame)?
                .finish()
                .map_err(io_err)?
        }
    };
    w.flush().map_err(io_err)?;
    Ok(w)
}

/// A reader that counts bytes and remembers whether reading failed.
struct Counting<'a, R> {
    inner: R,
    count: &'a Cell<u64>,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count.set(self.count.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// Writes a tar of `entries` to `w` (the archive being written is `out`, for errors) and returns `w`.
pub(super) fn tar_into<W: Write>(
    entries: &[Entry],
    w: W,
    out: &Path,
    frame: Frame<'_>,
) -> Result<W, ImageError> {
    let mut builder = tar::Builder::new(w);
    // First, so a reader knows every entry and size before it writes anything. mtime 0
    // keeps archives of the same directory byte-for-byte identical.
    let mut header = tar::Header::new_gnu();
    header.set_mode(ARCHIVE_MODE);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(frame.manifest.len() as u64);
    builder
        .append_data(&mut header, MANIFEST_FILE, frame.manifest.as_slice())
        .map_err(|err| ImageError::io(out, err))?;
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(e.mode);
        header.set_mtime(e.mtime);
        header.set_uid(0);
        header.set_gid(0);
        match e.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, &e.rel, io::empty())
                    .map_err(|err| ImageError::io(out, err))?;
            }
            Kind::File => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(e.size);
                let file = open_nofollow(&e.abs).map_err(|err| ImageError::io(&e.abs, err))?;
                let count = Cell::new(0);
                let failed = Cell::new(false);
                let reader = BufReader::with_capacity(
                    BUF,
                    Counting {
                        inner: file.take(e.size),
                        count: &count,
                        failed: &failed,
                    },
                );
                builder
                    .append_data(&mut header, &e.rel, reader)
                    .map_err(|err| {
                        ImageError::io(if failed.get() { e.abs.as_path() } else { out }, err)
                    })?;
                if count.get() != e.size {
                    return Err(ImageError::io(
                        &e.abs,
                        io::Error::other(format!(
                            "the file shrank from {} to {} bytes while being packed; make sure nothing writes to the checkpoint directory during pack",
                            e.size,
                            count.get()
                        )),
                    ));
                }
            }
        }
    }
    if let Some((trailer, limit)) = frame.trailer {
        let json = trailer()?;
        if json.len() as u64 > limit {
            return Err(ImageError::Metadata {
                path: out.join(METADATA_FILE),
                detail: format!(
                    "metadata.json came to {} bytes, more than the {limit} declared in the archive's manifest",
                    json.len()
                ),
            });
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(ARCHIVE_MODE);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(json.len() as u64);
        builder
            .append_data(&mut header, METADATA_FILE, json.as_slice())
            .map_err(|err| ImageError::io(out, err))?;
    }
    builder.into_inner().map_err(|err| ImageError::io(out, err))
}
