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

/// A suffix no live operation on this host uses: PID and a per-process counter (hex),
/// plus a little of the clock against a PID reused after a crash. Short, because unix
/// socket paths inside a staging dir are limited to 108 bytes.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}-{n:x}{:03x}", std::process::id(), nanos & 0xfff)
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

/// `DIR/.ck-<unique>.partial`: a dump's staging directory. It does not carry the
/// checkpoint's name, so the unix sockets CRIU finds inside it stay short enough.
pub fn staging_dir_in(dir: &Path) -> PathBuf {
    dir.join(format!(".ck.{}{PARTIAL_SUFFIX}", unique_suffix()))
}

/// The name prefix of a private scratch dir labelled `label` of this process: with
/// [`PARTIAL_SUFFIX`] as suffix (and random bytes between), a crash leaves it recognisable
/// and its owner known, so [`remove_abandoned_staging`] can remove it.
pub fn scratch_prefix(label: &str) -> String {
    format!(".{label}.{:x}-", std::process::id())
}

/// Whether a directory entry's name is a staging path left by [`staging_path_for`].
pub fn is_staging_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)
}

/// Removes the staging paths in `dir` that a crashed operation left: those whose owner
/// (the PID in their name) is gone or is this process (a restarted daemon reusing it).
/// Returns what was removed. A staging path of a live process is another operation's.
pub fn remove_abandoned_staging(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_staging_name(&name) {
            continue;
        }
        let owner = staging_owner(&name);
        let owner_alive =
            owner.is_some_and(|pid| pid != me && Path::new(&format!("/proc/{pid}")).exists());
        if owner_alive {
            continue;
        }
        let path = entry.path();
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The PID in a staging name made by [`staging_path_for`] (`.FILE.<pid>-<n>.partial`, hex).
fn staging_owner(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(PARTIAL_SUFFIX)?;
    let suffix = stem.rsplit('.').next()?;
    let (pid, _) = suffix.split_once('-')?;
    u32::from_str_radix(pid, 16).ok()
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
    fn abandoned_staging_is_removed_but_not_a_live_operations() {
        let dir = tempfile::tempdir().expect("tempdir");
        // PID 1 is alive and not us: its staging is another operation's.
        let live = dir.path().join(".a.tar.zst.1-0.partial");
        let dead = dir.path().join(".b.tar.zst.3fffffff-0.partial");
        let mine = staging_path_for(&dir.path().join("c"));
        let legacy = dir.path().join(".d.partial");
        let checkpoint = dir.path().join("e.tar.zst");
        for f in [&live, &dead, &legacy, &checkpoint] {
            std::fs::write(f, b"x").expect("write");
        }
        std::fs::create_dir(&mine).expect("mkdir");
        std::fs::write(mine.join("pages-1.img"), b"x").expect("write");
        let mut removed = remove_abandoned_staging(dir.path());
        removed.sort();
        let mut expected = vec![dead, mine, legacy];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(live.exists() && checkpoint.exists());
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
