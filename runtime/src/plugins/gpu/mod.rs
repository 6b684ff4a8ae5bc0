//! The gpu plugin: checkpoint/restore of processes and containers that use an NVIDIA
//! GPU. It adds middleware to every route (process, runc, containerd): at dump, the
//! tree's GPU tasks are found (`detect`; MPS clients refused, `mps`), their GPU state
//! moved into host memory with NVIDIA's `cuda-checkpoint` or our driver-API helper
//! (`backend`, `driver`) so CRIU can dump it, or CRIU's own cuda_plugin left to do that
//! (`owner`), and the GPUs recorded (`inventory`, `meta`); at restore, the host's GPUs are
//! checked against the record (`checks`, `--gpu-map`: `map`) before CRIU, and the restored
//! tasks put back on their GPU after it. Trees without GPU use pass straight through.

pub mod backend;
pub mod checks;
pub mod criu_plugin;
pub mod detect;
pub mod driver;
pub mod dump;
pub mod error;
pub mod health;
pub mod inventory;
pub mod map;
pub mod meta;
pub mod mps;
pub mod owner;
pub mod restore;
pub mod tool;

use crate::chain::Adapter;
use crate::engine::{DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};
use crate::plugins::{Feature, HealthCheck, Plugin};

/// NVIDIA GPUs, through cuda-checkpoint.
pub struct GpuPlugin;

impl Plugin for GpuPlugin {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn features(&self) -> Vec<Feature> {
        let f = |feature: &str, detail: &str| Feature {
            plugin: "gpu".into(),
            feature: feature.into(),
            detail: detail.into(),
        };
        vec![
            f(
                "dump middleware",
                "gpu_dump: tasks holding /dev/nvidia* are locked and their GPU state checkpointed before CRIU (cuda-checkpoint, or cedana-gpu-helper on libcuda's checkpoint API where it is missing), or by CRIU's cuda_plugin where it is installed (gpu.backend), restored and unlocked when CRIU fails or with --leave-running; MIG, MPS clients and non-x86-64 refused up front; recorded in metadata.json `gpu`",
            ),
            f(
                "restore middleware",
                "gpu_restore: driver branch, GPU count, UUIDs (or a complete --gpu-map onto this host's GPUs, r580+), model and free memory checked before CRIU; restored tasks restored (onto the mapped GPUs) and unlocked after it",
            ),
            f("health checks", "nvidia driver, cuda-checkpoint (--action), CRIU cuda plugin"),
        ]
    }

    fn dump_middleware(&self) -> Vec<Adapter<DumpCtx, DumpResponse>> {
        vec![dump::gpu_dump()]
    }

    fn restore_middleware(&self) -> Vec<Adapter<RestoreCtx, RestoreResponse>> {
        vec![restore::gpu_restore()]
    }

    fn health(&self, env: &Env) -> Vec<HealthCheck> {
        health::health(env)
    }
}

#[cfg(test)]
mod tests {
    use crate::image::metadata::CheckpointKind;
    use crate::plugins::PluginRegistry;

    #[test]
    fn gpu_middleware_sits_in_every_route_just_before_the_criu_check() {
        let reg = PluginRegistry::builtin();
        for kind in [CheckpointKind::PROCESS, crate::plugins::runc::KIND] {
            let d = reg.dump_route(&kind).expect("dump route").names();
            let at = |n: &str| d.iter().position(|x| *x == n).expect(n);
            assert!(at("save_process_state") < at("gpu_dump"), "{d:?}");
            assert_eq!(at("gpu_dump") + 1, at("check_criu_opts_for_dump"), "{d:?}");
            let r = reg.restore_route(&kind).expect("restore route").names();
            let at = |n: &str| r.iter().position(|x| *x == n).expect(n);
            assert!(at("prepare_restore_storage") < at("gpu_restore"), "{r:?}");
        }
    }
}
