//! What a caller tells the engine about a containerd container.

use super::KIND;
use crate::image::metadata::CheckpointKind;
use crate::request::Target;

/// containerd's default socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// containerd's default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A container in a containerd namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdTarget {
    /// containerd's socket.
    pub address: String,
    /// The namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
}

impl ContainerdTarget {
    /// Container `id`, with the default address and namespace where `None`.
    pub fn new(id: impl Into<String>, address: Option<String>, namespace: Option<String>) -> Self {
        Self {
            address: address.unwrap_or_else(|| DEFAULT_ADDRESS.into()),
            namespace: namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            id: id.into(),
        }
    }
}

/// Restore into a new containerd container (the target of a `containerd` restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdRestore {
    /// The container to create (its id must be free).
    pub target: ContainerdTarget,
    /// Image to create it from (default: the one recorded at dump).
    pub image: Option<String>,
    /// File for its stdout and stderr (default: `jobs.log_dir/containerd-NS-ID.log`); the
    /// daemon gives the job's own log.
    pub log_path: Option<std::path::PathBuf>,
}

impl Target for ContainerdTarget {
    fn kind(&self) -> CheckpointKind {
        KIND
    }
}

impl Target for ContainerdRestore {
    fn kind(&self) -> CheckpointKind {
        KIND
    }
}
