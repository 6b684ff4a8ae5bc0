//! Restore into a runc container: check the id is free and the bundle usable, then (for
//! a portable checkpoint) write the bundle's config from `spec.dump` and apply
//! `rootfs-diff.tar`, and run the runtime's own `restore` with the recorded options.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use super::checkpoint::command_failed;
use super::error::RuncError;
use super::external;
use super::layout;
use super::rootfs_baseline::{self, Baseline};
use super::rootfs_diff;
use super::runtime::{self, Runtime};
use super::signals;
use super::stream;
use super::target::RuncRestore;
use crate::chain::{Adapter, OpResult};
use crate::engine::{blocking, RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::oci;
use crate::streamer;

/// Refuses a missing id, an id in use and a missing bundle before anything is touched.
pub fn validate_runc_restore() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("validate_runc_restore", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            let Some(r) = ctx.req.target::<RuncRestore>().cloned() else {
                return Err(EngineError::InvalidRequest {
                    field: "runc",
                    reason: "a runc restore needs the container (id, bundle)".into(),
                });
            };
            if r.target.id.is_empty() {
                return Err(EngineError::InvalidRequest {
                    field: "id",
                    reason: "give the new container's id with --id".into(),
                });
            }
            if !r.bundle.is_dir() {
                return Err(RuncError::Bundle {
                    path: r.bundle.clone(),
                    reason: "is not a directory; give --bundle DIR holding a fresh copy of the \
                             container's rootfs"
                        .into(),
                }
                .into());
            }
            let configured = ctx.env.config.runc.binary_path.clone();
            blocking(move || {
                let rt = Runtime::new(&r.target, &configured)?;
                if rt.exists(&r.target.id)? {
                    return Err(RuncError::Exists { id: r.target.id }.into());
                }
                Ok(())
            })
            .await?;
            next.run(ctx).await
        })
    })
}

/// Runs `runtime restore`. With `--detach` it returns once the container runs; without,
/// when it exits (its exit status in the response).
pub async fn runc_restore(ctx: RestoreCtx) -> OpResult<RestoreResponse> {
    let r =
        ctx.req
            .target::<RuncRestore>()
            .cloned()
            .ok_or_else(|| EngineError::InvalidRequest {
                field: "runc",
                reason: "a runc restore needs the container".into(),
            })?;
    let images = layout::images_of(&ctx.images_dir);
    let streamed = images.join(streamer::INDEX_FILE).is_file();
    if streamed && r.no_subreaper && !r.detach {
        // The restored init is re-parented to runc only while runc is a subreaper.
        return Err(RuncError::CannotStream {
            id: r.target.id.clone(),
            reason: "a streamed checkpoint restores in the foreground only with runc as \
                    subreaper; drop --no-subreaper or add --detach"
                .into(),
        }
        .into());
    }
    let (target, stream_env) = stream::runtime_target(&r.target, &ctx.env, streamed)?;
    let rt = Runtime::new(&target, &ctx.env.config.runc.binary_path)?;
    let mut metadata = ctx.metadata;
    let mut baseline = None;
    if layout::is_portable(&ctx.images_dir) {
        let (dir, bundle) = (ctx.images_dir.clone(), r.bundle.clone());
        let t = Instant::now();
        let (applied, b) = blocking(move || prepare_bundle(&dir, &bundle)).await?;
        baseline = Some(b);
        tracing::info!(applied, bundle = %r.bundle.display(), "rootfs diff applied");
        metadata
            .timings_ms
            .insert("rootfs_diff_apply".into(), t.elapsed().as_millis() as u64);
    }
    let work: PathBuf = r.work_path.clone().unwrap_or_else(|| ctx.work_dir.clone());
    // Streamed: runc reads from a directory of ours holding the serve socket.
    let (image_path, serving) = if streamed {
        let dir = stream::serve_dir(&images, &work)?;
        let serving = streamer::start_serving::<EngineError>(&images, &dir)?;
        (dir, Some(serving))
    } else {
        (images.clone(), None)
    };
    // The PID is learnt from a pid file: the caller's, else ours in the work dir.
    let pid_file = r
        .pid_file
        .clone()
        .or_else(|| r.detach.then(|| work.join("cedana-restore.pid")));
    let mut cmd = rt.command();
    cmd.args(runtime::restore_args(
        &r,
        &image_path,
        Some(&work),
        pid_file.as_deref(),
        &ctx.opts,
    ))
    .envs(stream_env);
    // Files the checkpoint holds as external are reopened and handed to CRIU.
    let reopened = external::Reopened::open(&external::read_record(&images)?)?;
    if !reopened.is_empty() {
        external::set_criu_config(&mut cmd, &ctx.work_dir, reopened.config())?;
        reopened.install(&mut cmd);
    }
    // The restored container inherits the runtime's stdio (runc maps the checkpointed
    // pipes onto it), so it gets ours, as with runc itself.
    match &r.stdio {
        Some(out) => {
            let dup = |what| {
                out.0
                    .try_clone()
                    .map_err(|e| EngineError::io(format!("duplicate the runtime's {what}"), e))
            };
            cmd.stdin(Stdio::null())
                .stdout(dup("stdout")?)
                .stderr(dup("stderr")?);
        }
        None => {
            cmd.stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
        }
    }
    let t = Instant::now();
    let status = if r.detach {
        blocking(move || {
            cmd.status()
                .map_err(|e| EngineError::io("start the runtime's restore", e))
        })
        .await
    } else {
        // In the foreground: forward the signals we get, as runc's own proxy does.
        signals::run_forwarding(cmd).await
    };
    let served = match serving {
        Some(s) => {
            blocking(move || s.finish().map_err(|e| EngineError::io("serve images", e))).await
        }
        None => Ok(()),
    };
    let status = status?;
    metadata
        .timings_ms
        .insert("runc_restore".into(), t.elapsed().as_millis() as u64);
    if r.detach && !status.success() {
        let out = std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        return Err(command_failed(
            "restore",
            &rt,
            &r.target.id,
            &out,
            &work.join("restore.log"),
        )
        .into());
    }
    served?;
    crate::criu::stats::add_restore_stats(&mut metadata, &work);
    if let (true, Some(b)) = (r.detach, baseline) {
        // The next dump measures against the pristine rootfs again (see rootfs_baseline).
        let dir = rootfs_baseline::state_dir(r.target.root.as_deref(), &r.target.id);
        if let Err(e) = rootfs_baseline::write_marker(&dir, &b) {
            tracing::warn!(error = %e, "a later dump falls back to the init's start time");
        }
    }
    let pid = pid_file
        .as_deref()
        .and_then(|p| fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Ok(RestoreResponse {
        pid,
        duration_ms: ctx.started.elapsed().as_millis() as u64,
        metadata,
        exit_code: (!r.detach).then(|| status.code().unwrap_or(128)),
        profile: Vec::new(),
    })
}

/// Writes `bundle/config.json` from `spec.dump` unless the bundle has one, then applies
/// `rootfs-diff.tar` and `deleted.files` onto the bundle's rootfs. Returns the entries
/// applied and the rootfs's baseline: taken before the diff is applied, listing what
/// the rootfs holds after.
fn prepare_bundle(dir: &Path, bundle: &Path) -> OpResult<(u64, Baseline)> {
    let since_ns = rootfs_baseline::now_ns();
    let config = bundle.join("config.json");
    if !config.exists() {
        fs::copy(dir.join(layout::SPEC_DUMP), &config).map_err(|e| {
            EngineError::io(
                format!("write {} from the checkpoint's spec.dump", config.display()),
                e,
            )
        })?;
    }
    let spec = oci::read_bundle_spec(bundle).map_err(|e| RuncError::Bundle {
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    })?;
    let rootfs = oci::rootfs(bundle, &spec).unwrap_or_else(|| bundle.join("rootfs"));
    if !rootfs.is_dir() {
        return Err(RuncError::Bundle {
            path: bundle.to_path_buf(),
            reason: format!(
                "rootfs {} is missing; copy the original container's rootfs there first",
                rootfs.display()
            ),
        }
        .into());
    }
    let diff = dir.join(layout::ROOTFS_DIFF);
    let applied = if diff.exists() {
        rootfs_diff::apply_diff(&diff, &rootfs)?
    } else {
        0
    };
    let deleted = rootfs_diff::read_deleted(&dir.join(layout::DELETED_FILES))?;
    rootfs_diff::apply_deleted(&deleted, &rootfs)?;
    let baseline = Baseline {
        since_ns,
        files: rootfs_baseline::list(&rootfs),
        deleted: deleted
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    };
    Ok((applied, baseline))
}
