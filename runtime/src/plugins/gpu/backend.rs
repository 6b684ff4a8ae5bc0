//! Backends that move a process's GPU state into its host memory and back, both on
//! cuda-checkpoint's command line: NVIDIA's `cuda-checkpoint` tool (`gpu.cuda_checkpoint`,
//! r555+ for `--action`), or, where it is not installed, our `cedana-gpu-helper` on
//! libcuda's checkpoint API (`driver.rs`, r570+). CRIU's own cuda_plugin, the third way,
//! is driven by CRIU (`owner.rs`).

use std::path::{Path, PathBuf};

use cedana_config::GpuConfig;

use super::driver;
use super::error::GpuError;
use super::map::GpuMap;
use super::tool::{self, ToolFailure};

/// A process's GPU state, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuState {
    /// Running on its GPU.
    Running,
    /// Locked: no CUDA call may start.
    Locked,
    /// GPU state moved into host memory; device memory released.
    Checkpointed,
    /// The driver reports a failure.
    Failed,
}

impl GpuState {
    /// Reads the driver's word for a state.
    pub fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "running" => Some(Self::Running),
            "locked" => Some(Self::Locked),
            "checkpointed" => Some(Self::Checkpointed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One step of the GPU protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop new CUDA calls, waiting up to the timeout for running ones.
    Lock,
    /// Move GPU state into host memory.
    Checkpoint,
    /// Move it back onto a GPU.
    Restore,
    /// Let CUDA calls run again.
    Unlock,
}

impl Action {
    /// Its name, as the tool takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::Checkpoint => "checkpoint",
            Self::Restore => "restore",
            Self::Unlock => "unlock",
        }
    }
}

/// What moves GPU state for one process at a time.
pub trait Backend: Send + Sync {
    /// Its name in metadata.json.
    fn name(&self) -> &'static str;
    /// Runs one step on `pid`.
    fn act(&self, action: Action, pid: i32) -> Result<(), ToolFailure>;
    /// The process's GPU state.
    fn state(&self, pid: i32) -> Result<GpuState, ToolFailure>;
}

/// A program taking `cuda-checkpoint --action ... --pid PID`.
#[derive(Debug, Clone)]
pub struct CudaCheckpoint {
    /// The tool.
    pub binary: PathBuf,
    /// `--timeout` of `lock`, in ms.
    pub lock_timeout_ms: u64,
    /// `cuda-checkpoint`, or `driver-api` for our helper.
    pub kind: &'static str,
    /// GPUs a restore moves the job onto (`--device-map`); empty: the same GPUs.
    pub device_map: GpuMap,
}

impl CudaCheckpoint {
    /// The tool at `binary`.
    pub fn new(binary: &Path, lock_timeout_ms: u64) -> Self {
        Self {
            binary: binary.to_path_buf(),
            lock_timeout_ms,
            kind: "cuda-checkpoint",
            device_map: GpuMap::default(),
        }
    }

    /// This host's backend: the configured cuda-checkpoint; when that is the default
    /// name and not on PATH, `cedana-gpu-helper` (beside this binary or on PATH).
    pub fn select(cfg: &GpuConfig) -> Self {
        let default = cfg.cuda_checkpoint == Path::new("cuda-checkpoint");
        if default && crate::host::find_executable(&cfg.cuda_checkpoint).is_none() {
            if let Some(helper) = driver::locate_helper() {
                return Self::helper(&helper, cfg.lock_timeout_ms);
            }
        }
        Self::new(&cfg.cuda_checkpoint, cfg.lock_timeout_ms)
    }

    /// Our `cedana-gpu-helper` at `binary` (libcuda's checkpoint API).
    pub fn helper(binary: &Path, lock_timeout_ms: u64) -> Self {
        Self {
            kind: "driver-api",
            ..Self::new(binary, lock_timeout_ms)
        }
    }

    /// The same tool, restoring onto the GPUs `map` names.
    pub fn with_device_map(self, map: GpuMap) -> Self {
        Self {
            device_map: map,
            ..self
        }
    }

    /// `Ok` when the tool runs and takes `--action`; else what is wrong and the fix.
    pub fn usable(&self, why: &'static str) -> Result<(), GpuError> {
        let found = match self.supports_action() {
            Ok(true) => return Ok(()),
            Ok(false) => format!(
                "{} does not take --action (older than r555)",
                self.binary.display()
            ),
            Err(e) => e.to_string(),
        };
        Err(GpuError::Tool {
            tool: "cuda-checkpoint".into(),
            why,
            found,
            fix: "install cuda-checkpoint r555+ (github.com/NVIDIA/cuda-checkpoint) or \
                  cedana-gpu-helper (`make install`), or set gpu.cuda_checkpoint",
        })
    }

    /// Whether the tool takes `--action` (r555+): older ones only toggle.
    pub fn supports_action(&self) -> Result<bool, ToolFailure> {
        Ok(tool::run(&self.binary, &["--help"])?.contains("--action"))
    }
}

impl Backend for CudaCheckpoint {
    fn name(&self) -> &'static str {
        self.kind
    }

    fn act(&self, action: Action, pid: i32) -> Result<(), ToolFailure> {
        let (pid, timeout) = (pid.to_string(), self.lock_timeout_ms.to_string());
        let map = self.device_map.to_arg();
        let mut args = vec!["--action", action.as_str(), "--pid", &pid];
        if action == Action::Lock {
            args.extend(["--timeout", &timeout]);
        }
        if action == Action::Restore && !self.device_map.is_empty() {
            args.extend(["--device-map", &map]);
        }
        tool::run(&self.binary, &args).map(drop)
    }

    fn state(&self, pid: i32) -> Result<GpuState, ToolFailure> {
        let out = tool::run(&self.binary, &["--get-state", "--pid", &pid.to_string()])?;
        GpuState::parse(&out).ok_or_else(|| {
            ToolFailure::Failed(format!("cuda-checkpoint --get-state said {:?}", out.trim()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_read_as_the_driver_words_them() {
        assert_eq!(
            GpuState::parse("checkpointed\n"),
            Some(GpuState::Checkpointed)
        );
        assert_eq!(GpuState::parse("Running"), Some(GpuState::Running));
        assert_eq!(GpuState::parse("locked"), Some(GpuState::Locked));
        assert_eq!(GpuState::parse("odd"), None);
    }
}
