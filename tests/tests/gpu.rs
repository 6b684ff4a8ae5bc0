//! GPU dumps against real CRIU, with NO GPU: a CPU counter holding stand-in device
//! files is taken for a GPU user, and NVIDIA's tools are stand-ins (see
//! `cedana_e2e::gpu`). Asserted: the order of GPU and CRIU steps, the rollback on every
//! failure (the job runs on, its GPU state back to `running`), `--leave-running`, and
//! the refusals made before anything is touched.

use std::fs;
use std::path::Path;

use cedana_e2e::gpu::*;
use cedana_e2e::*;

#[test]
fn a_gpu_job_is_checkpointed_and_restored_in_order_and_counts_on() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob {
        host,
        gpus,
        log,
        mut w,
    } = GpuJob::start();
    let pid = w.pid;
    host.file("apps", &format!("{pid}, {GPU_A}, 2048\n"));
    let path = path_of(
        &host
            .dump(pid, &["--compression", "none"], Some(&gpus), None)
            .ok(),
    );
    w.reap();
    assert_eq!(host.steps(), dump_steps(pid));
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
    let restored = host.restore(&path, Some(&gpus), None).ok();
    let _guard = KillOnDrop(restored.json()["pid"].as_i64().expect("pid") as i32);
    assert_eq!(host.steps(), restore_steps(pid));
    assert_eq!(host.gpu_state(pid), "running");
    assert_counts_on(&log, at_dump);
}

/// The daemon's route: a GPU job started through the daemon is dumped and restored as a
/// job, the GPU steps around CRIU in the same order, and it counts on in its own log.
#[test]
fn a_gpu_job_is_checkpointed_and_restored_through_the_daemon() {
    if !e2e_enabled() {
        return;
    }
    let mut host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    host.start_daemon(&gpus);
    let args = host.job_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = host.env.run_workload_job("gpu", &args);
    let pid = host.env.listed_job("gpu")["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(pid);
    host.file("apps", &format!("{pid}, {GPU_A}, 2048\n"));
    wait_count_above(&log, 3);
    host.env
        .cedana(&["dump", "job", "gpu", "--compression", "none"])
        .ok();
    assert_eq!(host.steps(), dump_steps(pid));
    assert_eq!(host.gpu_state(pid), "checkpointed");
    let last = last_count(&log).expect("count at dump");
    host.criu.clear();
    host.env.cedana(&["restore", "job", "gpu"]).ok();
    assert_eq!(host.steps(), restore_steps(pid));
    assert_eq!(host.gpu_state(pid), "running");
    assert_counts_on(&log, last);
}

#[test]
fn a_failed_gpu_checkpoint_leaves_the_job_running_on_its_gpu() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob { host, gpus, log, w } = GpuJob::start();
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
    host.assert_runs_on(&w, &log);
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
    let GpuJob { host, gpus, log, w } = GpuJob::start();
    let pid = w.pid;
    // A disk too small for the images: CRIU fails after the GPU state was checkpointed.
    let full = Tmpfs::mount(&host.env.path("full"), 1);
    // Filled but for a few pages, so only CRIU's writing can hit the limit.
    fs::write(full.path.join("filler"), vec![1u8; (1 << 20) - (16 << 10)]).expect("fill");
    let dir = full.path.to_string_lossy().to_string();
    let args = ["--dir", &dir, "--compression", "none"];
    host.dump(pid, &args, Some(&gpus), None).fails_with("space");
    assert_back_on_its_gpu(&host, &w, &log);
}

#[test]
fn leave_running_puts_the_job_back_on_its_gpu() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob { host, gpus, log, w } = GpuJob::start();
    let pid = w.pid;
    host.dump(pid, &["--leave-running"], Some(&gpus), None).ok();
    assert_back_on_its_gpu(&host, &w, &log);
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
    host.assert_runs_on(&w, &log);
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
    let GpuJob { host, gpus, log, w } = GpuJob::start();
    let helper = format!("gpu.cuda_checkpoint={}", bin("cedana-gpu-helper").display());
    let pid = w.pid.to_string();
    let dir = host.env.checkpoints().to_string_lossy().to_string();
    let args = [
        "--set",
        &helper,
        "dump",
        "process",
        &pid,
        "--no-server",
        "--dir",
        &dir,
    ];
    host.cedana(&args, Some(&gpus), None)
        .fails_with(&format!("GPU lock of process {pid} failed"))
        .fails_with("install the NVIDIA driver")
        .fails_with("the job runs on on its GPU");
    assert_eq!(host.steps(), Vec::<String>::new(), "CRIU must not run");
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
}

#[test]
fn a_gpu_job_on_a_host_without_cuda_checkpoint_is_refused_before_anything_is_touched() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob { host, gpus, log, w } = GpuJob::start();
    let pid = w.pid.to_string();
    let dir = host.env.checkpoints().to_string_lossy().to_string();
    let no_tool = "gpu.cuda_checkpoint=/nonexistent/cuda-checkpoint";
    let args = [
        "--set",
        no_tool,
        "dump",
        "process",
        &pid,
        "--no-server",
        "--dir",
        &dir,
    ];
    host.cedana(&args, Some(&gpus), None)
        .fails_with("cuda-checkpoint is needed to checkpoint the job's GPU state")
        .fails_with("set gpu.cuda_checkpoint");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    assert!(w.alive());
    wait_count_above(&log, last_count(&log).expect("count") + 2);
}

/// After CRIU (which failed, or left the job running): the job's GPU state restored and
/// unlocked in that order, the job alive and counting.
fn assert_back_on_its_gpu(host: &GpuHost, w: &Workload, log: &Path) {
    let pid = w.pid;
    let mut steps = dump_steps(pid);
    steps.extend(restore_steps(pid).into_iter().skip(1));
    assert_eq!(host.steps(), steps);
    host.assert_runs_on(w, log);
}

/// A job whose MPS pipe directory (`CUDA_MPS_PIPE_DIRECTORY`) holds the control socket
/// runs as an MPS client (here the socket is the test's own listener, standing in for
/// nvidia-cuda-mps-control): refused before any GPU step, the job counts on.
#[test]
fn an_mps_client_is_refused_before_anything_is_touched() {
    if !e2e_enabled() {
        return;
    }
    let host = GpuHost::new();
    let gpus = host.file("gpus", H100);
    let pipe_dir = host.env.path("mps");
    fs::create_dir_all(&pipe_dir).expect("pipe dir");
    let log = host.env.path("job.log");
    let args = host.job_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vars = [("CUDA_MPS_PIPE_DIRECTORY", pipe_dir.as_path())];
    let w = Workload::start_with_env(&log, &args, &vars);
    wait_count_above(&log, 3);
    // No daemon's socket at the pipe directory, only a file of that name: not a client
    // (the dump goes on, leaving it running).
    let control = pipe_dir.join("control");
    fs::write(&control, "").expect("a plain file");
    host.dump(w.pid, &["--leave-running"], Some(&gpus), None)
        .ok();
    host.criu.clear();
    fs::remove_file(&control).expect("rm");
    let daemon = std::os::unix::net::UnixListener::bind(&control).expect("bind control");
    host.dump(w.pid, &[], Some(&gpus), None)
        .fails_with("client of NVIDIA MPS")
        .fails_with(&control.display().to_string())
        .fails_with("nothing was touched and the job keeps running");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    host.assert_runs_on(&w, &log);
    drop(daemon);
}
