//! Errors of the containerd plugin: each names the container, the namespace and the
//! containerd address, and says what to do.

use crate::error::{ErrorKind, PluginError};

/// What went wrong with a containerd container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// containerd does not answer at the address.
    #[error(
        "containerd is unreachable at {address}: {detail} (is containerd running at \
         {address}? give its socket with --containerd-address)"
    )]
    Unreachable {
        /// The socket.
        address: String,
        /// What the client said.
        detail: String,
    },
    /// No container with that id in the namespace.
    #[error(
        "container {id:?} not found in containerd namespace {namespace:?} (address {address}); \
         list them with `ctr --address {address} --namespace {namespace} containers list`"
    )]
    NotFound {
        /// The id.
        id: String,
        /// The namespace searched.
        namespace: String,
        /// The containerd socket.
        address: String,
    },
    /// The container has no running task.
    #[error("container {id:?} in namespace {namespace:?} has no running task ({status})")]
    NotRunning {
        /// The id.
        id: String,
        /// The namespace.
        namespace: String,
        /// What containerd says of its task.
        status: String,
    },
    /// A container with the new id exists already.
    #[error(
        "container {id:?} already exists in containerd namespace {namespace:?}; restore under a \
         new --id or remove it first"
    )]
    Exists {
        /// The id.
        id: String,
        /// The namespace.
        namespace: String,
    },
    /// A runtime this plugin cannot work with.
    #[error("container runtime {runtime:?} is not supported: {reason}")]
    Runtime {
        /// The runtime.
        runtime: String,
        /// Why.
        reason: String,
    },
    /// A container whose checkpoint could not be restored: refused before the dump.
    #[error(
        "container {id:?} (runtime {runtime}) cannot be checkpointed with `cedana dump \
         containerd`, since the checkpoint could not be restored: {reason}; it keeps running"
    )]
    NotRestorable {
        /// The id.
        id: String,
        /// Its runtime.
        runtime: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The image to create the container from is not there.
    #[error(
        "image {image:?} is not in containerd namespace {namespace:?}; pull it there \
         (`ctr --namespace {namespace} images pull {image}`) or give --image"
    )]
    NoImage {
        /// The image.
        image: String,
        /// The namespace.
        namespace: String,
    },
    /// The checkpoint is not a containerd one.
    #[error("{0}")]
    NotContainerd(String),
    /// The namespace cannot be sent to containerd.
    #[error("containerd namespace {namespace:?} is not valid (letters, digits, `.`, `_` and `-`)")]
    BadNamespace {
        /// The namespace given.
        namespace: String,
    },
    /// A containerd call failed.
    #[error("{call} failed: {detail}")]
    Call {
        /// What was asked of containerd.
        call: String,
        /// containerd's message.
        detail: String,
    },
}

impl ContainerdError {
    /// Broad class, for transports.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } | Self::NoImage { .. } => ErrorKind::NotFound,
            Self::Exists { .. } => ErrorKind::AlreadyExists,
            Self::NotContainerd(_) | Self::BadNamespace { .. } => ErrorKind::InvalidArgument,
            Self::Call { .. } => ErrorKind::Internal,
            Self::Unreachable { .. }
            | Self::NotRunning { .. }
            | Self::Runtime { .. }
            | Self::NotRestorable { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

impl PluginError for ContainerdError {
    fn plugin(&self) -> &'static str {
        "containerd"
    }

    fn kind(&self) -> ErrorKind {
        ContainerdError::kind(self)
    }
}
