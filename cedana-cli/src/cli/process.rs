//! Arguments of the commands that checkpoint, restore, query and freeze processes, jobs
//! and containers (run and manage are in `run.rs`).

use std::path::PathBuf;

use cedana_runtime::plugins::gpu::map::GpuMap;
use clap::{Args, Subcommand};

use super::VmArgs;

/// CRIU options a user may force (unset: detected by the engine).
#[derive(Debug, Clone, Default, Args)]
pub struct CriuFlagArgs {
    /// Checkpoint/restore established TCP connections.
    #[arg(long)]
    pub tcp_established: bool,
    /// Bring established TCP connections back closed (dump: skip their state and record
    /// this for restore).
    #[arg(long)]
    pub tcp_close: bool,
    /// Checkpoint/restore file locks.
    #[arg(long)]
    pub file_locks: bool,
    /// External resource in CRIU --external syntax (repeatable).
    #[arg(long, value_name = "X")]
    pub external: Vec<String>,
    /// The tree belongs to a terminal session outside it.
    #[arg(long)]
    pub shell_job: bool,
    /// Allow link remapping of unlinked or hard-linked open files.
    #[arg(long)]
    pub link_remap: bool,
}

/// Options of every dump.
#[derive(Debug, Clone, Default, Args)]
pub struct DumpArgs {
    /// Directory the checkpoint goes into (default: checkpoint.dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Checkpoint name (default: generated).
    #[arg(long, value_parser = crate::ids::name_parser())]
    pub name: Option<String>,
    /// Packing (default: checkpoint.compression).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(cedana_config::COMPRESSIONS))]
    pub compression: Option<String>,
    /// Keep the process running after the dump.
    #[arg(long)]
    pub leave_running: bool,
    /// Stream the images through N shards compressed in parallel (criu --stream; zstd,
    /// or lz4 with --compression lz4): no uncompressed copy is written. Without it a dump
    /// streams into one shard per core where it can (else says why it packs an archive);
    /// 0 asks for the archive.
    #[arg(long, value_name = "N")]
    pub streams: Option<u32>,
    /// Print CRIU's figures of the dump (frozen time, pages scanned and written).
    #[arg(long)]
    pub print_stats: bool,
    /// Print the time each adapter of the dump's chain took.
    #[arg(long)]
    pub profile: bool,
    /// CRIU options.
    #[command(flatten)]
    pub flags: CriuFlagArgs,
}

/// `cedana dump ...`.
#[derive(Debug, Subcommand)]
pub enum DumpCmd {
    /// Checkpoint a process tree.
    Process {
        /// Root of the tree.
        pid: i32,
        /// Dump options.
        #[command(flatten)]
        args: DumpArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Checkpoint a job.
    Job {
        /// The job.
        #[arg(value_parser = crate::ids::jid_parser())]
        jid: String,
        /// Dump options.
        #[command(flatten)]
        args: DumpArgs,
    },
    /// Checkpoint a runc container into one portable checkpoint (CRIU images, OCI
    /// config, rootfs changes, metadata).
    Runc {
        /// Container id.
        id: String,
        /// Runtime state root (runc --root; default: the runtime's).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Dump options.
        #[command(flatten)]
        args: DumpArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Checkpoint a container run by containerd (runc-based runtime) into one portable
    /// checkpoint that restores into a new container.
    Containerd {
        /// Container id.
        id: String,
        /// containerd options.
        #[command(flatten)]
        containerd: ContainerdArgs,
        /// Dump options.
        #[command(flatten)]
        args: DumpArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Checkpoint a Kubernetes pod's container on this node, found through containerd's
    /// CRI (namespace k8s.io), as `dump containerd` would; restore it into a new pod on
    /// handler cedana with the annotation cedana.io/restore-from=PATH.
    K8s {
        /// Pod name.
        pod: String,
        /// The container (default: the pod's only running one).
        #[arg(long)]
        container: Option<String>,
        /// The pod's Kubernetes namespace (default: any; needed when the name is in several).
        #[arg(long)]
        namespace: Option<String>,
        /// Where the CRI is.
        #[command(flatten)]
        cri: CriArgs,
        /// Dump options.
        #[command(flatten)]
        args: DumpArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Checkpoint a process tree or container inside a VM through its
    /// cedana-guest-agent; the checkpoint streams out to --dir on this host.
    Kata {
        /// Container id, as kata-agent lays it out in the guest
        /// (/run/kata-containers/ID/); without --vm-socket/--cid/--tcp, its VM is found
        /// through containerd.
        #[arg(required_unless_present = "pid")]
        id: Option<String>,
        /// A process tree in the guest instead, by its root's guest PID.
        #[arg(long, conflicts_with = "id")]
        pid: Option<i32>,
        /// Where the agent is.
        #[command(flatten)]
        vm: VmArgs,
        /// Dump options.
        #[command(flatten)]
        args: DumpArgs,
        /// Talk to the agent from this process instead of through the daemon.
        #[arg(long)]
        no_server: bool,
    },
}

/// Where Kubernetes' CRI is: containerd's socket.
#[derive(Debug, Clone, Default, Args)]
pub struct CriArgs {
    /// containerd's socket (it serves the CRI).
    #[arg(
        id = "cri_address",
        long = "containerd-address",
        value_name = "SOCKET",
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: PathBuf,
}

/// Where a containerd container is.
#[derive(Debug, Clone, Default, Args)]
pub struct ContainerdArgs {
    /// containerd's socket (`--address` is the daemon's; the env var is ctr's).
    #[arg(
        id = "containerd_address",
        long = "containerd-address",
        value_name = "SOCKET",
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: String,
    /// containerd namespace.
    #[arg(long, env = "CONTAINERD_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

/// Options of every restore.
#[derive(Debug, Clone, Default, Args)]
pub struct RestoreArgs {
    /// CRIU options.
    #[command(flatten)]
    pub flags: CriuFlagArgs,
    /// Write the restored PID to this file.
    #[arg(long, value_name = "F")]
    pub pid_file: Option<PathBuf>,
    /// Follow the restored job's log until the job halts, and exit with its exit code (0
    /// for a container: its exit code is not known). Through the daemon, whose restores
    /// are jobs (containers too); with --no-server, a process restore waits for the
    /// process instead, and a container restore refuses it (no job to follow).
    #[arg(long)]
    pub attach: bool,
    /// Print CRIU's figures of the dump and of this restore (times, pages).
    #[arg(long)]
    pub print_stats: bool,
    /// Print the time each adapter of the restore's chain took.
    #[arg(long)]
    pub profile: bool,
    /// Run the restored tree before its memory is back: pages are served on demand (and
    /// the rest in the background) by `criu lazy-pages`, from the checkpoint's images
    /// (processes and jobs; a streamed checkpoint is decoded beside it first). With
    /// --no-server the command returns once every page is in.
    #[arg(long)]
    pub lazy: bool,
    /// Restore a GPU job onto other GPUs: OLD=NEW,... pairs of GPU UUIDs (the
    /// checkpoint's, this host's; `nvidia-smi -L` prints them), every GPU of the
    /// checkpoint named. Needs driver r580+ on both hosts.
    #[arg(long, value_name = "OLD=NEW,...", value_parser = parse_gpu_map)]
    pub gpu_map: Option<GpuMap>,
}

fn parse_gpu_map(text: &str) -> Result<GpuMap, String> {
    GpuMap::parse(text)
}

/// `cedana restore ...`.
#[derive(Debug, Subcommand)]
pub enum RestoreCmd {
    /// Restore a process tree from a checkpoint.
    Process {
        /// Checkpoint directory or archive.
        #[arg(long)]
        path: PathBuf,
        /// Restore options.
        #[command(flatten)]
        args: RestoreArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Restore a job (default: from its latest checkpoint).
    Job {
        /// The job.
        #[arg(value_parser = crate::ids::jid_parser())]
        jid: String,
        /// Checkpoint to restore from.
        #[arg(long)]
        path: Option<PathBuf>,
        /// Restore options.
        #[command(flatten)]
        args: RestoreArgs,
    },
    /// Restore a runc container checkpoint (`cedana dump runc`) as a new container;
    /// through the daemon it is a new job, its output in the job log (`cedana ps`).
    Runc {
        /// Checkpoint archive or directory.
        #[arg(long)]
        path: PathBuf,
        /// Bundle directory holding a fresh copy of the original rootfs (its config.json
        /// is written from the checkpoint when missing).
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        /// Id of the new container.
        #[arg(long)]
        id: String,
        /// With --no-server: return once the container runs (else wait for it and exit
        /// with its status). Through the daemon the container always runs detached, as a
        /// job: follow it with --attach or `cedana job attach`.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Runtime state root (runc --root; default: the runtime's).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Restore options.
        #[command(flatten)]
        args: RestoreArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Restore a containerd checkpoint (`cedana dump containerd`) into a new container
    /// that containerd manages; through the daemon it is also a new job, its output in
    /// the job log, jobs.log_dir/JID.log (with --no-server, in
    /// jobs.log_dir/containerd-NS-ID.log).
    Containerd {
        /// Checkpoint archive or directory.
        #[arg(long)]
        path: PathBuf,
        /// Id of the new container.
        #[arg(long)]
        id: String,
        /// Image to create it from (default: the one recorded at dump).
        #[arg(long, value_name = "REF")]
        image: Option<String>,
        /// containerd options.
        #[command(flatten)]
        containerd: ContainerdArgs,
        /// Restore options.
        #[command(flatten)]
        args: RestoreArgs,
        /// Run the engine in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Restore a `cedana dump kata` checkpoint inside a VM through its
    /// cedana-guest-agent (verified here first, its shards read by the guest as CRIU
    /// asks for them).
    Kata {
        /// Container id: its layout (/run/kata-containers/ID/ with the same rootfs) must
        /// exist in the guest; without --vm-socket/--cid/--tcp, its VM is found through
        /// containerd. Omit for a plain process tree.
        id: Option<String>,
        /// Checkpoint directory, as `cedana dump kata` wrote it.
        #[arg(long)]
        path: PathBuf,
        /// Where the agent is.
        #[command(flatten)]
        vm: VmArgs,
        /// Restore options.
        #[command(flatten)]
        args: RestoreArgs,
        /// Talk to the agent from this process instead of through the daemon.
        #[arg(long)]
        no_server: bool,
    },
}

/// `cedana query ...`.
#[derive(Debug, Subcommand)]
pub enum QueryCmd {
    /// Containers of the configured OCI runtime: id, status, init PID, bundle.
    Runc {
        /// Only this container.
        id: Option<String>,
        /// Runtime state root (runc --root; default: the runtime's).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Ask the runtime in this process instead of asking the daemon.
        #[arg(long)]
        no_server: bool,
    },
    /// Kubernetes pods on this node and their containers, read through containerd's
    /// CRI: pod, namespace, runtime handler, container, state.
    K8s {
        /// Only the pods with these names.
        names: Vec<String>,
        /// Only pods of this Kubernetes namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Where the CRI is.
        #[command(flatten)]
        cri: CriArgs,
    },
    /// What runs in a VM (kata containers, processes), or with --check the guest's
    /// health, asked of its cedana-guest-agent.
    Kata {
        /// Where the agent is.
        #[command(flatten)]
        vm: VmArgs,
        /// The guest's health checks (kernel options, modules, CRIU) instead.
        #[arg(long)]
        check: bool,
        /// Talk to the agent from this process instead of through the daemon.
        #[arg(long)]
        no_server: bool,
    },
}

/// `cedana freeze|unfreeze ...`.
#[derive(Debug, Subcommand)]
pub enum FreezeCmd {
    /// A process tree.
    Process {
        /// Root of the tree.
        pid: i32,
    },
    /// A job.
    Job {
        /// The job.
        #[arg(value_parser = crate::ids::jid_parser())]
        jid: String,
    },
}
