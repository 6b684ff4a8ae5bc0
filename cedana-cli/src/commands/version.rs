//! `cedana version`: this client's version and CRIU's, and the daemon's when one
//! answers (like `docker version`: client and server).

use cedana_runtime::criu::Criu;

use super::Ctx;
use crate::client::quick;
use crate::output::print_json;
use crate::proto::{Empty, VersionInfo};

/// Prints the versions; a daemon that cannot be reached is reported, not an error.
pub async fn run(ctx: &Ctx) -> anyhow::Result<i32> {
    let criu = Criu::locate(&ctx.config.criu.binary_path).and_then(|c| c.version());
    let daemon = daemon_version(ctx).await;
    if ctx.json {
        print_json(&serde_json::json!({
            "cedana": env!("CARGO_PKG_VERSION"),
            "criu": criu.as_ref().ok().map(|v| v.to_string()),
            "daemon": daemon.as_ref().ok().map(|d| serde_json::json!({
                "version": d.version, "criu": d.criu,
            })),
        }));
        return Ok(0);
    }
    crate::outln!("Client:");
    crate::outln!("  cedana  {}", env!("CARGO_PKG_VERSION"));
    match &criu {
        Ok(v) => crate::outln!("  criu    {v}"),
        Err(e) => crate::outln!("  criu    not available ({e})"),
    }
    crate::outln!("Daemon ({}):", ctx.config.address.display());
    match &daemon {
        Ok(d) => {
            crate::outln!("  cedana  {}", d.version);
            crate::outln!("  criu    {}", d.criu.as_deref().unwrap_or("not available"));
        }
        Err(e) => crate::outln!("  not reachable: {e:#}"),
    }
    Ok(0)
}

async fn daemon_version(ctx: &Ctx) -> anyhow::Result<VersionInfo> {
    let mut client = ctx.client().await?;
    quick(&ctx.config.address, client.version(Empty {})).await
}
