//! Checks made before anything is touched: at dump, setups the GPU path cannot handle;
//! at restore, the GPUs this host has against those the checkpoint recorded. Each
//! refusal says what is wrong and what to do.

use super::error::GpuError;
use super::inventory::{branch, Inventory};
use super::map::GpuMap;
use super::meta::{GpuInfo, GpuMeta};
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
/// inventory is `host`, its GPUs moved as `map` says (empty: onto the same UUIDs).
pub fn compatible(
    meta: &GpuMeta,
    host: Result<&Inventory, &ToolFailure>,
    map: &GpuMap,
) -> Result<(), GpuError> {
    let refuse = |reason: String, fix: &'static str| Err(GpuError::Incompatible { reason, fix });
    map.validate().or_else(|e| {
        refuse(
            e,
            "give --gpu-map as OLD=NEW,... with the UUIDs nvidia-smi -L prints",
        )
    })?;
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
    for (gpu, _) in &map.0 {
        if !meta.gpus.iter().any(|g| g.uuid.eq_ignore_ascii_case(gpu)) {
            return refuse(
                format!("--gpu-map names {gpu}, which the checkpoint has no record of (it has {})", uuids(&meta.gpus)),
                "map each GPU of the checkpoint (`cedana inspect` shows them) to one of this host's",
            );
        }
    }
    if !map.is_empty() && now.parse::<u32>().unwrap_or(0) < REMAP_BRANCH {
        return refuse(
            format!("--gpu-map needs driver r{REMAP_BRANCH} or newer to move GPU state onto other GPUs; this host runs r{now}"),
            "update the driver on both hosts, or restore onto the GPUs the job ran on",
        );
    }
    if map.is_empty() && meta.gpus.len() != host.gpus.len() {
        return refuse(
            format!(
                "the GPU count differs: the checkpoint was made on {} GPU(s), this host has {}",
                meta.gpus.len(),
                host.gpus.len()
            ),
            "restore on a host with the same number of GPUs, or choose this host's GPUs with \
             --gpu-map OLD=NEW,...",
        );
    }
    for was in &meta.gpus {
        let target = match map.is_empty() {
            true => was.uuid.as_str(),
            false => map
                .target(&was.uuid)
                .ok_or_else(|| GpuError::Incompatible {
                    reason: format!(
                        "--gpu-map does not say where GPU {} ({}) goes",
                        was.index, was.uuid
                    ),
                    fix: "map every GPU of the checkpoint: --gpu-map OLD=NEW,... (driver r580+)",
                })?,
        };
        let Some(now) = host
            .gpus
            .iter()
            .find(|g| g.uuid.eq_ignore_ascii_case(target))
        else {
            return refuse(
                match map.is_empty() {
                    true => format!(
                        "the GPUs differ: the checkpoint ran on {}, this host has {}",
                        uuids(&meta.gpus),
                        uuids(&host.gpus)
                    ),
                    false => format!(
                        "--gpu-map names {target}, which this host does not have (it has {})",
                        uuids(&host.gpus)
                    ),
                },
                "choose this host's GPUs with --gpu-map OLD=NEW,... (the UUIDs nvidia-smi -L \
                 prints; driver r580+)",
            );
        };
        if was.name != now.name {
            return refuse(
                format!(
                    "the GPU model differs: GPU {} was {:?} at dump, this host's {} is {:?}",
                    was.index, was.name, now.uuid, now.name
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

/// Whether the CRIU plugins the checkpoint's images name are installed here
/// (`installed(name)`), where CRIU will look for them (`dir`).
pub fn criu_plugins_present(
    meta: &GpuMeta,
    installed: impl Fn(&str) -> bool,
    dir: &std::path::Path,
) -> Result<(), GpuError> {
    match meta.criu_plugins.iter().find(|p| !installed(p)) {
        None => Ok(()),
        Some(plugin) => Err(GpuError::Incompatible {
            reason: format!(
                "CRIU's {plugin} was loaded when the job was dumped, so the images name it, and \
                 this host's CRIU has no {plugin}.so in {} (CRIU would stop with \"Missing \
                 required plugin\")",
                dir.display()
            ),
            fix: "install CRIU's cuda plugin here (CRIU's source: make -C plugins/cuda, then \
                  copy cuda_plugin.so into /usr/lib/criu or CRIU_LIBS_DIR), or restore on a \
                  host that has it",
        }),
    }
}

/// Refuses a `--gpu-map` that would not be followed: where the images name CRIU's
/// cuda_plugin, CRIU's restore runs it, and it puts the job back on the GPUs it was dumped
/// on (it takes no map) before cedana could.
pub fn map_supported(meta: &GpuMeta, map: &GpuMap) -> Result<(), GpuError> {
    let named = meta
        .criu_plugins
        .iter()
        .any(|p| p == super::criu_plugin::CUDA_PLUGIN);
    if map.is_empty() || !named {
        return Ok(());
    }
    Err(GpuError::Incompatible {
        reason: "--gpu-map was given, but the images name CRIU's cuda_plugin, which CRIU runs \
                 at restore and which puts the job back on the GPUs it was dumped on (it takes \
                 no map)"
            .into(),
        fix: "restore without --gpu-map onto the same GPUs, or dump the job again with \
              gpu.backend=cuda-checkpoint or driver-api on a host whose CRIU plugin dir has no \
              cuda_plugin.so",
    })
}

/// The first driver branch whose cuda-checkpoint takes `--device-map` (r580).
const REMAP_BRANCH: u32 = 580;

fn uuids(gpus: &[GpuInfo]) -> String {
    let all: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::gpu::meta::GpuTask;

    const A: &str = "GPU-aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
    const B: &str = "GPU-bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb";
    const Z: &str = "GPU-cccccccc-0000-0000-0000-000000000000";

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
            gpus: vec![gpu(0, A, "NVIDIA H100", 1000)],
            tasks: vec![GpuTask {
                pid: 10,
                devices: vec!["nvidia0".into()],
                memory_mib: vec![(A.into(), 2048)],
            }],
            criu_plugins: Vec::new(),
        }
    }

    fn host(driver: &str, gpus: Vec<GpuInfo>) -> Inventory {
        Inventory {
            driver_version: driver.into(),
            gpus,
        }
    }

    fn refusal(inv: Result<&Inventory, &ToolFailure>) -> String {
        refusal_with(inv, &GpuMap::default())
    }

    fn refusal_with(inv: Result<&Inventory, &ToolFailure>, map: &GpuMap) -> String {
        compatible(&meta(), inv, map)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_map_is_refused_where_criu_cuda_plugin_restores_the_job() {
        let map = GpuMap(vec![(A.into(), B.into())]);
        map_supported(&meta(), &map).expect("cedana follows the map");
        let named = GpuMeta {
            criu_plugins: vec!["cuda_plugin".into()],
            ..meta()
        };
        map_supported(&named, &GpuMap::default()).expect("no map, nothing to follow");
        let e = map_supported(&named, &map).expect_err("the plugin takes no map");
        assert!(e.to_string().contains("takes no map"), "{e}");
    }

    #[test]
    fn each_difference_is_refused_with_its_reason() {
        let same = host("570.124.06", vec![gpu(0, A, "NVIDIA H100", 4096)]);
        let none = GpuMap::default();
        compatible(&meta(), Ok(&same), &none).expect("same GPU, branch, enough memory");
        let none = ToolFailure::NotFound("nvidia-smi cannot be run".into());
        assert!(refusal(Err(&none)).contains("no usable NVIDIA GPU"));
        assert!(refusal(Ok(&host("", vec![]))).contains("no usable NVIDIA GPU"));
        let newer = host("580.65.06", vec![gpu(0, A, "NVIDIA H100", 4096)]);
        assert!(refusal(Ok(&newer)).contains("r570"));
        let two = host(
            "570.1",
            vec![gpu(0, A, "NVIDIA H100", 4096), gpu(1, B, "NVIDIA H100", 1)],
        );
        assert!(refusal(Ok(&two)).contains("GPU count"));
        let other = host("570.1", vec![gpu(0, A, "NVIDIA A100", 4096)]);
        assert!(refusal(Ok(&other)).contains("GPU model"));
        let full = host("570.1", vec![gpu(0, A, "NVIDIA H100", 100)]);
        let e = refusal(Ok(&full));
        assert!(e.contains("100 MiB free") && e.contains("2048 MiB"), "{e}");
    }

    #[test]
    fn other_gpus_need_a_complete_map_and_driver_r580() {
        let other = |driver: &str| host(driver, vec![gpu(0, Z, "NVIDIA H100", 4096)]);
        let e = refusal(Ok(&other("570.1")));
        assert!(
            e.contains("the GPUs differ") && e.contains("--gpu-map"),
            "{e}"
        );
        let to_z = GpuMap(vec![(A.into(), Z.into())]);
        let e = refusal_with(Ok(&other("570.1")), &to_z);
        assert!(e.contains("needs driver r580"), "{e}");
        let mut m580 = meta();
        m580.driver_version = "580.65.06".into();
        compatible(&m580, Ok(&other("580.82.07")), &to_z).expect("mapped onto Z");
        let e = compatible(
            &m580,
            Ok(&other("580.1")),
            &GpuMap(vec![(A.into(), B.into())]),
        )
        .expect_err("B is not here")
        .to_string();
        assert!(e.contains("which this host does not have"), "{e}");
        let e = compatible(
            &m580,
            Ok(&other("580.1")),
            &GpuMap(vec![(B.into(), Z.into())]),
        )
        .expect_err("B was not in the checkpoint")
        .to_string();
        assert!(e.contains("has no record of"), "{e}");
        // Mapped onto one GPU of a larger host: the count no longer has to match.
        let big = host(
            "580.1",
            vec![
                gpu(0, B, "NVIDIA H100", 4096),
                gpu(1, Z, "NVIDIA H100", 4096),
            ],
        );
        compatible(&m580, Ok(&big), &to_z).expect("onto GPU 1 of two");
        let e = compatible(&m580, Ok(&big), &GpuMap(vec![(A.into(), "GPU-1".into())]))
            .expect_err("not a UUID")
            .to_string();
        assert!(e.contains("not a GPU UUID"), "{e}");
    }

    #[test]
    fn a_criu_plugin_the_images_name_must_be_installed() {
        let dir = std::path::Path::new("/usr/lib/criu");
        criu_plugins_present(&meta(), |_| false, dir).expect("no plugin recorded");
        let mut with = meta();
        with.criu_plugins = vec!["cuda_plugin".into()];
        criu_plugins_present(&with, |p| p == "cuda_plugin", dir).expect("installed");
        let e = criu_plugins_present(&with, |_| false, dir)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("no cuda_plugin.so in /usr/lib/criu"), "{e}");
        assert!(e.contains("install CRIU's cuda plugin"), "{e}");
    }

    #[test]
    fn mig_and_other_architectures_are_refused_at_dump() {
        assert_eq!(dump_refusal("x86_64", &meta()), None);
        assert!(dump_refusal("aarch64", &meta()).is_some_and(|r| r.contains("x86-64")));
        let mut mig = meta();
        mig.gpus[0].mig = true;
        assert!(dump_refusal("x86_64", &mig).is_some_and(|r| r.contains("MIG")));
        // MIG on a GPU the job does not use is no reason.
        mig.gpus.push(gpu(1, B, "NVIDIA H100", 1));
        mig.gpus[0].mig = false;
        mig.gpus[1].mig = true;
        assert_eq!(dump_refusal("x86_64", &mig), None);
    }
}
