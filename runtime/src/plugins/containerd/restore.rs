//! Restore into a new containerd container: create it from the recorded image (or
//! `--image`) with the recorded spec (id-specific fields adjusted), unpacking the image
//! first when the snapshotter does not have it yet, apply `rootfs-diff.tar` onto its new
//! snapshot, then create its task with runc options naming the checkpoint's images
//! (containerd hands `criu_image_path` to the runc shim as the task's checkpoint) and
//! start it: the shim's runtime restores the process tree, and containerd manages the
//! container like any other. A failure removes the new container again.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use containerd_client::types::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use prost_types::Any;

use super::client::Client;
use super::dump::RUNTIME_OPTIONS_LABEL;
use super::error::ContainerdError;
use super::meta::ContainerdMeta;
use super::options;
use super::target::{ContainerdRestore, ContainerdTarget};
use crate::chain::{Adapter, OpResult};
use crate::engine::{blocking, RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::image::metadata::Metadata;
use crate::plugins::runc::{external, layout, rootfs_diff};

/// Refuses a missing id and an id in use before anything is touched.
pub fn validate_containerd_restore() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("validate_containerd_restore", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            let Some(r) = ctx.req.target::<ContainerdRestore>().cloned() else {
                return Err(EngineError::InvalidRequest {
                    field: "containerd",
                    reason: "a containerd restore needs the new container (id)".into(),
                });
            };
            if r.target.id.is_empty() {
                return Err(EngineError::InvalidRequest {
                    field: "id",
                    reason: "give the new container's id with --id".into(),
                });
            }
            if Client::connect(&r.target).await?.container_exists().await? {
                return Err(ContainerdError::Exists {
                    id: r.target.id,
                    namespace: r.target.namespace,
                }
                .into());
            }
            next.run(ctx).await
        })
    })
}

/// Creates the container and restores its task.
pub async fn containerd_restore(ctx: RestoreCtx) -> OpResult<RestoreResponse> {
    let r = ctx
        .req
        .target::<ContainerdRestore>()
        .cloned()
        .ok_or_else(|| EngineError::InvalidRequest {
            field: "containerd",
            reason: "a containerd restore needs the new container".into(),
        })?;
    let recorded = recorded(&ctx.metadata, &ctx.req.path)?;
    if let Err(reason) = super::dump::restorable(&recorded.runtime, &recorded.runtime_options_type)
    {
        return Err(ContainerdError::Runtime {
            runtime: recorded.runtime.clone(),
            reason,
        }
        .into());
    }
    refuse_external_without_cedana_runc(&ctx.images_dir, &recorded)?;
    let image = r.image.clone().unwrap_or_else(|| recorded.image.clone());
    let spec = recorded_spec(&ctx.images_dir, &recorded, &r.target.id)?;
    let t = Instant::now();
    let client = Client::connect(&r.target).await?;
    create_container(&client, &recorded, &image, spec).await?;
    match restore_task(&ctx, &client, &r, &recorded).await {
        Ok(pid) => {
            let mut metadata = ctx.metadata;
            metadata
                .timings_ms
                .insert("containerd_restore".into(), t.elapsed().as_millis() as u64);
            Ok(RestoreResponse {
                pid,
                duration_ms: ctx.started.elapsed().as_millis() as u64,
                metadata,
                exit_code: None,
                profile: Vec::new(),
            })
        }
        Err(e) => {
            client.remove_container().await;
            Err(e)
        }
    }
}

/// Files the container held outside its mounts are handed back by the engine's runc
/// restore, which containerd's shim reaches only when its runc binary is cedana-runc;
/// plain runc would fail in CRIU, so refuse before anything is created.
fn refuse_external_without_cedana_runc(dir: &Path, md: &ContainerdMeta) -> OpResult<()> {
    let files = external::read_record(&layout::images_of(dir))?;
    if files.is_empty() {
        return Ok(());
    }
    let binary = options::decode_recorded(&md.runtime_options)
        .map(|o| o.binary_name)
        .unwrap_or_default();
    if binary.ends_with("cedana-runc") {
        return Ok(());
    }
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    Err(ContainerdError::Runtime {
        runtime: md.runtime.clone(),
        reason: format!(
            "the checkpoint holds files the container had open outside its mounts ({}), \
             which only cedana-runc hands back; run the container with `--runc-binary \
             cedana-runc` (BinaryName), or restore it with `cedana restore runc`",
            paths.join(", ")
        ),
    }
    .into())
}

/// The checkpoint's containerd record; refuses other kinds of checkpoint.
fn recorded(md: &Metadata, path: &Path) -> OpResult<ContainerdMeta> {
    md.section::<ContainerdMeta>()?.ok_or_else(|| {
        ContainerdError::NotContainerd(format!(
            "{} is a {:?} checkpoint, not a containerd one (made by `cedana dump containerd`)",
            path.display(),
            md.kind
        ))
        .into()
    })
}

/// `spec.dump` with the new id where the old one was (cgroups path, hostname).
fn recorded_spec(dir: &Path, md: &ContainerdMeta, id: &str) -> OpResult<serde_json::Value> {
    let file = dir.join(layout::SPEC_DUMP);
    let bytes = fs::read(&file)
        .map_err(|e| EngineError::io(format!("read the checkpoint's {}", layout::SPEC_DUMP), e))?;
    let mut spec: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ContainerdError::NotContainerd(format!("{} is not valid JSON: {e}", file.display()))
    })?;
    Ok({
        adjust_spec(&mut spec, &md.id, id);
        spec
    })
}

/// Moves id-specific fields of a spec from `old` to `new`.
fn adjust_spec(spec: &mut serde_json::Value, old: &str, new: &str) {
    if let Some(p) = spec.pointer_mut("/linux/cgroupsPath") {
        if let Some(s) = p.as_str() {
            let suffix = format!("/{old}");
            if let Some(base) = s.strip_suffix(&suffix) {
                *p = format!("{base}/{new}").into();
            } else if let Some(base) = s.strip_suffix(&format!(":{old}")) {
                // systemd form slice:prefix:name
                *p = format!("{base}:{new}").into();
            }
        }
    }
    if let Some(h) = spec.pointer_mut("/hostname") {
        if h.as_str() == Some(old) {
            *h = new.into();
        }
    }
}

/// Creates the container from the image with the recorded spec and runtime. The
/// recorded runtime options go into a label: containerd keeps a task's runtime options
/// with the task only, so this container's own dumps (and the restores of those) find
/// the same runc binary (cedana-runc) and root there.
async fn create_container(
    client: &Client,
    md: &ContainerdMeta,
    image: &str,
    spec: serde_json::Value,
) -> OpResult<()> {
    let resolved = client.resolve_image(image).await?;
    let mut labels = HashMap::new();
    if !md.runtime_options.is_empty() {
        labels.insert(RUNTIME_OPTIONS_LABEL.into(), md.runtime_options.clone());
    }
    Ok(client
        .create_from_image(&resolved, &md.runtime, &md.snapshotter, labels, spec)
        .await?)
}

/// Rootfs changes, task from the checkpoint, start. The new task's PID.
async fn restore_task(
    ctx: &RestoreCtx,
    client: &Client,
    r: &ContainerdRestore,
    md: &ContainerdMeta,
) -> OpResult<i32> {
    let mounts = client
        .snapshot_mounts(&md.snapshotter, &r.target.id)
        .await?;
    let diff = ctx.images_dir.join(layout::ROOTFS_DIFF);
    if diff.exists() {
        let (m, work) = (mounts.clone(), ctx.work_dir.clone());
        let applied = blocking(move || apply_diff_on(&m, &diff, &work)).await?;
        tracing::info!(applied, id = %r.target.id, "rootfs diff applied to the new snapshot");
    }
    // Recorded runtime options (binary, root, ...) plus where to restore from.
    let mut runc = if md.runtime_options.is_empty() {
        options::RuncOptions::new()
    } else {
        options::decode_recorded(&md.runtime_options).ok_or_else(|| {
            ContainerdError::NotContainerd(format!(
                "the checkpoint's runtime options ({}) are not base64 runc options",
                md.runtime_options_type
            ))
        })?
    };
    runc.criu_image_path = layout::images_of(&ctx.images_dir).display().to_string();
    runc.criu_work_path = ctx.work_dir.display().to_string();
    let value = options::encode(&runc).map_err(|detail| ContainerdError::Call {
        call: "encode the task's runc options".into(),
        detail,
    })?;
    let log = r
        .log_path
        .clone()
        .unwrap_or_else(|| log_path(&ctx.env.config.jobs.log_dir, &r.target));
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    }
    let stdin = stdin_fifo(&log)?;
    client
        .create_task(
            mounts,
            (
                &stdin.display().to_string(),
                &format!("file://{}", log.display()),
            ),
            Some(Any {
                type_url: md.runtime_options_type.clone(),
                value,
            }),
        )
        .await?;
    Ok(client.start_task().await?)
}

/// A FIFO beside the log, the restored task's stdin. Without one the shim gives its
/// runtime /dev/null, which runc maps onto the checkpointed stdin pipe: the task then
/// holds the host's /dev/null, outside its mounts, and a plain runc (`ctr task
/// checkpoint`) cannot dump it again. The shim reads the FIFO into a pipe; nothing
/// writes to it, so the task's stdin stays an open, empty pipe, as under `ctr run -d`.
pub(super) fn stdin_fifo(log: &Path) -> OpResult<PathBuf> {
    let fifo = log.with_extension("stdin");
    let _ = fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| {
        EngineError::io(
            format!("create the stdin FIFO {}", fifo.display()),
            e.into(),
        )
    })?;
    Ok(fifo)
}

/// Where the restored container's stdout and stderr go.
pub fn log_path(log_dir: &Path, t: &ContainerdTarget) -> PathBuf {
    log_dir.join(format!("containerd-{}-{}.log", t.namespace, t.id))
}

/// Mounts the snapshot on a private dir under `work`, applies the diff, unmounts.
fn apply_diff_on(mounts: &[Mount], diff: &Path, work: &Path) -> OpResult<u64> {
    let [m] = mounts else {
        return Err(ContainerdError::Call {
            call: "containerd Snapshots.Mounts".into(),
            detail: format!("expected one mount for the snapshot, got {}", mounts.len()),
        }
        .into());
    };
    let target = work.join("rootfs");
    fs::create_dir_all(&target)
        .map_err(|e| EngineError::io(format!("create {}", target.display()), e))?;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "rw" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            other => data.push(other),
        }
    }
    let data = data.join(",");
    let kind = (m.r#type != "bind").then_some(m.r#type.as_str());
    mount(
        Some(m.source.as_str()),
        &target,
        kind,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| {
        EngineError::io(
            format!("mount the new container's snapshot on {}", target.display()),
            e.into(),
        )
    })?;
    let applied = rootfs_diff::apply_diff(diff, &target).and_then(|n| {
        let deleted = diff.with_file_name(layout::DELETED_FILES);
        rootfs_diff::apply_deleted(&rootfs_diff::read_deleted(&deleted)?, &target)?;
        Ok(n)
    });
    let _ = umount2(&target, MntFlags::MNT_DETACH);
    Ok(applied?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_moves_to_the_new_id() {
        let mut s = serde_json::json!({
            "hostname": "c1",
            "linux": {"cgroupsPath": "/ns/c1"}
        });
        adjust_spec(&mut s, "c1", "c2");
        assert_eq!(s["hostname"], "c2");
        assert_eq!(s["linux"]["cgroupsPath"], "/ns/c2");
        let mut s = serde_json::json!({"linux": {"cgroupsPath": "system.slice:cri:c1"}});
        adjust_spec(&mut s, "c1", "c2");
        assert_eq!(s["linux"]["cgroupsPath"], "system.slice:cri:c2");
        let mut s = serde_json::json!({"hostname": "web"});
        adjust_spec(&mut s, "c1", "c2");
        assert_eq!(s["hostname"], "web");
    }
}
