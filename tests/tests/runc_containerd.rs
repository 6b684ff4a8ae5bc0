//! containerd's own runc shim (`io.containerd.runc.v2`) with `BinaryName = cedana-runc`
//! (`ctr run --runc-binary`): every runc call of the shim goes through our wrapper;
//! `ctr task checkpoint --image-path` and `ctr container checkpoint --task` +
//! `ctr container restore --live` work, and the restored counter carries on.

use std::fs;
use std::time::Duration;

use cedana_e2e::bin;
use cedana_e2e::containerd::{Containerd, IMAGE};
use cedana_e2e::wait_for;

/// The counter's file: on the container's /dev/shm tmpfs, which CRIU dumps and restores
/// with the task. A file in the rw layer (not restored here: no `--rw`) would break the
/// restore whenever the checkpoint caught the shell inside `echo >>`, holding it open.
const COUNT_FILE: &str = "/dev/shm/count";

/// Every number in the counter's file inside container `id`.
fn counts(c: &Containerd, id: &str, exec_id: &str) -> Vec<u64> {
    let r = c.ctr(&["task", "exec", "--exec-id", exec_id, id, "cat", COUNT_FILE]);
    r.stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Last number of the counter inside container `id`.
fn count(c: &Containerd, id: &str, exec_id: &str) -> Option<u64> {
    counts(c, id, exec_id).last().copied()
}

#[test]
fn containerd_runc_shim_with_cedana_runc_checkpoints_and_restores() {
    let Some(ctrd) = Containerd::setup() else {
        return;
    };
    let wrapper = bin("cedana-runc");
    let r = ctrd.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runc-binary",
        wrapper.to_str().expect("utf8"),
        IMAGE,
        "c1",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i >> /dev/shm/count; sleep 0.05; done",
    ]);
    assert_eq!(r.code, 0, "run: {r:?}\n{}", ctrd.log());
    wait_for("counting", Duration::from_secs(10), || {
        count(&ctrd, "c1", "e0").filter(|v| *v > 5)
    });

    // The shim's `runc checkpoint --image-path P --work-path W` goes through the engine:
    // our metadata.json sits beside runc's images; the task keeps running.
    let ck = ctrd.dir.path().join("ck");
    let wk = ctrd.dir.path().join("wk");
    let r = ctrd.ctr(&[
        "task",
        "checkpoint",
        "--image-path",
        ck.to_str().expect("utf8"),
        "--work-path",
        wk.to_str().expect("utf8"),
        "c1",
    ]);
    assert_eq!(r.code, 0, "task checkpoint: {r:?}\n{}", ctrd.log());
    let md: serde_json::Value =
        serde_json::from_slice(&fs::read(ck.join("metadata.json")).expect("metadata.json"))
            .expect("json");
    assert_eq!(md["kind"], "runc");
    assert_eq!(md["container"]["id"], "c1");
    assert!(ck.join("inventory.img").is_file());
    let r = ctrd.ctr(&["task", "ls"]);
    assert!(r.stdout.contains("RUNNING"), "{r:?}");

    // Checkpoint into containerd's content store, remove everything, restore live.
    let r = ctrd.ctr(&[
        "container",
        "checkpoint",
        "--task",
        "--image",
        "c1",
        "docker.io/library/c1-checkpoint:1",
    ]);
    assert_eq!(r.code, 0, "container checkpoint: {r:?}\n{}", ctrd.log());
    let before = count(&ctrd, "c1", "e1").expect("count before");
    let _ = ctrd.ctr(&["task", "kill", "-s", "KILL", "c1"]);
    wait_for("task to stop", Duration::from_secs(10), || {
        (ctrd.ctr(&["task", "rm", "c1"]).code == 0).then_some(())
    });
    let r = ctrd.ctr(&["container", "rm", "c1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = ctrd.ctr(&[
        "container",
        "restore",
        "--live",
        "c1",
        "docker.io/library/c1-checkpoint:1",
    ]);
    assert_eq!(r.code, 0, "container restore: {r:?}\n{}", ctrd.log());
    // The tmpfs came back as the checkpoint saw it and the shell carries on appending:
    // one unbroken run 1, 2, 3, ... past where it was before the kill (a restart from 1,
    // or a file lost, would break it).
    wait_for(
        "the restored counter to pass its old value",
        Duration::from_secs(10),
        || count(&ctrd, "c1", "e2").filter(|v| *v > before + 5),
    );
    let all = counts(&ctrd, "c1", "e3");
    let unbroken: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(
        all, unbroken,
        "the restored counter did not carry on from its checkpoint"
    );
}
