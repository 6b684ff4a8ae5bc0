//! Errors of the runc plugin: each says which container, which runtime, and what to do.

use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, PluginError};

/// What went wrong with a runc container.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The runtime binary is missing.
    #[error(
        "OCI runtime {} not found (set runc.binary_path or CEDANA_RUNTIME_BINARY, or `apt-get install runc`)",
        binary.display()
    )]
    BinaryNotFound {
        /// What was looked for.
        binary: PathBuf,
    },
    /// The configured runtime is cedana-runc itself.
    #[error(
        "runc.binary_path ({}) is cedana-runc itself; point it at the real runtime (e.g. /usr/sbin/runc)",
        binary.display()
    )]
    Recursion {
        /// The offending path.
        binary: PathBuf,
    },
    /// No container with that id.
    #[error("container {id:?} does not exist in runtime root {root} (see `cedana query runc`)")]
    NoSuchContainer {
        /// The id asked for.
        id: String,
        /// The state root searched.
        root: String,
    },
    /// The container is not in a state that allows the operation.
    #[error(
        "container {id:?} is {status}, not running: only a running container can be checkpointed"
    )]
    NotRunning {
        /// The container.
        id: String,
        /// Its status.
        status: String,
    },
    /// A container with that id exists already.
    #[error("container {id:?} already exists; restore under a new --id or delete it first")]
    Exists {
        /// The id.
        id: String,
    },
    /// The bundle is unusable.
    #[error("bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle dir.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The runtime command failed.
    #[error("`{command}` failed ({status}): {detail}")]
    Command {
        /// The command line, shortened.
        command: String,
        /// Exit status.
        status: String,
        /// The runtime's error message and where its logs are.
        detail: String,
    },
    /// The rootfs diff could not be written or applied.
    #[error("rootfs diff: {0}")]
    RootfsDiff(String),
    /// A file the container holds open outside its mount namespace cannot be carried.
    #[error("external file {}: {reason}", path.display())]
    ExternalFile {
        /// The file (or the record naming it).
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// `--streams` cannot be honoured for this container.
    #[error("container {id:?} cannot be streamed: {reason}")]
    CannotStream {
        /// The container.
        id: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl RuncError {
    /// Broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchContainer { .. } => ErrorKind::NotFound,
            Self::Exists { .. } => ErrorKind::AlreadyExists,
            Self::BinaryNotFound { .. }
            | Self::NotRunning { .. }
            | Self::CannotStream { .. }
            | Self::ExternalFile { .. } => ErrorKind::FailedPrecondition,
            Self::Recursion { .. } | Self::Bundle { .. } => ErrorKind::InvalidArgument,
            Self::RootfsDiff(_) => ErrorKind::DataLoss,
            Self::Command { .. } => ErrorKind::Internal,
        }
    }
}

impl PluginError for RuncError {
    fn plugin(&self) -> &'static str {
        "runc"
    }

    fn kind(&self) -> ErrorKind {
        RuncError::kind(self)
    }

    fn relocate_log(&mut self, from: &Path, to: &Path) -> bool {
        // The runtime's message names CRIU's log where runc's work dir had it.
        let Self::Command { detail, .. } = self else {
            return false;
        };
        let (from, to) = (from.display().to_string(), to.display().to_string());
        let named = detail.contains(&from);
        *detail = detail.replace(&from, &to);
        named
    }
}
