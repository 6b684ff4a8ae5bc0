//! GPU checkpoint/restore against real CRIU, with NO GPU: the workload is a CPU counter
//! that holds open files named like NVIDIA's device nodes (`nvidia0`, `nvidiactl`,
//! `nvidia-uvm`) in a directory the test makes `gpu.device_dir`, so cedana takes it for
//! a GPU user. NVIDIA's tools are STAND-INS from this crate: `cedana-test-cuda-checkpoint`
//! (per-PID state in a file, every call recorded) and `cedana-test-nvidia-smi` (GPUs
//! from a file). What is asserted is what cedana does with them: the order of GPU and
//! CRIU steps, the rollback, and the restore-time refusals.

use std::fs;
use std::path::{Path, PathBuf};

use cedana_e2e::*;

const H100: &str = "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559, 80000, 570.86.15, Disabled\n";

/// A fake GPU host: device files, the stand-ins' state, and one record of GPU and CRIU
/// calls in the order they happened.
struct GpuHost {
    env: Env,
    criu: CriuRecorder,
    dev: PathBuf,
    state: PathBuf,
}

impl GpuHost {
    fn new() -> GpuHost {
        let env = Env::new();
        let criu = CriuRecorder::new(&env.path("criu"));
        let dev = env.path("dev");
        fs::create_dir_all(&dev).expect("dev dir");
        for name in ["nvidia0", "nvidiactl", "nvidia-uvm"] {
            fs::write(dev.join(name), "").expect("stand-in device file");
        }
        let state = env.path("cuda-state");
        GpuHost {
            env,
            criu,
            dev,
            state,
        }
    }

    /// The counter, holding the stand-in device files open.
    fn start_job(&self, log: &Path) -> Workload {
        let paths: Vec<String> = ["nvidia0", "nvidiactl", "nvidia-uvm"]
            .iter()
            .map(|n| self.dev.join(n).to_string_lossy().into_owned())
            .collect();
        let mut args = vec!["gpu-counter"];
        args.extend(paths.iter().map(String::as_str));
        let w = Workload::start(log, &args);
        wait_count_above(log, 3);
        w
    }

    /// Writes the stand-in nvidia-smi's answer for `name` and returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.env.path(name);
        fs::write(&p, text).expect("stand-in answer");
        p
    }

    /// `cedana ARGS` in-process, the GPU tools being the stand-ins and the host's GPUs
    /// those in `gpus` (none when `None`); `fail` makes that stand-in action fail.
    fn cedana(&self, args: &[&str], gpus: Option<&Path>, fail: Option<&str>) -> Run {
        let set = |k: &str, v: PathBuf| ["--set".to_string(), format!("{k}={}", v.display())];
        let mut cmd = self.env.cmd();
        cmd.args(["--set".to_string(), self.criu.setting()])
            .args(set("gpu.device_dir", self.dev.clone()))
            .args(set(
                "gpu.cuda_checkpoint",
                bin("cedana-test-cuda-checkpoint"),
            ))
            .args(set("gpu.nvidia_smi", bin("cedana-test-nvidia-smi")))
            .args(args)
            .env("CEDANA_TEST_CUDA_STATE_DIR", &self.state)
            .env("CEDANA_TEST_CUDA_LOG", &self.criu.record)
            .env("CEDANA_TEST_NVIDIA_SMI_APPS", self.env.path("apps"))
            .env_remove("CEDANA_TEST_NVIDIA_SMI_GPUS")
            .env_remove("CEDANA_TEST_CUDA_FAIL");
        if let Some(g) = gpus {
            cmd.env("CEDANA_TEST_NVIDIA_SMI_GPUS", g);
        }
        if let Some(a) = fail {
            cmd.env("CEDANA_TEST_CUDA_FAIL", a);
        }
        Run::from_output(cmd.output().expect("run cedana"))
    }

    fn dump(&self, pid: i32, extra: &[&str], gpus: Option<&Path>, fail: Option<&str>) -> Run {
        let (pid, dir) = (pid.to_string(), self.env.checkpoints());
        let dir = dir.to_string_lossy();
        let mut args = vec!["--json", "dump", "process", &pid, "--no-server"];
        if !extra.contains(&"--dir") {
            args.extend(["--dir", &dir]);
        }
        args.extend_from_slice(extra);
        self.cedana(&args, gpus, fail)
    }

    fn restore(&self, path: &str, gpus: Option<&Path>) -> Run {
        let args = [
            "--json",
            "restore",
            "process",
            "--path",
            path,
            "--no-server",
        ];
        self.cedana(&args, gpus, None)
    }

    /// The GPU steps and CRIU runs recorded since the last `clear`, as `lock 42`, ...,
    /// `criu` (CRIU's RPC sessions, consecutive ones as one; its version checks left out).
    fn steps(&self) -> Vec<String> {
        let mut steps: Vec<String> = self
            .criu
            .calls()
            .iter()
            .filter_map(|c| match c.strip_prefix("cuda-checkpoint ") {
                Some(s) if !s.starts_with("get-state") => Some(s.to_string()),
                Some(_) => None,
                None => c.starts_with("swrk").then(|| "criu".to_string()),
            })
            .collect();
        // One CRIU step may be several RPC sessions (a feature check, then the dump).
        steps.dedup_by(|a, b| a == "criu" && b == "criu");
        steps
    }

    /// The stand-in's GPU state of `pid`.
    fn gpu_state(&self, pid: i32) -> String {
        fs::read_to_string(self.state.join(pid.to_string())).unwrap_or_else(|_| "running".into())
    }
}

fn path_of(run: &Run) -> String {
    run.json()["path"].as_str().expect("path").to_string()
}

#[test]
fn a_gpu_job_is_checkpointed_and_restored_in_order_and_counts_on() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let log = host.env.path("job.log");
    let mut w = host.start_job(&log);
    let pid = w.pid;
    host.file("apps", &format!("{pid}, GPU-aaaa, 2048\n"));
    let path = path_of(
        &host
            .dump(pid, &["--compression", "none"], Some(&gpus), None)
            .ok(),
    );
    w.reap();
    assert_eq!(
        host.steps(),
        [
            format!("lock {pid}"),
            format!("checkpoint {pid}"),
            "criu".into()
        ]
    );
    assert_eq!(host.gpu_state(pid), "checkpointed");
    let md: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(&path).join("metadata.json")).expect("md"),
    )
    .expect("json");
    let gpu = &md["gpu"];
    assert_eq!(gpu["backend"], "cuda-checkpoint", "{gpu}");
    assert_eq!(gpu["driver_version"], "570.86.15", "{gpu}");
    assert_eq!(gpu["gpus"][0]["name"], "NVIDIA H100 80GB HBM3", "{gpu}");
    assert_eq!(gpu["tasks"][0]["pid"], pid, "{gpu}");
    assert_eq!(
        gpu["tasks"][0]["devices"],
        serde_json::json!(["nvidia-uvm", "nvidia0", "nvidiactl"])
    );
    let at_dump = last_count(&log).expect("count at dump");
    host.criu.clear();
    let restored = host.restore(&path, Some(&gpus)).ok();
    let _guard = KillOnDrop(restored.json()["pid"].as_i64().expect("pid") as i32);
    assert_eq!(
        host.steps(),
        [
            "criu".to_string(),
            format!("restore {pid}"),
            format!("unlock {pid}")
        ]
    );
    assert_eq!(host.gpu_state(pid), "running");
    assert_eq!(
        next_after(&log, at_dump),
        at_dump + 1,
        "the restored counter restarted"
    );
}

#[test]
fn a_failed_gpu_checkpoint_leaves_the_job_running_on_its_gpu() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let log = host.env.path("job.log");
    let w = host.start_job(&log);
    let pid = w.pid;
    host.dump(pid, &[], Some(&gpus), Some("checkpoint"))
        .fails_with(&format!("GPU checkpoint of process {pid} failed"));
    assert_eq!(
        host.steps(),
        [
            format!("lock {pid}"),
            format!("checkpoint {pid}"),
            format!("unlock {pid}")
        ],
        "CRIU must not run"
    );
    assert_eq!(host.gpu_state(pid), "running");
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
    assert!(
        dir_names(&host.env.checkpoints()).is_empty(),
        "no checkpoint left"
    );
}

#[test]
fn a_failed_criu_dump_puts_the_job_back_on_its_gpu() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let log = host.env.path("job.log");
    let w = host.start_job(&log);
    let pid = w.pid;
    // A disk too small for the images: CRIU fails after the GPU state was checkpointed.
    let full = Tmpfs::mount(&host.env.path("full"), 1);
    // Filled but for a few pages, so only CRIU's writing can hit the limit.
    fs::write(full.path.join("filler"), vec![1u8; (1 << 20) - (16 << 10)]).expect("fill");
    let dir = full.path.to_string_lossy().to_string();
    let args = ["--dir", &dir, "--compression", "none"];
    host.dump(pid, &args, Some(&gpus), None).fails_with("space");
    assert_eq!(
        host.steps(),
        [
            format!("lock {pid}"),
            format!("checkpoint {pid}"),
            "criu".into(),
            format!("restore {pid}"),
            format!("unlock {pid}")
        ]
    );
    assert_eq!(host.gpu_state(pid), "running");
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
}

#[test]
fn leave_running_puts_the_job_back_on_its_gpu() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let log = host.env.path("job.log");
    let w = host.start_job(&log);
    let pid = w.pid;
    host.dump(pid, &["--leave-running"], Some(&gpus), None).ok();
    assert_eq!(
        host.steps(),
        [
            format!("lock {pid}"),
            format!("checkpoint {pid}"),
            "criu".into(),
            format!("restore {pid}"),
            format!("unlock {pid}")
        ]
    );
    assert_eq!(host.gpu_state(pid), "running");
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
}

#[test]
fn a_gpu_checkpoint_is_refused_where_the_gpus_do_not_fit() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let log = host.env.path("job.log");
    let mut w = host.start_job(&log);
    let pid = w.pid;
    host.file("apps", &format!("{pid}, GPU-aaaa, 2048\n"));
    let path = path_of(
        &host
            .dump(pid, &["--compression", "none"], Some(&gpus), None)
            .ok(),
    );
    w.reap();
    let two =
        format!("{H100}1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559, 80000, 570.86.15, Disabled\n");
    let refusals = [
        (None, "this host has no usable NVIDIA GPU"),
        (Some(H100.replace("570.86.15", "580.65.06")), "the driver branch differs: the checkpoint was made with r570"),
        (Some(two), "the GPU count differs"),
        (Some(H100.replace("H100 80GB HBM3", "A100-SXM4-40GB")), "the GPU model differs"),
        (Some(H100.replace("80000", "1000")), "not enough free GPU memory: GPU 0 (NVIDIA H100 80GB HBM3) has 1000 MiB free, the job needs 2048 MiB"),
    ];
    for (i, (answer, why)) in refusals.into_iter().enumerate() {
        let here = answer.map(|a| host.file(&format!("host-{i}"), &a));
        host.criu.clear();
        host.restore(&path, here.as_deref())
            .fails_with(why)
            .fails_with("nothing was restored");
        assert!(
            host.steps().is_empty(),
            "{why}: CRIU or the GPU touched: {:?}",
            host.steps()
        );
        assert!(!pid_alive(pid), "{why}: restored anyway");
    }
    // Another GPU of the same model, driver branch and enough memory: restored.
    let other = host.file(
        "other",
        &H100
            .replace("GPU-aaaa", "GPU-cccc")
            .replace("570.86.15", "570.124.06"),
    );
    let at_dump = last_count(&log).expect("count at dump");
    let r = host.restore(&path, Some(&other)).ok();
    let _guard = KillOnDrop(r.json()["pid"].as_i64().expect("pid") as i32);
    assert_eq!(next_after(&log, at_dump), at_dump + 1);
}

#[test]
fn a_job_without_a_gpu_is_untouched_by_the_gpu_plugin() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let log = host.env.path("job.log");
    let mut w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 3);
    let path = path_of(
        &host
            .dump(w.pid, &["--compression", "none"], None, None)
            .ok(),
    );
    w.reap();
    assert_eq!(host.steps(), ["criu"], "no GPU step for a CPU job");
    let md = fs::read_to_string(Path::new(&path).join("metadata.json")).expect("md");
    let md: serde_json::Value = serde_json::from_str(&md).expect("json");
    assert!(md.get("gpu").is_none(), "{md}");
}

#[test]
fn check_reports_gpu_readiness_with_the_fix_for_each_gap() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let find = |checks: &serde_json::Value, name: &str| {
        checks
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|c| c["plugin"] == "gpu" && c["check"] == name)
            })
            .unwrap_or_else(|| panic!("no gpu {name:?} check in {checks}"))
            .clone()
    };
    // Exit 0 or 1 depends on the rest of the host; only the GPU lines matter here.
    let ready = host.cedana(&["--json", "check"], Some(&gpus), None).json();
    let driver = find(&ready, "nvidia driver");
    assert_eq!(driver["status"], "ok", "{driver}");
    assert!(
        driver["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("570.86.15"),
        "{driver}"
    );
    let tool = find(&ready, "cuda-checkpoint");
    assert_eq!(tool["status"], "ok", "{tool}");
    assert!(
        tool["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("--action"),
        "{tool}"
    );
    assert_eq!(find(&ready, "criu cuda plugin")["status"], "ok");

    let bare = host
        .cedana(
            &[
                "--json",
                "--set",
                "gpu.cuda_checkpoint=/nonexistent/cuda-checkpoint",
                "check",
            ],
            None,
            None,
        )
        .json();
    for name in ["nvidia driver", "cuda-checkpoint"] {
        let c = find(&bare, name);
        assert_eq!(c["status"], "warn", "{c}");
        assert!(c["fix"].as_str().is_some_and(|f| f.contains("gpu.")), "{c}");
    }
}

#[test]
fn a_job_on_a_mig_gpu_is_refused_before_anything_is_touched() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", &H100.replace("Disabled", "Enabled"));
    let log = host.env.path("job.log");
    let w = host.start_job(&log);
    host.dump(w.pid, &[], Some(&gpus), None)
        .fails_with("is in MIG mode")
        .fails_with("nothing was touched and the job keeps running");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
}

/// The driver-API helper on a host without the driver: the lock fails with what to
/// install, before CRIU, and the job runs on.
#[test]
fn the_driver_api_helper_without_a_driver_refuses_the_dump_and_says_why() {
    if !e2e_enabled() {
        return;
    }
    if Path::new("/proc/driver/nvidia").exists() {
        // A real GPU host: the helper would really lock the (CPU) workload.
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let log = host.env.path("job.log");
    let w = host.start_job(&log);
    let helper = format!("gpu.cuda_checkpoint={}", bin("cedana-gpu-helper").display());
    let pid = w.pid.to_string();
    let dir = host.env.checkpoints().to_string_lossy().to_string();
    let args = ["--set", &helper, "dump", "process", &pid, "--no-server", "--dir", &dir];
    host.cedana(&args, Some(&gpus), None)
        .fails_with(&format!("GPU lock of process {pid} failed"))
        .fails_with("install the NVIDIA driver")
        .fails_with("the job runs on on its GPU");
    assert_eq!(host.steps(), Vec::<String>::new(), "CRIU must not run");
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
}
