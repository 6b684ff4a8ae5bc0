//! The restore middleware: a checkpoint with a `gpu` section is checked against this
//! host's GPUs before CRIU runs; after CRIU (and CRIU's cuda_plugin, where the images name
//! it), every restored task whose GPU state is still `checkpointed` is restored onto the
//! GPU and unlocked, and one still `locked` unlocked. Checkpoints without GPU use pass
//! straight through.

use super::backend::CudaCheckpoint;
use super::checks;
use super::criu_plugin;
use super::error::GpuError;
use super::inventory;
use super::map::GpuMap;
use super::meta::GpuMeta;
use super::owner::put_back;
use crate::chain::Adapter;
use crate::engine::{blocking, freeze, RestoreCtx, RestoreResponse};
use crate::process::inspect;

/// Checks the host's GPUs, then puts the restored tree back on them.
pub fn gpu_restore() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("gpu_restore", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            let meta = ctx.metadata.section::<GpuMeta>()?;
            let map = GpuMap(ctx.req.gpu_map.clone());
            let Some(meta) = meta.filter(|m| !m.tasks.is_empty()) else {
                if !map.is_empty() {
                    return Err(GpuError::Incompatible {
                        reason: "--gpu-map was given but the checkpoint holds no GPU job".into(),
                        fix: "drop --gpu-map",
                    }
                    .into());
                }
                return next.run(ctx).await;
            };
            let cfg = ctx.env.config.gpu.clone();
            let nvidia_smi = cfg.nvidia_smi.clone();
            let backend = CudaCheckpoint::select(&cfg).with_device_map(map.clone());
            let checked = backend.clone();
            let dumped_by = meta.backend.clone();
            blocking(move || {
                let installed = |p: &str| criu_plugin::installed(p).is_some();
                checks::criu_plugins_present(&meta, installed, &criu_plugin::plugin_dir())?;
                checks::map_supported(&meta, &map)?;
                let host = inventory::query(&nvidia_smi);
                checks::compatible(&meta, host.as_ref(), &map)?;
                Ok(checked.usable("to put the restored job back on its GPU")?)
            })
            .await?;
            let resp: RestoreResponse = next.run(ctx).await?;
            let root = resp.pid;
            blocking(move || {
                // Whatever CRIU's cuda_plugin (when it ran) did not put back, cedana does.
                let tree = inspect::tree(root).unwrap_or_default();
                let pids: Vec<i32> = tree.iter().map(|p| p.pid).collect();
                put_back(&backend, &pids, &dumped_by).map_err(|e| {
                    // Nothing half-made: a tree that cannot get its GPU back is removed.
                    let _ = freeze::signal_tree(root, nix::sys::signal::Signal::SIGKILL);
                    GpuError::Action {
                        action: "restore",
                        pid: root,
                        detail: e.to_string(),
                        outcome: "the restored process was killed; the checkpoint is unchanged: \
                                  check the GPU with `cedana check` and restore again"
                            .into(),
                    }
                    .into()
                })
            })
            .await?;
            Ok(resp)
        })
    })
}
