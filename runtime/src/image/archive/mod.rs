//! Packing a checkpoint directory into a (compressed) tar archive, and safe unpacking.
//!
//! Archives are written to a staging path of their own (`.OUT.<unique>.partial`), synced
//! and renamed without replacing anything, so the final name never holds a half-written
//! archive; gzip and lz4 are compressed on every core, one member or frame per
//! block (`image/parallel.rs`). Unpacking detects the format from the bytes, accepts
//! only regular files and directories with relative, `..`-free paths, and never follows a link.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::atomic;
use super::compression::{detect, Compression};
use super::error::ImageError;
use super::integrity::Digester;
use super::metadata::{FileDigest, METADATA_FILE};
use super::parallel::{BlockFormat, ParallelWriter};
use super::walk::{walk, Entry, Kind};

mod extract;
#[cfg(test)]
mod tests;

use extract::extract;

/// Buffer size for archive and file I/O.
const BUF: usize = 1 << 20;
/// zstd compression level.
const ZSTD_LEVEL: i32 = 3;
/// Permissions of a new archive file or copied checkpoint directory's files.
const ARCHIVE_MODE: u32 = 0o600;
/// Permissions of a new checkpoint directory made by [`pack`] with [`Compression::None`].
const DIR_MODE: u32 = 0o700;
/// Size of a tar block.
const BLOCK: u64 = 512;

/// Packs the contents of `src_dir` into `out` in format `c` (a directory copy for [`Compression::None`]); returns the bytes written.
pub fn pack(src_dir: &Path, out: &Path, c: Compression) -> Result<u64, ImageError> {
    check_out_not_inside(src_dir, out)?;
    let entries = walk(src_dir)?;
    write_atomically(out, |partial| {
        if c == Compression::None {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(partial)
                .map_err(|e| ImageError::io(partial, e))
                .and_then(|()| copy_tree(&entries, partial, true))
        } else {
            write_archive(&entries, partial, c, None)
        }
    })
}

/// Runs `write` on a staging path unique to this call, then renames it to `out` without
/// replacing anything there; on failure removes the staging path, so `out` never holds
/// half a checkpoint and two writers of one name never share or clobber a file.
fn write_atomically(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<u64, ImageError>,
) -> Result<u64, ImageError> {
    let partial = atomic::staging_path_for(out);
    let finish =
        write(&partial).and_then(|bytes| atomic::rename_noreplace(&partial, out).map(|()| bytes));
    if finish.is_err() {
        // Best effort: the original error matters more than a failed cleanup.
        let _ = remove_stale(&partial);
    }
    finish
}

/// Unpacks the checkpoint `archive` (any format, detected from its bytes; a directory is copied) into the existing, empty `dest`; returns the detected format.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Compression, ImageError> {
    unpack_with(archive, dest, None)
}

fn unpack_with(
    archive: &Path,
    dest: &Path,
    digester: Option<&Digester>,
) -> Result<Compression, ImageError> {
    let c = detect(archive)?;
    let meta = fs::metadata(dest).map_err(|e| ImageError::io(dest, e))?;
    if !meta.is_dir() {
        return Err(ImageError::io(
            dest,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    if fs::read_dir(dest)
        .map_err(|e| ImageError::io(dest, e))?
        .next()
        .is_some()
    {
        return Err(ImageError::DestNotEmpty {
            path: dest.to_path_buf(),
        });
    }
    let result = if c == Compression::None {
        walk(archive).and_then(|entries| copy_tree(&entries, dest, false).map(|_| ()))
    } else {
        extract(archive, c, dest, digester)
    };
    if result.is_err() {
        // Leave `dest` as empty as it was given; best effort.
        clear_dir(dest);
    }
    result.map(|()| c)
}

/// Like [`unpack`], hashing every file on another thread while it is written: returns
/// the digests (keyed like [`digest_dir`](super::integrity::digest_dir)) to check against
/// metadata.json with [`verify_digests`](super::integrity::verify_digests), without
/// reading the files again.
pub fn unpack_digested(
    archive: &Path,
    dest: &Path,
) -> Result<(Compression, BTreeMap<String, FileDigest>), ImageError> {
    if detect(archive)? == Compression::None {
        let c = unpack(archive, dest)?;
        return Ok((c, super::integrity::digest_dir(dest)?));
    }
    let digester = Digester::start();
    let result = unpack_with(archive, dest, Some(&digester));
    let digests = digester.finish();
    result.map(|c| (c, digests))
}

/// Refuses an output path whose directory is `src_dir` or below it.
fn check_out_not_inside(src_dir: &Path, out: &Path) -> Result<(), ImageError> {
    let src = fs::canonicalize(src_dir).map_err(|e| ImageError::io(src_dir, e))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = fs::canonicalize(parent).map_err(|e| ImageError::io(parent, e))?;
    if parent.starts_with(&src) {
        return Err(ImageError::OutputInsideSource {
            src: src_dir.to_path_buf(),
            out: out.to_path_buf(),
        });
    }
    Ok(())
}

/// Removes a leftover file or directory at `path` (without following a link), if any.
fn remove_stale(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| ImageError::io(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| ImageError::io(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io(path, e)),
    }
}

/// Removes everything inside `dir`; best effort, used to undo a failed unpack.
fn clear_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for ent in rd.flatten() {
            let p = ent.path();
            let _ = match ent.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
        }
    }
}

/// Creates `path` for writing; fails if anything (a link included) is already there.
fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a regular file for reading without following a symlink.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Copies walked `entries` into the existing directory `dest`; returns the bytes of file data copied.
fn copy_tree(entries: &[Entry], dest: &Path, sync: bool) -> Result<u64, ImageError> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    for e in entries {
        let target = dest.join(&e.rel);
        match e.kind {
            Kind::Dir => fs::create_dir(&target).map_err(|err| ImageError::io(&target, err))?,
            Kind::File => {
                let mut src = open_nofollow(&e.abs).map_err(|err| ImageError::io(&e.abs, err))?;
                let file =
                    create_new_file(&target, e.mode).map_err(|err| ImageError::io(&target, err))?;
                let mut w = BufWriter::with_capacity(BUF, file);
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(ImageError::io(&e.abs, err)),
                    };
                    w.write_all(&buf[..n])
                        .map_err(|err| ImageError::io(&target, err))?;
                    total += n as u64;
                }
                let file = w
                    .into_inner()
                    .map_err(|err| ImageError::io(&target, err.into_error()))?;
                if sync {
                    file.sync_all()
                        .map_err(|err| ImageError::io(&target, err))?;
                }
            }
        }
    }
    Ok(total)
}

/// Produces metadata.json's bytes once every other file is in the archive.
pub type Trailer<'a> = Box<dyn FnOnce() -> Result<Vec<u8>, ImageError> + Send + 'a>;

/// Like [`pack`] into an archive format, with metadata.json written last, from `trailer`:
/// so the digests in it can be computed while the other files are being packed.
/// A metadata.json already in `src_dir` is left out.
pub fn pack_with_metadata(
    src_dir: &Path,
    out: &Path,
    c: Compression,
    trailer: Trailer<'_>,
) -> Result<u64, ImageError> {
    if c == Compression::None {
        return Err(ImageError::io(
            out,
            io::Error::other("pack_with_metadata writes archives; a directory needs no packing"),
        ));
    }
    check_out_not_inside(src_dir, out)?;
    let entries: Vec<Entry> = walk(src_dir)?
        .into_iter()
        .filter(|e| e.rel != METADATA_FILE)
        .collect();
    write_atomically(out, |partial| {
        write_archive(&entries, partial, c, Some(trailer))
    })
}

/// Writes the tar (compressed per `c`) of `entries` to the new file `path`, then the
/// trailer's metadata.json if any; returns its size.
fn write_archive(
    entries: &[Entry],
    path: &Path,
    c: Compression,
    trailer: Option<Trailer<'_>>,
) -> Result<u64, ImageError> {
    let io_err = |e: io::Error| ImageError::io(path, e);
    // Archives hold process memory: owner-only, like checkpoint directories.
    let file = create_new_file(path, ARCHIVE_MODE).map_err(io_err)?;
    let w = BufWriter::with_capacity(BUF, file);
    let w = match c {
        Compression::None | Compression::Tar => tar_into(entries, w, path, trailer)?,
        // Compressed on every core: one gzip member / LZ4 frame per block, concatenated.
        Compression::Gzip => {
            let format = BlockFormat::Gzip(flate2::Compression::fast());
            let enc = ParallelWriter::new(w, path, format)?;
            tar_into(entries, enc, path, trailer)?.finish()?
        }
        Compression::Lz4 => {
            // 64 KiB blocks, as the single-stream encoder chose from tar's first 512-byte write.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .content_checksum(true);
            let enc = ParallelWriter::new(w, path, BlockFormat::Lz4(info))?;
            tar_into(entries, enc, path, trailer)?.finish()?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL).map_err(io_err)?;
            enc.include_checksum(true).map_err(io_err)?;
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            enc.multithread(u32::try_from(workers).unwrap_or(1))
                .map_err(io_err)?;
            tar_into(entries, enc, path, trailer)?
                .finish()
                .map_err(io_err)?
        }
    };
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    Ok(len)
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
fn tar_into<W: Write>(
    entries: &[Entry],
    w: W,
    out: &Path,
    trailer: Option<Trailer<'_>>,
) -> Result<W, ImageError> {
    let mut builder = tar::Builder::new(w);
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
    if let Some(trailer) = trailer {
        let json = trailer()?;
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
