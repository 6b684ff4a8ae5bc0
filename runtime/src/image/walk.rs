//! Deterministic, link-refusing traversal of a checkpoint directory.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::ImageError;

/// Kind of a walked entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// One directory or regular file below the walk root.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path relative to the root, components joined with '/'.
    pub rel: String,
    /// Full path.
    pub abs: PathBuf,
    /// Directory or file.
    pub kind: Kind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits (`& 0o777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch (0 if before it).
    pub mtime: u64,
}

/// Lists every directory and regular file below `root` (not `root` itself), parents before
/// children, siblings sorted by name; symlinks, devices, fifos and sockets are refused.
pub(crate) fn walk(root: &Path) -> Result<Vec<Entry>, ImageError> {
    let meta = fs::symlink_metadata(root).map_err(|e| ImageError::io(root, e))?;
    if !meta.is_dir() {
        return Err(ImageError::io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut out = Vec::new();
    walk_into(root, "", &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, prefix: &str, out: &mut Vec<Entry>) -> Result<(), ImageError> {
    let mut children = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))? {
        let ent = ent.map_err(|e| ImageError::io(dir, e))?;
        children.push(ent.file_name());
    }
    children.sort();
    for name in children {
        let abs = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(ImageError::unsafe_entry(
                abs.to_string_lossy(),
                "the file name is not valid UTF-8",
            ));
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&abs).map_err(|e| ImageError::io(&abs, e))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            return Err(ImageError::unsafe_entry(
                rel,
                "it is a symbolic link; checkpoints hold only regular files and directories",
            ));
        } else {
            return Err(ImageError::unsafe_entry(
                rel,
                "it is a device, fifo or socket; checkpoints hold only regular files and directories",
            ));
        };
        let entry = Entry {
            rel,
            abs,
            kind,
            size: if kind == Kind::File { meta.len() } else { 0 },
            mode: meta.permissions().mode() & 0o777,
            mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        };
        let recurse = (kind == Kind::Dir).then(|| (entry.abs.clone(), entry.rel.clone()));
        out.push(entry);
        if let Some((abs, rel)) = recurse {
            walk_into(&abs, &rel, out)?;
        }
    }
    Ok(())
}
