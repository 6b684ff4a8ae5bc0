//! Restore into a new containerd container: create it from the recorded image (or
//! `--image`) with `ctr` (which unpacks the image and prepares its snapshot), put the
//! recorded spec in (id-specific fields adjusted), apply `rootfs-diff.tar` onto the new
//! snapshot, then create its task with runc options naming the checkpoint's images
//! (containerd hands `criu_image_path` to the runc shim as the task's checkpoint) and
//! start it: the shim's runtime restores the process tree, and containerd manages the
//! container like any other. A failure removes the new container again.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use prost::Message;

use super::ctr::{self, Mount};
use super::dump::RUNTIME_OPTIONS_LABEL;
use super::error::ContainerdError;
use super::grpc::{self, base64_decode, Any, Client, RuncOptions};
use super::meta::ContainerdMeta;
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
            let t = r.target.clone();
            if blocking(move || Ok(ctr::exists(&t)?)).await? {
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
    {
        let (r, recorded, spec) = (r.clone(), recorded.clone(), spec.clone());
        blocking(move || create_container(&r.target, &recorded, &image, &spec)).await?;
    }
    match restore_task(&ctx, &r, &recorded, &spec).await {
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
            })
        }
        Err(e) => {
            let target = r.target.clone();
            let _ = blocking(move || {
                ctr::remove(&target);
                Ok(())
            })
            .await;
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
    let binary = base64_decode(&md.runtime_options)
        .and_then(|b| RuncOptions::decode(b.as_slice()).ok())
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

/// `ctr containers create` from the image (unpacking it, preparing the snapshot).
fn create_container(
    t: &ContainerdTarget,
    md: &ContainerdMeta,
    image: &str,
    spec: &serde_json::Value,
) -> OpResult<()> {
    let images = ctr::ctr(t, &["images", "list", "-q"])?;
    if !images.lines().any(|l| l.trim() == image) {
        return Err(ContainerdError::NoImage {
            image: image.into(),
            namespace: t.namespace.clone(),
        }
        .into());
    }
    let mut args = vec!["containers", "create", "--runtime", md.runtime.as_str()];
    if !md.snapshotter.is_empty() {
        args.extend(["--snapshotter", md.snapshotter.as_str()]);
    }
    args.extend([image, t.id.as_str()]);
    let argv: Vec<String> = spec
        .pointer("/process/args")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    args.extend(argv.iter().map(String::as_str));
    ctr::ctr(t, &args)?;
    Ok(())
}

/// Spec, rootfs changes, task from the checkpoint, start. The new task's PID.
async fn restore_task(
    ctx: &RestoreCtx,
    r: &ContainerdRestore,
    md: &ContainerdMeta,
    spec: &serde_json::Value,
) -> OpResult<i32> {
    let client = Client::connect(&r.target).await?;
    // containerd keeps a task's runtime options only with the task, and `ctr containers
    // create` sets none: a label carries them, so this container's own dumps (and the
    // restores of those) run with the same runc binary (cedana-runc) and root.
    let mut labels = std::collections::HashMap::new();
    if !md.runtime_options.is_empty() {
        labels.insert(
            RUNTIME_OPTIONS_LABEL.to_string(),
            md.runtime_options.clone(),
        );
    }
    client.update_spec(spec, labels).await?;
    let mounts = {
        let (t, s) = (r.target.clone(), md.snapshotter.clone());
        blocking(move || Ok(ctr::snapshot_mounts(&t, &s, &t.id)?)).await?
    };
    let diff = ctx.images_dir.join(layout::ROOTFS_DIFF);
    if diff.exists() {
        let (m, work) = (mounts.clone(), ctx.work_dir.clone());
        let applied = blocking(move || apply_diff_on(&m, &diff, &work)).await?;
        tracing::info!(applied, id = %r.target.id, "rootfs diff applied to the new snapshot");
    }
    // Recorded runtime options (binary, root, ...) plus where to restore from: appended
    // protobuf fields merge into the message.
    let mut value = base64_decode(&md.runtime_options).unwrap_or_default();
    value.extend(
        RuncOptions {
            criu_image_path: layout::images_of(&ctx.images_dir).display().to_string(),
            criu_work_path: ctx.work_dir.display().to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let log = r
        .log_path
        .clone()
        .unwrap_or_else(|| log_path(&ctx.env.config.jobs.log_dir, &r.target));
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    }
    let rootfs = mounts
        .into_iter()
        .map(|m| grpc::Mount {
            r#type: m.kind,
            source: m.source,
            options: m.options,
        })
        .collect();
    let stdin = stdin_fifo(&log)?;
    client
        .create_task(
            rootfs,
            (
                &stdin.display().to_string(),
                &format!("file://{}", log.display()),
            ),
            Any {
                type_url: md.runtime_options_type.clone(),
                value,
            },
        )
        .await?;
    Ok(client.start_task().await?)
}

/// A FIFO beside the log, the restored task's stdin. Without one the shim gives its
/// runtime /dev/null, which runc maps onto the checkpointed stdin pipe: the task then
/// holds the host's /dev/null, outside its mounts, and a plain runc (`ctr task
/// checkpoint`) cannot dump it again. The shim reads the FIFO into a pipe; nothing
/// writes to it, so the task's stdin stays an open, empty pipe, as under `ctr run -d`.
fn stdin_fifo(log: &Path) -> OpResult<PathBuf> {
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
        return Err(ContainerdError::Command {
            command: "ctr snapshots mounts".into(),
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
    let kind = (m.kind != "bind").then_some(m.kind.as_str());
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
