//! `cedana-guest-agent`: the engine inside a kata guest, on vsock. Thin: the work is in
//! `cedana_runtime::guest`.

use std::process::ExitCode;

use cedana_runtime::guest::agent::{run, AgentOptions};

const USAGE: &str =
    "usage: cedana-guest-agent [--port N] [--tcp HOST:PORT] [--work-dir DIR] [--kata-root DIR] [--network-lock nftables|iptables|skip]";

fn main() -> ExitCode {
    tracing_subscriber_init();
    let mut opts = AgentOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let parsed = match a.as_str() {
            "--port" => value()
                .and_then(|v| v.parse().map_err(|e| format!("--port {v}: {e}")))
                .map(|p| opts.port = p),
            "--tcp" => value().map(|v| opts.tcp = Some(v)),
            "--work-dir" => value().map(|v| opts.work_dir = v.into()),
            "--kata-root" => value().map(|v| opts.kata_root = v.into()),
            "--network-lock" => value().map(|v| opts.network_lock = v),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = parsed {
            eprintln!("cedana-guest-agent: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    match run(opts, cedana_config::Config::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cedana-guest-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (the guest console), `RUST_LOG` or info.
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
