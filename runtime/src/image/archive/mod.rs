//! Packing a checkpoint directory into a (compressed) tar archive, and safe unpacking.
//!
//! Archives are written to a staging path of their own (`.OUT.<unique>.partial`), synced
//! and renamed without replacing anything, so the final name never holds a half-written
//! archive; gzip and lz4 are compressed on every core, one member or frame per block
//! (`image/parallel.rs`). Every archive starts with `manifest.json` (`manifest.rs`).
//! Unpacking detects the format from the bytes, accepts only regular files and directories
//! with relative, `..`-free paths, never follows a link, and writes only what the manifest
//! declares (older archives: what the free space allows, `budget.rs`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::atomic;
use super::compression::{detect, Compression};
use super::digester::Digester;
use super::error::ImageError;
use super::metadata::{FileDigest, METADATA_FILE};
use super::walk::{walk, Entry, Kind};

mod budget;
mod extract;
mod manifest;
#[cfg(test)]
mod manifest_tests;
#[cfg(test)]
mod tests;
mod write;

use extract::extract;
pub use manifest::{
    metadata_limit, EntryType, Manifest, ManifestEntry, MANIFEST_FILE, MANIFEST_VERSION,
    MAX_MANIFEST_BYTES, MAX_METADATA_BYTES,
};
#[cfg(test)]
use write::tar_into;
use write::{encode, write_archive, Frame};

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
    if c != Compression::None {
        refuse_reserved(&entries)?;
    }
    write_atomically(out, |partial| {
        if c == Compression::None {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(partial)
                .map_err(|e| ImageError::io(partial, e))
                .and_then(|()| copy_tree(&entries, partial, true))
        } else {
            let manifest = Manifest::of(&entries, None).to_bytes(out)?;
            let frame = Frame {
                manifest,
                trailer: None,
            };
            write_archive(&entries, partial, c, frame)
        }
    })
}

/// Refuses a source holding a top-level `manifest.json`: the archive's own would clash.
fn refuse_reserved(entries: &[Entry]) -> Result<(), ImageError> {
    if entries.iter().any(|e| e.rel == MANIFEST_FILE) {
        return Err(ImageError::unsafe_entry(
            MANIFEST_FILE,
            "the name is reserved for the archive's manifest",
        ));
    }
    Ok(())
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
    unpack_with(archive, dest, None, false).map(|(c, _)| c)
}

/// The bytes the checkpoint `archive` unpacks to on disk, as its manifest declares them,
/// read without unpacking it; `None` for a directory or an archive without a manifest.
pub fn declared_disk_bytes(archive: &Path) -> Result<Option<u64>, ImageError> {
    match detect(archive)? {
        Compression::None => Ok(None),
        c => Ok(extract::read_manifest(archive, c)?.map(|m| m.disk_bytes())),
    }
}

/// What [`unpack_checkpoint`] found.
#[derive(Debug)]
pub struct Unpacked {
    /// The archive's format.
    pub compression: Compression,
    /// Digest of every file written but metadata.json, keyed like
    /// [`digest_dir`](super::integrity::digest_dir).
    pub digests: BTreeMap<String, FileDigest>,
    /// The archive's manifest (none in archives from before manifests).
    pub manifest: Option<Manifest>,
}

fn unpack_with(
    archive: &Path,
    dest: &Path,
    digester: Option<&Digester>,
    require_metadata: bool,
) -> Result<(Compression, Option<Manifest>), ImageError> {
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
        walk(archive).and_then(|entries| copy_tree(&entries, dest, false).map(|_| None))
    } else {
        extract(archive, c, dest, digester, require_metadata)
    };
    if result.is_err() {
        // Leave `dest` as empty as it was given; best effort.
        clear_dir(dest);
    }
    result.map(|m| (c, m))
}

/// Unpacks a checkpoint for restore like [`unpack`], hashing every file on another thread
/// while it is written (check the digests against metadata.json with
/// [`verify_digests`](super::integrity::verify_digests), and metadata.json against the
/// manifest with [`Manifest::check_metadata`], without reading the files again). An
/// archive without metadata.json is refused: with a manifest before anything is written.
pub fn unpack_checkpoint(archive: &Path, dest: &Path) -> Result<Unpacked, ImageError> {
    if detect(archive)? == Compression::None {
        let compression = unpack(archive, dest)?;
        if !dest.join(METADATA_FILE).is_file() {
            return Err(ImageError::ArchiveWithoutMetadata {
                archive: archive.to_path_buf(),
            });
        }
        return Ok(Unpacked {
            compression,
            digests: super::integrity::digest_dir(dest)?,
            manifest: None,
        });
    }
    let digester = Digester::start();
    let result = unpack_with(archive, dest, Some(&digester), true);
    let digests = digester.finish();
    result.map(|(compression, manifest)| Unpacked {
        compression,
        digests,
        manifest,
    })
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
/// so the digests in it can be computed while the other files are being packed. The
/// manifest bounds metadata.json by [`metadata_limit`] of `metadata_base` (its size
/// without the file list). A metadata.json already in `src_dir` is left out.
pub fn pack_with_metadata(
    src_dir: &Path,
    out: &Path,
    c: Compression,
    metadata_base: u64,
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
    refuse_reserved(&entries)?;
    let limit = metadata_limit(metadata_base, entries.iter().map(|e| e.rel.as_str()));
    let manifest = Manifest::of(&entries, Some(limit)).to_bytes(out)?;
    write_atomically(out, |partial| {
        let frame = Frame {
            manifest,
            trailer: Some((trailer, limit)),
        };
        write_archive(&entries, partial, c, frame)
    })
}

/// Like [`pack_with_metadata`], but streams the archive into `w` (a store's upload; `out`
/// names it in errors) instead of a file of its own; returns `w` and the bytes written.
/// The caller makes it durable and publishes it.
pub fn pack_with_metadata_to<W: Write>(
    src_dir: &Path,
    w: W,
    out: &Path,
    c: Compression,
    metadata_base: u64,
    trailer: Trailer<'_>,
) -> Result<(W, u64), ImageError> {
    if c == Compression::None {
        return Err(ImageError::io(
            out,
            io::Error::other("pack_with_metadata writes archives; a directory needs no packing"),
        ));
    }
    let entries: Vec<Entry> = walk(src_dir)?
        .into_iter()
        .filter(|e| e.rel != METADATA_FILE)
        .collect();
    refuse_reserved(&entries)?;
    let limit = metadata_limit(metadata_base, entries.iter().map(|e| e.rel.as_str()));
    let manifest = Manifest::of(&entries, Some(limit)).to_bytes(out)?;
    let frame = Frame {
        manifest,
        trailer: Some((trailer, limit)),
    };
    let counted = encode(&entries, Counted { inner: w, bytes: 0 }, out, c, frame)?;
    Ok((counted.inner, counted.bytes))
}

/// A writer that counts what went through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
