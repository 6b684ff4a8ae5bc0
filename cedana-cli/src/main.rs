//! `cedana`: parse the command line, dispatch, print the error chain, exit.

use clap::Parser;

use cedana_cli::cli::Cli;
use cedana_cli::commands;

fn main() {
    let cli = Cli::parse();
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
