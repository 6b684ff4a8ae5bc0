//! The dump handler for runc containers: the runtime's own `checkpoint` (runc sets up
//! CRIU for the container's mounts, namespaces and cgroups), with the options the chain
//! chose. Portable checkpoints also get the OCI config and the rootfs changes.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use super::error::RuncError;
use super::external;
use super::hold::Held;
use super::layout;
use super::meta::{ContainerMeta, ExternalFile};
use super::rootfs_baseline;
use super::rootfs_diff;
use super::runtime::{self, Runtime};
use super::state::ContainerStatus;
use super::stream;
use super::target::{dump_target, RuncDump};
use crate::adapters::commit::Committer;
use crate::chain::OpResult;
use crate::criu::options::CriuOpts;
use crate::engine::{blocking, DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::image::follow::Follower;
use crate::streamer;

/// Runs `runtime checkpoint` (through the stream relay with `--streams`). A dump that
/// stops the container holds it frozen (`hold.rs`) from before CRIU until its checkpoint
/// is committed, and only then kills it; otherwise the storage adapter commits after. A
/// portable dump that leaves it running holds it frozen until its rootfs diff is written.
pub async fn runc_checkpoint(ctx: DumpCtx) -> OpResult<DumpResponse> {
    let d = dump_target(&ctx)
        .cloned()
        .ok_or_else(|| EngineError::InvalidRequest {
            field: "runc",
            reason: "a runc dump needs the container".into(),
        })?;
    let plan = ctx.stream;
    if plan.is_some() {
        let container = ctx.metadata.section::<ContainerMeta>()?;
        let bundle = container.map(|c| c.bundle);
        stream::refuse_terminal(&d.target.id, Path::new(&bundle.unwrap_or_default()))?;
    }
    let (target, stream_env) = stream::runtime_target(&d.target, &ctx.env, plan.is_some())?;
    let rt = Runtime::new(&target, &ctx.env.config.runc.binary_path)?;
    let committer = ctx.committer.clone().filter(|_| !ctx.opts.leave_running);
    // A portable dump that leaves the container running holds it frozen too, until its
    // rootfs diff is written: runc would resume it right after CRIU, and the diff would
    // then hold writes its memory images never made (a restored counter repeats a line).
    let hold_for_diff = ctx.opts.leave_running && ctx.req.image_path.is_none();
    let stops = committer.is_some();
    let held = if stops || hold_for_diff {
        let (rt, id) = (rt.clone(), d.target.id.clone());
        Some(
            blocking(move || {
                let paused = rt.state(&id)?.status == ContainerStatus::Paused;
                Ok(Held::pause(&rt, &id, paused)?)
            })
            .await?,
        )
    } else {
        None
    };
    // CRIU leaves the frozen container frozen; `held` ends it after the commit.
    let mut opts = ctx.opts.clone();
    opts.leave_running |= held.is_some();
    let worker = held.as_ref().map(Held::worker_recorder);
    let result = checkpoint_held(ctx, &d, (rt, stream_env), plan, opts, committer, worker).await;
    match (held, &result) {
        (Some(h), Ok(_)) if stops => blocking(move || Ok(h.kill()?)).await?,
        (Some(h), Ok(_)) => blocking(move || Ok(h.release()?)).await?,
        (Some(h), Err(e)) => {
            tracing::warn!(error = %e, "checkpoint failed; the container runs on");
            blocking(move || Ok(h.release()?)).await?
        }
        (None, _) => {}
    }
    result
}

/// The checkpoint itself; commits through `committer` when the container is held.
async fn checkpoint_held(
    mut ctx: DumpCtx,
    d: &RuncDump,
    (rt, stream_env): (Runtime, Vec<(OsString, OsString)>),
    plan: Option<(usize, streamer::Codec)>,
    opts: CriuOpts,
    committer: Option<Arc<Committer>>,
    worker: Option<impl Fn(u32) + Send + 'static>,
) -> OpResult<DumpResponse> {
    let criu_version = ctx.env.criu_version().await?;
    // Written by resolve_runc_container; completed here, then put back.
    let mut container = ctx.metadata.section::<ContainerMeta>()?;
    let portable = ctx.req.image_path.is_none();
    let images = if portable {
        ctx.images_dir.join(layout::CHECKPOINT_DIR)
    } else {
        ctx.images_dir.clone()
    };
    // Portable: CRIU's logs go to a temp dir kept only on failure (never in the archive).
    let work_tmp = if portable && d.work_path.is_none() {
        Some(
            tempfile::Builder::new()
                .prefix("cedana-runc-dump-")
                .tempdir()
                .map_err(|e| EngineError::io("create dump work dir", e))?,
        )
    } else {
        None
    };
    let work: Option<PathBuf> = d
        .work_path
        .clone()
        .or_else(|| work_tmp.as_ref().map(|t| t.path().to_path_buf()));
    let mut cmd = rt.command();
    cmd.args(runtime::checkpoint_args(d, &images, work.as_deref(), &opts))
        .envs(stream_env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Files outside the container's mounts (a host log file, the host's /dev/null a
    // restore gave it) are dumped as external and handed back at restore.
    let mut pids: Vec<i32> = ctx.state.tree.iter().map(|p| p.pid).collect();
    if pids.is_empty() {
        pids.push(ctx.req.pid);
    }
    let externals = external::detect(&pids);
    let _criu_conf = mark_external(&mut cmd, &images, &externals)?;
    // Chosen while the container surely exists: its init, mounts and state dir (with our
    // marker) go with it once the runtime has killed it.
    let source = portable.then(|| {
        let created = container.as_ref().map(|c| c.created.clone());
        let state_dir = rootfs_baseline::state_dir(d.target.root.as_deref(), &d.target.id);
        rootfs_baseline::choose(ctx.req.pid, &state_dir, &created.unwrap_or_default())
    });
    let t = Instant::now();
    // runc's CRIU writes its log and stats into the work dir (the images dir without one).
    let criu_work = work.clone().unwrap_or_else(|| images.clone());
    let log = criu_work.join("dump.log");
    let (id, stream_dir) = (d.target.id.clone(), images.clone());
    // Only where the commit digests the images dir in place (`--image-path`): a
    // checkpoint packed into a store hashes its files while packing them anyway.
    let follow = !portable && images.is_dir();
    // To an object store, the shards go straight into the upload, under the same
    // relative path they would have had in the images dir.
    let sink = images
        .strip_prefix(&ctx.images_dir)
        .ok()
        .map(|p| match p.as_os_str().is_empty() {
            true => String::new(),
            false => format!("{}/", p.to_string_lossy()),
        })
        .and_then(|prefix| ctx.committer.as_ref()?.shard_sink(&prefix));
    let checkpointed = blocking(move || {
        let mut run = move || -> OpResult<()> {
            let child = cmd
                .spawn()
                .map_err(|e| EngineError::io("start the runtime's checkpoint", e))?;
            if let Some(record) = &worker {
                record(child.id());
            }
            let out = child
                .wait_with_output()
                .map_err(|e| EngineError::io("wait for the runtime's checkpoint", e))?;
            if !out.status.success() {
                return Err(command_failed("checkpoint", &rt, &id, &out, &log).into());
            }
            Ok(())
        };
        match plan {
            Some((shards, codec)) => {
                fs::create_dir_all(&stream_dir)
                    .map_err(|e| EngineError::io(format!("create {}", stream_dir.display()), e))?;
                let plan = streamer::ShardPlan {
                    shards,
                    codec,
                    sink,
                };
                let (_, stats) = streamer::capture(&stream_dir, plan, run)?;
                Ok(stats.shard_digests)
            }
            // Page images hashed while CRIU writes them (image/follow.rs): the commit
            // then need not read them again once CRIU is done.
            None if follow => {
                let follower = Follower::start(&stream_dir);
                run()?;
                Ok(follower.finish())
            }
            None => run().map(|()| Default::default()),
        }
    })
    .await;
    let shard_digests = match checkpointed {
        Ok(d) => d,
        Err(e) => {
            if let Some(t) = work_tmp {
                let _ = t.keep();
            }
            return Err(e);
        }
    };
    let mut metadata = std::mem::take(&mut ctx.metadata);
    // Keyed like the storage adapter's digests: relative to the checkpoint's top dir.
    let prefix = images
        .strip_prefix(&ctx.images_dir)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    metadata.files = shard_digests
        .into_iter()
        .map(|(name, d)| (prefix.join(name).to_string_lossy().into_owned(), d))
        .collect();
    metadata
        .timings_ms
        .insert("runc_checkpoint".into(), t.elapsed().as_millis() as u64);
    metadata.criu_version = criu_version.to_string();
    // What the caller asked for, not the leave-running the hold needed.
    metadata.criu_options = ctx.opts.clone();
    metadata.criu_stats = crate::criu::stats::read_dump_stats(&criu_work);
    if let Some(source) = source {
        let recorded = container.clone().unwrap_or_default();
        let staging = ctx.images_dir.clone();
        let t = Instant::now();
        let diff = blocking(move || write_portable_extras(&staging, &recorded, source)).await?;
        metadata
            .timings_ms
            .insert("rootfs_diff".into(), t.elapsed().as_millis() as u64);
        if let Some(c) = container.as_mut() {
            c.rootfs_diff_entries = diff.entries;
            c.rootfs_deleted_entries = diff.deleted;
            c.rootfs_diff_since = diff.since;
        }
    }
    if let Some(mut c) = container {
        c.external_files = externals;
        metadata.set_section(&c)?;
    }
    if let Some(c) = committer {
        let md = metadata.clone();
        blocking(move || c.commit(md)).await?;
    }
    Ok(ctx.images_written(metadata))
}

/// Records `files` beside the images and points the runtime's CRIU at a configuration
/// marking them external; the returned dir holds that configuration until CRIU is done.
fn mark_external(
    cmd: &mut std::process::Command,
    images: &Path,
    files: &[ExternalFile],
) -> OpResult<Option<tempfile::TempDir>> {
    if files.is_empty() {
        return Ok(None);
    }
    tracing::info!(
        ?files,
        "files outside the container's mounts: dumped as external"
    );
    fs::create_dir_all(images)
        .map_err(|e| EngineError::io(format!("create {}", images.display()), e))?;
    external::write_record(images, files)?;
    let dir = tempfile::Builder::new()
        .prefix("cedana-criu-conf-")
        .tempdir()
        .map_err(|e| EngineError::io("create a CRIU configuration dir", e))?;
    external::set_criu_config(cmd, dir.path(), &external::dump_config(files))?;
    Ok(Some(dir))
}

/// What `write_portable_extras` wrote of the rootfs.
struct RootfsDiff {
    entries: u64,
    deleted: u64,
    since: String,
}

/// `config.dump`, `spec.dump` (the bundle's config.json), `rootfs-diff.tar` and
/// `deleted.files`, measured as `rootfs_baseline.rs` chooses.
fn write_portable_extras(
    staging: &Path,
    container: &ContainerMeta,
    source: rootfs_baseline::Source,
) -> OpResult<RootfsDiff> {
    let config = Path::new(&container.bundle).join("config.json");
    let spec = fs::read(&config).map_err(|e| {
        EngineError::io(
            format!("read the container's OCI config {}", config.display()),
            e,
        )
    })?;
    for name in [layout::CONFIG_DUMP, layout::SPEC_DUMP] {
        fs::write(staging.join(name), &spec)
            .map_err(|e| EngineError::io(format!("write {name}"), e))?;
    }
    let out = staging.join(layout::ROOTFS_DIFF);
    let (written, deleted, since) = match source {
        rootfs_baseline::Source::Upper(upper) => {
            let w = rootfs_diff::write_upper_diff(&upper, &out)?;
            let deleted = w.whiteouts.clone();
            (w, deleted, format!("upperdir {}", upper.display()))
        }
        rootfs_baseline::Source::Since {
            since_ns,
            from,
            known,
        } => {
            let w = rootfs_diff::write_diff(Path::new(&container.rootfs), since_ns, &out)?;
            let deleted = known.map(|b| b.deleted_now(&w.seen)).unwrap_or_default();
            let at = chrono::DateTime::from_timestamp_nanos(since_ns as i64);
            (w, deleted, format!("{from} {}", at.to_rfc3339()))
        }
    };
    rootfs_diff::write_deleted(&staging.join(layout::DELETED_FILES), &deleted)?;
    Ok(RootfsDiff {
        entries: written.entries,
        deleted: deleted.len() as u64,
        since,
    })
}

/// The runtime's failure, with its message and the CRIU log's last error lines.
pub(super) fn command_failed(
    op: &str,
    rt: &Runtime,
    id: &str,
    out: &std::process::Output,
    criu_log: &Path,
) -> RuncError {
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if let Some(lines) = criu_errors(criu_log) {
        detail.push_str(&format!(
            "\nCRIU log {} ends with:\n{lines}",
            criu_log.display()
        ));
    }
    if detail.is_empty() {
        detail = "no message (see the runtime's --log)".into();
    }
    RuncError::Command {
        command: format!("{} {op} {id}", rt.binary().display()),
        status: out.status.to_string(),
        detail,
    }
}

/// The last lines of a CRIU log that say `Error`, if any.
pub(super) fn criu_errors(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let errs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .collect();
    let tail = &errs[errs.len().saturating_sub(5)..];
    (!tail.is_empty()).then(|| tail.join("\n"))
}
