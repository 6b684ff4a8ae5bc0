//! The job and checkpoint commands through a real daemon and real CRIU: `job list`,
//! `job inspect`, `job attach`, `run --attach`, `restore job --attach`, `run --out`,
//! `job checkpoint list|inspect`, `checkpoint delete` (files gone, no longer listed),
//! and `manage process` (an adopted process dumped and restored by job id).

use std::path::PathBuf;
use std::time::Duration;

use cedana_e2e::*;
use serde_json::Value;

fn ps_job(env: &Env, jid: &str) -> Option<Value> {
    let v = env.cedana(&["--json", "ps"]).ok().json();
    v.as_array()?.iter().find(|j| j["jid"] == jid).cloned()
}

fn wait_state(env: &Env, jid: &str, want: &str) {
    wait_for(
        &format!("job {jid} to be {want}"),
        Duration::from_secs(10),
        || ps_job(env, jid).filter(|j| j["state"] == want).map(|_| ()),
    );
}

fn workload() -> String {
    bin("cedana-workload").display().to_string()
}

#[test]
fn run_out_job_list_inspect_checkpoint_list_inspect_delete() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let out_log = env.path("my-output.log");
    let out_s = out_log.display().to_string();
    let w = workload();
    let run = env
        .cedana(&[
            "--json", "run", "process", "--jid", "j1", "--out", &out_s, "--", &w, "counter", "20",
        ])
        .ok()
        .json();
    // --out: the job's log is that file, and the output lands in it.
    assert_eq!(run["log_path"], out_s.as_str(), "{run}");
    wait_count_above(&out_log, 3);
    let pid = run["pid"].as_i64().expect("pid");

    // job list is ps: the same jobs, with the real PID and command.
    let list = env.cedana(&["--json", "job", "list"]).ok().json();
    let ps = env.cedana(&["--json", "ps"]).ok().json();
    let jids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|j| j["jid"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(jids(&list), vec!["j1".to_string()], "{list}");
    assert_eq!(jids(&list), jids(&ps));
    assert_eq!(list[0]["pid"], pid);
    assert_eq!(list[0]["state"], "running");
    assert!(
        list[0]["command"]
            .as_str()
            .unwrap_or_default()
            .contains("counter"),
        "{list}"
    );
    assert!(pid_alive(pid as i32));
    let table = env.cedana(&["job", "list"]).ok().stdout;
    assert!(
        table.contains("j1") && table.contains(&pid.to_string()),
        "{table}"
    );

    let dir = env.checkpoints().display().to_string();
    for name in ["first", "second"] {
        env.cedana(&[
            "dump",
            "job",
            "j1",
            "--leave-running",
            "--dir",
            &dir,
            "--name",
            name,
        ])
        .ok();
    }

    // job inspect: every field, and its two checkpoints.
    let ins = env.cedana(&["--json", "job", "inspect", "j1"]).ok().json();
    assert_eq!(ins["pid"], pid);
    assert_eq!(ins["log_path"], out_s.as_str());
    assert_eq!(ins["checkpoints"], 2, "{ins}");
    let names: Vec<&str> = ins["checkpoint_list"]
        .as_array()
        .expect("checkpoint_list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{ins}");
    assert!(names.iter().any(|n| n.contains("first")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("second")), "{names:?}");
    let text = env.cedana(&["job", "inspect", "j1"]).ok().stdout;
    assert!(text.contains(&out_s) && text.contains("running"), "{text}");

    // job checkpoint list|inspect: the files exist, and the metadata is this dump's.
    let cks = env
        .cedana(&["--json", "job", "checkpoint", "list", "j1"])
        .ok()
        .json();
    let cks = cks.as_array().expect("array").clone();
    assert_eq!(cks.len(), 2, "{cks:?}");
    let first = cks
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.contains("first")))
        .expect("first");
    let id = first["id"].as_str().expect("id").to_string();
    let path = PathBuf::from(first["path"].as_str().expect("path"));
    assert!(path.exists(), "{} exists", path.display());
    let meta = env
        .cedana(&["--json", "job", "checkpoint", "inspect", &id])
        .ok()
        .json();
    assert_eq!(meta["path"], first["path"]);
    assert_eq!(meta["metadata"]["criu_options"]["leave_running"], true);
    assert_eq!(
        meta["metadata"]["process"]["pid"], pid,
        "metadata names the dumped PID: {meta}"
    );

    // checkpoint delete: the files are gone, and it is listed nowhere.
    env.cedana(&["checkpoint", "delete", &id]).ok();
    assert!(!path.exists(), "{} still exists", path.display());
    let left = env.cedana(&["--json", "checkpoints"]).ok().json();
    let left_ids: Vec<&str> = left
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(left_ids.len(), 1, "{left}");
    assert!(!left_ids.contains(&id.as_str()), "{left}");
    env.cedana(&["job", "checkpoint", "inspect", &id])
        .fails_with(&id);
    let ins = env.cedana(&["--json", "job", "inspect", "j1"]).ok().json();
    assert_eq!(ins["checkpoints"], 1, "{ins}");
    env.cedana(&["checkpoint", "delete", &id]).fails_with(&id);
}

/// A job that prints on stdout and stderr, then exits with `code`.
fn talker(code: i32) -> String {
    format!("for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; sleep 0.1; done; exit {code}")
}

#[test]
fn run_attach_and_job_attach_show_the_output_and_exit_with_the_jobs_code() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let r = env.cedana(&["run", "process", "--attach", "--", "sh", "-c", &talker(3)]);
    assert_eq!(r.code, 3, "exit code of the job: {r:?}");
    for i in 1..=5 {
        assert!(r.stdout.contains(&format!("out{i}")), "{r:?}");
        assert!(r.stdout.contains(&format!("err{i}")), "{r:?}");
    }

    env.cedana(&[
        "run",
        "process",
        "--jid",
        "t2",
        "--",
        "sh",
        "-c",
        &talker(7),
    ])
    .ok();
    let r = env.cedana(&["job", "attach", "t2"]);
    assert_eq!(r.code, 7, "{r:?}");
    assert!(
        r.stdout.contains("out1") && r.stdout.contains("out5"),
        "{r:?}"
    );
    assert!(r.stdout.contains("err5"), "{r:?}");
    assert_eq!(ps_job(&env, "t2").expect("t2")["exit_code"], 7);
}

#[test]
fn restore_job_attach_follows_the_restored_job_to_its_exit() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    // Counts to 100 (about 5 s), then exits 5.
    let script = "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo $i; sleep 0.05; done; exit 5";
    env.cedana(&["run", "process", "--jid", "r1", "--", "sh", "-c", script])
        .ok();
    let log = PathBuf::from(
        ps_job(&env, "r1").expect("r1")["log_path"]
            .as_str()
            .expect("log")
            .to_string(),
    );
    wait_count_above(&log, 5);
    env.cedana(&["dump", "job", "r1"]).ok();
    wait_state(&env, "r1", "halted");
    let at_dump = last_count(&log).expect("count");
    assert!(at_dump < 100, "dumped before the end ({at_dump})");

    let r = env.cedana(&["restore", "job", "r1", "--attach"]);
    assert_eq!(r.code, 5, "the restored job's exit code: {r:?}");
    assert!(r.stdout.lines().any(|l| l.trim() == "100"), "{r:?}");
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "carried on");
    assert_eq!(counts(&log).last(), Some(&100));
}

#[test]
fn managed_process_is_dumped_and_restored_by_job_id() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let log = env.path("adopted.log");
    let mut w = Workload::start(&log, &["counter", "20"]);
    wait_count_above(&log, 3);
    let pid = w.pid.to_string();
    let job = env
        .cedana(&["--json", "manage", "process", &pid, "--jid", "m1"])
        .ok()
        .json();
    assert_eq!(job["pid"], w.pid);
    let listed = ps_job(&env, "m1").expect("m1 listed");
    assert_eq!(listed["pid"], w.pid);
    assert_eq!(listed["state"], "running");
    let command = listed["command"].as_str().unwrap_or_default();
    assert!(
        command.contains("cedana-workload counter 20"),
        "the adopted process's command line: {listed}"
    );

    env.cedana(&["dump", "job", "m1"]).ok();
    w.reap();
    wait_state(&env, "m1", "halted");
    let at_dump = last_count(&log).expect("count");
    assert!(!pid_alive(w.pid), "the dump stopped it");

    let r = env.cedana(&["--json", "restore", "job", "m1"]).ok().json();
    let _guard = KillOnDrop(w.pid);
    assert_eq!(r["pid"], w.pid, "{r}");
    wait_state(&env, "m1", "running");
    assert_eq!(ps_job(&env, "m1").expect("m1")["pid"], w.pid);
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "carried on");
    wait_count_above(&log, at_dump + 5);
}
