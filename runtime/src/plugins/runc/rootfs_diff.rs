//! `rootfs-diff.tar`: what a container changed in its root filesystem, so a checkpoint
//! restores onto a fresh copy of the original rootfs on another host.
//!
//! With a plain rootfs directory there is no lower layer to compare against (overlay
//! upper dirs are what Podman/CRI-O tar up), so a change is an entry whose ctime is not
//! older than the container's creation time (ctime cannot be set back by the
//! container). Limits: deletions are not recorded; files on other filesystems below the
//! rootfs (mounts) are skipped; a file changed by the host after the container started
//! is taken too.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use super::error::RuncError;

/// Writes every entry of `rootfs` changed at or after `since_ns` (ns since the epoch)
/// into the tar `out`; returns the number of entries.
pub fn write_diff(rootfs: &Path, since_ns: i128, out: &Path) -> Result<u64, RuncError> {
    let err = |what: &str, e: std::io::Error| RuncError::RootfsDiff(format!("{what}: {e}"));
    let root_dev = fs::symlink_metadata(rootfs)
        .map_err(|e| err(&rootfs.display().to_string(), e))?
        .dev();
    let file = fs::File::create(out).map_err(|e| err(&out.display().to_string(), e))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    let mut count = 0;
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
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push(path.clone());
            }
            let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
            if ctime < since_ns || !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
                continue;
            }
            let rel = path.strip_prefix(rootfs).expect("below the rootfs");
            tar.append_path_with_name(&path, rel)
                .map_err(|e| err(&format!("add {}", rel.display()), e))?;
            count += 1;
        }
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&out.display().to_string(), e))?;
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
        let n = write_diff(src.path(), since, &tar).expect("diff");
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
