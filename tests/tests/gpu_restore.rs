//! GPU restores and readiness against real CRIU, with NO GPU (stand-ins, see
//! `cedana_e2e::gpu`): every restore-time refusal (no GPU, driver branch, count, model,
//! free memory, other GPUs without a complete `--gpu-map`) before CRIU runs, a restore
//! onto another GPU with `--gpu-map`, and `cedana check`'s GPU lines.

use std::fs;
use std::path::Path;
use std::time::Duration;

use cedana_e2e::gpu::*;
use cedana_e2e::*;

#[test]
fn a_gpu_checkpoint_is_refused_where_the_gpus_do_not_fit() {
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
    let two =
        format!("{H100}1, {GPU_B}, NVIDIA H100 80GB HBM3, 81559, 80000, 570.86.15, Disabled\n");
    let refusals = [
        (None, "this host has no usable NVIDIA GPU"),
        (Some(H100.replace("570.86.15", "580.65.06")), "the driver branch differs: the checkpoint was made with r570"),
        (Some(two), "the GPU count differs"),
        (Some(H100.replace("H100 80GB HBM3", "A100-SXM4-40GB")), "the GPU model differs"),
        (Some(H100.replace("80000", "1000")), "not enough free GPU memory: GPU 0 (NVIDIA H100 80GB HBM3) has 1000 MiB free, the job needs 2048 MiB"),
        (Some(H100.replace(GPU_A, GPU_C)), "the GPUs differ"),
    ];
    for (i, (answer, why)) in refusals.into_iter().enumerate() {
        let here = answer.map(|a| host.file(&format!("host-{i}"), &a));
        host.criu.clear();
        host.restore(&path, here.as_deref(), None)
            .fails_with(why)
            .fails_with("nothing was restored");
        assert!(
            host.steps().is_empty(),
            "{why}: CRIU or the GPU touched: {:?}",
            host.steps()
        );
        assert!(!pid_alive(pid), "{why}: restored anyway");
    }
    // No cuda-checkpoint here: refused before CRIU too, not restored without its GPU.
    host.criu.clear();
    let no_tool = "gpu.cuda_checkpoint=/nonexistent/cuda-checkpoint";
    let args = [
        "--set",
        no_tool,
        "restore",
        "process",
        "--path",
        &path,
        "--no-server",
    ];
    host.cedana(&args, Some(&gpus), None)
        .fails_with("cuda-checkpoint is needed to put the restored job back on its GPU")
        .fails_with("set gpu.cuda_checkpoint");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    assert!(!pid_alive(pid), "restored without a GPU tool");
    // Onto another GPU with r570: cuda-checkpoint cannot remap before r580.
    let other = host.file("other-570", &H100.replace(GPU_A, GPU_C));
    let map = format!("{GPU_A}={GPU_C}");
    host.restore_with(&path, &["--gpu-map", &map], Some(&other), None, &[])
        .fails_with("--gpu-map needs driver r580 or newer")
        .fails_with("nothing was restored");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    // The GPU refuses to take the job back after CRIU: the restored tree is removed and
    // the checkpoint can be restored again.
    host.criu.clear();
    host.restore(&path, Some(&gpus), Some("restore"))
        .fails_with(&format!("GPU restore of process {pid} failed"))
        .fails_with("the restored process was killed");
    assert_eq!(host.steps(), ["criu".to_string(), format!("restore {pid}")]);
    wait_for(
        "the half-restored job to go",
        Duration::from_secs(5),
        || (!pid_alive(pid)).then_some(()),
    );
    // The same GPU under a newer driver of the same branch: restored.
    let newer = host.file("newer", &H100.replace("570.86.15", "570.124.06"));
    let at_dump = last_count(&log).expect("count at dump");
    let r = host.restore(&path, Some(&newer), None).ok();
    let _guard = KillOnDrop(r.json()["pid"].as_i64().expect("pid") as i32);
    assert_counts_on(&log, at_dump);
}

#[test]
fn a_gpu_job_moves_onto_another_gpu_with_gpu_map() {
    if !e2e_enabled() {
        return;
    }
    // Driver r580 on both hosts: cuda-checkpoint's --device-map.
    let host = GpuHost::new();
    let gpus = host.file("gpus", &H100.replace("570.86.15", "580.65.06"));
    let log = host.env.path("job.log");
    let mut w = host.start_job(&log);
    let pid = w.pid;
    host.file("apps", &format!("{pid}, {GPU_A}, 2048\n"));
    let path = path_of(
        &host
            .dump(pid, &["--compression", "none"], Some(&gpus), None)
            .ok(),
    );
    w.reap();
    let other = host.file(
        "other",
        &H100.replace(GPU_A, GPU_C).replace("570.86.15", "580.82.07"),
    );
    // Without a map, or with one naming a GPU this host lacks: refused before CRIU.
    host.criu.clear();
    host.restore(&path, Some(&other), None)
        .fails_with("the GPUs differ")
        .fails_with("--gpu-map OLD=NEW");
    let elsewhere = format!("{GPU_A}={GPU_B}");
    host.restore_with(&path, &["--gpu-map", &elsewhere], Some(&other), None, &[])
        .fails_with(&format!(
            "--gpu-map names {GPU_B}, which this host does not have"
        ));
    let typo = format!("{GPU_A}=GPU-c");
    host.restore_with(&path, &["--gpu-map", &typo], Some(&other), None, &[])
        .fails_with("\"GPU-c\" is not a GPU UUID");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    assert!(!pid_alive(pid), "restored anyway");
    // Mapped: CRIU restores the tree, cuda-checkpoint moves its state onto GPU C.
    let at_dump = last_count(&log).expect("count at dump");
    let map = format!("{GPU_A}={GPU_C}");
    let r = host
        .restore_with(&path, &["--gpu-map", &map], Some(&other), None, &[])
        .ok();
    let _guard = KillOnDrop(r.json()["pid"].as_i64().expect("pid") as i32);
    assert_eq!(
        host.steps(),
        [
            "criu".to_string(),
            format!("restore {pid} --device-map {map}"),
            format!("unlock {pid}")
        ]
    );
    assert_counts_on(&log, at_dump);
    assert_eq!(host.gpu_state(pid), "running");
}

#[test]
fn a_checkpoint_naming_criu_cuda_plugin_is_refused_where_criu_lacks_it() {
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
    // CRIU's real cuda_plugin is loaded for this dump, as from /usr/lib/criu, while
    // cedana owns the GPU state: the plugin finds the job checkpointed and skips it, but
    // names itself in the images all the same.
    let plugin = host.real_criu_cuda_plugin();
    let cedana_owns = Path::new("cuda-checkpoint");
    let with_plugin = [&plugin.vars()[..], &[("CEDANA_GPU_BACKEND", cedana_owns)]].concat();
    let extra = ["--compression", "none"];
    let path = path_of(
        &host
            .dump_with(pid, &extra, Some(&gpus), None, &with_plugin)
            .ok(),
    );
    assert_eq!(host.steps(), dump_steps(pid), "cedana's steps, then CRIU");
    w.reap();
    let ck = Path::new(&path);
    let inventory = fs::read(ck.join("inventory.img")).expect("inventory.img");
    assert!(
        inventory.windows(11).any(|w| w == b"cuda_plugin"),
        "CRIU did not name the plugin in its images"
    );
    let md: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ck.join("metadata.json")).expect("md"))
            .expect("json");
    assert_eq!(
        md["gpu"]["criu_plugins"],
        serde_json::json!(["cuda_plugin"]),
        "{md}"
    );
    // Where CRIU has no cuda_plugin: refused before CRIU, with what to do.
    let empty = host.env.path("no-plugins");
    fs::create_dir_all(&empty).expect("dir");
    host.criu.clear();
    host.restore_with(&path, &[], Some(&gpus), None, &[("CRIU_LIBS_DIR", &empty)])
        .fails_with(&format!(
            "this host's CRIU has no cuda_plugin.so in {}",
            empty.display()
        ))
        .fails_with("install CRIU's cuda plugin")
        .fails_with("nothing was restored");
    assert!(host.steps().is_empty(), "{:?}", host.steps());
    assert!(!pid_alive(pid), "restored anyway");
    // Where it is installed: restored, and the counter goes on.
    let at_dump = last_count(&log).expect("count at dump");
    let r = host
        .restore_with(&path, &[], Some(&gpus), None, &with_plugin)
        .ok();
    let _guard = KillOnDrop(r.json()["pid"].as_i64().expect("pid") as i32);
    // CRIU's restore runs the plugin, which restores and unlocks the job itself.
    let by_plugin = ["criu", &format!("restore {pid}"), &format!("unlock {pid}")];
    assert_eq!(host.steps(), by_plugin);
    assert_counts_on(&log, at_dump);
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
    // The default name, not installed: the driver-API helper beside cedana stands in.
    if which("cuda-checkpoint").is_none() {
        let args = [
            "--json",
            "--set",
            "gpu.cuda_checkpoint=cuda-checkpoint",
            "check",
        ];
        let c = find(&host.cedana(&args, None, None).json(), "cuda-checkpoint");
        assert_eq!(c["status"], "ok", "{c}");
        let detail = c["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("cedana-gpu-helper will be used"), "{c}");
    }
    for name in ["nvidia driver", "cuda-checkpoint"] {
        let c = find(&bare, name);
        assert_eq!(c["status"], "warn", "{c}");
        assert!(c["fix"].as_str().is_some_and(|f| f.contains("gpu.")), "{c}");
    }
}
