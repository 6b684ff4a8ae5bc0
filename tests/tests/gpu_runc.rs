//! A runc container that uses a GPU, with NO GPU (stand-ins, see `cedana_e2e::gpu`): its
//! process holds stand-in device files open at /gpu inside the container
//! (`gpu.device_dir=/gpu`, as `/dev` is on a real host). `cedana dump runc` moves its GPU
//! state out before CRIU, and `cedana restore runc` into a fresh copy of the bundle
//! puts it back after, where the container counts on.

mod runc_support;

use std::fs;
use std::path::Path;

use cedana_e2e::gpu::*;
use runc_support::*;

/// Holds the stand-in device files open (fds 3-5) and counts into /tmp/count; its
/// `sleep`s do not inherit them, so the shell is the one GPU task.
const GPU_COUNTER: &[&str] = &[
    "sh",
    "-c",
    "exec 3</gpu/nvidia0 4</gpu/nvidiactl 5</gpu/nvidia-uvm; \
     i=0; while true; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.05 3<&- 4<&- 5<&-; done",
];

/// The container's init, as a host PID.
fn init_pid(rt: &Rt, id: &str) -> i32 {
    let state = rt.state(id).expect("container state");
    state["pid"].as_i64().expect("pid") as i32
}

#[test]
fn a_gpu_container_is_dumped_and_restored_through_runc_and_counts_on() {
    if !runc_available() {
        return;
    }
    let host = GpuHost::for_containers(Path::new("/gpu"));
    let gpus = host.file("gpus", H100);
    let (root, bundle) = (host.env.path("runc-root"), host.env.path("bundle"));
    build_bundle(&bundle, GPU_COUNTER, Net::Own);
    let devices = bundle.join("rootfs/gpu");
    fs::create_dir_all(&devices).expect("device dir");
    for name in ["nvidia0", "nvidiactl", "nvidia-uvm"] {
        fs::write(devices.join(name), "").expect("stand-in device file");
    }
    let fresh = host.env.path("fresh");
    fs::create_dir_all(&fresh).expect("fresh bundle dir");
    copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
    let rt = Rt::runc(&root);
    let (orig, copy) = (
        unique_id(&host.env, "gpu-orig"),
        unique_id(&host.env, "gpu-copy"),
    );
    let _guards = [Ctr::new(&root, &orig), Ctr::new(&root, &copy)];
    rt.run_detached(&bundle, &orig);
    wait_above(&bundle.join("rootfs/tmp/count"), 5);
    let pid = init_pid(&rt, &orig);
    host.file("apps", &format!("{pid}, {GPU_A}, 2048\n"));

    let (root_s, dir) = (root.display().to_string(), host.env.checkpoints());
    let dir = dir.display().to_string();
    let dump = [
        "--json",
        "dump",
        "runc",
        &orig,
        "--root",
        &root_s,
        "--dir",
        &dir,
        "--no-server",
    ];
    let v = host.cedana(&dump, Some(&gpus), None).ok().json();
    let gpu_steps =
        || -> Vec<String> { host.steps().into_iter().filter(|s| s != "criu").collect() };
    assert_eq!(
        gpu_steps(),
        [format!("lock {pid}"), format!("checkpoint {pid}")]
    );
    let md = &v["metadata"]["gpu"];
    assert_eq!(md["tasks"][0]["pid"], pid, "{md}");
    assert_eq!(
        md["tasks"][0]["devices"].as_array().map(Vec::len),
        Some(3),
        "{md}"
    );
    let at_dump = *numbers(&bundle.join("rootfs/tmp/count"))
        .last()
        .expect("count");

    assert!(rt.state(&orig).is_none(), "the dumped container is gone");

    host.criu.clear();
    let path = v["path"].as_str().expect("path");
    let fresh_s = fresh.display().to_string();
    let restore = [
        "--json",
        "restore",
        "runc",
        "--path",
        path,
        "--bundle",
        &fresh_s,
        "--id",
        &copy,
        "--root",
        &root_s,
        "--detach",
        "--no-server",
    ];
    host.cedana(&restore, Some(&gpus), None).ok();
    // Another host PID, the same process: the stand-in, as the driver, still holds it
    // `checkpointed` (it refuses a restore from any other state).
    let restored = init_pid(&rt, &copy);
    assert_ne!(
        restored, pid,
        "restored in its own PID namespace, under a new host PID"
    );
    assert_eq!(
        gpu_steps(),
        [format!("restore {restored}"), format!("unlock {restored}")]
    );
    assert_counts_on(&fresh.join("rootfs/tmp/count"), at_dump);
}
