//! `cedana completion SHELL`: a completion script from the clap definition.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Prints the completion script for `shell` to stdout.
pub fn run(shell: Shell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "cedana", &mut std::io::stdout());
    Ok(0)
}
