//! runc containers as daemon jobs: `cedana run runc` starts one (output to the job log
//! through a relay), `dump job` / `restore job` checkpoint it and bring it back under
//! the same id and bundle, `manage runc` adopts one, and a restarted daemon keeps them.

mod runc_support;

use std::time::Duration;

use cedana_e2e::{wait_for, Env};
use runc_support::*;

/// Counts into /tmp/count and, on stdout (the job log), `out N`.
const COUNTER_WITH_OUTPUT: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo $i >> /tmp/count; echo out $i; sleep 0.05; done",
];

/// Waits until the job shows `state`.
fn wait_state(env: &Env, jid: &str, state: &str) -> serde_json::Value {
    wait_for(
        &format!("job {jid} to be {state}"),
        Duration::from_secs(15),
        || {
            let j = env.listed_job(jid);
            (j["state"] == state).then_some(j)
        },
    )
}

/// Last `out N` in the job log.
fn last_out(log: &str) -> Option<u64> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("out ")?.trim().parse().ok())
}

#[test]
fn run_dump_restore_a_runc_job() {
    if !runc_available() {
        return;
    }
    // The archive, asked for (a dump streams by default: default_streams.rs).
    run_dump_restore(&["--compression", "zstd"]);
}

/// Streamed, the job's output pipe goes through the relay as an inherited descriptor.
#[test]
fn run_dump_restore_a_runc_job_streamed() {
    if !runc_available() {
        return;
    }
    run_dump_restore(&["--streams", "4"]);
}

/// Runs a runc job, dumps it with `dump_flags`, restores it and checks it carries on.
fn run_dump_restore(dump_flags: &[&str]) {
    let mut env = Env::new();
    env.start_daemon();
    let root = env.path("runc-root");
    let root_s = root.to_str().expect("utf8").to_string();
    let bundle = env.path("bundle");
    build_bundle(&bundle, COUNTER_WITH_OUTPUT, Net::Own);
    let _g = Ctr::new(&root, "job-ctr");
    let v = env
        .cedana(&[
            "--json",
            "run",
            "runc",
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--id",
            "job-ctr",
            "--root",
            &root_s,
            "--jid",
            "rj",
        ])
        .ok()
        .json();
    assert_eq!(v["kind"], "runc");
    assert_eq!(v["container_id"], "job-ctr");
    let pid = v["pid"].as_i64().expect("pid");
    let log = v["log_path"].as_str().expect("log").to_string();
    let rt = Rt::runc(&root);
    assert_eq!(rt.state("job-ctr").expect("state")["pid"], pid);
    let count = bundle.join("rootfs/tmp/count");
    wait_above(&count, 5);
    wait_for("output in the job log", Duration::from_secs(15), || {
        last_out(&log).filter(|n| *n > 5)
    });
    assert_eq!(env.listed_job("rj")["state"], "running");

    // Through the daemon, query sees the container too.
    let q = env
        .cedana(&["--json", "query", "runc", "job-ctr", "--root", &root_s])
        .ok()
        .json();
    assert_eq!(q[0]["status"], "running");

    let dir = env.checkpoints();
    let mut args = vec![
        "--json",
        "dump",
        "job",
        "rj",
        "--dir",
        dir.to_str().expect("utf8"),
    ];
    args.extend_from_slice(dump_flags);
    let out = env.cedana(&args).ok().json();
    assert_eq!(out["metadata"]["kind"], "runc");
    assert_eq!(out["jid"], "rj");
    let path = std::path::PathBuf::from(out["path"].as_str().expect("path"));
    assert_eq!(
        path.join("checkpoint/streams.json").is_file(),
        dump_flags.contains(&"--streams"),
        "streamed exactly when asked: {}",
        path.display()
    );
    wait_state(&env, "rj", "halted");
    assert!(
        rt.state("job-ctr").is_none(),
        "checkpointed container is gone"
    );
    let last = *numbers(&count).last().expect("counted");
    let last_logged = last_out(&log).expect("logged");

    let r = env.cedana(&["--json", "restore", "job", "rj"]).ok().json();
    assert_eq!(r["jid"], "rj");
    let j = wait_state(&env, "rj", "running");
    let state = rt.state("job-ctr").expect("restored under the same id");
    assert_eq!(state["status"], "running");
    assert_eq!(j["pid"], state["pid"]);
    assert_eq!(next_after(&count, last), last + 1, "the counter carried on");
    // Its output still reaches the job log, carrying on from where it stopped.
    wait_for(
        "restored output in the log",
        Duration::from_secs(15),
        || last_out(&log).filter(|n| *n > last_logged + 5),
    );

    // A second restore while it runs is refused.
    env.cedana(&["restore", "job", "rj"])
        .fails_with("still running");
    env.cedana(&["job", "delete", "rj", "--force"]).ok();
    wait_for("container deleted", Duration::from_secs(15), || {
        rt.state("job-ctr").is_none().then_some(())
    });
}

#[test]
fn manage_runc_adopts_a_container_and_survives_a_daemon_restart() {
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let root = env.path("runc-root");
    let root_s = root.to_str().expect("utf8").to_string();
    let bundle = env.path("bundle");
    build_bundle(&bundle, COUNTER, Net::Own);
    let _g = Ctr::new(&root, "adopted");
    let rt = Rt::runc(&root);
    rt.run_detached(&bundle, "adopted");
    let init = rt.state("adopted").expect("state")["pid"].clone();

    env.cedana(&["manage", "runc", "nope", "--root", &root_s])
        .fails_with("does not exist");
    let v = env
        .cedana(&[
            "--json", "manage", "runc", "adopted", "--root", &root_s, "--jid", "m1",
        ])
        .ok()
        .json();
    assert_eq!(v["pid"], init);
    assert_eq!(v["kind"], "runc");
    assert_eq!(v["bundle"], bundle.to_str().expect("utf8"));
    assert_eq!(env.listed_job("m1")["state"], "running");

    // A restarted daemon finds the job again, still running, with its container.
    env.stop_daemon();
    env.start_daemon();
    let j = env.listed_job("m1");
    assert_eq!(j["state"], "running", "{}\n{}", j, env.daemon_log());
    assert_eq!(j["container_id"], "adopted");
    assert_eq!(j["runc_root"], root_s.as_str());

    // Checkpoint and restore by job id work after the restart too.
    let count = bundle.join("rootfs/tmp/count");
    wait_above(&count, 3);
    env.cedana(&[
        "dump",
        "job",
        "m1",
        "--dir",
        env.checkpoints().to_str().expect("utf8"),
    ])
    .ok();
    wait_state(&env, "m1", "halted");
    let last = *numbers(&count).last().expect("counted");
    env.cedana(&["restore", "job", "m1"]).ok();
    wait_state(&env, "m1", "running");
    assert_eq!(
        next_after(&count, last),
        last + 1,
        "the adopted container carried on from the checkpoint"
    );
    wait_above(&count, last + 3);

    // The container exiting is seen by the poller.
    assert_eq!(rt.out(&["kill", "adopted", "KILL"]).code, 0);
    wait_state(&env, "m1", "halted");
}
