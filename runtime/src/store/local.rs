//! The local directory backend: the commit protocol of `image/atomic.rs` on this host's
//! filesystem. A directory checkpoint is CRIU's own staging directory
//! (`DIR/.ck.<pid>-<n>.partial`, the upload's [`Upload::local_dir`]) renamed into place;
//! a packed one is written to `DIR/.NAME.tar.zst.<pid>-<n>.partial` and renamed. Both
//! are synced first, and `renameat2(RENAME_NOREPLACE)` never replaces a checkpoint.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{
    CheckpointStore, FileInfo, Listed, Location, ObjectWriter, Shape, Stat, StoreError, Upload,
};
use crate::image::compression::Compression;
use crate::image::error::ImageError;
use crate::image::walk::{walk, Kind};
use crate::image::writeback::WritebackFile;
use crate::image::{atomic, layout};

/// Checkpoint directories hold process memory (secrets included): owner-only access.
pub const CHECKPOINT_DIR_MODE: u32 = 0o700;
/// Files of a checkpoint, and archives: owner-only, like the directories.
const FILE_MODE: u32 = 0o600;
/// Write buffer of a checkpoint file.
const BUF: usize = 1 << 20;

/// Checkpoints in directories of this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalStore;

fn local(at: &Location) -> Result<&Path, StoreError> {
    at.as_local().ok_or_else(|| StoreError::InvalidLocation {
        value: at.to_string(),
        reason: "the local store serves local paths only".into(),
    })
}

/// `rel` as a path inside a checkpoint: relative, no `..`, not empty.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, StoreError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(StoreError::Image(ImageError::unsafe_entry(
            rel,
            "a checkpoint file must be a relative path without '..'",
        )));
    }
    Ok(root.join(p))
}

/// Creates `dir` (and its parents) owner-only if missing.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(CHECKPOINT_DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::Image(ImageError::io(dir, e)))
}

/// Creates a new staging directory in `dir`: exclusively, this operation's alone.
fn new_staging_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    create_private_dir(dir)?;
    let staging = atomic::staging_dir_in(dir);
    fs::DirBuilder::new()
        .mode(CHECKPOINT_DIR_MODE)
        .create(&staging)
        .map_err(|e| StoreError::Image(ImageError::io(&staging, e)))?;
    Ok(staging)
}

/// Whether `name` is a packed checkpoint's (an archive extension).
fn is_packed_name(name: &str) -> bool {
    Compression::ALL
        .iter()
        .map(|c| c.extension())
        .any(|ext| !ext.is_empty() && name.ends_with(ext) && name.len() > ext.len())
}

impl CheckpointStore for LocalStore {
    fn begin(&self, at: &Location, shape: Shape) -> Result<Box<dyn Upload>, StoreError> {
        let target = local(at)?.to_path_buf();
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = match shape {
            Shape::Dir => Some(new_staging_dir(&dir)?),
            Shape::Packed => {
                create_private_dir(&dir)?;
                None
            }
        };
        Ok(Box::new(LocalUpload {
            at: at.clone(),
            target,
            shape,
            staging,
        }))
    }

    fn stat(&self, at: &Location) -> Result<Option<Stat>, StoreError> {
        let path = local(at)?;
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io(path, e).into()),
        };
        if !meta.is_dir() {
            return Ok(Some(Stat {
                shape: Shape::Packed,
                size_bytes: meta.len(),
            }));
        }
        let size_bytes = walk(path)?.iter().map(|e| e.size).sum();
        Ok(Some(Stat {
            shape: Shape::Dir,
            size_bytes,
        }))
    }

    fn exists(&self, at: &Location) -> Result<bool, StoreError> {
        Ok(local(at)?.exists())
    }

    fn open(&self, at: &Location, rel: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let root = local(at)?;
        let path = match rel {
            "" => root.to_path_buf(),
            rel => inside(root, rel)?,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        Ok(Box::new(file))
    }

    fn files(&self, at: &Location) -> Result<Vec<FileInfo>, StoreError> {
        Ok(walk(local(at)?)?
            .into_iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| FileInfo {
                rel: e.rel,
                size: e.size,
            })
            .collect())
    }

    fn list(&self, dir: &Location) -> Result<Vec<Listed>, StoreError> {
        let path = local(dir)?;
        let rd = match fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io(path, e).into()),
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Staging paths and scratch dirs are hidden; nothing hidden is a checkpoint.
            if name.starts_with('.') {
                continue;
            }
            let p = entry.path();
            let shape = if layout::is_checkpoint_dir(&p) {
                Shape::Dir
            } else if p.is_file() && is_packed_name(&name) {
                Shape::Packed
            } else {
                continue;
            };
            out.push(Listed {
                location: dir.join(&name),
                name,
                shape,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, at: &Location) -> Result<(), StoreError> {
        let path = local(at)?;
        let removed = match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(path),
            Ok(_) => fs::remove_file(path),
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(path, e).into()),
        }
    }

    fn local_path(&self, at: &Location) -> Option<PathBuf> {
        at.as_local().map(Path::to_path_buf)
    }

    fn scratch_dir(&self, dir: &Location) -> Result<PathBuf, StoreError> {
        // Beside the checkpoint, on its filesystem: packing reads it back from there.
        new_staging_dir(local(dir)?)
    }

    fn recover(&self, dir: &Location) -> Vec<String> {
        dir.as_local()
            .map(atomic::remove_abandoned_staging)
            .unwrap_or_default()
            .into_iter()
            .map(|p| format!("removed {}, left by an operation cut short", p.display()))
            .collect()
    }
}

/// One local checkpoint being written; its staging path goes if it is not committed.
#[derive(Debug)]
struct LocalUpload {
    at: Location,
    target: PathBuf,
    shape: Shape,
    /// The staging dir (directory checkpoints) or file (packed, once created).
    staging: Option<PathBuf>,
}

impl Upload for LocalUpload {
    fn location(&self) -> &Location {
        &self.at
    }

    fn local_dir(&self) -> Option<&Path> {
        match self.shape {
            Shape::Dir => self.staging.as_deref(),
            Shape::Packed => None,
        }
    }

    fn create(&mut self, rel: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let path = match (self.shape, rel, &self.staging) {
            (Shape::Dir, rel, Some(staging)) => {
                let path = inside(staging, rel)?;
                if let Some(parent) = path.parent() {
                    create_private_dir(parent)?;
                }
                path
            }
            (Shape::Packed, "", None) => {
                let partial = atomic::staging_path_for(&self.target);
                self.staging = Some(partial.clone());
                partial
            }
            _ => {
                return Err(StoreError::Image(ImageError::unsafe_entry(
                    rel,
                    "a packed checkpoint is one object, written once",
                )))
            }
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        Ok(Box::new(LocalWriter {
            // Written back as it grows: the commit's sync then waits for little.
            w: WritebackFile::new(file, BUF),
            path,
        }))
    }

    fn commit(mut self: Box<Self>) -> Result<Location, StoreError> {
        let Some(staging) = self.staging.clone() else {
            return Err(StoreError::NotFound {
                location: format!("{} (nothing was written)", self.at),
            });
        };
        if self.shape == Shape::Dir {
            sync_tree(&staging)?;
        }
        atomic::rename_noreplace(&staging, &self.target)?;
        self.staging = None;
        if self.shape == Shape::Dir {
            fs::set_permissions(
                &self.target,
                fs::Permissions::from_mode(CHECKPOINT_DIR_MODE),
            )
            .map_err(|e| ImageError::io(&self.target, e))?;
        }
        Ok(self.at.clone())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            // Best effort: the operation's own error matters more than this cleanup.
            let _ = match self.shape {
                Shape::Dir => fs::remove_dir_all(&staging),
                Shape::Packed => fs::remove_file(&staging),
            };
        }
    }
}

/// A file of a local checkpoint.
struct LocalWriter {
    w: WritebackFile,
    path: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(self: Box<Self>) -> Result<u64, StoreError> {
        let LocalWriter { w, path } = *self;
        let io_err = |e| StoreError::Image(ImageError::io(&path, e));
        let file = w.into_file().map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(file.metadata().map_err(io_err)?.len())
    }
}

/// fsyncs every file of a checkpoint directory and the directory itself: the rename that
/// follows must not publish files whose bytes are still only in the page cache.
pub fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    let rd = fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))?;
    for entry in rd.flatten() {
        let p = entry.path();
        let Ok(t) = entry.file_type() else { continue };
        if t.is_dir() {
            sync_tree(&p)?;
        } else if t.is_file() {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| ImageError::io(&p, e))?;
        }
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| ImageError::io(dir, e).into())
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
