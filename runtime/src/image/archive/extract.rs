//! Safe extraction: decompress and unpack an archive into a directory, refusing every
//! entry that could land outside it or is not a plain file or directory, and every entry
//! its [`Budget`] does not admit (undeclared, larger than declared, or past the free space).
//! Entries are read raw: GNU long names are bounded here, PAX headers refused, so no
//! header can make the tar reader buffer an unbounded amount.

use crate::image::compression::Compression;
use crate::image::digester::Digester;
use crate::image::error::ImageError;
use crate::image::metadata::METADATA_FILE;
use crate::image::parallel::Lz4Frames;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::time::{Duration, UNIX_EPOCH};

use super::budget::Budget;
use super::manifest::{Manifest, MANIFEST_FILE, MAX_MANIFEST_BYTES};
use super::{create_new_file, BLOCK, BUF};

/// Longest GNU long name accepted (PATH_MAX).
const MAX_LONG_NAME: u64 = 4096;
/// Most zero bytes accepted after the tar end-of-archive marker (record padding).
const MAX_TRAILER: u64 = 1 << 20;

/// Decompresses and extracts the archive `path` (format `c`) into `dest`; returns its
/// manifest, if it has one. With `require_metadata`, an archive without metadata.json is
/// refused (as soon as its manifest shows it, else at the end).
pub(super) fn extract(
    path: &Path,
    c: Compression,
    dest: &Path,
    digester: Option<&Digester>,
    require_metadata: bool,
) -> Result<Option<Manifest>, ImageError> {
    let corrupt = |e: io::Error| ImageError::corrupt(path, e);
    let mut archive = tar::Archive::new(BufReader::with_capacity(BUF, decoder(path, c)?));
    let mut buf = vec![0u8; BUF];
    let mut budget: Option<Budget> = None;
    let mut long_name: Option<Vec<u8>> = None;
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        if entry.header().entry_type().is_gnu_longname() {
            if long_name.is_some() {
                return Err(ImageError::corrupt(path, "two long names for one entry"));
            }
            long_name = Some(read_bounded(
                &mut entry,
                path,
                MAX_LONG_NAME,
                "a long name",
            )?);
            continue;
        }
        let mut name = long_name
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        while name.last() == Some(&0) {
            name.pop();
        }
        let budget = match budget.as_mut() {
            Some(b) => b,
            None => {
                let regular = entry.header().entry_type() == tar::EntryType::Regular;
                if regular && name == MANIFEST_FILE.as_bytes() {
                    let bytes = read_bounded(&mut entry, path, MAX_MANIFEST_BYTES, "the manifest")?;
                    let m = Manifest::parse(path, &bytes)?;
                    budget = Some(Budget::declared(path, dest, m, require_metadata)?);
                    continue;
                }
                budget.insert(Budget::free(path, dest)?)
            }
        };
        extract_entry(&mut entry, &name, path, dest, &mut buf, digester, budget)?;
    }
    if long_name.is_some() {
        return Err(ImageError::corrupt(
            path,
            "the archive ends after a long name, before the entry it names",
        ));
    }
    // The tar parser stops at the first zero block; the second one must follow, and reading
    // the stream to its end makes the decompressor check its trailer and content checksum.
    // A stream of zeros after the end is padding only up to a bound.
    let mut rest = archive.into_inner();
    let mut trailer = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        trailer += n as u64;
        if buf[..n].iter().any(|b| *b != 0) || trailer > MAX_TRAILER {
            return Err(ImageError::corrupt(
                path,
                "unexpected data after the end of the tar archive",
            ));
        }
    }
    if trailer < BLOCK {
        return Err(ImageError::corrupt(
            path,
            "the tar end-of-archive marker is missing",
        ));
    }
    let budget = match budget {
        Some(b) => b,
        None => Budget::free(path, dest)?,
    };
    budget.finish(require_metadata)
}

/// The archive `path`'s tar stream, decompressed per `c`.
fn decoder(path: &Path, c: Compression) -> Result<Box<dyn Read>, ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let raw = BufReader::with_capacity(BUF, file);
    Ok(match c {
        Compression::None | Compression::Tar => Box::new(raw),
        // Every member / frame: parallel packing writes one per block.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Lz4 => Box::new(Lz4Frames::new(raw)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| ImageError::corrupt(path, e))?,
        ),
    })
}

/// The manifest at the head of the archive `path` (format `c`), read without extracting
/// anything; `None` for an archive without one (from before manifests).
pub(super) fn read_manifest(path: &Path, c: Compression) -> Result<Option<Manifest>, ImageError> {
    let mut archive = tar::Archive::new(decoder(path, c)?);
    let corrupt = |e: io::Error| ImageError::corrupt(path, e);
    let Some(first) = archive.entries().map_err(corrupt)?.raw(true).next() else {
        return Ok(None);
    };
    let mut first = first.map_err(corrupt)?;
    let regular = first.header().entry_type() == tar::EntryType::Regular;
    if !regular || first.path_bytes().as_ref() != MANIFEST_FILE.as_bytes() {
        return Ok(None);
    }
    let bytes = read_bounded(&mut first, path, MAX_MANIFEST_BYTES, "the manifest")?;
    Manifest::parse(path, &bytes).map(Some)
}

/// Reads a whole entry that is held in memory (a long name, the manifest), refusing one
/// larger than `max`.
fn read_bounded<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    archive: &Path,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, ImageError> {
    let size = entry.size();
    if size > max {
        return Err(ImageError::corrupt(
            archive,
            format!("{what} is {size} bytes, more than the {max} accepted"),
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    entry
        .take(max)
        .read_to_end(&mut out)
        .map_err(|e| ImageError::corrupt(archive, e))?;
    if out.len() as u64 != size {
        return Err(ImageError::corrupt(
            archive,
            format!("{what} ends after {} of its {size} bytes", out.len()),
        ));
    }
    Ok(out)
}

/// Extracts one tar entry into `dest` after checking it is safe.
fn extract_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name_bytes: &[u8],
    archive: &Path,
    dest: &Path,
    buf: &mut [u8],
    digester: Option<&Digester>,
    budget: &mut Budget,
) -> Result<(), ImageError> {
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    let etype = entry.header().entry_type();
    let is_dir = match etype {
        tar::EntryType::Regular => false,
        tar::EntryType::Directory => true,
        tar::EntryType::Symlink => {
            return Err(ImageError::unsafe_entry(
                name,
                "symbolic links are not allowed in a checkpoint",
            ))
        }
        tar::EntryType::Link => {
            return Err(ImageError::unsafe_entry(
                name,
                "hard links are not allowed in a checkpoint",
            ))
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            return Err(ImageError::unsafe_entry(
                name,
                "device and fifo entries are not allowed in a checkpoint",
            ))
        }
        other => {
            return Err(ImageError::unsafe_entry(
                name,
                format!(
                    "unsupported tar entry type {:?}; checkpoints hold only regular files and directories",
                    other.as_byte() as char
                ),
            ))
        }
    };
    let size = entry.size();
    if is_dir && size != 0 {
        return Err(ImageError::unsafe_entry(
            name,
            format!("a directory entry carrying {size} bytes of data"),
        ));
    }
    let rel = Path::new(OsStr::from_bytes(name_bytes));
    let comps = safe_components(rel, &name)?;
    let Some((last, parents)) = comps.split_last() else {
        if is_dir {
            // "./": the destination itself.
            return Ok(());
        }
        return Err(ImageError::unsafe_entry(name, "the path is empty"));
    };
    // Digests and the manifest are keyed like digest_dir's: '/'-joined.
    let key = comps
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let limit = budget.admit(&key, is_dir, size)?;
    let mut target = dest.to_path_buf();
    for comp in parents {
        target.push(comp);
        ensure_dir(&target, &name)?;
    }
    target.push(last);
    if is_dir {
        return ensure_dir(&target, &name);
    }

    let mode = entry
        .header()
        .mode()
        .map_err(|e| ImageError::corrupt(archive, e))?
        & 0o777;
    let mtime = entry.header().mtime().ok();
    let file = create_new_file(&target, mode).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            ImageError::unsafe_entry(
                &name,
                "the path appears twice in the archive or clashes with an existing entry",
            )
        } else {
            ImageError::io(&target, e)
        }
    })?;
    // Without the top-level metadata.json, like digest_dir.
    let digester = digester.filter(|_| key != METADATA_FILE);
    if let Some(d) = digester {
        d.begin(key);
    }
    let mut w = BufWriter::with_capacity(BUF, file);
    let mut written = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::corrupt(archive, e)),
        };
        if written.saturating_add(n as u64) > limit {
            // The tar reader stops at the header's size, which the budget admitted; this
            // only guards against a reader that would not.
            return Err(ImageError::corrupt(
                archive,
                format!("entry {name:?} runs past the {limit} bytes admitted"),
            ));
        }
        w.write_all(&buf[..n])
            .map_err(|e| ImageError::io(&target, e))?;
        if let Some(d) = digester {
            d.data(&buf[..n]);
        }
        written += n as u64;
    }
    if let Some(d) = digester {
        d.end();
    }
    if written != size {
        return Err(ImageError::corrupt(
            archive,
            format!("entry {name:?} ends after {written} of its {size} bytes"),
        ));
    }
    let file = w
        .into_inner()
        .map_err(|e| ImageError::io(&target, e.into_error()))?;
    if let Some(secs) = mtime {
        // Cosmetic; a filesystem without mtime support is not an error.
        let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(secs));
    }
    Ok(())
}

/// The normal components of an archive path; refuses absolute paths and `..`.
fn safe_components<'p>(rel: &'p Path, name: &str) -> Result<Vec<&'p OsStr>, ImageError> {
    let mut out = Vec::new();
    for comp in rel.components() {
        match comp {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ImageError::unsafe_entry(
                    name,
                    "the path contains a '..' component",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ImageError::unsafe_entry(name, "the path is absolute"))
            }
        }
    }
    Ok(out)
}

/// Makes sure `path` is a real directory (not a link), creating it if absent.
fn ensure_dir(path: &Path, name: &str) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ImageError::unsafe_entry(
            name,
            format!("{} already exists and is not a directory", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(path).map_err(|e| ImageError::io(path, e))
        }
        Err(e) => Err(ImageError::io(path, e)),
    }
}
