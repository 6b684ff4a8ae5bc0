//! Arguments of the run and manage commands: start a program or container as a job, or
//! adopt a running one.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_key_value;
use super::process::ContainerdArgs;

/// `cedana run ...`.
#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Start a program as a job.
    Process(RunArgs),
    /// Run a runc container as a job (`runc run --detach`; output to the job log).
    Runc(RunRuncArgs),
    /// Run a container from an image through containerd as a job (output to the job log).
    Containerd(RunContainerdArgs),
}

/// `cedana run containerd`.
#[derive(Debug, Args)]
pub struct RunContainerdArgs {
    /// Image reference; the namespace must have it (`ctr images pull` or `import`).
    pub image: String,
    /// Container id.
    #[arg(long)]
    pub id: String,
    /// Where containerd is.
    #[command(flatten)]
    pub containerd: ContainerdArgs,
    /// containerd runtime (io.containerd.cedana.v2 runs it on our shim).
    #[arg(long, default_value = "io.containerd.runc.v2")]
    pub runtime: String,
    /// The job it becomes.
    #[command(flatten)]
    pub job: ContainerJobArgs,
    /// The command, after `--` (default: the image's entrypoint and cmd).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The job a container run becomes: its id, its log, whether to follow it.
#[derive(Debug, Args)]
pub struct ContainerJobArgs {
    /// Job id (default: generated).
    #[arg(long, value_parser = crate::ids::jid_parser())]
    pub jid: Option<String>,
    /// Log file for the container's stdout and stderr (default: jobs.log_dir/JID.log).
    #[arg(long, value_name = "LOG")]
    pub out: Option<PathBuf>,
    /// Follow the output until the job halts.
    #[arg(long)]
    pub attach: bool,
}

/// `cedana run runc`.
#[derive(Debug, Args)]
pub struct RunRuncArgs {
    /// Bundle directory (config.json with process.terminal false, rootfs).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Container id.
    #[arg(long)]
    pub id: String,
    /// Runtime state root (runc --root; default: the runtime's).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The job it becomes.
    #[command(flatten)]
    pub job: ContainerJobArgs,
}

/// `cedana run process`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Job id (default: generated).
    #[arg(long, value_parser = crate::ids::jid_parser())]
    pub jid: Option<String>,
    /// Log file for stdout and stderr (default: jobs.log_dir/JID.log).
    #[arg(long, value_name = "LOG")]
    pub out: Option<PathBuf>,
    /// Follow the output until the job exits, and exit with its exit code.
    #[arg(long)]
    pub attach: bool,
    /// Working directory (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Extra environment variable (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "PROGRAM [ARGS]...")]
    pub command: Vec<String>,
}

/// `cedana manage ...`.
#[derive(Debug, Subcommand)]
pub enum ManageCmd {
    /// Adopt a running process as a job.
    Process {
        /// The process.
        pid: i32,
        /// Job id (default: generated).
        #[arg(long, value_parser = crate::ids::jid_parser())]
        jid: Option<String>,
    },
    /// Adopt a running runc container as a job (its init PID from `runc state`).
    Runc {
        /// Container id.
        id: String,
        /// Runtime state root (runc --root; default: the runtime's).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Job id (default: generated).
        #[arg(long, value_parser = crate::ids::jid_parser())]
        jid: Option<String>,
    },
    /// Adopt a containerd container whose task runs as a job (its PID from containerd).
    Containerd {
        /// Container id.
        id: String,
        /// Where containerd is.
        #[command(flatten)]
        containerd: ContainerdArgs,
        /// Job id (default: generated).
        #[arg(long, value_parser = crate::ids::jid_parser())]
        jid: Option<String>,
    },
}
