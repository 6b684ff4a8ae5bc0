//! Finding a kata container's VM from containerd: the container's record names its
//! runtime (it must be kata's shim) and its sandbox (the record's `sandbox` field, else
//! CRI's `io.kubernetes.cri.sandbox-id` spec annotation, else the container is its own
//! sandbox, as a `ctr run --runtime io.containerd.kata.v2` container is); the VM's
//! hybrid-vsock socket is then where kata's runtime lays it out under its state root
//! (`/run/vc`, config `kata.vm_root`).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::error::GuestError;
use super::transport::Endpoint;
use crate::plugins::containerd::client::Client;
use crate::plugins::containerd::containers::ContainerInfo;
use crate::plugins::containerd::ContainerdTarget;

/// Prefix of kata's containerd shims: `io.containerd.kata.v2` and the per-hypervisor
/// `io.containerd.kata-clh.v2`, `kata-fc`, `kata-qemu`, ...
pub const KATA_RUNTIME_PREFIX: &str = "io.containerd.kata";
/// The spec annotation CRI gives every container of a pod: the pod sandbox's id.
pub const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Where kata's runtime puts a sandbox's hybrid-vsock socket, per hypervisor, relative
/// to its state root (`{}` is the sandbox id). QEMU uses real vsock (a CID) instead.
const LAYOUTS: &[(&str, &str)] = &[
    ("cloud-hypervisor", "vm/{}/clh.sock"),
    ("firecracker", "firecracker/{}/root/kata.hvsock"),
];

/// A kata container's VM, found from containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The sandbox (pod) the container runs in; its VM is the sandbox's.
    pub sandbox: String,
    /// Which layout matched (`cloud-hypervisor`, `firecracker`).
    pub hypervisor: &'static str,
    /// The agent's address in that VM.
    pub endpoint: Endpoint,
}

/// The VM of containerd container `target` (a kata container), with the agent on `port`.
pub async fn locate(
    target: &ContainerdTarget,
    vm_root: &Path,
    port: u32,
) -> Result<Located, GuestError> {
    let client = Client::connect(target).await?;
    let info = client.container().await?;
    if !info.runtime.starts_with(KATA_RUNTIME_PREFIX) {
        return Err(GuestError::NotKata {
            id: target.id.clone(),
            runtime: info.runtime,
        });
    }
    let sandbox = sandbox_of(&info, &target.id);
    let (hypervisor, socket) = vm_socket(vm_root, &sandbox)?;
    Ok(Located {
        sandbox,
        hypervisor,
        endpoint: Endpoint::Hybrid { socket, port },
    })
}

/// The sandbox a container belongs to: containerd's field, CRI's annotation, or itself.
pub fn sandbox_of(info: &ContainerInfo, id: &str) -> String {
    if !info.sandbox.is_empty() {
        return info.sandbox.clone();
    }
    match info.annotations.get(SANDBOX_ANNOTATION) {
        Some(s) if !s.is_empty() => s.clone(),
        _ => id.to_string(),
    }
}

/// The first of kata's socket layouts that exists for `sandbox` under `vm_root`.
pub fn vm_socket(vm_root: &Path, sandbox: &str) -> Result<(&'static str, PathBuf), GuestError> {
    // The id becomes a path component: refuse anything that could leave the root.
    if sandbox.is_empty() || sandbox.contains('/') || sandbox.starts_with('.') {
        return Err(GuestError::Invalid(format!(
            "sandbox id {sandbox:?} cannot name a directory under {}",
            vm_root.display()
        )));
    }
    let tried: Vec<(&'static str, PathBuf)> = LAYOUTS
        .iter()
        .map(|(hv, rel)| (*hv, vm_root.join(rel.replace("{}", sandbox))))
        .collect();
    if let Some(found) = tried.iter().find(|(_, p)| is_socket(p)) {
        return Ok(found.clone());
    }
    Err(GuestError::NoVmSocket {
        sandbox: sandbox.to_string(),
        tried: tried
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Whether `p` is (or links to) a unix socket.
fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::net::UnixListener;

    use super::*;

    fn info(sandbox: &str, annotation: Option<&str>) -> ContainerInfo {
        ContainerInfo {
            sandbox: sandbox.into(),
            annotations: annotation
                .map(|a| HashMap::from([(SANDBOX_ANNOTATION.to_string(), a.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn the_sandbox_field_wins_then_the_cri_annotation_then_the_id() {
        assert_eq!(sandbox_of(&info("sb", Some("ann")), "c"), "sb");
        assert_eq!(sandbox_of(&info("", Some("ann")), "c"), "ann");
        assert_eq!(sandbox_of(&info("", None), "c"), "c");
    }

    #[test]
    fn each_layout_is_found_and_a_missing_one_names_every_path_tried() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = vm_socket(root.path(), "sb").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vm/sb/clh.sock"), "{msg}");
        assert!(msg.contains("firecracker/sb/root/kata.hvsock"), "{msg}");

        let fc = root.path().join("firecracker/sb/root");
        std::fs::create_dir_all(&fc).expect("mkdir");
        let _l = UnixListener::bind(fc.join("kata.hvsock")).expect("bind");
        assert_eq!(
            vm_socket(root.path(), "sb").expect("found").0,
            "firecracker"
        );

        // A plain file where the socket should be is not a VM.
        let clh = root.path().join("vm/sb");
        std::fs::create_dir_all(&clh).expect("mkdir");
        std::fs::write(clh.join("clh.sock"), b"").expect("write");
        assert_eq!(
            vm_socket(root.path(), "sb").expect("found").0,
            "firecracker"
        );
        std::fs::remove_file(clh.join("clh.sock")).expect("rm");
        let _l2 = UnixListener::bind(clh.join("clh.sock")).expect("bind");
        let (hv, p) = vm_socket(root.path(), "sb").expect("found");
        assert_eq!((hv, p), ("cloud-hypervisor", clh.join("clh.sock")));
    }

    #[test]
    fn a_sandbox_id_that_would_leave_the_root_is_refused() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(
                    vm_socket(Path::new("/run/vc"), bad),
                    Err(GuestError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}
