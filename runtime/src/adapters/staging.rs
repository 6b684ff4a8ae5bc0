//! Where a checkpoint's images wait between CRIU and the archive, either way. They are
//! read once (by the packer; by CRIU's restore) and removed, so they need not reach a
//! disk: in memory (`checkpoint.staging_dir`, `/dev/shm` by default) they spare it a write
//! of every page, which is most of an archive's dump (the Podman way's too) and much of
//! its restore when they wait on disk. They wait there only when they fit with room to
//! spare; else beside the checkpoint, as before, and a dump records why.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::image::{archive, atomic};
use crate::process::inspect;

/// Free space left in the staging dir, and memory left beside it, on top of the images.
const RESERVE: u64 = 64 << 20;

/// Where a packed dump of the tree at `pid` stages its images: a new private directory
/// in `staging_dir` (removed by the caller), or why they must wait on disk instead.
pub(super) fn for_dump(staging_dir: &Path, pid: i32) -> Result<PathBuf, String> {
    let tree = match pid {
        p if p > 0 => inspect::tree_resident_bytes(p)
            .map_err(|e| format!("the tree's size is unknown ({e})"))?,
        _ => return Err("the tree is not on this host".into()),
    };
    in_memory(staging_dir, tree, "cedana-dump").map(TempDir::keep)
}

/// Where the archive at `path` is unpacked for a restore: a new private directory in
/// `staging_dir` (removed on drop) when its manifest declares a size that fits, or why not.
pub(super) fn for_restore(staging_dir: &Path, path: &Path) -> Result<TempDir, String> {
    let declared = archive::declared_disk_bytes(path)
        .map_err(|e| e.to_string())?
        .ok_or("the archive declares no sizes (it predates manifests)")?;
    in_memory(staging_dir, declared, "cedana-restore")
}

/// A new private directory in `staging_dir` for `bytes` of images, named so that a
/// crash's leftover is removed at the next daemon start; or why they do not fit there.
fn in_memory(staging_dir: &Path, bytes: u64, label: &str) -> Result<TempDir, String> {
    let dir = staging_dir.display();
    let fs = nix::sys::statvfs::statvfs(staging_dir)
        .map_err(|e| format!("{dir} cannot be used ({e})"))?;
    let free = (fs.blocks_available() as u64).saturating_mul(fs.fragment_size() as u64);
    let memory_backed = nix::sys::statfs::statfs(staging_dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    let available = memory_backed.then(mem_available).flatten();
    fits(bytes, free, available).map_err(|why| format!("{why} ({dir})"))?;
    tempfile::Builder::new()
        .prefix(&atomic::scratch_prefix(label))
        .suffix(atomic::PARTIAL_SUFFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(staging_dir)
        .map_err(|e| format!("cannot create a private dir in {dir} ({e})"))
}

/// Whether images of at most `bytes` fit in `free` bytes and, when they take memory
/// (`available`: the host's available memory), in half of it: the rest is left to the
/// host while they wait.
fn fits(bytes: u64, free: u64, available: Option<u64>) -> Result<(), String> {
    let mib = |b: u64| b >> 20;
    let need = bytes.saturating_add(RESERVE);
    if need > free {
        return Err(format!(
            "{} MiB of images would not fit in the {} MiB free",
            mib(bytes),
            mib(free)
        ));
    }
    match available {
        Some(avail) if need > avail / 2 => Err(format!(
            "{} MiB of images would take more than half the {} MiB of memory available",
            mib(bytes),
            mib(avail)
        )),
        _ => Ok(()),
    }
}

/// The host's available memory (`MemAvailable`), in bytes.
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn images_wait_in_memory_only_with_room_to_spare() {
        assert!(fits(GIB, 8 * GIB, Some(8 * GIB)).is_ok());
        // A disk-backed staging dir: only its free space counts.
        assert!(fits(GIB, 2 * GIB, None).is_ok());
        let full = fits(GIB, GIB, Some(8 * GIB)).unwrap_err();
        assert!(
            full.contains("1024 MiB of images would not fit in the 1024 MiB free"),
            "{full}"
        );
        let memory = fits(3 * GIB, 8 * GIB, Some(6 * GIB)).unwrap_err();
        assert!(memory.contains("more than half the 6144 MiB"), "{memory}");
    }

    #[test]
    fn a_tree_that_fits_gets_a_private_dir_of_its_own() {
        let root = tempfile::tempdir().expect("tempdir");
        let me = std::process::id() as i32;
        let a = for_dump(root.path(), me).expect("fits");
        let b = for_dump(root.path(), me).expect("fits");
        assert_ne!(a, b, "two dumps never share a staging dir");
        for d in [&a, &b] {
            assert!(d.starts_with(root.path()));
            let mode = std::fs::metadata(d).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
            let name = d.file_name().unwrap_or_default().to_string_lossy();
            // Named so that a crash's leftover is removed at the next daemon start.
            assert!(atomic::is_staging_name(&name), "{name}");
        }
    }

    #[test]
    fn a_missing_staging_dir_or_tree_says_why() {
        let me = std::process::id() as i32;
        let why = for_dump(Path::new("/nonexistent/staging"), me).unwrap_err();
        assert!(why.contains("/nonexistent/staging cannot be used"), "{why}");
        let why = for_dump(Path::new("/tmp"), 0).unwrap_err();
        assert!(why.contains("not on this host"), "{why}");
    }
}
