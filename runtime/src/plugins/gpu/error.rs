//! Errors of the gpu plugin: each says which process or GPU, and what to do.

use crate::error::{ErrorKind, PluginError};

/// What went wrong with a GPU job.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// A tool the GPU path needs is missing or does not run.
    #[error("{tool} is needed {why} but {found}; {fix}")]
    Tool {
        /// The tool (`cuda-checkpoint`, `nvidia-smi`).
        tool: String,
        /// What needs it.
        why: &'static str,
        /// What happened when it was run.
        found: String,
        /// What to do.
        fix: &'static str,
    },
    /// cuda-checkpoint refused an action on a process.
    #[error("GPU {action} of process {pid} failed: {detail}; {outcome}")]
    Action {
        /// `lock`, `checkpoint`, `restore` or `unlock`.
        action: &'static str,
        /// The process.
        pid: i32,
        /// The tool's message.
        detail: String,
        /// Where that leaves the job, and what to do.
        outcome: String,
    },
    /// The job's GPU setup cannot be checkpointed; seen before anything was touched.
    #[error(
        "process {pid} cannot be checkpointed: {reason}; nothing was touched and the job keeps \
         running"
    )]
    Unsupported {
        /// A GPU task of the tree.
        pid: i32,
        /// Why, and what to do.
        reason: String,
    },
    /// GPU memory is still mapped after the checkpoint: CRIU cannot dump it.
    #[error(
        "process {pid} still maps {device} after its GPU state was checkpointed; nothing was \
         dumped and the job runs on on its GPU (the driver may be older than r555: update it)"
    )]
    StillMapped {
        /// The process.
        pid: i32,
        /// The device node mapped.
        device: String,
    },
    /// The checkpoint cannot be restored on this host's GPUs.
    #[error("cannot restore this GPU checkpoint here: {reason}; nothing was restored ({fix})")]
    Incompatible {
        /// What differs.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
    /// The checkpoint's GPU record does not parse.
    #[error("the checkpoint's gpu section is damaged: {0}")]
    Damaged(String),
}

impl PluginError for GpuError {
    fn plugin(&self) -> &'static str {
        "gpu"
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::Tool { .. }
            | Self::Unsupported { .. }
            | Self::StillMapped { .. }
            | Self::Incompatible { .. } => ErrorKind::FailedPrecondition,
            Self::Action { .. } => ErrorKind::Internal,
            Self::Damaged(_) => ErrorKind::DataLoss,
        }
    }
}
