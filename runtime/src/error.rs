//! The engine's error type. Every variant says what happened and what to do; the
//! transports (daemon, shim, runc wrapper) map [`EngineError::kind`] onto their codes.

use std::path::{Path, PathBuf};

use crate::criu::error::CriuError;
use crate::image::error::ImageError;
use crate::streamer::StreamError;

/// Broad class of an error, for mapping onto gRPC/ttrpc status codes and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The thing asked for does not exist (process, job, checkpoint).
    NotFound,
    /// The request itself is wrong.
    InvalidArgument,
    /// The target already exists.
    AlreadyExists,
    /// The host is not in a state that allows the operation (missing tool, busy PID).
    FailedPrecondition,
    /// The caller may not do this.
    PermissionDenied,
    /// Stored data is damaged.
    DataLoss,
    /// Anything else.
    Internal,
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No process with that PID.
    #[error("no such process: PID {pid} does not exist (check the PID with `ps -p {pid}`)")]
    NoSuchProcess {
        /// The PID asked for.
        pid: i32,
    },
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The field at fault.
        field: &'static str,
        /// Why it is invalid and what is expected.
        reason: String,
    },
    /// The dump target exists already.
    #[error(
        "checkpoint target {} already exists and is not empty; choose another --name or --dir, \
         or delete it first",
        path.display()
    )]
    TargetExists {
        /// The existing path.
        path: PathBuf,
    },
    /// No checkpoint at the given path.
    #[error(
        "no checkpoint at {}: expected a checkpoint directory or archive (see `cedana checkpoints`)",
        path.display()
    )]
    NoSuchCheckpoint {
        /// The path asked for.
        path: PathBuf,
    },
    /// The tree holds an io_uring instance, which CRIU cannot checkpoint.
    #[error(
        "process {pid} uses io_uring, which CRIU cannot checkpoint yet; nothing was dumped and the \
         process keeps running (stop using io_uring in the workload to make it checkpointable)"
    )]
    IoUringUnsupported {
        /// The process holding it.
        pid: i32,
    },
    /// Another dump of the same tree is running.
    #[error(
        "PID {pid} is being checkpointed by another request right now; wait for it to finish \
         (see `cedana checkpoints`) and try again"
    )]
    DumpInProgress {
        /// A PID of the tree.
        pid: i32,
    },
    /// Another restore is recreating a PID this checkpoint needs.
    #[error(
        "cannot restore: PID {pid} is being restored by another request right now (the same \
         checkpoint, or one of the same processes); CRIU restores processes with their \
         original PIDs, so only one of them can have it: wait for that restore to finish"
    )]
    RestoreInProgress {
        /// The PID.
        pid: i32,
    },
    /// A PID the checkpoint needs is still in use.
    #[error(
        "cannot restore: PID {pid} is still in use by {holder} after waiting {waited_ms} ms; \
         CRIU restores processes with their original PIDs, so stop that process (or restore \
         in a new PID namespace) and try again"
    )]
    PidTaken {
        /// The PID.
        pid: i32,
        /// Who holds it (`comm (state X, parent N)`).
        holder: String,
        /// How long restore waited.
        waited_ms: u64,
    },
    /// A host tool the operation needs is missing.
    #[error("{tool} is required {why} but was not found on PATH; install it (Debian package `{package}`, or run `make deps`)")]
    MissingTool {
        /// The executable name.
        tool: &'static str,
        /// What needs it.
        why: &'static str,
        /// Debian package providing it.
        package: &'static str,
    },
    /// The caller lacks privileges.
    #[error(
        "permission denied: {0} (cedana must run as root to checkpoint and restore processes)"
    )]
    PermissionDenied(String),
    /// Reading /proc about a process failed.
    #[error("cannot inspect process {pid}: {source}")]
    Inspect {
        /// The process.
        pid: i32,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint image problem.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A CRIU problem.
    #[error(transparent)]
    Criu(#[from] CriuError),
    /// A plugin's own error (runc, containerd, ...), shown as the plugin wrote it.
    #[error(transparent)]
    Plugin(PluginFailure),
    /// A streamed dump or restore failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A background task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
    /// A restore failed after CRIU ran; its log was kept where the error says.
    #[error("{source}; CRIU's restore log is kept at {}", log.display())]
    WithRestoreLog {
        /// The failure.
        source: Box<EngineError>,
        /// The kept copy of CRIU's restore.log.
        log: PathBuf,
    },
}

/// What a plugin's error tells the engine: its plugin, its class for the transports,
/// and (as `Display`) the message the user sees. Any such error converts into an
/// [`EngineError`] with `?`.
pub trait PluginError: std::error::Error + Send + Sync + 'static {
    /// The plugin's name, as in `cedana features`.
    fn plugin(&self) -> &'static str;

    /// Broad class of the error.
    fn kind(&self) -> ErrorKind;

    /// Points the error at `to` where it names the log file `from`, which was moved
    /// there; returns whether it named it.
    fn relocate_log(&mut self, _from: &Path, _to: &Path) -> bool {
        false
    }
}

/// A plugin's error inside an [`EngineError`]: shown, sourced and classed as the plugin's
/// own error says.
#[derive(Debug)]
pub struct PluginFailure(Box<dyn PluginError>);

impl PluginFailure {
    /// The plugin that failed.
    pub fn plugin(&self) -> &'static str {
        self.0.plugin()
    }

    /// Broad class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind()
    }

    /// The error as an `E`, when it is one.
    pub fn downcast_ref<E: PluginError>(&self) -> Option<&E> {
        let e: &(dyn std::error::Error + 'static) = self.0.as_ref();
        e.downcast_ref()
    }
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PluginFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl<E: PluginError> From<E> for EngineError {
    fn from(e: E) -> Self {
        Self::Plugin(PluginFailure(Box::new(e)))
    }
}

impl EngineError {
    /// The plugin error inside, when it is an `E` (e.g. to tell "no such container"
    /// from other failures).
    pub fn plugin_error<E: PluginError>(&self) -> Option<&E> {
        match self {
            Self::Plugin(f) => f.downcast_ref(),
            Self::WithRestoreLog { source, .. } => source.plugin_error(),
            _ => None,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Points the error at `to` where it names the log file `from` (moved there);
    /// returns whether it named it.
    pub fn relocate_log(&mut self, from: &Path, to: &Path) -> bool {
        match self {
            Self::Criu(CriuError::Failed { log_path, .. })
            | Self::Stream(StreamError::Criu(CriuError::Failed { log_path, .. }))
                if log_path == from =>
            {
                *log_path = to.to_path_buf();
                true
            }
            // A lazy restore's error holds CRIU's restore error inside.
            Self::Criu(CriuError::LazyPages {
                restore: Some(r), ..
            }) => match r.as_mut() {
                CriuError::Failed { log_path, .. } if log_path == from => {
                    *log_path = to.to_path_buf();
                    true
                }
                _ => false,
            },
            Self::Plugin(f) => f.0.relocate_log(from, to),
            Self::WithRestoreLog { source, .. } => source.relocate_log(from, to),
            _ => false,
        }
    }

    /// Broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::WithRestoreLog { source, .. } => source.kind(),
            Self::NoSuchProcess { .. } | Self::NoSuchCheckpoint { .. } => ErrorKind::NotFound,
            Self::InvalidRequest { .. } => ErrorKind::InvalidArgument,
            Self::TargetExists { .. } => ErrorKind::AlreadyExists,
            Self::IoUringUnsupported { .. }
            | Self::PidTaken { .. }
            | Self::MissingTool { .. }
            | Self::DumpInProgress { .. }
            | Self::RestoreInProgress { .. } => ErrorKind::FailedPrecondition,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::Image(e) => e.kind(),
            Self::Plugin(f) => f.kind(),
            Self::Criu(e) => match e {
                CriuError::NotFound { .. } | CriuError::TooOld { .. } => {
                    ErrorKind::FailedPrecondition
                }
                _ => ErrorKind::Internal,
            },
            Self::Stream(StreamError::Criu(CriuError::NotFound { .. }))
            | Self::Stream(StreamError::NoSpace { .. }) => ErrorKind::FailedPrecondition,
            Self::Stream(_) => ErrorKind::Internal,
            Self::Inspect { .. } | Self::Io { .. } | Self::Internal(_) => ErrorKind::Internal,
        }
    }
}
