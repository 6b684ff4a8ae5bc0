//! `cedana daemon start|check`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::check::print_checks;
use super::Ctx;
use crate::cli::DaemonCmd;
use crate::client::status_error;
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
            let report = client
                .health(Empty {})
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(print_checks(&report.checks, ctx.json))
        }
    }
}
