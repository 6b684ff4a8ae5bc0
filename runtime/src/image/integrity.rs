//! Per-file sha256 digests of a checkpoint, their verification, and metadata.json I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::error::ImageError;
use super::metadata::{FileDigest, Metadata, FORMAT_VERSION, METADATA_FILE};
use super::walk::{walk, Kind};

/// Read buffer size used while hashing.
const HASH_BUF: usize = 1 << 20;

/// Digests every regular file below `dir` except the top-level metadata.json, keyed by '/'-joined relative path.
pub fn digest_dir(dir: &Path) -> Result<BTreeMap<String, FileDigest>, ImageError> {
    let files = list_files(dir)?;
    let digests = hash_files(&files)?;
    Ok(files.into_iter().map(|(rel, _)| rel).zip(digests).collect())
}

/// Like [`digest_dir`], but takes the digest of a file from `known` (computed while it
/// was written) when its size still matches, instead of reading it again.
pub fn digest_dir_known(
    dir: &Path,
    known: &BTreeMap<String, FileDigest>,
) -> Result<BTreeMap<String, FileDigest>, ImageError> {
    let files = list_files(dir)?;
    let size_matches = |rel: &str, abs: &Path| {
        let k = known.get(rel)?;
        let meta = fs::symlink_metadata(abs).ok()?;
        (meta.is_file() && meta.len() == k.size).then(|| k.clone())
    };
    let (reuse, read): (Vec<_>, Vec<_>) = files
        .into_iter()
        .map(|(rel, abs)| {
            let k = size_matches(&rel, &abs);
            (rel, abs, k)
        })
        .partition(|(_, _, k)| k.is_some());
    let to_read: Vec<(String, PathBuf)> = read.into_iter().map(|(r, a, _)| (r, a)).collect();
    let mut out: BTreeMap<String, FileDigest> = to_read
        .iter()
        .map(|(rel, _)| rel.clone())
        .zip(hash_files(&to_read)?)
        .collect();
    out.extend(
        reuse
            .into_iter()
            .filter_map(|(rel, _, k)| k.map(|k| (rel, k))),
    );
    Ok(out)
}

/// Checks that `dir` holds exactly the files listed in `md.files`, with the recorded sizes and sha256.
pub fn verify_dir(dir: &Path, md: &Metadata) -> Result<(), ImageError> {
    let files = list_files(dir)?;
    let present: BTreeSet<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
    if let Some(file) = md.files.keys().find(|k| !present.contains(k.as_str())) {
        return Err(ImageError::Missing { file: file.clone() });
    }
    if let Some(file) = present.iter().find(|p| !md.files.contains_key(**p)) {
        return Err(ImageError::Unexpected {
            file: file.to_string(),
        });
    }
    let digests: BTreeMap<String, FileDigest> = files
        .iter()
        .map(|(rel, _)| rel.clone())
        .zip(hash_files(&files)?)
        .collect();
    verify_digests(md, &digests)
}

/// [`verify_dir`], except that the files named in `chunked` (a streamed checkpoint's
/// shards, whose every chunk is checked as it is read) are checked by size only, and
/// only where present (a remote restore reads them from elsewhere).
pub fn verify_dir_chunked(dir: &Path, md: &Metadata, chunked: &[String]) -> Result<(), ImageError> {
    let (shards, files): (Vec<_>, Vec<_>) = list_files(dir)?
        .into_iter()
        .partition(|(rel, _)| chunked.contains(rel));
    for (rel, abs) in &shards {
        let Some(expected) = md.files.get(rel) else {
            return Err(ImageError::Unexpected { file: rel.clone() });
        };
        let size = fs::metadata(abs).map_err(|e| ImageError::io(abs, e))?.len();
        if size != expected.size {
            return Err(ImageError::Corrupt {
                path: abs.clone(),
                detail: format!("{size} bytes, metadata.json records {}", expected.size),
            });
        }
    }
    let mut rest = md.clone();
    rest.files.retain(|rel, _| !chunked.contains(rel));
    let digests: BTreeMap<String, FileDigest> = files
        .iter()
        .map(|(rel, _)| rel.clone())
        .zip(hash_files(&files)?)
        .collect();
    verify_digests(&rest, &digests)
}

/// Checks digests computed elsewhere (e.g. while extracting) against `md.files`: the same
/// files, sizes and sha256, reported in the order [`verify_dir`] reports them.
pub fn verify_digests(
    md: &Metadata,
    present: &BTreeMap<String, FileDigest>,
) -> Result<(), ImageError> {
    if let Some(file) = md.files.keys().find(|k| !present.contains_key(*k)) {
        return Err(ImageError::Missing { file: file.clone() });
    }
    if let Some(file) = present.keys().find(|p| !md.files.contains_key(*p)) {
        return Err(ImageError::Unexpected { file: file.clone() });
    }
    for (rel, actual) in present {
        let expected = &md.files[rel];
        if expected.sha256 != actual.sha256 || expected.size != actual.size {
            return Err(ImageError::ChecksumMismatch {
                file: rel.clone(),
                expected: expected.sha256.clone(),
                actual: actual.sha256.clone(),
            });
        }
    }
    Ok(())
}

/// Checks the files listed in `md.files` (present, same size and sha256) and ignores any
/// others: for runc's image directories, where runc and CRIU leave their logs beside the
/// images (`dump.log`, `restore.log`).
pub fn verify_listed(dir: &Path, md: &Metadata) -> Result<(), ImageError> {
    let files: Vec<(String, PathBuf)> = list_files(dir)?
        .into_iter()
        .filter(|(rel, _)| md.files.contains_key(rel))
        .collect();
    if let Some(file) = md
        .files
        .keys()
        .find(|k| !files.iter().any(|(rel, _)| rel == *k))
    {
        return Err(ImageError::Missing { file: file.clone() });
    }
    for ((rel, _), actual) in files.iter().zip(hash_files(&files)?) {
        let expected = &md.files[rel];
        if expected.sha256 != actual.sha256 || expected.size != actual.size {
            return Err(ImageError::ChecksumMismatch {
                file: rel.clone(),
                expected: expected.sha256.clone(),
                actual: actual.sha256,
            });
        }
    }
    Ok(())
}

/// metadata.json's content for `md` (pretty JSON); `path` names it in errors.
pub fn metadata_bytes(path: &Path, md: &Metadata) -> Result<Vec<u8>, ImageError> {
    let mut json = serde_json::to_vec_pretty(md).map_err(|e| ImageError::Metadata {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    json.push(b'\n');
    Ok(json)
}

/// Writes `md` as pretty JSON to `dir/metadata.json` through a synced temporary file and a rename.
pub fn write_metadata(dir: &Path, md: &Metadata) -> Result<(), ImageError> {
    write_metadata_with(dir, md, true, false)
}

/// [`write_metadata`] beside CRIU's images in an `--image-path` directory: padded with
/// trailing whitespace so the page images keep their alignment in the tar containerd makes
/// of the directory (`tar_align.rs`); synced only when `sync` (a tree that runs on loses
/// nothing to a crash).
pub fn write_metadata_in_place(dir: &Path, md: &Metadata, sync: bool) -> Result<(), ImageError> {
    write_metadata_with(dir, md, sync, true)
}

fn write_metadata_with(
    dir: &Path,
    md: &Metadata,
    sync: bool,
    align: bool,
) -> Result<(), ImageError> {
    let path = dir.join(METADATA_FILE);
    let mut json = metadata_bytes(&path, md)?;
    if align {
        let pad = super::tar_align::metadata_padding(dir, json.len() as u64);
        json.resize(json.len() + pad as usize, b' ');
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".metadata.json.")
        .tempfile_in(dir)
        .map_err(|e| ImageError::io(dir, e))?;
    tmp.write_all(&json)
        .and_then(|()| match sync {
            true => tmp.as_file().sync_all(),
            false => Ok(()),
        })
        .map_err(|e| ImageError::io(tmp.path(), e))?;
    tmp.persist(&path)
        .map_err(|e| ImageError::io(&path, e.error))?;
    Ok(())
}

/// Reads and checks `dir/metadata.json`.
pub fn read_metadata(dir: &Path) -> Result<Metadata, ImageError> {
    let path = dir.join(METADATA_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NotACheckpoint {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(ImageError::io(&path, e)),
    };
    // Check the version before the full parse so a newer format gets the upgrade hint,
    // not a parse error about fields this build does not know.
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(&bytes).map_err(|e| ImageError::Metadata {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if version.format_version > FORMAT_VERSION {
        return Err(ImageError::NewerFormat {
            path,
            found: version.format_version,
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| ImageError::Metadata {
        path,
        detail: e.to_string(),
    })
}

/// Regular files below `dir` except the top-level metadata.json, as (relative, absolute) paths.
fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, ImageError> {
    Ok(walk(dir)?
        .into_iter()
        .filter(|e| e.kind == Kind::File && e.rel != METADATA_FILE)
        .map(|e| (e.rel, e.abs))
        .collect())
}

/// Hashes `files` on up to `available_parallelism` threads; results are in input order.
fn hash_files(files: &[(String, PathBuf)]) -> Result<Vec<FileDigest>, ImageError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<FileDigest, ImageError>>>> =
        files.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; HASH_BUF];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, abs)) = files.get(i) else { break };
                    let r = hash_file(abs, &mut buf);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .zip(files)
        .map(|(slot, (_, abs))| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(ImageError::io(
                    abs,
                    std::io::Error::other("hashing thread failed"),
                ))
            })
        })
        .collect()
}

/// Hashes one file without following a symlink at its final component.
fn hash_file(path: &Path, buf: &mut [u8]) -> Result<FileDigest, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| ImageError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::io(path, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;
