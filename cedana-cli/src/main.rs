//! `cedana`: parse the command line, dispatch, print the error chain, exit.

use cedana_cli::cli::Cli;
use cedana_cli::commands;

fn main() {
    let cli = Cli::parse_args();
    // SIGPIPE stays ignored (Rust's default): `output::write_stdout` ends quietly when
    // the reader of our output goes away, and a write to a daemon that closed the
    // connection becomes an error instead of a silent death.
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
