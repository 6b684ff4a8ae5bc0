//! The dump operation: its context, its chain and its CRIU handler.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::adapters::commit::Committer;
use crate::adapters::{
    criu_check, defaults, files, network, process_state, shell_job, storage, validation,
};
use crate::chain::{Chain, Handler, OpResult};
use crate::criu::options::CriuOpts;
use crate::criu::{DumpArgs, PostDump};
use crate::engine::{bulk, DumpRequest, DumpResponse, Env};
use crate::image::compression::Compression;
use crate::image::metadata::{FileDigest, Metadata};
use crate::process::state::ProcessState;
use crate::streamer;

/// A dump request on its way through the chain, with what adapters have worked out.
#[derive(Debug)]
pub struct DumpCtx {
    /// Config and host clients.
    pub env: Arc<Env>,
    /// The request as the caller sent it.
    pub req: DumpRequest,
    /// Directory the checkpoint goes into (filled by the defaults adapter).
    pub dir: PathBuf,
    /// Checkpoint name (filled by the defaults adapter).
    pub name: String,
    /// Packing (filled by the defaults adapter).
    pub compression: Compression,
    /// Where CRIU writes its images (filled by the storage adapter).
    pub images_dir: PathBuf,
    /// Where CRIU writes its log and stats, outside the checkpoint (storage adapter);
    /// `None`: beside the images.
    pub work_dir: Option<PathBuf>,
    /// Commits the checkpoint; a handler that kills the tree commits before it dies
    /// (filled by the storage adapter).
    pub committer: Option<Arc<Committer>>,
    /// The process tree (filled by the process-state adapter).
    pub state: ProcessState,
    /// CRIU options chosen so far.
    pub opts: CriuOpts,
    /// Metadata being assembled.
    pub metadata: Metadata,
    /// When the operation started.
    pub started: Instant,
}

impl DumpCtx {
    /// A fresh context for a request.
    pub fn new(env: Arc<Env>, req: DumpRequest) -> Self {
        Self {
            env,
            req,
            dir: PathBuf::new(),
            name: String::new(),
            compression: Compression::Zstd,
            images_dir: PathBuf::new(),
            work_dir: None,
            committer: None,
            state: ProcessState::default(),
            opts: CriuOpts::default(),
            metadata: Metadata::default(),
            started: Instant::now(),
        }
    }
}

impl DumpCtx {
    /// What a dump handler returns: CRIU's images in `images_dir` with their metadata;
    /// the storage adapter turns them into the final checkpoint and fills in sizes.
    pub fn images_written(self, metadata: Metadata) -> DumpResponse {
        DumpResponse {
            path: self.images_dir,
            name: self.name,
            compression: self.compression,
            size_bytes: 0,
            duration_ms: 0,
            metadata,
        }
    }
}

/// The dump chain for plain processes, in DESIGN.md's order.
pub fn chain() -> Chain<DumpCtx, DumpResponse> {
    Chain::new(Handler::from_fn("criu_dump", |ctx| {
        Box::pin(criu_dump(ctx))
    }))
    .with([
        defaults::fill_missing_dump_defaults(),
        validation::validate_dump_request(),
        storage::prepare_dump_storage(),
        process_state::fill_process_state(),
        shell_job::detect_shell_job(),
        process_state::detect_io_uring(),
        files::detect_file_options(),
        network::detect_network_options(),
        process_state::save_process_state(),
        criu_check::check_criu_opts_for_dump(),
    ])
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
    let plan = defaults::stream_plan(&ctx.req)?;
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
            Some((shards, codec)) => {
                let work = work_dir.as_deref().unwrap_or(&images_dir);
                let stats = match &committer {
                    Some(_) => streamer::sealed::dump_committed(
                        &criu,
                        pid,
                        &images_dir,
                        work,
                        &opts,
                        shards,
                        codec,
                        &|st| commit(Some(&st.shard_digests)),
                    ),
                    None => streamer::dump(&criu, pid, &images_dir, work, &opts, shards, codec),
                };
                stats
                    .map(|st| st.shard_digests)
                    .map_err(|e| e.located(&full_dir).into())
            }
            None => criu
                .dump(&DumpArgs {
                    pid,
                    images_dir: &images_dir,
                    work_dir: work_dir.as_deref(),
                    opts: &opts,
                    post_dump: committer.is_some().then_some(PostDump(&|| commit(None))),
                })
                .map(|_| BTreeMap::new())
                .map_err(Into::into),
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
