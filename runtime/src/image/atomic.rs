//! Putting a finished checkpoint in place: staging names unique to one operation, a
//! rename that never replaces what is already there, and syncs that make it durable.
//!
//! Two operations never share a staging path (each gets its own suffix), and the final
//! `renameat2(RENAME_NOREPLACE)` makes "the name is free" and "it is now ours" one step,
//! so two dumps racing for one name cannot both win or mix their files.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{renameat2, RenameFlags};

use super::error::ImageError;

/// Suffix of every staging path: what a crash can leave behind, removed at daemon start.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// A suffix no other operation on this host uses: PID, a per-process counter and time.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// `DIR/.FILE.<unique>.partial` for the final path `DIR/FILE`: hidden, never listed.
pub fn staging_path_for(target: &Path) -> PathBuf {
    let file = target
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    dir.join(format!(".{file}.{}{PARTIAL_SUFFIX}", unique_suffix()))
}

/// Whether a directory entry's name is a staging path left by [`staging_path_for`].
pub fn is_staging_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)
}

/// Renames `from` to `to`, failing with [`ImageError::Exists`] if `to` exists (a file, a
/// directory, empty or not, or a link), then syncs the directory so the rename is durable.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<(), ImageError> {
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {
            sync_parent(to);
            Ok(())
        }
        Err(nix::errno::Errno::EEXIST) => Err(ImageError::Exists {
            path: to.to_path_buf(),
        }),
        Err(e) => Err(ImageError::io(to, io::Error::from(e))),
    }
}

/// Syncs the directory holding `path` so a rename or a new entry is durable; best effort.
pub fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_paths_are_unique_hidden_and_recognised() {
        let a = staging_path_for(Path::new("/ck/job.tar.zst"));
        let b = staging_path_for(Path::new("/ck/job.tar.zst"));
        assert_ne!(a, b, "two operations must not share a staging path");
        assert_eq!(a.parent(), Some(Path::new("/ck")));
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with(".job.tar.zst."), "{name}");
        assert!(is_staging_name(name), "{name}");
        assert!(!is_staging_name("job.tar.zst"));
    }

    #[test]
    fn rename_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").expect("write a");
        std::fs::create_dir(&b).expect("empty dir b");
        let err = rename_noreplace(&a, &b).expect_err("an empty directory is still a target");
        assert!(matches!(err, ImageError::Exists { .. }), "{err}");
        std::fs::remove_dir(&b).expect("rmdir");
        rename_noreplace(&a, &b).expect("free name");
        assert_eq!(std::fs::read(&b).expect("read"), b"new");
    }
}
