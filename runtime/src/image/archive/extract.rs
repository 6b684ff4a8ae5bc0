//! Safe extraction: decompress and unpack an archive into a directory, refusing every
//! entry that could land outside it or is not a plain file or directory.

use crate::image::compression::Compression;
use crate::image::error::ImageError;
use crate::image::integrity::Digester;
use crate::image::metadata::METADATA_FILE;
use crate::image::parallel::Lz4Frames;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path};
use std::time::{Duration, UNIX_EPOCH};

use super::{create_new_file, BLOCK, BUF};

/// Decompresses and extracts the archive `path` (format `c`) into `dest`.
pub(super) fn extract(
    path: &Path,
    c: Compression,
    dest: &Path,
    digester: Option<&Digester>,
) -> Result<(), ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let raw = BufReader::with_capacity(BUF, file);
    let corrupt = |e: io::Error| ImageError::corrupt(path, e);
    let decoder: Box<dyn Read> = match c {
        Compression::None | Compression::Tar => Box::new(raw),
        // Every member / frame: parallel packing writes one per block.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Lz4 => Box::new(Lz4Frames::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(corrupt)?)
        }
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(BUF, decoder));
    let mut buf = vec![0u8; BUF];
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        extract_entry(&mut entry, path, dest, &mut buf, digester)?;
    }
    // The tar parser stops at the first zero block; the second one must follow, and reading
    // the stream to its end makes the decompressor check its trailer and content checksum.
    let mut rest = archive.into_inner();
    let mut trailer = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ImageError::corrupt(
                path,
                "unexpected data after the end of the tar archive",
            ));
        }
        trailer += n as u64;
    }
    if trailer < BLOCK {
        return Err(ImageError::corrupt(
            path,
            "the tar end-of-archive marker is missing",
        ));
    }
    Ok(())
}

/// Extracts one tar entry into `dest` after checking it is safe.
fn extract_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    archive: &Path,
    dest: &Path,
    buf: &mut [u8],
    digester: Option<&Digester>,
) -> Result<(), ImageError> {
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
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
    let rel = entry
        .path()
        .map_err(|e| ImageError::unsafe_entry(&name, format!("unreadable path: {e}")))?
        .into_owned();
    let comps = safe_components(&rel, &name)?;
    let Some((last, parents)) = comps.split_last() else {
        if is_dir {
            // "./": the destination itself.
            return Ok(());
        }
        return Err(ImageError::unsafe_entry(name, "the path is empty"));
    };
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
    let size = entry.size();
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
    // Digests are keyed like digest_dir's: '/'-joined, without the top-level metadata.json.
    let key = comps
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
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
