//! Arguments of `cedana k8s-helper`, the entry point of the node DaemonSet.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `cedana k8s-helper ...`.
#[derive(Debug, Subcommand)]
pub enum K8sHelperCmd {
    /// Copy cedana's binaries into the host and add the `cedana` runtime to containerd's
    /// config (idempotent; the original config is kept).
    Install(K8sHelperArgs),
    /// Undo exactly what install did.
    Uninstall(K8sHelperArgs),
}

/// Where the host is and what to change there.
#[derive(Debug, Args)]
pub struct K8sHelperArgs {
    /// The host's root filesystem as mounted here (the DaemonSet mounts it at /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// containerd's config file, as the host sees it.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/containerd/config.toml"
    )]
    pub containerd_config: PathBuf,
    /// Directory for the binaries, as the host sees it.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    pub bin_dir: PathBuf,
    /// Restart containerd afterwards (in the host's mount namespace when --host-root is
    /// not /; needs the host's PID namespace), instead of saying how.
    #[arg(long)]
    pub restart: bool,
}
