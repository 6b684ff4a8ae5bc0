//! The daemon's own lifecycle over the API: its version, and a graceful stop.

use std::sync::OnceLock;

use cedana_runtime::criu::Criu;
use cedana_runtime::engine::Engine;
use tokio::sync::Notify;

use crate::proto;

/// Raised by the Stop RPC and awaited by the server's shutdown future. A process runs
/// one daemon, so one process-wide flag is enough and keeps the service's constructor
/// unchanged.
fn stop_flag() -> &'static Notify {
    static STOP: OnceLock<Notify> = OnceLock::new();
    STOP.get_or_init(Notify::new)
}

/// Asks the server to shut down gracefully (as SIGTERM does).
pub fn request_stop() {
    tracing::info!("stop requested over the API");
    // notify_one keeps a permit when nobody waits yet, so the request is never lost.
    stop_flag().notify_one();
}

/// Resolves once `request_stop` was called.
pub async fn stop_requested() {
    stop_flag().notified().await;
}

/// This daemon's version, and CRIU's as the daemon finds it.
pub async fn version(engine: &Engine) -> proto::VersionInfo {
    let binary = engine.config().criu.binary_path.clone();
    // Running `criu --version` blocks; keep it off the async workers.
    let criu = tokio::task::spawn_blocking(move || {
        Criu::locate(&binary)
            .and_then(|c| c.version())
            .ok()
            .map(|v| v.to_string())
    })
    .await
    .ok()
    .flatten();
    proto::VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        criu,
    }
}
