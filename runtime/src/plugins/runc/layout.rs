//! Names in a portable container checkpoint (the Podman/CRI-O layout) and how to tell
//! it from runc's plain image directory.

use std::path::{Path, PathBuf};

use crate::streamer::INDEX_FILE;

/// CRIU images of a portable checkpoint.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The OCI config (Podman's name).
pub const CONFIG_DUMP: &str = "config.dump";
/// The OCI runtime spec (CRI-O's name; same content here).
pub const SPEC_DUMP: &str = "spec.dump";
/// What the container changed in its rootfs.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
/// What the container removed from its rootfs (Podman's name and format).
pub const DELETED_FILES: &str = "deleted.files";

/// Where the CRIU images of a checkpoint directory are: `checkpoint/` in the portable
/// layout, else the directory itself (runc's `--image-path`).
pub fn images_of(dir: &Path) -> PathBuf {
    let nested = dir.join(CHECKPOINT_DIR);
    if nested.join("inventory.img").is_file() || nested.join(INDEX_FILE).is_file() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Whether `dir` is in the portable layout.
pub fn is_portable(dir: &Path) -> bool {
    images_of(dir) != dir
}
