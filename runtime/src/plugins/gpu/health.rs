//! Health of the gpu plugin: the driver (nvidia-smi), cuda-checkpoint and whether it
//! takes `--action`, and CRIU's cuda plugin. None is needed for CPU-only jobs, so a
//! missing piece is a warning.

use super::backend::CudaCheckpoint;
use super::criu_plugin::{self, CUDA_PLUGIN};
use super::inventory;
use super::owner::{self, Owner};
use crate::engine::Env;
use crate::plugins::{Health, HealthCheck};

fn check(name: &str, health: Health, detail: String, fix: Option<&str>) -> HealthCheck {
    HealthCheck {
        plugin: "gpu".into(),
        name: name.into(),
        health,
        detail,
        fix: fix.map(str::to_string),
    }
}

/// Checks this host's GPU readiness.
pub fn health(env: &Env) -> Vec<HealthCheck> {
    let cfg = &env.config.gpu;
    let driver = match inventory::query(&cfg.nvidia_smi) {
        Ok(inv) if !inv.gpus.is_empty() => {
            let names: Vec<String> = inv.gpus.iter().map(|g| g.name.clone()).collect();
            check(
                "nvidia driver",
                Health::Ok,
                format!("driver {}, {} GPU(s): {}", inv.driver_version, names.len(), names.join(", ")),
                None,
            )
        }
        found => check(
            "nvidia driver",
            Health::Warn,
            match found {
                Err(e) => format!("no NVIDIA driver answers: {e}"),
                Ok(_) => "nvidia-smi lists no GPU".into(),
            },
            Some("for GPU jobs: install the NVIDIA driver (r570+) with nvidia-smi, or set gpu.nvidia_smi"),
        ),
    };
    let tool = CudaCheckpoint::select(cfg);
    let cuda_checkpoint = match tool.supports_action() {
        Ok(true) if tool.kind == "driver-api" => check(
            "cuda-checkpoint",
            Health::Ok,
            format!(
                "not found; {} will be used (libcuda's checkpoint API: driver r570+)",
                tool.binary.display()
            ),
            None,
        ),
        Ok(true) => check(
            "cuda-checkpoint",
            Health::Ok,
            format!("{} (takes --action)", tool.binary.display()),
            None,
        ),
        Ok(false) => check(
            "cuda-checkpoint",
            Health::Warn,
            format!("{} is too old: it does not take --action", tool.binary.display()),
            Some("install cuda-checkpoint of driver r555+ (github.com/NVIDIA/cuda-checkpoint)"),
        ),
        Err(e) => check(
            "cuda-checkpoint",
            Health::Warn,
            format!("not found: {e}"),
            Some("for GPU jobs: put cuda-checkpoint (github.com/NVIDIA/cuda-checkpoint) or cedana-gpu-helper (`make install`) on PATH, or set gpu.cuda_checkpoint"),
        ),
    };
    let criu_plugin = match criu_plugin::installed(CUDA_PLUGIN) {
        Some(p) => check(
            "criu cuda plugin",
            Health::Ok,
            format!(
                "{} present: {}; GPU checkpoints made here need it wherever they are restored",
                p.display(),
                match owner::select(cfg) {
                    Ok(Owner::CriuPlugin(_)) => "it moves GPU state (gpu.backend)".to_string(),
                    Ok(o) => format!("CRIU loads it, {} moves GPU state (gpu.backend)", o.name()),
                    Err(e) => format!("it cannot move GPU state: {e}"),
                }
            ),
            None,
        ),
        None => check(
            "criu cuda plugin",
            Health::Ok,
            format!(
                "not in {} (not needed: cedana drives cuda-checkpoint itself)",
                criu_plugin::plugin_dir().display()
            ),
            None,
        ),
    };
    vec![driver, cuda_checkpoint, criu_plugin]
}
