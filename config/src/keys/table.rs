//! Every configuration key, one entry each: its name, env variable, default, help and
//! where its value lives.

use super::LOG_LEVELS;
use super::{Field, Key, KeyInfo};
use crate::{COMPRESSIONS, GPU_BACKENDS};

pub(crate) static KEYS: &[Key] = &[
    Key {
        info: KeyInfo {
            key: "address",
            env: "CEDANA_ADDRESS",
            default: "/run/cedana.sock",
            help: "Unix socket path the daemon listens on",
        },
        field: Field::AbsPath(|c| &c.address, |c| &mut c.address),
    },
    Key {
        info: KeyInfo {
            key: "socket_group",
            env: "CEDANA_SOCKET_GROUP",
            default: "",
            help: "Group owning the socket (mode 0660); unset or empty means mode 0600",
        },
        field: Field::OptGroup(|c| &c.socket_group, |c| &mut c.socket_group),
    },
    Key {
        info: KeyInfo {
            key: "db_path",
            env: "CEDANA_DB_PATH",
            default: "/var/lib/cedana/cedana.db",
            help: "Path of the daemon's SQLite database",
        },
        field: Field::AbsPath(|c| &c.db_path, |c| &mut c.db_path),
    },
    Key {
        info: KeyInfo {
            key: "log_level",
            env: "CEDANA_LOG_LEVEL",
            default: "info",
            help: "Log level: error, warn, info, debug or trace",
        },
        field: Field::Choice(LOG_LEVELS, |c| &c.log_level, |c| &mut c.log_level),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.dir",
            env: "CEDANA_CHECKPOINT_DIR",
            default: "/var/lib/cedana/checkpoints",
            help: "Where checkpoints are stored: an absolute directory or s3://BUCKET/PREFIX",
        },
        field: Field::Location(|c| &c.checkpoint.dir, |c| &mut c.checkpoint.dir),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.compression",
            env: "CEDANA_CHECKPOINT_COMPRESSION",
            default: "zstd",
            help: "Checkpoint compression: none, tar, gzip, lz4 or zstd",
        },
        field: Field::Choice(
            COMPRESSIONS,
            |c| &c.checkpoint.compression,
            |c| &mut c.checkpoint.compression,
        ),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.leave_running",
            env: "CEDANA_CHECKPOINT_LEAVE_RUNNING",
            default: "false",
            help: "Leave the process running after checkpointing",
        },
        field: Field::Bool(
            |c| &c.checkpoint.leave_running,
            |c| &mut c.checkpoint.leave_running,
        ),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.staging_dir",
            env: "CEDANA_CHECKPOINT_STAGING_DIR",
            default: "/dev/shm",
            help: "Where CRIU's images wait to be packed into an archive, when they fit in its free space and in half the available memory (a memory-backed dir spares the disk a write of every page); else they wait beside the checkpoint",
        },
        field: Field::AbsPath(
            |c| &c.checkpoint.staging_dir,
            |c| &mut c.checkpoint.staging_dir,
        ),
    },
    Key {
        info: KeyInfo {
            key: "criu.binary_path",
            env: "CEDANA_CRIU_BINARY_PATH",
            default: "criu",
            help: "CRIU binary: an absolute path or a bare name looked up in PATH",
        },
        field: Field::Command(|c| &c.criu.binary_path, |c| &mut c.criu.binary_path),
    },
    Key {
        info: KeyInfo {
            key: "criu.pid_wait_timeout_ms",
            env: "CEDANA_CRIU_PID_WAIT_TIMEOUT_MS",
            default: "5000",
            help: "Milliseconds to wait for a restored process's pid",
        },
        field: Field::PositiveU64(
            |c| &c.criu.pid_wait_timeout_ms,
            |c| &mut c.criu.pid_wait_timeout_ms,
        ),
    },
    Key {
        info: KeyInfo {
            key: "criu.network_lock",
            env: "CEDANA_CRIU_NETWORK_LOCK",
            default: "iptables",
            help: "How CRIU locks a tree's TCP connections while it dumps and restores: iptables (needs iptables-restore), nftables (CRIU's libnftables; no tools needed) or skip",
        },
        field: Field::Choice(
            crate::NETWORK_LOCKS,
            |c| &c.criu.network_lock,
            |c| &mut c.criu.network_lock,
        ),
    },
    Key {
        info: KeyInfo {
            key: "jobs.log_dir",
            env: "CEDANA_JOBS_LOG_DIR",
            default: "/var/lib/cedana/jobs",
            help: "Directory holding per-job log files",
        },
        field: Field::AbsPath(|c| &c.jobs.log_dir, |c| &mut c.jobs.log_dir),
    },
    Key {
        info: KeyInfo {
            key: "runc.binary_path",
            env: "CEDANA_RUNC_BINARY_PATH",
            default: "runc",
            help:
                "OCI runtime wrapped by cedana-runc and driven by the runc plugin (runc, crun, ...)",
        },
        field: Field::Command(|c| &c.runc.binary_path, |c| &mut c.runc.binary_path),
    },
    Key {
        info: KeyInfo {
            key: "s3.endpoint",
            env: "CEDANA_S3_ENDPOINT",
            default: "",
            help: "S3-compatible server for s3:// checkpoints (over AWS_ENDPOINT_URL); \
                   credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        },
        field: Field::OptText(|c| &c.s3.endpoint, |c| &mut c.s3.endpoint),
    },
    Key {
        info: KeyInfo {
            key: "s3.region",
            env: "CEDANA_S3_REGION",
            default: "",
            help: "Region of s3:// checkpoints (over AWS_REGION)",
        },
        field: Field::OptText(|c| &c.s3.region, |c| &mut c.s3.region),
    },
    Key {
        info: KeyInfo {
            key: "gpu.device_dir",
            env: "CEDANA_GPU_DEVICE_DIR",
            default: "/dev",
            help: "Directory of the GPU device nodes (nvidia0, nvidiactl, nvidia-uvm, kfd) a GPU job holds",
        },
        field: Field::AbsPath(|c| &c.gpu.device_dir, |c| &mut c.gpu.device_dir),
    },
    Key {
        info: KeyInfo {
            key: "gpu.cuda_checkpoint",
            env: "CEDANA_GPU_CUDA_CHECKPOINT",
            default: "cuda-checkpoint",
            help: "NVIDIA's cuda-checkpoint tool (r555+), which moves a process's GPU state into host memory",
        },
        field: Field::Command(|c| &c.gpu.cuda_checkpoint, |c| &mut c.gpu.cuda_checkpoint),
    },
    Key {
        info: KeyInfo {
            key: "gpu.nvidia_smi",
            env: "CEDANA_GPU_NVIDIA_SMI",
            default: "nvidia-smi",
            help: "nvidia-smi, asked for the driver version and each GPU's model, UUID and memory",
        },
        field: Field::Command(|c| &c.gpu.nvidia_smi, |c| &mut c.gpu.nvidia_smi),
    },
    Key {
        info: KeyInfo {
            key: "gpu.lock_timeout_ms",
            env: "CEDANA_GPU_LOCK_TIMEOUT_MS",
            default: "10000",
            help: "Milliseconds a GPU lock waits for the job's running CUDA work before the dump is refused",
        },
        field: Field::PositiveU64(|c| &c.gpu.lock_timeout_ms, |c| &mut c.gpu.lock_timeout_ms),
    },
    Key {
        info: KeyInfo {
            key: "gpu.backend",
            env: "CEDANA_GPU_BACKEND",
            default: "auto",
            help: "Who moves a GPU job's state: criu-plugin (CRIU's cuda_plugin, driven by CRIU), cuda-checkpoint, driver-api (cedana-gpu-helper), or auto: criu-plugin where CRIU has it and cuda-checkpoint is on PATH, else cuda-checkpoint, else driver-api",
        },
        field: Field::Choice(GPU_BACKENDS, |c| &c.gpu.backend, |c| &mut c.gpu.backend),
    },
    Key {
        info: KeyInfo {
            key: "kata.vm_root",
            env: "CEDANA_KATA_VM_ROOT",
            default: "/run/vc",
            help: "kata's runtime state root, where a sandbox's VM socket is found (vm/SANDBOX/clh.sock, firecracker/SANDBOX/root/kata.hvsock)",
        },
        field: Field::AbsPath(|c| &c.kata.vm_root, |c| &mut c.kata.vm_root),
    },
];
