//! The engine's error type. Every variant says what happened and what to do; the
//! transports (daemon, shim, runc wrapper) map [`EngineError::kind`] onto their codes.

use std::path::{Path, PathBuf};

use crate::criu::error::CriuError;
use crate::image::error::ImageError;
use crate::plugins::containerd::error::ContainerdError;
use crate::plugins::runc::error::RuncError;
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
    /// A runc container problem.
    #[error(transparent)]
    Runc(#[from] RuncError),
    /// A containerd container problem.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
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

impl EngineError {
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
            Self::Runc(RuncError::Command { detail, .. }) => {
                let (from, to) = (from.display().to_string(), to.display().to_string());
                let named = detail.contains(&from);
                *detail = detail.replace(&from, &to);
                named
            }
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
            Self::Runc(e) => e.kind(),
            Self::Containerd(e) => e.kind(),
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
