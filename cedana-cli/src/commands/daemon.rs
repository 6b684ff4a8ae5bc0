//! `cedana daemon start|check|stop`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use tracing_subscriber::EnvFilter;

use super::check::print_checks;
use super::Ctx;
use crate::cli::DaemonCmd;
use crate::client::quick;
use crate::daemon::server;
use crate::proto::Empty;

/// Runs a daemon subcommand.
pub async fn run(ctx: Ctx, cmd: DaemonCmd) -> anyhow::Result<i32> {
    match cmd {
        DaemonCmd::Start => {
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(&ctx.config.log_level));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            server::serve(ctx.config).await?;
            Ok(0)
        }
        DaemonCmd::Check => {
            let mut client = ctx.client().await?;
            let report = quick(&ctx.config.address, client.health(Empty {})).await?;
            Ok(print_checks(&report.checks, ctx.json))
        }
        DaemonCmd::Stop { timeout } => stop(&ctx, Duration::from_secs(timeout)).await,
    }
}

/// `cedana daemon stop`: the Stop RPC, then wait until the socket is gone (the daemon
/// removes it as its last act), so a following `daemon start` finds the address free.
async fn stop(ctx: &Ctx, timeout: Duration) -> anyhow::Result<i32> {
    let socket = ctx.config.address.clone();
    let mut client = ctx.client().await?;
    quick(&socket, client.stop(Empty {})).await?;
    drop(client);
    if !wait_gone(&socket, timeout).await {
        bail!(
            "the daemon at {} accepted the stop but is still there after {} s (requests in \
             flight, such as `job attach`, keep it until they end)",
            socket.display(),
            timeout.as_secs()
        );
    }
    if !ctx.json {
        crate::outln!("cedana daemon at {} stopped", socket.display());
    }
    Ok(0)
}

/// Waits until `socket` no longer exists.
async fn wait_gone(socket: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while socket.exists() {
        if start.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}
