//! Moving a checkpoint's files between a local directory and a store, as streams: a
//! dump's images into an [`Upload`] (metadata.json last, so an object store's listing
//! shows the checkpoint only once complete), and a remote checkpoint back into a private
//! local directory for a restore.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path};

use super::{CheckpointStore, Location, StoreError, Upload};
use crate::image::error::ImageError;
use crate::image::metadata::METADATA_FILE;
use crate::image::walk::{walk, Kind};

/// Copy buffer.
const BUF: usize = 1 << 20;

/// Writes every file of `dir` into `upload`, metadata.json last; returns the bytes.
pub fn upload_dir(dir: &Path, upload: &mut dyn Upload) -> Result<u64, StoreError> {
    let mut entries: Vec<_> = walk(dir)?
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    // Stable sort: everything else keeps its order, metadata.json goes to the end.
    entries.sort_by_key(|e| e.rel == METADATA_FILE);
    let mut total = 0;
    for e in entries {
        let mut src = fs::File::open(&e.abs).map_err(|err| ImageError::io(&e.abs, err))?;
        let mut w = upload.create(&e.rel)?;
        copy(&mut src, &mut w, &e.abs, upload.location())?;
        total += w.finish()?;
    }
    Ok(total)
}

/// Copies the directory checkpoint at `at` into the existing, empty, private `dest`.
pub fn fetch_dir(
    store: &dyn CheckpointStore,
    at: &Location,
    dest: &Path,
) -> Result<(), StoreError> {
    for f in store.files(at)? {
        let rel = Path::new(&f.rel);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ImageError::unsafe_entry(&f.rel, "not a plain relative path").into());
        }
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| ImageError::io(parent, e))?;
        }
        let mut src = store.open(at, &f.rel)?;
        let mut out = new_file(&target)?;
        copy(&mut src, &mut out, &target, at)?;
    }
    Ok(())
}

/// Copies the packed checkpoint at `at` into the new file `dest`.
pub fn fetch_packed(
    store: &dyn CheckpointStore,
    at: &Location,
    dest: &Path,
) -> Result<(), StoreError> {
    let mut src = store.open(at, "")?;
    let mut out = new_file(dest)?;
    copy(&mut src, &mut out, dest, at)
}

fn new_file(path: &Path) -> Result<fs::File, StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| ImageError::io(path, e).into())
}

/// Copies `src` into `dst`; a failure names the local file `file` and the store's `at`.
fn copy(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    file: &Path,
    at: &Location,
) -> Result<(), StoreError> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    location: at.to_string(),
                    context: format!("read for {}", file.display()),
                    source,
                })
            }
        };
        dst.write_all(&buf[..n]).map_err(|source| StoreError::Io {
            location: at.to_string(),
            context: format!("write {}", file.display()),
            source,
        })?;
    }
    dst.flush().map_err(|source| StoreError::Io {
        location: at.to_string(),
        context: format!("write {}", file.display()),
        source,
    })
}
