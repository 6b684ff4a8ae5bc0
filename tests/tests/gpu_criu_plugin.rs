//! CRIU's own cuda_plugin as the owner of a GPU job's state (`gpu.backend`, auto where
//! CRIU has the plugin): the REAL plugin of CRIU 4.1.1 runs inside real CRIU and drives
//! the STAND-IN cuda-checkpoint (see `cedana_e2e::gpu`), with NO GPU. Asserted: cedana
//! makes no GPU step of its own, CRIU's plugin locks and checkpoints during the dump and
//! restores and unlocks during the restore, the checkpoint records it, the job counts on;
//! what the plugin leaves locked on a failed dump cedana puts back; a GPU map is refused
//! before anything is restored, since the plugin would not follow it.

use std::fs;
use std::path::Path;

use cedana_e2e::gpu::*;
use cedana_e2e::*;

/// The GPU steps CRIU's plugin takes, inside one CRIU run.
fn inside_criu(pid: i32, actions: &[&str]) -> Vec<String> {
    std::iter::once("criu".to_string())
        .chain(actions.iter().map(|a| format!("{a} {pid}")))
        .collect()
}

#[test]
fn criu_cuda_plugin_checkpoints_and_restores_a_gpu_job_and_it_counts_on() {
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
    let plugin = host.real_criu_cuda_plugin();
    let args = ["--compression", "none"];
    let path = path_of(
        &host
            .dump_with(pid, &args, Some(&gpus), None, &plugin.vars())
            .ok(),
    );
    w.reap();
    assert_eq!(host.steps(), inside_criu(pid, &["lock", "checkpoint"]));
    assert_eq!(host.gpu_state(pid), "checkpointed");
    let md: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(&path).join("metadata.json")).expect("md"),
    )
    .expect("json");
    assert_eq!(md["gpu"]["backend"], "criu-cuda-plugin", "{}", md["gpu"]);
    assert_eq!(
        md["gpu"]["criu_plugins"],
        serde_json::json!(["cuda_plugin"])
    );
    let at_dump = last_count(&log).expect("count at dump");
    host.criu.clear();
    let restored = host
        .restore_with(&path, &[], Some(&gpus), None, &plugin.vars())
        .ok();
    let _guard = KillOnDrop(restored.json()["pid"].as_i64().expect("pid") as i32);
    assert_eq!(host.steps(), inside_criu(pid, &["restore", "unlock"]));
    assert_eq!(host.gpu_state(pid), "running");
    assert_counts_on(&log, at_dump);
}

#[test]
fn with_leave_running_criu_cuda_plugin_puts_the_job_back_on_its_gpu() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob { host, gpus, log, w } = GpuJob::start();
    let pid = w.pid;
    let plugin = host.real_criu_cuda_plugin();
    let args = ["--leave-running"];
    host.dump_with(pid, &args, Some(&gpus), None, &plugin.vars())
        .ok();
    assert_eq!(
        host.steps(),
        inside_criu(pid, &["lock", "checkpoint", "restore", "unlock"])
    );
    host.assert_runs_on(&w, &log);
}

/// CRIU's plugin, after its checkpoint step failed, tries to restore the job; a job that
/// never reached `checkpointed` cannot be, and the plugin gives up leaving it locked.
/// cedana unlocks it: the job runs on on its GPU.
#[test]
fn what_criu_cuda_plugin_leaves_locked_after_a_failed_dump_cedana_unlocks() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob { host, gpus, log, w } = GpuJob::start();
    let pid = w.pid;
    let plugin = host.real_criu_cuda_plugin();
    host.dump_with(pid, &[], Some(&gpus), Some("checkpoint"), &plugin.vars())
        .fails_with("criu");
    assert_eq!(
        host.steps(),
        [
            inside_criu(pid, &["lock", "checkpoint", "restore"]),
            vec![format!("unlock {pid}")]
        ]
        .concat()
    );
    host.assert_runs_on(&w, &log);
    assert!(
        dir_names(&host.env.checkpoints()).is_empty(),
        "no checkpoint left"
    );
}

#[test]
fn a_gpu_map_is_refused_for_a_checkpoint_criu_cuda_plugin_restores() {
    if !e2e_enabled() {
        return;
    }
    let GpuJob {
        host,
        gpus,
        log: _,
        mut w,
    } = GpuJob::start();
    let pid = w.pid;
    let plugin = host.real_criu_cuda_plugin();
    let path = path_of(
        &host
            .dump_with(pid, &[], Some(&gpus), None, &plugin.vars())
            .ok(),
    );
    w.reap();
    host.criu.clear();
    let map = format!("{GPU_A}={GPU_B}");
    let other = host.file(
        "other-gpus",
        &H100.replace(GPU_A, GPU_B).replace("570.86.15", "580.65.06"),
    );
    host.restore_with(
        &path,
        &["--gpu-map", &map],
        Some(&other),
        None,
        &plugin.vars(),
    )
    .fails_with("takes no map")
    .fails_with("nothing was restored");
    assert!(host.steps().is_empty(), "nothing ran: {:?}", host.steps());
}
