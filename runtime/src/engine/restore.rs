//! The restore operation: the stages a restore route is built from, the process route,
//! and its CRIU handler.

use std::time::Instant;

use crate::adapters::{criu_check, defaults, network, pid_wait, storage, validation};
use crate::chain::{Adapter, Chain, Handler, OpResult};
use crate::criu::RestoreArgs;
use crate::engine::{bulk, lazy, RestoreCtx, RestoreResponse};
use crate::streamer;

/// Where plugins' middleware for every route goes: just before this adapter.
pub const MIDDLEWARE_ANCHOR: &str = "check_criu_opts_for_restore";

/// What every restore route starts with: defaults, validation, the checkpoint fetched
/// and verified, and the options recorded at dump applied.
pub fn prepare() -> [Adapter<RestoreCtx, RestoreResponse>; 4] {
    [
        defaults::fill_missing_restore_defaults(),
        validation::validate_restore_request(),
        storage::prepare_restore_storage(),
        network::apply_recorded_options(),
    ]
}

/// What needs the checkpoint's PIDs free on this host; a route restoring into a PID
/// namespace of its own (a container) leaves it out.
pub fn host_pids() -> [Adapter<RestoreCtx, RestoreResponse>; 1] {
    [pid_wait::wait_for_free_pids()]
}

/// What every restore route ends with: the CRIU options against CRIU's version, then
/// the pid file written once the handler has restored the tree.
pub fn finish() -> [Adapter<RestoreCtx, RestoreResponse>; 2] {
    [
        criu_check::check_criu_opts_for_restore(),
        defaults::write_pid_file(),
    ]
}

/// The process route, mirroring the dump route.
pub fn chain() -> Chain<RestoreCtx, RestoreResponse> {
    Chain::new(Handler::from_fn("criu_restore", |ctx| {
        Box::pin(criu_restore(ctx))
    }))
    .with(prepare())
    .with(host_pids())
    .with(finish())
}

/// Runs CRIU restore with the restored root as our child (`rst_sibling`).
async fn criu_restore(ctx: RestoreCtx) -> OpResult<RestoreResponse> {
    let criu = ctx.env.criu()?;
    let (images_dir, work_dir, opts) = (ctx.images_dir, ctx.work_dir, ctx.opts);
    let stats_dir = work_dir.clone();
    let t = Instant::now();
    let in_flight = ctx.ext.get::<lazy::PagesInFlight>().cloned();
    let remote = ctx.req.remote_shards.clone();
    let pid = if ctx.req.lazy {
        let (pid, pages, decoded) =
            bulk(move || lazy::restore(&criu, &images_dir, &work_dir, &opts)).await?;
        let keep = decoded.into_iter().collect();
        match in_flight {
            Some(f) => f.serving(pages, pid, keep),
            // No storage adapter to hand the files to: they stay until the pages are in.
            None => {
                let f = lazy::PagesInFlight::default();
                f.serving(pages, pid, keep);
                f.release_after(&ctx.env, Box::new(()));
            }
        }
        pid
    } else {
        bulk(move || {
            if images_dir.join(streamer::INDEX_FILE).is_file() {
                // CRIU streams only in CLI mode; `--restore-sibling` makes the restored root
                // our child there too.
                return Ok(streamer::restore(
                    &criu,
                    &images_dir,
                    &work_dir,
                    &opts,
                    remote.as_ref(),
                )?);
            }
            let outcome = criu.restore(&RestoreArgs {
                images_dir: &images_dir,
                work_dir: Some(&work_dir),
                opts: &opts,
                rst_sibling: true,
            })?;
            Ok(outcome.pid)
        })
        .await?
    };
    let mut metadata = ctx.metadata;
    crate::criu::stats::add_restore_stats(&mut metadata, &stats_dir);
    metadata
        .timings_ms
        .insert("criu_restore".into(), t.elapsed().as_millis() as u64);
    Ok(RestoreResponse {
        pid,
        duration_ms: ctx.started.elapsed().as_millis() as u64,
        metadata,
        exit_code: None,
        profile: Vec::new(),
    })
}
