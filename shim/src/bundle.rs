//! A task's bundle on disk: the runtime recorded for it, its spec's root, its rootfs
//! mounted from containerd's mounts and unmounted again.

use std::path::{Path, PathBuf};

use containerd_shim::asynchronous::util::{mount_rootfs, read_options};
use containerd_shim_protos::api::Mount;
use containerd_shim_protos::shim::oci::Options as RuncOptions;

use crate::error::{Result, ShimError};
use crate::runtime::{self, Runtime};

/// The runtime's state root for a namespace: the options' `Root`, else runc's default.
pub(crate) fn runtime_root(options: &RuncOptions, namespace: &str) -> PathBuf {
    let base = if options.root.is_empty() {
        runtime::DEFAULT_ROOT
    } else {
        options.root.as_str()
    };
    Path::new(base).join(namespace)
}

/// The spec's `root.path` (relative to the bundle or absolute).
pub(crate) fn spec_root(bundle: &Path) -> Result<PathBuf> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(ShimError::io(format!("read {}", path.display())))?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: {e}", path.display())))?;
    Ok(PathBuf::from(
        spec.pointer("/root/path")
            .and_then(|v| v.as_str())
            .unwrap_or("rootfs"),
    ))
}

/// The runtime for a bundle, as recorded at create (used by `shim delete`).
pub async fn runtime_for_bundle(bundle: &Path, namespace: &str) -> Runtime {
    let options = read_options(bundle).await.unwrap_or_default();
    Runtime {
        binary: runtime::resolve_binary(&options.binary_name),
        root: runtime_root(&options, namespace),
        systemd_cgroup: options.systemd_cgroup,
        log: bundle.join("log.json"),
    }
}

/// Unmounts the bundle's rootfs if it is a mount point.
pub fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
}

/// Mounts containerd's rootfs mounts on `target`; false when there are none (a rootfs
/// given with the bundle).
pub(crate) async fn mount_all(mounts: &[Mount], target: &Path) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(target)
        .map_err(ShimError::io(format!("create {}", target.display())))?;
    for m in mounts {
        if let Err(e) = mount_rootfs(m, target).await {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            return Err(ShimError::Other(format!(
                "mount rootfs {} ({}): {e}",
                m.source, m.type_
            )));
        }
    }
    Ok(true)
}
