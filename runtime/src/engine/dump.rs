//! The dump operation: the stages a dump route is built from, the process route, and
//! its CRIU handler.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::adapters::{
    criu_check, defaults, files, network, process_state, shell_job, storage, validation,
};
use crate::chain::{Adapter, Chain, Handler, OpResult};
use crate::criu::{DumpArgs, PostDump};
use crate::engine::{bulk, DumpCtx, DumpResponse};
use crate::image::follow::Follower;
use crate::image::metadata::FileDigest;
use crate::streamer::{self, ShardPlan};

/// Where plugins' middleware for every route goes: just before this adapter.
pub const MIDDLEWARE_ANCHOR: &str = "check_criu_opts_for_dump";

/// What every dump route starts with: defaults, then validation, then the staging
/// directory and the committer.
pub fn prepare() -> [Adapter<DumpCtx, DumpResponse>; 3] {
    [
        defaults::fill_missing_dump_defaults(),
        validation::validate_dump_request(),
        storage::prepare_dump_storage(),
    ]
}

/// What reads the tree from this host's `/proc` and chooses CRIU options from it; a
/// route whose tree is not a host process tree (a VM guest's) leaves these out.
pub fn inspect_host_tree() -> [Adapter<DumpCtx, DumpResponse>; 6] {
    [
        process_state::fill_process_state(),
        shell_job::detect_shell_job(),
        process_state::detect_io_uring(),
        files::detect_file_options(),
        network::detect_network_options(),
        process_state::save_process_state(),
    ]
}

/// The last check before the handler: the CRIU options chosen against CRIU's version.
pub fn check_criu() -> Adapter<DumpCtx, DumpResponse> {
    criu_check::check_criu_opts_for_dump()
}

/// The process route, in DESIGN.md's order.
pub fn chain() -> Chain<DumpCtx, DumpResponse> {
    Chain::new(Handler::from_fn("criu_dump", |ctx| {
        Box::pin(criu_dump(ctx))
    }))
    .with(prepare())
    .with(inspect_host_tree())
    .with([check_criu()])
}

/// Runs CRIU. A dump that kills the tree commits the checkpoint inside CRIU's
/// `post-dump` notification, while the tree is still held, so it dies only once its
/// checkpoint is durable; if the commit fails (or the caller dies) CRIU lets it run on.
/// Otherwise the storage adapter commits after CRIU.
async fn criu_dump(mut ctx: DumpCtx) -> OpResult<DumpResponse> {
    let criu = ctx.env.criu()?;
    let version = ctx.env.criu_version().await?;
    let mut metadata = std::mem::take(&mut ctx.metadata);
    metadata.criu_version = version.to_string();
    metadata.criu_options = ctx.opts.clone();
    let t = Instant::now();
    let (pid, images_dir, opts) = (ctx.req.pid, ctx.images_dir.clone(), ctx.opts.clone());
    let work_dir = ctx.work_dir.clone();
    // The directory a full disk is reported on: the caller's --dir, which holds the
    // staging dir CRIU streams into.
    let full_dir = match ctx.dir.as_os_str().is_empty() {
        true => ctx.images_dir.clone(),
        false => ctx.dir.clone(),
    };
    // Shards where the caller said (a kata guest: to the host), else into the upload
    // itself when the checkpoint goes to an object store.
    let sink = ctx
        .req
        .shard_sink
        .clone()
        .or_else(|| ctx.committer.as_ref().and_then(|c| c.shard_sink("")));
    let plan = ctx.stream.map(|(shards, codec)| ShardPlan {
        shards,
        codec,
        sink,
    });
    let committer = ctx.committer.clone().filter(|_| !opts.leave_running);
    let md = metadata.clone();
    metadata.files = bulk(move || {
        // The commit step, shared by both routes; its error (if any) is the dump's.
        let failed = Mutex::new(None);
        let commit = |files: Option<&BTreeMap<String, FileDigest>>| {
            let Some(c) = committer.as_ref() else {
                return true;
            };
            let mut md = md.clone();
            if let Some(files) = files {
                md.files = files.clone();
            }
            md.timings_ms
                .insert("criu_dump".into(), t.elapsed().as_millis() as u64);
            match c.commit(md) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "commit failed; CRIU lets the tree run on");
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    false
                }
            }
        };
        let dumped: OpResult<BTreeMap<String, FileDigest>> = match plan {
            Some(plan) => {
                let work = work_dir.as_deref().unwrap_or(&images_dir);
                let stats = match &committer {
                    Some(_) => streamer::sealed::dump_committed(
                        &criu,
                        pid,
                        &images_dir,
                        work,
                        &opts,
                        plan,
                        &|st| commit(Some(&st.shard_digests)),
                    ),
                    None => streamer::dump(&criu, pid, &images_dir, work, &opts, plan),
                };
                stats
                    .map(|st| st.shard_digests)
                    .map_err(|e| e.located(&full_dir).into())
            }
            None => {
                // The page images are hashed while CRIU writes them, on a core CRIU leaves
                // idle: the commit then only compresses them.
                let follower = Mutex::new(Some(Follower::start(&images_dir)));
                let hashed = || {
                    let f = follower.lock().unwrap_or_else(|p| p.into_inner()).take();
                    f.map(Follower::finish).unwrap_or_default()
                };
                criu.dump(&DumpArgs {
                    pid,
                    images_dir: &images_dir,
                    work_dir: work_dir.as_deref(),
                    opts: &opts,
                    post_dump: committer
                        .is_some()
                        .then_some(PostDump(&|| commit(Some(&hashed())))),
                })
                .map(|_| hashed())
                .map_err(Into::into)
            }
        };
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        dumped
    })
    .await?;
    let work = ctx.work_dir.as_deref().unwrap_or(&ctx.images_dir);
    // CRIU writes its stats after post-dump: a checkpoint committed there gets them in
    // the response (and the daemon's record), not in its sealed metadata.json.
    let stats = crate::criu::stats::read_dump_stats(work);
    if let (Some(s), Some(c)) = (&stats, ctx.committer.as_ref()) {
        c.amend_response(|m| m.criu_stats = Some(s.clone()));
    }
    metadata.criu_stats = stats;
    metadata
        .timings_ms
        .insert("criu_dump".into(), t.elapsed().as_millis() as u64);
    Ok(ctx.images_written(metadata))
}
