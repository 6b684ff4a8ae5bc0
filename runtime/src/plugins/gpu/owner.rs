//! Who moves a GPU job's state in one operation (`gpu.backend`): cedana, through a
//! cuda-checkpoint command line (`backend.rs`: NVIDIA's tool or our driver-API helper),
//! or CRIU's cuda_plugin, which CRIU drives from its own hooks (lock before freezing,
//! checkpoint after, restore and unlock at the end of a restore or of a failed or
//! leave-running dump) while cedana only checks and records. One owner per operation:
//! with the plugin owning it, cedana never locks or checkpoints.

use std::path::Path;

use cedana_config::GpuConfig;

use super::backend::{Action, Backend, CudaCheckpoint, GpuState};
use super::criu_plugin::{self, CUDA_PLUGIN};
use super::driver;
use super::dump::step;
use super::error::GpuError;

/// The backend name a checkpoint records when CRIU's cuda_plugin moved its GPU state.
pub const CRIU_PLUGIN_BACKEND: &str = "criu-cuda-plugin";

/// What the tool is needed for, in errors.
const WHY: &str = "to checkpoint the job's GPU state";

/// The owner of a dump's GPU state.
#[derive(Debug, Clone)]
pub enum Owner {
    /// cedana locks and checkpoints before CRIU, and puts the job back when CRIU fails
    /// or leaves it running.
    Cedana(CudaCheckpoint),
    /// CRIU's cuda_plugin does all of it; the tool is the `cuda-checkpoint` on PATH that
    /// the plugin runs, which cedana asks for states.
    CriuPlugin(CudaCheckpoint),
}

impl Owner {
    /// Its name in metadata.json's `gpu.backend`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cedana(tool) => tool.kind,
            Self::CriuPlugin(_) => CRIU_PLUGIN_BACKEND,
        }
    }

    /// The tool that answers for a process's GPU state.
    pub fn tool(&self) -> &CudaCheckpoint {
        match self {
            Self::Cedana(tool) | Self::CriuPlugin(tool) => tool,
        }
    }
}

/// The owner `gpu.backend` names, checked to be usable; `auto` takes CRIU's cuda_plugin
/// where it would run, else cedana's own tool, and says why it passed the plugin over.
pub fn select(cfg: &GpuConfig) -> Result<Owner, GpuError> {
    match cfg.backend.as_str() {
        "criu-plugin" => criu_plugin_owner(),
        "cuda-checkpoint" => {
            let tool = CudaCheckpoint::new(&cfg.cuda_checkpoint, cfg.lock_timeout_ms);
            tool.usable(WHY)?;
            Ok(Owner::Cedana(tool))
        }
        "driver-api" => {
            let helper = driver::locate_helper().ok_or_else(|| GpuError::Tool {
                tool: driver::HELPER_NAME.into(),
                why: "for gpu.backend=driver-api",
                found: "it is neither beside cedana nor on PATH".into(),
                fix: "install it with `make install`, or set gpu.backend=auto",
            })?;
            let tool = CudaCheckpoint::helper(&helper, cfg.lock_timeout_ms);
            tool.usable(WHY)?;
            Ok(Owner::Cedana(tool))
        }
        _ => criu_plugin_owner().or_else(|passed_over| {
            if criu_plugin::installed(CUDA_PLUGIN).is_some() {
                tracing::info!(
                    reason = %passed_over,
                    "CRIU's cuda_plugin is installed but cannot move the GPU state: cedana does"
                );
            }
            let tool = CudaCheckpoint::select(cfg);
            tool.usable(WHY)?;
            Ok(Owner::Cedana(tool))
        }),
    }
}

/// CRIU's cuda_plugin, where CRIU will load it and it will not disable itself: it runs
/// `cuda-checkpoint` from PATH and needs one that takes `--action`.
fn criu_plugin_owner() -> Result<Owner, GpuError> {
    if criu_plugin::installed(CUDA_PLUGIN).is_none() {
        return Err(GpuError::Tool {
            tool: "CRIU's cuda_plugin".into(),
            why: "for gpu.backend=criu-plugin",
            found: format!(
                "there is no {CUDA_PLUGIN}.so in {}",
                criu_plugin::plugin_dir().display()
            ),
            fix: "build it from CRIU's source (make cuda_plugin) and copy \
                  plugins/cuda/cuda_plugin.so into /usr/lib/criu or CRIU_LIBS_DIR, or set \
                  gpu.backend=auto",
        });
    }
    let name = Path::new("cuda-checkpoint");
    let tool = crate::host::find_executable(name).ok_or_else(|| GpuError::Tool {
        tool: "cuda-checkpoint".into(),
        why: "on PATH by CRIU's cuda_plugin, which runs it by that name",
        found: "it is not on PATH".into(),
        fix: "put cuda-checkpoint r555+ (github.com/NVIDIA/cuda-checkpoint) on PATH",
    })?;
    let tool = CudaCheckpoint::new(&tool, 0);
    tool.usable("by CRIU's cuda_plugin")?;
    Ok(Owner::CriuPlugin(tool))
}

/// Puts back on its GPU every process of `pids` that is still checkpointed (restore,
/// then unlock) or locked (unlock), saying why; a process the tool cannot answer for
/// does not use CUDA. The first failure, after trying them all.
pub fn put_back(backend: &dyn Backend, pids: &[i32], left_by: &str) -> Result<(), GpuError> {
    let mut first = None;
    for &pid in pids {
        let steps: &[Action] = match backend.state(pid) {
            Ok(GpuState::Checkpointed) => &[Action::Restore, Action::Unlock],
            Ok(GpuState::Locked) => &[Action::Unlock],
            _ => continue,
        };
        tracing::info!(pid, left_by, "putting the process back on its GPU");
        if let Err(e) = steps.iter().try_for_each(|&a| step(backend, a, pid)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
