//! The restore operation: its context, its chain and its CRIU handler.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::adapters::{criu_check, defaults, network, pid_wait, storage, validation};
use crate::chain::{Chain, Handler, OpResult};
use crate::criu::options::CriuOpts;
use crate::criu::RestoreArgs;
use crate::engine::{bulk, Env, RestoreRequest, RestoreResponse};
use crate::image::metadata::Metadata;
use crate::streamer;

/// A restore request on its way through the chain.
#[derive(Debug)]
pub struct RestoreCtx {
    /// Config and host clients.
    pub env: Arc<Env>,
    /// The request as the caller sent it.
    pub req: RestoreRequest,
    /// Verified CRIU images to restore from (filled by the storage adapter).
    pub images_dir: PathBuf,
    /// CRIU's work directory (logs), outside the checkpoint.
    pub work_dir: PathBuf,
    /// The checkpoint's metadata (filled by the storage adapter).
    pub metadata: Metadata,
    /// CRIU options for the restore (recorded ones, then the caller's overrides).
    pub opts: CriuOpts,
    /// When the operation started.
    pub started: Instant,
}

impl RestoreCtx {
    /// A fresh context for a request.
    pub fn new(env: Arc<Env>, req: RestoreRequest) -> Self {
        Self {
            env,
            req,
            images_dir: PathBuf::new(),
            work_dir: PathBuf::new(),
            metadata: Metadata::default(),
            opts: CriuOpts::default(),
            started: Instant::now(),
        }
    }
}

/// The restore chain for plain processes, mirroring the dump chain.
pub fn chain() -> Chain<RestoreCtx, RestoreResponse> {
    Chain::new(Handler::from_fn("criu_restore", |ctx| {
        Box::pin(criu_restore(ctx))
    }))
    .with([
        defaults::fill_missing_restore_defaults(),
        validation::validate_restore_request(),
        storage::prepare_restore_storage(),
        network::apply_recorded_options(),
        pid_wait::wait_for_free_pids(),
        criu_check::check_criu_opts_for_restore(),
        defaults::write_pid_file(),
    ])
}

/// Runs CRIU restore with the restored root as our child (`rst_sibling`).
async fn criu_restore(ctx: RestoreCtx) -> OpResult<RestoreResponse> {
    let criu = ctx.env.criu()?;
    let (images_dir, work_dir, opts) = (ctx.images_dir, ctx.work_dir, ctx.opts);
    let stats_dir = work_dir.clone();
    let t = Instant::now();
    let pid = bulk(move || {
        if images_dir.join(streamer::INDEX_FILE).is_file() {
            // CRIU streams only in CLI mode, where the restored tree cannot be made our
            // child: it passes to the nearest subreaper (or init).
            return Ok(streamer::restore(&criu, &images_dir, &work_dir, &opts)?);
        }
        let outcome = criu.restore(&RestoreArgs {
            images_dir: &images_dir,
            work_dir: Some(&work_dir),
            opts: &opts,
            rst_sibling: true,
        })?;
        Ok(outcome.pid)
    })
    .await?;
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
    })
}
