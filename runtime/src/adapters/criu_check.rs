//! Checks that this host's CRIU and tools can do what the chosen options need, before
//! CRIU is started.

use std::sync::Arc;

use crate::chain::Adapter;
use crate::criu::options::CriuOpts;
use crate::criu::MIN_VERSION;
use crate::engine::{DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::host;

async fn check(env: &Arc<Env>, opts: &CriuOpts) -> Result<(), EngineError> {
    env.criu_version().await?.require(MIN_VERSION)?;
    // Only iptables locking needs the tool; nftables goes through CRIU's own libnftables.
    let iptables = env.config.criu.network_lock == "iptables";
    if opts.tcp_established
        && iptables
        && host::find_executable("iptables-restore".as_ref()).is_none()
    {
        return Err(EngineError::MissingTool {
            tool: "iptables-restore",
            why: "to lock the network while TCP connections are checkpointed (or set criu.network_lock=nftables)",
            package: "iptables",
        });
    }
    Ok(())
}

/// CRIU version and tools for a dump.
pub fn check_criu_opts_for_dump() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("check_criu_opts_for_dump", |ctx: DumpCtx, next| {
        Box::pin(async move {
            check(&ctx.env, &ctx.opts).await?;
            next.run(ctx).await
        })
    })
}

/// CRIU version and tools for a restore.
pub fn check_criu_opts_for_restore() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("check_criu_opts_for_restore", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            check(&ctx.env, &ctx.opts).await?;
            next.run(ctx).await
        })
    })
}
