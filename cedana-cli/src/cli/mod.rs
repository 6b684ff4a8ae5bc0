//! The command line, as clap derive structs. These types stay at the edge: commands
//! convert them into proto or engine requests.

mod jobs;
mod k8s;
mod kata;
mod misc;
mod process;
mod run;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use jobs::{CheckpointCmd, DeleteArgs, JobArg, JobCmd, KillArgs};
pub use k8s::{K8sHelperArgs, K8sHelperCmd};
pub use kata::VmArgs;
pub use misc::{CompleteKind, CompletionArgs, DaemonCmd, PluginCmd};
pub use process::{
    ContainerdArgs, CriArgs, CriuFlagArgs, DumpArgs, DumpCmd, FreezeCmd, QueryCmd, RestoreArgs,
    RestoreCmd,
};
pub use run::{ContainerJobArgs, ManageCmd, RunArgs, RunCmd, RunContainerdArgs, RunRuncArgs};

/// Transparent checkpoint/restore of processes with CRIU.
#[derive(Debug, Parser)]
#[command(name = "cedana", version, about, propagate_version = true)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Config directory (else $CEDANA_CONFIG_DIR, else /etc/cedana).
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Override a config key (repeatable), e.g. --set checkpoint.compression=zstd.
    // Not `global`: clap replaces a global's earlier values with those given after the
    // subcommand, so `Cli::command_with_set` adds `--set` to every subcommand itself and
    // `Cli::try_parse_args` gathers the values of all levels.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Daemon socket path (shortcut for --set address=PATH).
    #[arg(long, global = true, value_name = "PATH")]
    pub address: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalArgs {
    /// The config overrides, `--address` last so it wins.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut all = self.set.clone();
        if let Some(addr) = &self.address {
            all.push(("address".into(), addr.to_string_lossy().into_owned()));
        }
        all
    }
}

/// The id of the `--set` copy that every subcommand carries.
const SET_BELOW: &str = "set_below";

/// `--set` as a subcommand takes it (same flag, its own id so levels do not collide).
fn set_below_arg() -> clap::Arg {
    clap::Arg::new(SET_BELOW)
        .long("set")
        .value_name("KEY=VALUE")
        .help("Override a config key (repeatable), e.g. --set checkpoint.compression=zstd.")
        .action(clap::ArgAction::Append)
        .value_parser(parse_key_value)
}

/// Adds `--set` to `cmd`'s subcommands, recursively.
fn add_set_below(cmd: clap::Command) -> clap::Command {
    cmd.mut_subcommands(|sub| add_set_below(sub.arg(set_below_arg())))
}

/// The `--set` values given below the top level, outermost first.
fn set_below_values(matches: &ArgMatches, out: &mut Vec<(String, String)>) {
    let Some((_, sub)) = matches.subcommand() else {
        return;
    };
    if let Ok(Some(values)) = sub.try_get_many::<(String, String)>(SET_BELOW) {
        out.extend(values.cloned());
    }
    set_below_values(sub, out);
}

impl Cli {
    /// The clap command, with `--set` accepted after every subcommand too.
    pub fn command_with_set() -> clap::Command {
        add_set_below(Cli::command())
    }

    /// Parses a command line; `--set` values accumulate in the order given, wherever
    /// they appear (before or after the subcommand).
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command_with_set().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        set_below_values(&matches, &mut cli.global.set);
        Ok(cli)
    }

    /// Parses this process's arguments, exiting with clap's message on an error.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or query the daemon.
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Check this host (CRIU, kernel, plugins) in-process, without the daemon.
    Check,
    /// Start a program as a job managed by the daemon.
    #[command(subcommand, visible_alias = "exec")]
    Run(RunCmd),
    /// Adopt an existing process as a job.
    #[command(subcommand)]
    Manage(ManageCmd),
    /// Checkpoint a process or a job.
    #[command(subcommand)]
    Dump(DumpCmd),
    /// Restore a process or a job from a checkpoint.
    #[command(subcommand)]
    Restore(RestoreCmd),
    /// Stop a process tree or job (SIGSTOP).
    #[command(subcommand)]
    Freeze(FreezeCmd),
    /// Resume a frozen process tree or job (SIGCONT).
    #[command(subcommand)]
    Unfreeze(FreezeCmd),
    /// Query containers of a runtime.
    #[command(subcommand)]
    Query(QueryCmd),
    /// List jobs.
    #[command(visible_alias = "jobs")]
    Ps,
    /// Manage jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Follow a job's output until it halts (same as `job attach`).
    Attach(JobArg),
    /// Show a job and its checkpoints (same as `job inspect`).
    Inspect(JobArg),
    /// Stop a job: TERM, then KILL after --timeout (same as `job kill`).
    Kill(KillArgs),
    /// Forget a job (same as `job delete`).
    Delete(DeleteArgs),
    /// List checkpoints.
    Checkpoints {
        /// Only this job's checkpoints.
        #[arg(value_parser = crate::ids::jid_parser())]
        jid: Option<String>,
    },
    /// Manage checkpoints.
    #[command(subcommand)]
    Checkpoint(CheckpointCmd),
    /// Show plugins, their features and the operation chains.
    Features,
    /// Plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Set up a Kubernetes node: binaries into the host, the `cedana` runtime into
    /// containerd's config.
    #[command(subcommand, name = "k8s-helper")]
    K8sHelper(K8sHelperCmd),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Print the version of this client, of CRIU, and of the daemon if one answers.
    Version,
    /// Print job or checkpoint ids, one a line, for the completion scripts.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// What to list.
        #[arg(value_enum)]
        kind: CompleteKind,
    },
}
