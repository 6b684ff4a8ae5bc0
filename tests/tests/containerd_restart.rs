//! containerd killed and restarted while `ctr task checkpoint` runs on our shim: the
//! task ends where containerd says it is (never frozen while reported running), counts
//! on once resumed, and a retried checkpoint succeeds.

use std::process::Stdio;
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, CEDANA};
use cedana_e2e::wait_for;

/// The task's status as the runtime under the shim sees it (`runc state`).
fn runc_status(c: &Containerd, id: &str) -> String {
    let root = format!("/run/containerd/runc/{}", c.namespace);
    let out = std::process::Command::new("runc")
        .args(["--root", &root, "state", id])
        .output()
        .expect("runc state");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("unknown ({})", String::from_utf8_lossy(&out.stderr)))
}

/// Whether a `runc checkpoint` of `id` under this containerd's namespace still runs.
fn checkpoint_running(c: &Containerd, id: &str) -> bool {
    let root = format!("/run/containerd/runc/{}", c.namespace);
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .any(|argv| {
            argv.iter().any(|a| a == "checkpoint")
                && argv.contains(&root)
                && argv.last().map(String::as_str) == Some(id)
        })
}

/// The counter, plus 64 MiB of memory held by the shell so CRIU works for a while.
const BALLAST_COUNTER: &str = "b=$(dd if=/dev/zero bs=1M count=64 2>/dev/null | tr '\\0' x); \
     i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.1; done";

#[test]
fn containerd_restarted_during_ctr_task_checkpoint_leaves_the_task_as_reported() {
    let Some(mut c) = Containerd::setup() else {
        return;
    };
    let id = "rs-task";
    c.run_detached(&[CEDANA], id, &["/bin/sh", "-c", BALLAST_COUNTER]);
    c.wait_count_above(id, 5);
    let ctr = c
        .ctr_cmd(&["task", "checkpoint", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ctr task checkpoint");
    // ctr pauses the task before it asks for the checkpoint: the checkpoint is under way.
    wait_for("ctr to pause the task", Duration::from_secs(20), || {
        (c.task_status(id).as_deref() == Some("PAUSED")).then_some(())
    });
    c.restart();
    // The user sees it paused and resumes it, while the shim's checkpoint may still run
    // (ctr's own deferred resume can land there too).
    let resumed = c.ctr(&["task", "resume", id]);
    let _ = ctr.wait_with_output();
    wait_for(
        "the shim's checkpoint to end",
        Duration::from_secs(60),
        || (!checkpoint_running(&c, id)).then_some(()),
    );

    // Whatever ctr managed before containerd went away, containerd and the runtime agree
    // once the shim's checkpoint is over (CRIU's log shows it done or failed).
    eprintln!("resume after the restart: {resumed:?}");
    let agreed = wait_for(
        "containerd and runc to agree",
        Duration::from_secs(30),
        || {
            let reported = c.task_status(id)?.to_lowercase();
            (reported == runc_status(&c, id)).then_some(reported)
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.task_status(id).map(|s| s.to_lowercase()),
        Some(runc_status(&c, id)),
        "containerd and the runtime disagree a while later"
    );
    // ctr's resume may have been lost with containerd; the user resumes by hand then.
    if agreed == "paused" {
        c.ok(&["task", "resume", id]);
    }
    let last = c.counts(id).last().copied().unwrap_or(0);
    c.wait_count_above(id, last + 1);
    assert_eq!(c.task_status(id).as_deref(), Some("RUNNING"));

    // A retry works, and leaves it running.
    let out = c.ok(&["task", "checkpoint", id]);
    assert!(out.trim().starts_with("containerd.io/checkpoint/"), "{out}");
    let last = c.counts(id).last().copied().unwrap_or(0);
    c.wait_count_above(id, last + 1);
    assert_eq!(c.task_status(id).as_deref(), Some("RUNNING"));
    assert_eq!(runc_status(&c, id), "running");
}
