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
}

/// `cedana plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCmd {
    /// Plugins, their features, and the chains (same as `cedana features`).
    Features,
    /// Plugin names.
    List,
}

/// `cedana completion SHELL`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}
