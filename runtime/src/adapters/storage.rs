//! Where images live. Dump: the checkpoint's store (`crate::store`, chosen by the `--dir`
//! location's scheme) begins an upload; CRIU writes into the upload's own directory (the
//! local store's hidden staging directory beside the target) or a private scratch dir
//! (for an archive, in memory when the images fit: `staging.rs`), and the commit
//! protocol (`commit.rs`) publishes it, as a directory or packed, never replacing an
//! existing one; on failure it is removed, so no partial checkpoint is ever left under
//! the final name. Restore: see [`restore_storage`](super::restore_storage).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::commit::{CommitTarget, Committer};
use super::staging;
use crate::chain::{Adapter, Next};
use crate::engine::{bulk, DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::image::atomic;
use crate::image::compression::Compression;
use crate::process::inspect::is_alive;
use crate::store::local::CHECKPOINT_DIR_MODE;
use crate::store::{Location, Shape};

pub use super::restore_storage::prepare_restore_storage;

/// Failed dumps keep CRIU's log here, under the temp dir
/// (`cedana-dump-logs/NAME-<unique>/dump.log`), the newest [`KEPT_FAILED_LOGS`] of them;
/// other dumps remove their own. Never in the checkpoint directory, which lists only
/// checkpoints.
const LOGS_DIR: &str = "cedana-dump-logs";
/// How many failed dumps' logs are kept.
const KEPT_FAILED_LOGS: usize = 10;
/// Marks a work dir kept for its CRIU log (a failed dump). Only marked dirs count
/// against [`KEPT_FAILED_LOGS`]: a dump still running writes into its unmarked dir, and
/// with more than that many dumps at once, pruning by age alone removed their dirs.
const KEPT_MARK: &str = ".kept";
/// An unmarked work dir this old was left by a dump cut short (a crash), not a running one.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn create_private_dir(path: &Path) -> Result<(), EngineError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(CHECKPOINT_DIR_MODE)
        .create(path)
        .map_err(|e| EngineError::io(format!("cannot create {}", path.display()), e))
}

/// Prepares a staging directory of this operation's own, and a [`Committer`] that turns
/// CRIU's images into the final checkpoint: inside the handler when the tree is to be
/// killed (before it dies), else after the handler returns.
pub fn prepare_dump_storage() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn(
        "prepare_dump_storage",
        |mut ctx: DumpCtx, next: Next<'_, DumpCtx, DumpResponse>| {
            Box::pin(async move {
                let (kind, name, started) = (ctx.req.kind(), ctx.name.clone(), ctx.started);
                let mut cleanup = Vec::new();
                let target = match ctx.req.image_path.clone() {
                    Some(images) => {
                        if !images.exists() {
                            create_private_dir(&images)?;
                        }
                        ctx.images_dir = images.clone();
                        CommitTarget::ImagePath {
                            images,
                            durable: !ctx.opts.leave_running,
                        }
                    }
                    None => {
                        let dir =
                            Location::from_path(&ctx.dir).map_err(|e| e.into_engine("dir"))?;
                        let store = ctx
                            .env
                            .stores
                            .resolve(&dir)
                            .map_err(|e| e.into_engine("dir"))?;
                        // `NAME`, or `NAME.tar.zst` and the like (layout::checkpoint_path).
                        let at = dir.join(&format!("{name}{}", ctx.compression.extension()));
                        let shape = match ctx.compression {
                            Compression::None => Shape::Dir,
                            _ => Shape::Packed,
                        };
                        let upload = store.begin(&at, shape)?;
                        let images = match upload.local_dir() {
                            Some(d) => d.to_path_buf(),
                            None => {
                                let scratch = match staging::for_dump(
                                    &ctx.env.config.checkpoint.staging_dir,
                                    ctx.req.pid,
                                ) {
                                    Ok(in_memory) => in_memory,
                                    Err(why) => {
                                        tracing::info!(%why, "CRIU's images wait on disk until they are packed");
                                        let packing = ctx.metadata.packing.get_or_insert_default();
                                        packing.staged_on_disk = Some(why);
                                        store.scratch_dir(&dir)?
                                    }
                                };
                                cleanup.push(scratch.clone());
                                scratch
                            }
                        };
                        ctx.images_dir = images.clone();
                        ctx.work_dir = Some(failed_log_dir(&name)?);
                        CommitTarget::store(store, upload, images, ctx.compression)
                    }
                };
                let committer = Arc::new(Committer::new(target, name, kind, started));
                ctx.committer = Some(Arc::clone(&committer));
                let work_dir = ctx.work_dir.clone();
                let root = ctx.req.pid;
                let result: Result<DumpResponse, EngineError> = match next.run(ctx).await {
                    Ok(resp) => match committer.take_committed() {
                        Some(mut done) => {
                            // Committed inside the handler: keep the handler's timings too.
                            for (k, v) in resp.metadata.timings_ms {
                                done.metadata.timings_ms.entry(k).or_insert(v);
                            }
                            Ok(done)
                        }
                        None => {
                            let c = Arc::clone(&committer);
                            bulk(move || {
                                c.commit(resp.metadata)?;
                                c.take_committed().ok_or_else(|| {
                                    EngineError::Internal("commit left no checkpoint".into())
                                })
                            })
                            .await
                        }
                    },
                    // CRIU failed after the commit but the tree is gone: CRIU had begun
                    // killing it when it died. The committed checkpoint is then all that
                    // is left of the workload: kept and reported, never removed.
                    Err(e) if committer.is_committed() && root > 0 && !is_alive(root) => {
                        tracing::warn!(error = %e, pid = root, "CRIU failed after the commit, with the tree already gone; the checkpoint is kept");
                        committer.take_committed().ok_or(e)
                    }
                    Err(e) => {
                        committer.undo();
                        Err(e)
                    }
                };
                committer.abandon();
                for p in cleanup.iter().filter(|p| p.exists()) {
                    let _ = fs::remove_dir_all(p);
                }
                if let Some(work) = work_dir {
                    // CRIU's log is kept for dumps CRIU failed only; the error names it.
                    if result.is_ok() || !work.join("dump.log").exists() {
                        let _ = fs::remove_dir_all(work);
                    } else {
                        let _ = fs::write(work.join(KEPT_MARK), b"");
                    }
                }
                result
            })
        },
    )
}

/// A fresh private directory for CRIU's log and stats, outside the checkpoint (CRIU
/// writes them after `post-dump`, when the checkpoint is already sealed); kept ones
/// beyond [`KEPT_FAILED_LOGS`] are removed, and abandoned ones.
fn failed_log_dir(name: &str) -> Result<PathBuf, EngineError> {
    let logs = std::env::temp_dir().join(LOGS_DIR);
    create_private_dir(&logs)?;
    if let Ok(rd) = fs::read_dir(&logs) {
        let mut kept = Vec::new();
        for e in rd.flatten() {
            let Some(modified) = e.metadata().ok().and_then(|m| m.modified().ok()) else {
                continue;
            };
            let path = e.path();
            if path.join(KEPT_MARK).exists() {
                kept.push((modified, path));
            } else if modified.elapsed().is_ok_and(|age| age > ABANDONED_AFTER) {
                let _ = fs::remove_dir_all(path);
            }
        }
        kept.sort();
        let excess = kept.len().saturating_sub(KEPT_FAILED_LOGS - 1);
        for (_, p) in kept.into_iter().take(excess) {
            let _ = fs::remove_dir_all(p);
        }
    }
    let work = logs.join(format!("{name}-{}", atomic::unique_suffix()));
    create_private_dir(&work)?;
    Ok(work)
}
