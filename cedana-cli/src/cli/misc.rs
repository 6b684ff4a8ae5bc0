//! Arguments of the daemon, plugin and completion commands.

use clap::{Args, Subcommand};
use clap_complete::Shell;

/// `cedana daemon ...`.
#[derive(Debug, Subcommand)]
pub enum DaemonCmd {
    /// Run the daemon in the foreground (as root).
    Start,
    /// Ask the running daemon for its host's health checks.
    Check,
    /// Ask the running daemon to stop gracefully (jobs keep running) and wait for it.
    Stop {
        /// How long to wait for the daemon to be gone, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
    },
}

/// `cedana plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCmd {
    /// Plugins, their features, and the chains (same as `cedana features`).
    Features,
    /// Plugin names.
    List,
    /// Plugins are compiled in: succeeds for those this build has, names the others.
    Install {
        /// Plugin names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Refused: a compiled-in plugin cannot be removed (says what to do instead).
    Remove {
        /// Plugin names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `cedana __complete KIND`: the words a completion script offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompleteKind {
    /// Job ids of the running daemon.
    Jobs,
    /// Checkpoint ids of the running daemon.
    Checkpoints,
}

/// `cedana completion SHELL`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}
