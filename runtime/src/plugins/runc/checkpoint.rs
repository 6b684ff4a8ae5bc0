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
use super::hold::Held;
use super::layout;
use super::rootfs_diff;
use super::runtime::{self, Runtime};
use super::stream;
use super::target::RuncDump;
use crate::adapters::commit::Committer;
use crate::adapters::defaults;
use crate::chain::OpResult;
use crate::criu::options::CriuOpts;
use crate::engine::{blocking, DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::streamer;

/// Runs `runtime checkpoint` (through the stream relay with `--streams`). A dump that
/// stops the container holds it frozen (`hold.rs`) from before CRIU until its checkpoint
/// is committed, and only then kills it; otherwise the storage adapter commits after.
pub async fn runc_checkpoint(ctx: DumpCtx) -> OpResult<DumpResponse> {
    let d = ctx
        .req
        .runc
        .clone()
        .ok_or_else(|| EngineError::InvalidRequest {
            field: "runc",
            reason: "a runc dump needs the container".into(),
        })?;
    let plan = defaults::stream_plan(&ctx.req)?;
    if plan.is_some() {
        let bundle = ctx.metadata.container.as_ref().map(|c| c.bundle.clone());
        stream::refuse_terminal(&d.target.id, Path::new(&bundle.unwrap_or_default()))?;
    }
    let (target, stream_env) = stream::runtime_target(&d.target, &ctx.env, plan.is_some())?;
    let rt = Runtime::new(&target, &ctx.env.config.runc.binary_path)?;
    let committer = ctx.committer.clone().filter(|_| !ctx.opts.leave_running);
    let held = match &committer {
        Some(_) => {
            let (rt, id) = (rt.clone(), d.target.id.clone());
            Some(
                blocking(move || {
                    let paused = rt.state(&id)?.status == "paused";
                    Ok(Held::pause(&rt, &id, paused)?)
                })
                .await?,
            )
        }
        None => None,
    };
    // CRIU leaves the frozen container frozen; `held` ends it after the commit.
    let mut opts = ctx.opts.clone();
    opts.leave_running |= held.is_some();
    let result = checkpoint_held(ctx, &d, (rt, stream_env), plan, opts, committer).await;
    match (held, &result) {
        (Some(h), Ok(_)) => blocking(move || Ok(h.kill()?)).await?,
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
) -> OpResult<DumpResponse> {
    let criu_version = ctx.env.criu_version().await?;
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
    let t = Instant::now();
    let log = work
        .clone()
        .unwrap_or_else(|| images.clone())
        .join("dump.log");
    let (id, stream_dir) = (d.target.id.clone(), images.clone());
    let checkpointed = blocking(move || {
        let mut run = move || -> OpResult<()> {
            let out = cmd
                .output()
                .map_err(|e| EngineError::io("start the runtime's checkpoint", e))?;
            if !out.status.success() {
                return Err(command_failed("checkpoint", &rt, &id, &out, &log).into());
            }
            Ok(())
        };
        match plan {
            Some((shards, codec)) => {
                fs::create_dir_all(&stream_dir)
                    .map_err(|e| EngineError::io(format!("create {}", stream_dir.display()), e))?;
                let (_, stats) = streamer::capture(&stream_dir, shards, codec, run)?;
                Ok(stats.shard_digests)
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
    if portable {
        let container = metadata.container.clone().unwrap_or_default();
        let staging = ctx.images_dir.clone();
        let t = Instant::now();
        let entries = blocking(move || {
            write_portable_extras(
                &staging,
                &container.bundle,
                &container.rootfs,
                &container.created,
            )
        })
        .await?;
        metadata
            .timings_ms
            .insert("rootfs_diff".into(), t.elapsed().as_millis() as u64);
        if let Some(c) = metadata.container.as_mut() {
            c.rootfs_diff_entries = entries;
        }
    }
    if let Some(c) = committer {
        let md = metadata.clone();
        blocking(move || c.commit(md)).await?;
    }
    Ok(ctx.images_written(metadata))
}

/// `config.dump`, `spec.dump` (the bundle's config.json) and `rootfs-diff.tar`.
fn write_portable_extras(
    staging: &Path,
    bundle: &str,
    rootfs: &str,
    created: &str,
) -> OpResult<u64> {
    let config = Path::new(bundle).join("config.json");
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
    let since = chrono::DateTime::parse_from_rfc3339(created)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(i128::from)
        .unwrap_or(0);
    Ok(rootfs_diff::write_diff(
        Path::new(rootfs),
        since,
        &staging.join(layout::ROOTFS_DIFF),
    )?)
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
