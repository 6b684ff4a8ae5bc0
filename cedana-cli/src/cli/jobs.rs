//! Arguments of the job and checkpoint commands.

use clap::{Args, Subcommand};

/// `cedana job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List jobs (same as `cedana ps`).
    List,
    /// Show every field of a job and its checkpoints.
    Inspect(JobArg),
    /// Stop a job: send a signal (TERM), then KILL if it is still running after --timeout.
    Kill(KillArgs),
    /// Forget a job (refuses a running job unless --force).
    Delete(DeleteArgs),
    /// Follow a job's output until it halts; exit with its exit code.
    Attach(JobArg),
    /// A job's checkpoints.
    #[command(subcommand)]
    Checkpoint(CheckpointCmd),
}

/// One job.
#[derive(Debug, Args)]
pub struct JobArg {
    /// The job.
    #[arg(value_parser = crate::ids::jid_parser())]
    pub jid: String,
}

/// `cedana job delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The job.
    #[arg(value_parser = crate::ids::jid_parser())]
    pub jid: String,
    /// Kill the job first if it is running.
    #[arg(long)]
    pub force: bool,
}

/// `cedana job kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The job.
    #[arg(value_parser = crate::ids::jid_parser())]
    pub jid: String,
    /// The first signal: name (TERM, SIGKILL) or number.
    #[arg(long, short, default_value = "TERM")]
    pub signal: String,
    /// Seconds to wait for the job to halt before sending KILL (0: KILL right away).
    #[arg(long, short, value_name = "SECONDS", default_value_t = 10)]
    pub timeout: u32,
}

/// `cedana checkpoint ...` and `cedana job checkpoint ...`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCmd {
    /// List checkpoints (of one job if given).
    List {
        /// Only this job's checkpoints.
        #[arg(value_parser = crate::ids::jid_parser())]
        jid: Option<String>,
    },
    /// Print a checkpoint's metadata.
    Inspect {
        /// Checkpoint id.
        #[arg(value_parser = crate::ids::checkpoint_id_parser())]
        id: String,
    },
    /// Remove a checkpoint's files and its record.
    Delete {
        /// Checkpoint id.
        #[arg(value_parser = crate::ids::checkpoint_id_parser())]
        id: String,
    },
}
