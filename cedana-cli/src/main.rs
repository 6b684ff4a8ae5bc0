//! `cedana`: parse the command line, dispatch, print the error chain, exit.

use cedana_cli::cli::{Cli, Command, DaemonCmd};
use cedana_cli::commands;

fn main() {
    let cli = Cli::parse_args();
    if !matches!(cli.command, Command::Daemon(DaemonCmd::Start)) {
        // Like other Unix tools, end quietly when the reader of our output goes away
        // (`cedana ps | head`). The daemon keeps Rust's default (ignored) instead.
        // SAFETY: setting a signal disposition to SIG_DFL before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
