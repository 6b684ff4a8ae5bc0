//! A container on our shim (`io.containerd.cedana.v2`) that uses a GPU, against a private
//! containerd, with NO GPU (stand-ins, see `cedana_e2e::gpu`): its shell makes stand-in
//! device files at /gpu in its rootfs and holds them open (`gpu.device_dir=/gpu`, as
//! `/dev` is on a real host). `cedana dump containerd` moves its GPU state out before
//! CRIU, and `cedana restore containerd` into a new container puts it back after, under
//! a new host PID, where it counts on.

use std::path::Path;

use cedana_e2e::containerd::{Containerd, CEDANA};
use cedana_e2e::gpu::*;

/// [`cedana_e2e::containerd::COUNTER`] holding the stand-in device files open (fds 3-5);
/// its `sleep`s do not inherit them, so the shell is the one GPU task.
const GPU_COUNTER: &str = "mkdir -p /gpu && touch /gpu/nvidia0 /gpu/nvidiactl /gpu/nvidia-uvm \
     && exec 3</gpu/nvidia0 4</gpu/nvidiactl 5</gpu/nvidia-uvm; \
     i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.1 3<&- 4<&- 5<&-; done";

#[test]
fn a_gpu_container_moves_through_containerd_and_counts_on() {
    let Some(c) = Containerd::setup() else { return };
    let host = GpuHost::for_containers(Path::new("/gpu"));
    let gpus = host.file("gpus", H100);
    c.run_detached(&[CEDANA], "gpu-orig", &["sh", "-c", GPU_COUNTER]);
    c.wait_count_above("gpu-orig", 5);
    let pid = c.task_pid("gpu-orig").expect("the container's PID");
    host.file("apps", &format!("{pid}, {GPU_A}, 2048\n"));
    let address = c.socket().display().to_string();
    let dir = host.env.checkpoints().display().to_string();
    let target = [
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
        "--no-server",
    ];
    let mut dump = vec!["--json", "dump", "containerd", "gpu-orig", "--dir", &dir];
    dump.extend(target);
    let d = host.cedana(&dump, Some(&gpus), None).ok().json();
    let gpu_steps =
        || -> Vec<String> { host.steps().into_iter().filter(|s| s != "criu").collect() };
    assert_eq!(
        gpu_steps(),
        [format!("lock {pid}"), format!("checkpoint {pid}")]
    );
    let md = &d["metadata"];
    assert_eq!(md["containerd"]["runtime"], CEDANA, "{md}");
    assert_eq!(md["gpu"]["tasks"][0]["pid"], pid, "{md}");
    assert_eq!(md["gpu"]["gpus"][0]["uuid"], GPU_A, "{md}");

    host.criu.clear();
    let path = d["path"].as_str().expect("path");
    let mut restore = vec!["--json", "restore", "containerd", "--id", "gpu-copy"];
    restore.extend(["--path", path]);
    restore.extend(target);
    host.cedana(&restore, Some(&gpus), None).ok();
    // Another host PID, the same process: the stand-in, as the driver, still holds it
    // `checkpointed` (it refuses a restore from any other state).
    let restored = c
        .task_pid("gpu-copy")
        .expect("the restored container's PID");
    assert_ne!(restored, pid, "a new container, a new host PID");
    assert_eq!(
        gpu_steps(),
        [format!("restore {restored}"), format!("unlock {restored}")]
    );
    // The rootfs diff holds 1..=N; the restored shell appends N+1, N+2, ...
    let last = c.last_count("gpu-copy").expect("a count");
    c.wait_count_above("gpu-copy", last + 3);
    let seq = c.counts("gpu-copy");
    let expected: Vec<u64> = (1..=seq.len() as u64).collect();
    assert_eq!(seq, expected, "the restored counter did not carry on");
}
