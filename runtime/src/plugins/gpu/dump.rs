//! The dump middleware: a tree that uses a GPU has its GPU state moved into host memory
//! (lock, then checkpoint, every GPU task) before CRIU, and back (restore, unlock) when
//! CRIU failed or the job is left running; where CRIU's cuda_plugin owns the GPU state
//! (`owner`), CRIU does both and cedana records, then puts back whatever the plugin left
//! locked or checkpointed. A tree without GPU use passes straight through.

use std::path::PathBuf;
use std::sync::Arc;

use super::backend::{Action, Backend};
use super::checks;
use super::criu_plugin::{self, CUDA_PLUGIN};
use super::detect::{self, Vendor};
use super::error::GpuError;
use super::inventory;
use super::meta::{GpuMeta, GpuTask};
use super::mps;
use super::owner::{self, put_back, Owner, CRIU_PLUGIN_BACKEND};
use crate::chain::Adapter;
use crate::engine::{blocking, DumpCtx, DumpResponse};
use crate::error::EngineError;

/// Suspends the tree's GPU work around the rest of the dump.
pub fn gpu_dump() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("gpu_dump", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let cfg = ctx.env.config.gpu.clone();
            let (vendor, tasks) = detect::gpu_tasks(&cfg.device_dir, &ctx.state);
            let Some(vendor) = vendor else {
                return next.run(ctx).await;
            };
            let pid = tasks.keys().next().copied().unwrap_or(ctx.req.pid);
            if vendor == Vendor::Amd {
                let reason = "it holds /dev/kfd (an AMD GPU), which cedana cannot checkpoint yet";
                return Err(GpuError::Unsupported {
                    pid,
                    reason: reason.into(),
                }
                .into());
            }
            let clients: Vec<i32> = tasks.keys().copied().collect();
            if let Some(refused) = blocking(move || Ok(mps::refusal(&clients))).await? {
                return Err(refused.into());
            }
            let selected = cfg.clone();
            let owner = blocking(move || Ok(owner::select(&selected)?)).await?;
            let pids: Vec<i32> = tasks.keys().copied().collect();
            let meta = {
                let (nvidia_smi, owner) = (cfg.nvidia_smi.clone(), owner.clone());
                blocking(move || Ok(record(&nvidia_smi, &owner, tasks))).await?
            };
            if let Some(reason) = checks::dump_refusal(std::env::consts::ARCH, &meta) {
                return Err(GpuError::Unsupported { pid, reason }.into());
            }
            ctx.metadata.set_section(&meta)?;
            let backend: Arc<dyn Backend> = Arc::new(owner.tool().clone());
            if let Owner::Cedana(_) = owner {
                let (b, p, dev) = (Arc::clone(&backend), pids.clone(), cfg.device_dir.clone());
                blocking(move || suspend(b.as_ref(), &p, dev)).await?;
            }
            let leave_running = ctx.opts.leave_running;
            let result = next.run(ctx).await;
            if result.is_ok() && !leave_running {
                // CRIU killed the tree once its checkpoint was committed.
                return result;
            }
            let resumed = blocking(move || {
                Ok(match owner {
                    Owner::Cedana(_) => resume(backend.as_ref(), &pids),
                    // The plugin resumes what it paused; cedana puts back what it left.
                    Owner::CriuPlugin(_) => put_back(backend.as_ref(), &pids, CRIU_PLUGIN_BACKEND),
                })
            })
            .await?;
            match (result, resumed) {
                (result, Ok(())) => result,
                (Err(dump), Err(e)) => Err(stuck(e, format!("the dump had failed ({dump})"))),
                (Ok(_), Err(e)) => Err(stuck(e, "the checkpoint was written".into())),
            }
        })
    })
}

/// The metadata section: the tasks, the host's GPUs and the memory each task holds
/// (queried before the checkpoint releases it). No inventory: recorded without one.
fn record(
    nvidia_smi: &std::path::Path,
    owner: &Owner,
    tasks: std::collections::BTreeMap<i32, Vec<String>>,
) -> GpuMeta {
    let inv = inventory::query(nvidia_smi)
        .inspect_err(|e| tracing::warn!(error = %e, "no GPU inventory for the checkpoint"))
        .unwrap_or_default();
    let mut apps = inventory::apps(nvidia_smi);
    GpuMeta {
        vendor: Vendor::Nvidia.as_str().into(),
        backend: owner.name().into(),
        driver_version: inv.driver_version,
        gpus: inv.gpus,
        tasks: tasks
            .into_iter()
            .map(|(pid, devices)| GpuTask {
                pid,
                devices,
                memory_mib: apps.remove(&pid).unwrap_or_default(),
            })
            .collect(),
        // Where it is installed CRIU loads it, and it names itself in the images of any
        // CUDA task, even one cedana checkpointed.
        criu_plugins: criu_plugin::installed(CUDA_PLUGIN)
            .map(|_| vec![CUDA_PLUGIN.to_string()])
            .unwrap_or_default(),
    }
}

/// Locks, then checkpoints, every task; on a failure undoes what was done (the job runs
/// on) and fails before CRIU.
fn suspend(backend: &dyn Backend, pids: &[i32], device_dir: PathBuf) -> Result<(), EngineError> {
    let failed = |action: Action, pid, detail: String, undo: Result<(), GpuError>| {
        let outcome = match undo {
            Ok(()) => "nothing was dumped and the job runs on on its GPU".to_string(),
            Err(e) => format!("nothing was dumped, and undoing it failed too: {e}"),
        };
        EngineError::from(GpuError::Action {
            action: action.as_str(),
            pid,
            detail: format!(
                "{detail} (a lock waits gpu.lock_timeout_ms for running CUDA work: raise it \
                 for long kernels)"
            ),
            outcome,
        })
    };
    for (i, &pid) in pids.iter().enumerate() {
        if let Err(e) = backend.act(Action::Lock, pid) {
            let undo = each(backend, Action::Unlock, &pids[..i]);
            return Err(failed(Action::Lock, pid, e.to_string(), undo));
        }
    }
    for (i, &pid) in pids.iter().enumerate() {
        if let Err(e) = backend.act(Action::Checkpoint, pid) {
            let undo = each(backend, Action::Restore, &pids[..i])
                .and_then(|()| each(backend, Action::Unlock, pids));
            return Err(failed(Action::Checkpoint, pid, e.to_string(), undo));
        }
    }
    // CRIU cannot dump device memory: nothing of a GPU may still be mapped.
    for &pid in pids {
        if let Some((_, device)) = detect::mapped_devices(&device_dir, pid).into_iter().next() {
            let _ = resume(backend, pids);
            return Err(GpuError::StillMapped { pid, device }.into());
        }
    }
    Ok(())
}

/// Restores and unlocks every task (a task whose restore failed is not unlocked), so
/// the job carries on on its GPU; the first failure, after trying them all.
pub fn resume(backend: &dyn Backend, pids: &[i32]) -> Result<(), GpuError> {
    first_failure(pids.iter().map(|&pid| {
        step(backend, Action::Restore, pid).and_then(|()| step(backend, Action::Unlock, pid))
    }))
}

/// `action` on every PID; the first failure, after trying them all.
fn each(backend: &dyn Backend, action: Action, pids: &[i32]) -> Result<(), GpuError> {
    first_failure(pids.iter().map(|&pid| step(backend, action, pid)))
}

fn first_failure(results: impl Iterator<Item = Result<(), GpuError>>) -> Result<(), GpuError> {
    let mut first = None;
    for r in results {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// `action` on `pid`, its failure as a [`GpuError::Action`].
pub(super) fn step(backend: &dyn Backend, action: Action, pid: i32) -> Result<(), GpuError> {
    backend.act(action, pid).map_err(|e| {
        tracing::warn!(pid, action = action.as_str(), error = %e, "GPU step failed");
        GpuError::Action {
            action: action.as_str(),
            pid,
            detail: e.to_string(),
            outcome: "the job may be left locked on its GPU".into(),
        }
    })
}

/// A job left locked on the host after `what`: the error says how to free it by hand.
fn stuck(e: GpuError, what: String) -> EngineError {
    let (action, pid, detail) = match e {
        GpuError::Action {
            action,
            pid,
            detail,
            ..
        } => (action, pid, detail),
        other => ("restore", 0, other.to_string()),
    };
    GpuError::Action {
        action,
        pid,
        detail,
        outcome: format!(
            "{what}, but the job could not be put back on its GPU: run `cuda-checkpoint \
             --action restore --pid {pid}` and `cuda-checkpoint --action unlock --pid {pid}`"
        ),
    }
    .into()
}
