//! What the daemon promises beyond a single request: a streamed job restored through
//! the daemon is its child (CRIU's `--restore-sibling`), `ps` shows it running while its
//! log grows and halted once it dies; a `run runc` job keeps logging while the daemon is down
//! and after it restarts; a `restore containerd` that fails in runc leaves no
//! container, task or snapshot in containerd; and the shim's `ctr task metrics` report
//! what the container's cgroup says.

mod runc_support;

use std::path::PathBuf;
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, CEDANA, RUNC};
use cedana_e2e::*;
use serde_json::Value;

fn ps_job(env: &Env, jid: &str) -> Value {
    let v = env.cedana(&["--json", "ps"]).ok().json();
    v.as_array()
        .and_then(|a| a.iter().find(|j| j["jid"] == jid).cloned())
        .unwrap_or_else(|| panic!("job {jid} not listed: {v}"))
}

fn wait_state(env: &Env, jid: &str, want: &str) -> Value {
    wait_for(
        &format!("job {jid} to be {want}"),
        Duration::from_secs(15),
        || {
            let j = ps_job(env, jid);
            (j["state"] == want).then_some(j)
        },
    )
}

/// The parent PID of `pid`.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn streamed_job_restored_through_the_daemon_is_its_child() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let w = bin("cedana-workload").display().to_string();
    env.cedana(&["run", "process", "--jid", "s1", "--", &w, "counter", "20"])
        .ok();
    let log = PathBuf::from(ps_job(&env, "s1")["log_path"].as_str().expect("log"));
    wait_count_above(&log, 3);
    let d = env
        .cedana(&["--json", "dump", "job", "s1", "--streams", "2"])
        .ok()
        .json();
    let path = PathBuf::from(d["path"].as_str().expect("path"));
    assert!(path.join("streams.json").is_file(), "streamed: {d}");
    wait_state(&env, "s1", "halted");
    let at_dump = last_count(&log).expect("count");

    let r = env.cedana(&["--json", "restore", "job", "s1"]).ok().json();
    let pid = r["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(pid);
    let j = wait_state(&env, "s1", "running");
    assert_eq!(j["pid"], pid);
    // CRIU restores a streamed tree as its sibling (`--restore-sibling`), so its root is
    // the daemon's child, as after a restore through CRIU's RPC: reaped, not polled.
    assert_eq!(
        ppid(pid),
        env.daemon_pid(),
        "a streamed restore is the daemon's child"
    );
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "carried on");
    // Still running, and still logging, a while later.
    let later = wait_count_above(&log, at_dump + 20);
    assert_eq!(ps_job(&env, "s1")["state"], "running");
    wait_count_above(&log, later + 5);

    // The daemon sees it die, with its end recorded.
    kill(pid);
    wait_state(&env, "s1", "halted");
}

/// Counts on stdout only (the job log), `out N`.
const OUTPUT_COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo out $i; sleep 0.05; done",
];

/// Last `out N` in a runc job's log.
fn last_out(log: &str) -> Option<u64> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("out ")?.trim().parse().ok())
}

#[test]
fn run_runc_output_reaches_the_log_while_the_daemon_is_down_and_after() {
    use runc_support::*;
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let root = env.path("runc-root");
    let root_s = root.display().to_string();
    let bundle = env.path("bundle");
    build_bundle(&bundle, OUTPUT_COUNTER, Net::Own);
    let _g = Ctr::new(&root, "relay-ctr");
    let v = env
        .cedana(&[
            "--json",
            "run",
            "runc",
            "--bundle",
            &bundle.display().to_string(),
            "--id",
            "relay-ctr",
            "--root",
            &root_s,
            "--jid",
            "rr",
        ])
        .ok()
        .json();
    let log = v["log_path"].as_str().expect("log").to_string();
    wait_for("output in the job log", Duration::from_secs(15), || {
        last_out(&log).filter(|n| *n > 3)
    });

    env.kill_daemon();
    let at_stop = last_out(&log).expect("out");
    let while_down = wait_for(
        "output while the daemon is down",
        Duration::from_secs(10),
        || last_out(&log).filter(|n| *n > at_stop + 10),
    );
    env.start_daemon();
    assert_eq!(ps_job(&env, "rr")["state"], "running");
    wait_for("output after the restart", Duration::from_secs(10), || {
        last_out(&log).filter(|n| *n > while_down + 10)
    });
    // Nothing lost: every number from 1 to the last is in the log, in order.
    let outs: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("out ")?.trim().parse().ok())
        .collect();
    let expected: Vec<u64> = (1..=*outs.last().expect("outs")).collect();
    assert_eq!(outs, expected, "a gap or a repeat in the job log");
    env.cedana(&["job", "kill", "rr", "--signal", "KILL"]).ok();
}

/// Rewrites `file`'s entry in `dir/metadata.json` to its current size and sha256, so a
/// damaged image passes our checks and reaches runc (and CRIU).
fn re_digest(dir: &std::path::Path, file: &str) {
    use sha2::{Digest, Sha256};
    let meta_path = dir.join("metadata.json");
    let mut meta: Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("metadata")).expect("json");
    let data = std::fs::read(dir.join(file)).expect("image");
    meta["files"][file] = serde_json::json!({
        "size": data.len(),
        "sha256": hex::encode(Sha256::digest(&data)),
    });
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).expect("json")).expect("write");
}

#[test]
fn failed_restore_containerd_leaves_nothing_in_containerd() {
    let Some(c) = Containerd::setup() else { return };
    let mut env = Env::new();
    env.start_daemon();
    let runc_binary = bin("cedana-runc").display().to_string();
    c.run_detached(
        &[RUNC, "--runc-binary", &runc_binary],
        "orig",
        &["sh", "-c", "while true; do sleep 0.1; done"],
    );
    wait_for("orig running", Duration::from_secs(20), || {
        (c.task_status("orig").as_deref() == Some("RUNNING")).then_some(())
    });
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let d = env
        .cedana(&[
            "--json",
            "dump",
            "containerd",
            "orig",
            "--containerd-address",
            &address,
            "--namespace",
            &c.namespace,
            "--dir",
            &dir,
            "--compression",
            "none",
        ])
        .ok()
        .json();
    let path = PathBuf::from(d["path"].as_str().expect("path"));
    // CRIU's inventory, garbage (with a matching digest): runc restore fails in CRIU,
    // after the container and its snapshot were created.
    let inventory = "checkpoint/inventory.img";
    std::fs::write(path.join(inventory), b"not a CRIU image").expect("damage");
    re_digest(&path, inventory);
    let containers_before = c.containers();
    let snapshots = || c.ok(&["snapshots", "ls"]);
    let path_s = path.display().to_string();
    let failed = env
        .cedana(&[
            "restore",
            "containerd",
            "--path",
            &path_s,
            "--id",
            "broken",
            "--containerd-address",
            &address,
            "--namespace",
            &c.namespace,
        ])
        // It failed where runc restored, naming the damaged image, with CRIU's log kept.
        .fails_with("inventory.img");
    let kept = failed
        .stderr
        .split("kept at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kept restore log named: {}", failed.stderr));
    let kept_log = std::fs::read_to_string(kept).unwrap_or_else(|e| panic!("{kept}: {e}"));
    assert!(kept_log.contains("inventory.img"), "{kept_log}");
    assert_eq!(c.containers(), containers_before, "no container left");
    assert!(c.task_status("broken").is_none(), "no task left");
    let snaps = snapshots();
    assert!(
        !snaps
            .lines()
            .any(|l| l.split_whitespace().next() == Some("broken")),
        "no snapshot left: {snaps}"
    );
}

/// `ctr task metrics --format json` of `id`.
fn metrics(c: &Containerd, id: &str) -> Value {
    let out = c.ok(&["task", "metrics", "--format", "json", id]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("metrics json ({e}): {out}"))
}

/// A cgroup v1 controller file of `pid`'s cgroup, as a number.
fn cgroup_value(pid: i32, controller: &str, file: &str) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })?;
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn shim_metrics_match_the_containers_cgroup() {
    if !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        skip(
            "cgroup v1 memory controller not mounted",
            "a cgroup v1 host",
        );
        return;
    }
    let Some(c) = Containerd::setup() else { return };
    c.run_detached(&[CEDANA], "m1", &["sleep", "1000"]);
    let pid: i32 = wait_for("m1's task", Duration::from_secs(20), || {
        let ls = c.ok(&["task", "ls"]);
        ls.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"m1") && f.get(2) == Some(&"RUNNING"))
                .then(|| f.get(1)?.parse().ok())
                .flatten()
        })
    });
    let m = metrics(&c, "m1");
    let pids = m["pids"]["current"].as_u64();
    assert_eq!(pids, cgroup_value(pid, "pids", "pids.current"), "{m}");
    assert!(pids.is_some_and(|n| n >= 1), "{m}");
    let usage = m["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    let file = cgroup_value(pid, "memory", "memory.usage_in_bytes").expect("memory usage");
    assert!(usage > 0, "{m}");
    let (lo, hi) = (usage.min(file), usage.max(file));
    assert!(
        hi - lo <= hi / 2 + (1 << 20),
        "shim says {usage} bytes, the cgroup {file}"
    );
    c.kill_and_remove("m1");
}
