//! Checks made before anything is touched: at dump, setups the GPU path cannot handle;
//! at restore, the GPUs this host has against those the checkpoint recorded. Each
//! refusal says what is wrong and what to do.

use super::error::GpuError;
use super::inventory::{branch, Inventory};
use super::meta::GpuMeta;
use super::tool::ToolFailure;

fn models(meta: &GpuMeta) -> String {
    let names: Vec<&str> = meta.gpus.iter().map(|g| g.name.as_str()).collect();
    match names.is_empty() {
        true => "an NVIDIA GPU".into(),
        false => names.join(", "),
    }
}

/// Why a GPU job recorded as `meta` cannot be checkpointed on a host of architecture
/// `arch` (`std::env::consts::ARCH`), if it cannot.
pub fn dump_refusal(arch: &str, meta: &GpuMeta) -> Option<String> {
    if arch != "x86_64" {
        return Some(format!(
            "GPU checkpoints are supported on x86-64 only, this host is {arch}"
        ));
    }
    // The GPUs the job holds memory on; without that record, any GPU of the host.
    let used = |uuid: &str| {
        let all = meta.tasks.iter().all(|t| t.memory_mib.is_empty());
        all || meta
            .tasks
            .iter()
            .any(|t| t.memory_mib.iter().any(|(u, _)| u == uuid))
    };
    meta.gpus.iter().find(|g| g.mig && used(&g.uuid)).map(|g| {
        format!(
            "GPU {} ({}) is in MIG mode, which cuda-checkpoint does not support; run the \
             job on a GPU without MIG (`nvidia-smi -i {} -mig 0`) to make it checkpointable",
            g.index, g.name, g.index
        )
    })
}

/// Whether a checkpoint whose GPU record is `meta` can be restored on a host whose
/// inventory is `host`.
pub fn compatible(meta: &GpuMeta, host: Result<&Inventory, &ToolFailure>) -> Result<(), GpuError> {
    let refuse = |reason: String, fix: &'static str| Err(GpuError::Incompatible { reason, fix });
    let host = match host {
        Ok(inv) if !inv.gpus.is_empty() => inv,
        found => {
            let why = match found {
                Err(e) => e.to_string(),
                Ok(_) => "nvidia-smi lists no GPU".into(),
            };
            return refuse(
                format!(
                    "it was made on a GPU host ({}, driver {}) but this host has no usable \
                     NVIDIA GPU ({why})",
                    models(meta),
                    meta.driver_version
                ),
                "restore it on a host with an NVIDIA GPU and its driver; `cedana check` \
                 shows what this host lacks",
            );
        }
    };
    if meta.gpus.is_empty() {
        // The dump host's inventory was not available: nothing more to compare.
        return Ok(());
    }
    let (was, now) = (branch(&meta.driver_version), branch(&host.driver_version));
    if was != now {
        return refuse(
            format!(
                "the driver branch differs: the checkpoint was made with r{was} ({}), this \
                 host runs r{now} ({})",
                meta.driver_version, host.driver_version
            ),
            "restore on a host with the same driver branch, or install that branch here",
        );
    }
    if meta.gpus.len() != host.gpus.len() {
        return refuse(
            format!(
                "the GPU count differs: the checkpoint was made on {} GPU(s), this host has {}",
                meta.gpus.len(),
                host.gpus.len()
            ),
            "restore on a host with the same number of GPUs",
        );
    }
    for (was, now) in meta.gpus.iter().zip(&host.gpus) {
        if was.name != now.name {
            return refuse(
                format!(
                    "the GPU model differs: GPU {} was {:?} at dump, this host's is {:?}",
                    was.index, was.name, now.name
                ),
                "restore on a host with the same GPU models",
            );
        }
        let need: u64 = meta
            .tasks
            .iter()
            .flat_map(|t| &t.memory_mib)
            .filter(|(uuid, _)| *uuid == was.uuid)
            .map(|(_, mib)| mib)
            .sum();
        if need > now.memory_free_mib {
            return refuse(
                format!(
                    "not enough free GPU memory: GPU {} ({}) has {} MiB free, the job needs {} MiB",
                    now.index, now.name, now.memory_free_mib, need
                ),
                "free GPU memory (stop other GPU jobs; see nvidia-smi) and try again",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::gpu::meta::{GpuInfo, GpuTask};

    fn gpu(index: u32, uuid: &str, name: &str, free: u64) -> GpuInfo {
        GpuInfo {
            index,
            uuid: uuid.into(),
            name: name.into(),
            memory_total_mib: 80_000,
            memory_free_mib: free,
            mig: false,
        }
    }

    fn meta() -> GpuMeta {
        GpuMeta {
            vendor: "nvidia".into(),
            backend: "cuda-checkpoint".into(),
            driver_version: "570.86.15".into(),
            gpus: vec![gpu(0, "GPU-a", "NVIDIA H100", 1000)],
            tasks: vec![GpuTask {
                pid: 10,
                devices: vec!["nvidia0".into()],
                memory_mib: vec![("GPU-a".into(), 2048)],
            }],
        }
    }

    fn host(driver: &str, gpus: Vec<GpuInfo>) -> Inventory {
        Inventory {
            driver_version: driver.into(),
            gpus,
        }
    }

    fn refusal(inv: Result<&Inventory, &ToolFailure>) -> String {
        compatible(&meta(), inv).expect_err("refused").to_string()
    }

    #[test]
    fn each_difference_is_refused_with_its_reason() {
        let same = host("570.124.06", vec![gpu(0, "GPU-z", "NVIDIA H100", 4096)]);
        compatible(&meta(), Ok(&same)).expect("same branch, model, enough memory");
        let none = ToolFailure::NotFound("nvidia-smi cannot be run".into());
        assert!(refusal(Err(&none)).contains("no usable NVIDIA GPU"));
        assert!(refusal(Ok(&host("", vec![]))).contains("no usable NVIDIA GPU"));
        let newer = host("580.65.06", vec![gpu(0, "GPU-a", "NVIDIA H100", 4096)]);
        assert!(refusal(Ok(&newer)).contains("r570"));
        let two = host(
            "570.1",
            vec![
                gpu(0, "GPU-a", "NVIDIA H100", 4096),
                gpu(1, "GPU-b", "NVIDIA H100", 1),
            ],
        );
        assert!(refusal(Ok(&two)).contains("GPU count"));
        let other = host("570.1", vec![gpu(0, "GPU-a", "NVIDIA A100", 4096)]);
        assert!(refusal(Ok(&other)).contains("GPU model"));
        let full = host("570.1", vec![gpu(0, "GPU-a", "NVIDIA H100", 100)]);
        let e = refusal(Ok(&full));
        assert!(e.contains("100 MiB free") && e.contains("2048 MiB"), "{e}");
    }

    #[test]
    fn mig_and_other_architectures_are_refused_at_dump() {
        assert_eq!(dump_refusal("x86_64", &meta()), None);
        assert!(dump_refusal("aarch64", &meta()).is_some_and(|r| r.contains("x86-64")));
        let mut mig = meta();
        mig.gpus[0].mig = true;
        assert!(dump_refusal("x86_64", &mig).is_some_and(|r| r.contains("MIG")));
        // MIG on a GPU the job does not use is no reason.
        mig.gpus.push(gpu(1, "GPU-b", "NVIDIA H100", 1));
        mig.gpus[0].mig = false;
        mig.gpus[1].mig = true;
        assert_eq!(dump_refusal("x86_64", &mig), None);
    }
}
