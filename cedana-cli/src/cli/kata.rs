//! Arguments of the kata commands: where the guest agent is.

use std::path::PathBuf;

use clap::Args;

use super::ContainerdArgs;

/// How to reach `cedana-guest-agent` in the VM. The host always connects: through the
/// VMM's hybrid-vsock socket, to a guest CID over real vsock, or over TCP (debugging);
/// with none of them, a container id's VM is found through containerd.
#[derive(Debug, Clone, Default, Args)]
pub struct VmArgs {
    /// The VMM's hybrid-vsock unix socket (Cloud Hypervisor's
    /// /run/vc/vm/SANDBOX/clh.sock, Firecracker's, vhost-device-vsock's uds-path).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["cid", "tcp"])]
    pub vm_socket: Option<PathBuf>,
    /// The guest's vsock CID (real AF_VSOCK; QEMU's guest-cid=).
    #[arg(long, value_name = "N", conflicts_with = "tcp")]
    pub cid: Option<u32>,
    /// The agent's vsock port.
    #[arg(long, value_name = "N", default_value_t = cedana_runtime::guest::DEFAULT_PORT)]
    pub port: u32,
    /// The agent's TCP address, HOST:PORT (debugging: the agent started with --tcp).
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// containerd, where a container id given without --vm-socket/--cid/--tcp is looked
    /// up (its sandbox's VM socket is then found under `kata.vm_root`).
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}
