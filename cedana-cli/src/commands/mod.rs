//! One module per command group. Each command converts its clap arguments into a proto
//! or engine request, calls the daemon (or the engine in-process), and prints the result.
//! Commands return the process exit code.

pub mod check;
pub mod checkpoints;
pub mod complete;
pub mod completion;
pub mod daemon;
pub mod dump;
pub mod features;
pub mod freeze;
pub mod jobs;
pub mod k8s_helper;
pub mod kata;
pub mod manage;
pub mod query;
pub mod restore;
pub mod run;
pub mod version;

use std::path::{Path, PathBuf};

use anyhow::Context;
use cedana_config::Config;
use cedana_runtime::store::Location;

use crate::cli::{CheckpointCmd, Cli, Command, ContainerdArgs, DaemonCmd, JobCmd, PluginCmd};
use crate::client::{self, Client};
use crate::proto;

/// What every command gets: the loaded config and the output mode.
pub struct Ctx {
    /// Loaded configuration (file, env, `--set`, `--address`).
    pub config: Config,
    /// `--json`.
    pub json: bool,
}

impl Ctx {
    /// Connects to the daemon at the configured address.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client::connect(&self.config.address).await
    }
}

/// A path made absolute against our working directory (the daemon has another one).
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A containerd container as the daemon's API names it.
pub fn containerd_container(id: &str, at: &ContainerdArgs) -> proto::ContainerdContainer {
    proto::ContainerdContainer {
        id: id.to_string(),
        address: Some(at.address.clone()),
        namespace: Some(at.namespace.clone()),
    }
}

/// A checkpoint location given as `--dir` / `--path`, as a request carries it: a URL
/// (`s3://BUCKET/PREFIX`) as its text, for the daemon's store registry to serve or refuse
/// by its scheme; a local path made absolute against our working directory.
pub fn location_arg(p: &Path) -> anyhow::Result<String> {
    let at = Location::from_path(p)?;
    Ok(match at.as_local() {
        Some(local) => absolute(local).display().to_string(),
        None => at.to_string(),
    })
}

/// Fewest async workers the daemon runs with, whatever the core count.
const DAEMON_MIN_WORKERS: usize = 8;

/// Runs a parsed command line; returns the exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Completion(args) = &cli.command {
        return completion::run(args.shell);
    }
    let config = Config::load_default(cli.global.config_dir.as_deref(), &cli.global.overrides())
        .context("invalid configuration")?;
    let ctx = Ctx {
        config,
        json: cli.global.json,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Daemon(DaemonCmd::Start)) {
        // The daemon's handlers still do short synchronous work (/proc, the store); with
        // one worker per core (two here) a couple of those stalled every other request.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        builder.worker_threads(cores.max(DAEMON_MIN_WORKERS));
    }
    let rt = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = rt.block_on(run(ctx, cli.command));
    // Don't wait for blocking tasks: the daemon's job reapers sit in waitpid() for as
    // long as their jobs live, and jobs outlive the daemon.
    rt.shutdown_background();
    code
}

async fn run(ctx: Ctx, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Daemon(cmd) => daemon::run(ctx, cmd).await,
        Command::Check => check::run(&ctx).await,
        Command::Run(cmd) => run::run(&ctx, cmd).await,
        Command::Manage(cmd) => manage::run(&ctx, cmd).await,
        Command::Dump(cmd) => dump::run(&ctx, cmd).await,
        Command::Restore(cmd) => restore::run(&ctx, cmd).await,
        Command::Freeze(cmd) => freeze::run(&ctx, cmd, true).await,
        Command::Unfreeze(cmd) => freeze::run(&ctx, cmd, false).await,
        Command::Query(cmd) => query::run(&ctx, cmd).await,
        Command::Ps | Command::Job(JobCmd::List) => jobs::list(&ctx).await,
        Command::Job(JobCmd::Inspect(job)) | Command::Inspect(job) => {
            jobs::inspect(&ctx, &job.jid).await
        }
        Command::Job(JobCmd::Kill(args)) | Command::Kill(args) => jobs::kill(&ctx, &args).await,
        Command::Job(JobCmd::Delete(args)) | Command::Delete(args) => {
            jobs::delete(&ctx, &args.jid, args.force).await
        }
        Command::Job(JobCmd::Attach(job)) | Command::Attach(job) => {
            jobs::attach(&ctx, &job.jid).await
        }
        Command::Job(JobCmd::Checkpoint(cmd)) | Command::Checkpoint(cmd) => {
            checkpoints::run(&ctx, cmd).await
        }
        Command::Checkpoints { jid } => checkpoints::run(&ctx, CheckpointCmd::List { jid }).await,
        Command::Features | Command::Plugin(PluginCmd::Features) => features::features(&ctx),
        Command::Plugin(PluginCmd::List) => features::list(&ctx),
        Command::Plugin(PluginCmd::Install { names }) => features::install(&ctx, &names),
        Command::Plugin(PluginCmd::Remove { names }) => features::remove(&names),
        Command::K8sHelper(cmd) => k8s_helper::run(&ctx, cmd),
        Command::Completion(args) => completion::run(args.shell),
        Command::Version => version::run(&ctx).await,
        Command::Complete { kind } => complete::run(&ctx, kind).await,
    }
}
