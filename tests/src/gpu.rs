//! A fake GPU host for the GPU tests (`tests/tests/gpu*.rs`), with NO GPU: device files
//! that are plain files in a temp dir (`gpu.device_dir`), and STAND-INS for NVIDIA's
//! tools built from this crate: `cedana-test-cuda-checkpoint` (per-PID state in a file,
//! every call recorded) and `cedana-test-nvidia-smi` (GPUs from a file). The real CRIU
//! runs, with its real cuda_plugin where a test asks for it; only the GPU is stood in for.

use std::fs;
use std::path::{Path, PathBuf};

use crate::*;

/// The stand-in nvidia-smi's GPU list: a file of its answers, or no GPU when unset.
const GPUS_VAR: &str = "CEDANA_TEST_NVIDIA_SMI_GPUS";

/// The UUID of the stand-in host's GPU ([`H100`]).
pub const GPU_A: &str = "GPU-aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
/// Other GPUs' UUIDs.
pub const GPU_B: &str = "GPU-bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb";
/// Another.
pub const GPU_C: &str = "GPU-cccccccc-cccc-cccc-cccc-cccccccccccc";

/// One H100 ([`GPU_A`]), driver r570, MIG off: the stand-in nvidia-smi's answer.
pub const H100: &str = "0, GPU-aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa, NVIDIA H100 80GB HBM3, 81559, 80000, 570.86.15, Disabled\n";

/// Where scripts/install-deps.sh puts CRIU's real cuda_plugin.
const REAL_CRIU_CUDA_PLUGIN_DIR: &str = "/usr/local/lib/cedana/criu-cuda-plugin";

/// The environment of [`GpuHost::real_criu_cuda_plugin`].
pub struct CriuCudaPlugin {
    libs: PathBuf,
    fault: PathBuf,
    path: PathBuf,
}

impl CriuCudaPlugin {
    /// As variables for [`GpuHost::dump_with`] and [`GpuHost::restore_with`].
    pub fn vars(&self) -> [(&str, &Path); 3] {
        [
            ("CRIU_LIBS_DIR", &self.libs),
            ("CRIU_FAULT", &self.fault),
            ("PATH", &self.path),
        ]
    }
}

/// A fake GPU host: device files, the stand-ins' state, and one record of GPU and CRIU
/// calls in the order they happened.
pub struct GpuHost {
    /// The cedana setup.
    pub env: Env,
    /// CRIU, recorded; the stand-in cuda-checkpoint records into the same file.
    pub criu: CriuRecorder,
    dev: PathBuf,
    state: PathBuf,
}

/// A GPU job on a fresh fake host with one H100: what most GPU tests start from.
pub struct GpuJob {
    /// The fake host.
    pub host: GpuHost,
    /// The stand-in nvidia-smi's GPU list.
    pub gpus: PathBuf,
    /// The job's log.
    pub log: PathBuf,
    /// The job: a counter holding the stand-in device files open.
    pub w: Workload,
}

impl GpuJob {
    /// Starts it; returns once the job counts.
    pub fn start() -> GpuJob {
        let host = GpuHost::new();
        let gpus = host.file("gpus", H100);
        let log = host.env.path("job.log");
        let w = host.start_job(&log);
        GpuJob { host, gpus, log, w }
    }
}

impl GpuHost {
    /// A fresh fake host: every `cedana` run of its setup (the daemon's too) uses the
    /// stand-in tools and records into one file.
    pub fn new() -> GpuHost {
        Self::with_device_dir(None)
    }

    /// A fake host whose GPU tasks are containers: their device nodes are looked for at
    /// `dir` as the container sees it (`/dev` on a real host; the test puts stand-in
    /// files there in the container's rootfs).
    pub fn for_containers(dir: &Path) -> GpuHost {
        Self::with_device_dir(Some(dir))
    }

    fn with_device_dir(device_dir: Option<&Path>) -> GpuHost {
        let scratch = Env::new();
        let criu = CriuRecorder::new(&scratch.path("criu"));
        let dev = scratch.path("dev");
        fs::create_dir_all(&dev).expect("dev dir");
        for name in ["nvidia0", "nvidiactl", "nvidia-uvm"] {
            fs::write(dev.join(name), "").expect("stand-in device file");
        }
        let state = scratch.path("cuda-state");
        let apps = scratch.path("apps");
        let set = |k: &str, v: &Path| format!("{k}={}", v.display());
        let var = |k: &str, v: &Path| (k.to_string(), v.display().to_string());
        let env = scratch
            .with_settings(vec![
                criu.setting(),
                set("gpu.device_dir", device_dir.unwrap_or(&dev)),
                set("gpu.cuda_checkpoint", &bin("cedana-test-cuda-checkpoint")),
                set("gpu.nvidia_smi", &bin("cedana-test-nvidia-smi")),
            ])
            .with_vars(vec![
                var("CEDANA_TEST_CUDA_STATE_DIR", &state),
                var("CEDANA_TEST_CUDA_LOG", &criu.record),
                var("CEDANA_TEST_NVIDIA_SMI_APPS", &apps),
            ]);
        GpuHost {
            env,
            criu,
            dev,
            state,
        }
    }

    /// Starts the daemon of this host's setup, whose GPUs are those in `gpus`.
    pub fn start_daemon(&mut self, gpus: &Path) {
        self.env
            .vars
            .push((GPUS_VAR.into(), gpus.display().to_string()));
        self.env.start_daemon();
    }

    /// The workload's arguments for a counter holding the stand-in device files open.
    pub fn job_args(&self) -> Vec<String> {
        let devices = ["nvidia0", "nvidiactl", "nvidia-uvm"]
            .iter()
            .map(|n| self.dev.join(n).to_string_lossy().into_owned());
        std::iter::once("gpu-counter".to_string())
            .chain(devices)
            .collect()
    }

    /// The counter, holding the stand-in device files open.
    pub fn start_job(&self, log: &Path) -> Workload {
        let args = self.job_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let w = Workload::start(log, &args);
        wait_count_above(log, 3);
        w
    }

    /// Writes the stand-in nvidia-smi's answer for `name` and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.env.path(name);
        fs::write(&p, text).expect("stand-in answer");
        p
    }

    /// `cedana ARGS` in-process, the GPU tools being the stand-ins and the host's GPUs
    /// those in `gpus` (none when `None`); `fail` makes that stand-in action fail.
    pub fn cedana(&self, args: &[&str], gpus: Option<&Path>, fail: Option<&str>) -> Run {
        self.cedana_with(args, gpus, fail, &[])
    }

    /// [`GpuHost::cedana`] with more environment variables.
    pub fn cedana_with(
        &self,
        args: &[&str],
        gpus: Option<&Path>,
        fail: Option<&str>,
        vars: &[(&str, &Path)],
    ) -> Run {
        let mut cmd = self.env.cmd();
        cmd.envs(vars.iter().copied());
        cmd.args(args)
            .env_remove(GPUS_VAR)
            .env_remove("CEDANA_TEST_CUDA_FAIL");
        if let Some(g) = gpus {
            cmd.env(GPUS_VAR, g);
        }
        if let Some(a) = fail {
            cmd.env("CEDANA_TEST_CUDA_FAIL", a);
        }
        Run::from_output(cmd.output().expect("run cedana"))
    }

    /// The environment under which CRIU runs its REAL `cuda_plugin` (CRIU 4.1.1's, built
    /// by scripts/install-deps.sh out of CRIU's plugin dir) on this GPU-less host: the
    /// plugin's dir as `CRIU_LIBS_DIR`; `CRIU_FAULT=138` (CRIU's fault injection
    /// `FI_PLUGIN_CUDA_FORCE_ENABLE`: the plugin otherwise disables itself where
    /// /proc/driver/nvidia/gpus is missing); and the stand-in cuda-checkpoint on `PATH`
    /// as `cuda-checkpoint`, the name the plugin runs.
    pub fn real_criu_cuda_plugin(&self) -> CriuCudaPlugin {
        let libs = PathBuf::from(REAL_CRIU_CUDA_PLUGIN_DIR);
        assert!(
            libs.join("cuda_plugin.so").is_file(),
            "{REAL_CRIU_CUDA_PLUGIN_DIR}/cuda_plugin.so missing: run `make deps`"
        );
        let tools = self.env.path("plugin-path");
        fs::create_dir_all(&tools).expect("tools dir");
        let link = tools.join("cuda-checkpoint");
        if !link.exists() {
            std::os::unix::fs::symlink(bin("cedana-test-cuda-checkpoint"), &link)
                .expect("cuda-checkpoint link");
        }
        let path = format!(
            "{}:{}",
            tools.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        CriuCudaPlugin {
            libs,
            fault: PathBuf::from("138"),
            path: PathBuf::from(path),
        }
    }

    /// `dump process PID --no-server` into the checkpoint dir (unless `extra` has `--dir`).
    pub fn dump(&self, pid: i32, extra: &[&str], gpus: Option<&Path>, fail: Option<&str>) -> Run {
        self.dump_with(pid, extra, gpus, fail, &[])
    }

    /// [`GpuHost::dump`] with more environment variables.
    pub fn dump_with(
        &self,
        pid: i32,
        extra: &[&str],
        gpus: Option<&Path>,
        fail: Option<&str>,
        vars: &[(&str, &Path)],
    ) -> Run {
        let (pid, dir) = (pid.to_string(), self.env.checkpoints());
        let dir = dir.to_string_lossy();
        let mut args = vec!["--json", "dump", "process", &pid, "--no-server"];
        if !extra.contains(&"--dir") {
            args.extend(["--dir", &dir]);
        }
        args.extend_from_slice(extra);
        self.cedana_with(&args, gpus, fail, vars)
    }

    /// `restore process --path PATH --no-server`; `fail` makes that stand-in action fail.
    pub fn restore(&self, path: &str, gpus: Option<&Path>, fail: Option<&str>) -> Run {
        self.restore_with(path, &[], gpus, fail, &[])
    }

    /// [`GpuHost::restore`] with `extra` arguments and more environment variables.
    pub fn restore_with(
        &self,
        path: &str,
        extra: &[&str],
        gpus: Option<&Path>,
        fail: Option<&str>,
        vars: &[(&str, &Path)],
    ) -> Run {
        let mut args = vec![
            "--json",
            "restore",
            "process",
            "--path",
            path,
            "--no-server",
        ];
        args.extend_from_slice(extra);
        self.cedana_with(&args, gpus, fail, vars)
    }

    /// The GPU steps and CRIU runs recorded since the last `clear`, as `lock 42`, ...,
    /// `criu` (CRIU's RPC sessions, consecutive ones as one; its version checks left out).
    pub fn steps(&self) -> Vec<String> {
        let mut steps: Vec<String> = self
            .criu
            .calls()
            .iter()
            .filter_map(|c| match c.strip_prefix("cuda-checkpoint ") {
                Some(s) if !s.starts_with("get-") => Some(s.to_string()),
                Some(_) => None,
                None => c.starts_with("swrk").then(|| "criu".to_string()),
            })
            .collect();
        // One CRIU step may be several RPC sessions (a feature check, then the dump).
        steps.dedup_by(|a, b| a == "criu" && b == "criu");
        steps
    }

    /// Asserts that job `w` runs on on its GPU: its GPU state `running`, alive, counting
    /// on in `log`.
    pub fn assert_runs_on(&self, w: &Workload, log: &Path) {
        assert_eq!(self.gpu_state(w.pid), "running");
        assert!(w.alive());
        wait_count_above(log, last_count(log).expect("count") + 2);
    }

    /// The stand-in's GPU state of `pid` (a process in the host's PID namespace).
    pub fn gpu_state(&self, pid: i32) -> String {
        fs::read_to_string(self.state.join(pid.to_string())).unwrap_or_else(|_| "running".into())
    }
}

/// The steps of a dump of GPU task `pid`, as [`GpuHost::steps`] lists them: lock,
/// checkpoint, then CRIU.
pub fn dump_steps(pid: i32) -> Vec<String> {
    vec![
        format!("lock {pid}"),
        format!("checkpoint {pid}"),
        "criu".into(),
    ]
}

/// The steps of a restore of GPU task `pid`: CRIU, then restore and unlock.
pub fn restore_steps(pid: i32) -> Vec<String> {
    vec![
        "criu".into(),
        format!("restore {pid}"),
        format!("unlock {pid}"),
    ]
}

/// Asserts that the counter in `log` went on from `at_dump` after a restore: the next
/// number is `at_dump + 1` (a restarted counter would print 0).
pub fn assert_counts_on(log: &Path, at_dump: u64) {
    assert_eq!(
        next_after(log, at_dump),
        at_dump + 1,
        "the restored counter did not go on from {at_dump}"
    );
}

/// The checkpoint path of a `--json dump` answer.
pub fn path_of(run: &Run) -> String {
    run.json()["path"].as_str().expect("path").to_string()
}

impl Default for GpuHost {
    fn default() -> Self {
        Self::new()
    }
}
