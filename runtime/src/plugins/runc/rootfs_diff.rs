//! `rootfs-diff.tar` and `deleted.files`: what a container changed in its root
//! filesystem, so a checkpoint restores onto a fresh copy of the original rootfs on
//! another host.
//!
//! Two sources (chosen in `rootfs_baseline.rs`): an overlay rootfs's upper dir is the
//! exact diff (its files, and whiteouts, `c 0 0`, for deletions), as Podman and CRI-O
//! use it; a plain rootfs directory has no lower layer to compare against, so a change
//! is an entry whose ctime is not older than the baseline (ctime cannot be set back by
//! the container), and a deletion is a path of the baseline's file list that is gone.
//! Limits: files on other filesystems below the rootfs (mounts) are skipped; a file the
//! host changed after the baseline is taken too; an overlay's opaque directory (removed
//! and made again) does not list the lower entries it hides.
//! `deleted.files` is a JSON list of paths with a leading `/` (Podman's format).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::error::RuncError;

/// What a diff walk wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Entries in the tar.
    pub entries: u64,
    /// Every path seen below the rootfs (relative), to find deletions against a list.
    pub seen: Vec<String>,
    /// Whiteouts found (overlay upper dirs only), as relative paths.
    pub whiteouts: Vec<String>,
}

/// Writes every entry of `rootfs` changed at or after `since_ns` (ns since the epoch)
/// into the tar `out`.
pub fn write_diff(rootfs: &Path, since_ns: i128, out: &Path) -> Result<Written, RuncError> {
    walk(rootfs, Some(since_ns), out)
}

/// Writes an overlay upper dir (every entry in it) into the tar `out`, whiteouts apart.
pub fn write_upper_diff(upper: &Path, out: &Path) -> Result<Written, RuncError> {
    walk(upper, None, out)
}

fn walk(rootfs: &Path, since_ns: Option<i128>, out: &Path) -> Result<Written, RuncError> {
    let err = |what: &str, e: std::io::Error| RuncError::RootfsDiff(format!("{what}: {e}"));
    let root_dev = fs::symlink_metadata(rootfs)
        .map_err(|e| err(&rootfs.display().to_string(), e))?
        .dev();
    let file = fs::File::create(out).map_err(|e| err(&out.display().to_string(), e))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    let mut w = Written::default();
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| err(&dir.display().to_string(), e))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue; // removed meanwhile
            };
            if meta.dev() != root_dev {
                continue; // another filesystem mounted below the rootfs
            }
            let Ok(rel) = path.strip_prefix(rootfs) else {
                continue;
            };
            let rel = rel.to_path_buf();
            let ft = meta.file_type();
            if since_ns.is_none() && ft.is_char_device() && meta.rdev() == 0 {
                w.whiteouts.push(rel.to_string_lossy().into_owned());
                continue;
            }
            w.seen.push(rel.to_string_lossy().into_owned());
            if ft.is_dir() {
                stack.push(path.clone());
            }
            let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
            let old = since_ns.is_some_and(|s| ctime < s);
            if old || !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                continue;
            }
            tar.append_path_with_name(&path, &rel)
                .map_err(|e| err(&format!("add {}", rel.display()), e))?;
            w.entries += 1;
        }
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&out.display().to_string(), e))?;
    Ok(w)
}

/// Writes `deleted.files` (paths relative to the rootfs, written with a leading `/`).
pub fn write_deleted(out: &Path, deleted: &[String]) -> Result<(), RuncError> {
    let list: Vec<String> = deleted
        .iter()
        .map(|p| format!("/{}", p.trim_start_matches('/')))
        .collect();
    let json = serde_json::to_vec(&list).map_err(|e| RuncError::RootfsDiff(e.to_string()))?;
    fs::write(out, json).map_err(|e| RuncError::RootfsDiff(format!("{}: {e}", out.display())))
}

/// The paths of `deleted.files` (relative, checked), or none when the file is absent.
pub fn read_deleted(file: &Path) -> Result<Vec<PathBuf>, RuncError> {
    let bytes = match fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RuncError::RootfsDiff(format!("{}: {e}", file.display()))),
    };
    let list: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| {
        RuncError::RootfsDiff(format!("{} is not a JSON list: {e}", file.display()))
    })?;
    list.iter()
        .map(|p| {
            let rel = PathBuf::from(p.trim_start_matches('/'));
            let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain || rel.as_os_str().is_empty() {
                return Err(RuncError::RootfsDiff(format!(
                    "refusing deleted path {p:?}: only plain paths below the rootfs"
                )));
            }
            Ok(rel)
        })
        .collect()
}

/// Removes the `deleted` paths from `rootfs`, never through a symlink (a parent that is
/// a symlink or missing leaves the path alone); returns how many were removed.
pub fn apply_deleted(deleted: &[PathBuf], rootfs: &Path) -> Result<u64, RuncError> {
    let mut count = 0;
    'paths: for rel in deleted {
        let mut at = rootfs.to_path_buf();
        let parts: Vec<_> = rel.components().collect();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            let Ok(m) = fs::symlink_metadata(&at) else {
                continue 'paths; // already gone
            };
            let last = i + 1 == parts.len();
            if !last && !m.is_dir() {
                continue 'paths; // a symlink or file as a parent: nothing of ours below
            }
            if last {
                let gone = if m.is_dir() {
                    fs::remove_dir_all(&at)
                } else {
                    fs::remove_file(&at)
                };
                gone.map_err(|e| RuncError::RootfsDiff(format!("delete {}: {e}", rel.display())))?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Applies `diff` onto `rootfs`: only directories, regular files and symlinks, with
/// relative paths free of `..`, never written through a symlink (the tar crate checks
/// every parent stays inside the rootfs). Returns the number of entries applied.
pub fn apply_diff(diff: &Path, rootfs: &Path) -> Result<u64, RuncError> {
    let bad =
        |name: &str, why: &str| RuncError::RootfsDiff(format!("refusing entry {name:?}: {why}"));
    let file = fs::File::open(diff)
        .map_err(|e| RuncError::RootfsDiff(format!("{}: {e}", diff.display())))?;
    let mut archive = tar::Archive::new(file);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let mut count = 0;
    let entries = archive
        .entries()
        .map_err(|e| RuncError::RootfsDiff(format!("read {}: {e}", diff.display())))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| RuncError::RootfsDiff(format!("read {}: {e}", diff.display())))?;
        let path = entry
            .path()
            .map_err(|e| RuncError::RootfsDiff(e.to_string()))?
            .into_owned();
        let name = path.display().to_string();
        for c in path.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(bad(&name, "contains '..'")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(&name, "is an absolute path"))
                }
            }
        }
        let kind = entry.header().entry_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            return Err(bad(
                &name,
                "only directories, files and symlinks are applied",
            ));
        }
        let dest = rootfs.join(&path);
        if !kind.is_dir() {
            // Replace, never write through, whatever is there (a symlink included).
            if let Ok(m) = fs::symlink_metadata(&dest) {
                if !m.is_dir() {
                    fs::remove_file(&dest)
                        .map_err(|e| RuncError::RootfsDiff(format!("replace {name}: {e}")))?;
                }
            }
        }
        let ok = entry
            .unpack_in(rootfs)
            .map_err(|e| bad(&name, &e.to_string()))?;
        if !ok {
            return Err(bad(&name, "it would land outside the rootfs"));
        }
        let mut sink = Vec::new();
        let _ = entry.read_to_end(&mut sink);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(path: &[u8], kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).expect("link");
        }
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, data).expect("append");
        b.into_inner().expect("tar")
    }

    #[test]
    fn diff_round_trips_changed_files_only() {
        let src = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(src.path().join("old")).expect("mkdir");
        fs::write(src.path().join("old/keep"), b"old").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("now")
            .as_nanos() as i128;
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::create_dir_all(src.path().join("tmp/new")).expect("mkdir");
        fs::write(src.path().join("tmp/new/file"), b"fresh bytes").expect("write");
        std::os::unix::fs::symlink("/bin/busybox", src.path().join("tmp/link")).expect("ln");
        let out = tempfile::tempdir().expect("tmp");
        let tar = out.path().join("rootfs-diff.tar");
        let n = write_diff(src.path(), since, &tar).expect("diff").entries;
        assert!(n >= 3, "{n}");
        let dest = tempfile::tempdir().expect("tmp");
        apply_diff(&tar, dest.path()).expect("apply");
        assert_eq!(
            fs::read(dest.path().join("tmp/new/file")).expect("read"),
            b"fresh bytes"
        );
        assert!(!dest.path().join("old/keep").exists());
        assert_eq!(
            fs::read_link(dest.path().join("tmp/link")).expect("link"),
            Path::new("/bin/busybox")
        );
    }

    #[test]
    fn deletions_round_trip_and_never_go_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tmp");
        let rootfs = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        for d in [rootfs.join("etc/sub"), outside.clone()] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(rootfs.join("etc/gone"), b"x").expect("write");
        fs::write(rootfs.join("etc/sub/f"), b"x").expect("write");
        fs::write(outside.join("victim"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, rootfs.join("link")).expect("ln");
        let list = dir.path().join("deleted.files");
        let names = ["etc/gone", "/etc/sub", "link/victim", "not/there"].map(String::from);
        write_deleted(&list, &names).expect("write");
        let text = fs::read_to_string(&list).expect("read");
        assert!(
            text.contains("\"/etc/gone\""),
            "Podman's leading slash: {text}"
        );
        let paths = read_deleted(&list).expect("read");
        assert_eq!(apply_deleted(&paths, &rootfs).expect("apply"), 2);
        assert!(!rootfs.join("etc/gone").exists() && !rootfs.join("etc/sub").exists());
        assert!(
            outside.join("victim").exists(),
            "nothing removed through a symlink"
        );
        fs::write(&list, br#"["/../escape"]"#).expect("write");
        assert!(read_deleted(&list).is_err(), "'..' refused");
        assert!(read_deleted(&dir.path().join("none"))
            .expect("absent")
            .is_empty());
    }

    #[test]
    fn unsafe_entries_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).expect("mkdir");
        for (bytes, what) in [
            (raw(b"../escape", tar::EntryType::Regular, b"x", None), ".."),
            (
                raw(b"/abs", tar::EntryType::Regular, b"x", None),
                "absolute",
            ),
            (raw(b"dev", tar::EntryType::Char, b"", None), "special"),
            (
                raw(b"hard", tar::EntryType::Link, b"", Some("/etc/passwd")),
                "hard link",
            ),
        ] {
            let t = dir.path().join("t.tar");
            fs::write(&t, bytes).expect("write");
            assert!(apply_diff(&t, &rootfs).is_err(), "{what} must be refused");
        }
        assert!(!dir.path().join("escape").exists());
        // A symlink pointing out, then a file written "through" it: refused.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "out", dir.path()).expect("link");
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "out/pwned", &b"x"[..]).expect("file");
        let t = dir.path().join("t2.tar");
        fs::write(&t, b.into_inner().expect("tar")).expect("write");
        assert!(apply_diff(&t, &rootfs).is_err());
        assert!(!dir.path().join("pwned").exists());
    }
}
