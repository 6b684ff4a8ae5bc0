//! The `gpu` section of metadata.json: which tasks used which GPU devices, the backend
//! that moved their state, and the GPUs and driver they ran on (checked at restore).

use serde::{Deserialize, Serialize};

use crate::image::metadata::MetadataSection;

/// One GPU of the dump host, as its inventory reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuInfo {
    /// Index on its host.
    pub index: u32,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Model (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
    /// Free memory, MiB (at the time of the query).
    pub memory_free_mib: u64,
    /// Whether MIG (multi-instance GPU) is enabled on it.
    pub mig: bool,
}

/// A task of the dumped tree that uses a GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuTask {
    /// Its PID.
    pub pid: i32,
    /// Device nodes it mapped or held open (`nvidia0`, `nvidiactl`, `nvidia-uvm`, `kfd`).
    pub devices: Vec<String>,
    /// GPU memory it held, MiB per GPU UUID (from the driver's list of compute apps).
    pub memory_mib: Vec<(String, u64)>,
}

/// What a GPU checkpoint records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuMeta {
    /// `nvidia` or `amd`.
    pub vendor: String,
    /// Who moved the GPU state into host memory: `cuda-checkpoint`, `driver-api` or
    /// `criu-cuda-plugin`.
    pub backend: String,
    /// Driver version (`580.65.06`).
    pub driver_version: String,
    /// The host's GPUs.
    pub gpus: Vec<GpuInfo>,
    /// The tasks that used them.
    pub tasks: Vec<GpuTask>,
    /// CRIU plugins of the GPU path that CRIU loaded for the dump (`cuda_plugin`): the
    /// images name them, and CRIU restores them only where they are installed.
    pub criu_plugins: Vec<String>,
}

impl MetadataSection for GpuMeta {
    const KEY: &'static str = "gpu";
}
