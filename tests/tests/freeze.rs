//! `cedana freeze|unfreeze` through the daemon, against real processes: a frozen tree
//! is stopped (state `T` in /proc, root and children alike) and its counter does not
//! advance; after unfreeze it counts on from where it stopped. The same for a job, whose
//! state `ps` shows as `frozen`, then `running` again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cedana_e2e::*;

/// The state letter of `/proc/PID/stat` (R, S, T, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Children of `pid` (from /proc/PID/task/*/children).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits until every PID is stopped (`T`).
fn wait_stopped(pids: &[i32]) {
    wait_for(
        &format!("{pids:?} to be stopped (T)"),
        Duration::from_secs(5),
        || {
            pids.iter()
                .all(|p| proc_state(*p) == Some('T'))
                .then_some(())
        },
    );
}

/// Watches `log` for `window`, asserting its last count stays `value` all along.
fn stays_at(log: &Path, value: u64, window: Duration) {
    let start = Instant::now();
    while start.elapsed() < window {
        assert_eq!(
            last_count(log),
            Some(value),
            "a frozen process must not count ({} after {:?})",
            log.display(),
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn job_field(env: &Env, jid: &str, field: &str) -> serde_json::Value {
    let v = env.cedana(&["--json", "ps"]).ok().json();
    v.as_array()
        .and_then(|a| a.iter().find(|j| j["jid"] == jid))
        .map(|j| j[field].clone())
        .unwrap_or_else(|| panic!("job {jid} not listed: {v}"))
}

#[test]
fn frozen_process_stops_counting_and_counts_on_after_unfreeze() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let log = env.path("counter.log");
    let w = Workload::start(&log, &["counter", "20"]);
    wait_count_above(&log, 3);
    let pid = w.pid.to_string();

    let out = env.cedana(&["freeze", "process", &pid]).ok();
    assert!(out.stdout.contains("frozen"), "{}", out.stdout);
    wait_stopped(&[w.pid]);
    let at_freeze = last_count(&log).expect("count");
    // 25 intervals of the counter.
    stays_at(&log, at_freeze, Duration::from_millis(500));
    assert_eq!(proc_state(w.pid), Some('T'), "still stopped");

    env.cedana(&["unfreeze", "process", &pid]).ok();
    // It carries on where it stopped: the next number, then more.
    assert_eq!(next_after(&log, at_freeze), at_freeze + 1);
    wait_count_above(&log, at_freeze + 5);
    assert_ne!(proc_state(w.pid), Some('T'), "running again");

    env.cedana(&["freeze", "process", "999999999"])
        .fails_with("999999999");
}

#[test]
fn frozen_job_stops_its_whole_tree_and_ps_says_frozen() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    // A shell whose child is the counter: freezing the job must stop both.
    let workload = bin("cedana-workload").display().to_string();
    let script = format!("'{workload}' counter 20 & wait");
    env.cedana(&["run", "process", "--jid", "fz", "--", "sh", "-c", &script])
        .ok();
    let log = PathBuf::from(
        job_field(&env, "fz", "log_path")
            .as_str()
            .expect("log_path")
            .to_string(),
    );
    wait_count_above(&log, 3);
    let root = job_field(&env, "fz", "pid").as_i64().expect("pid") as i32;
    let kids = wait_for("the counter child", Duration::from_secs(5), || {
        let k = children(root);
        (!k.is_empty()).then_some(k)
    });

    // The daemon's clean-up kills the job's root; the child is ours to kill.
    let _kids: Vec<KillOnDrop> = kids.iter().map(|k| KillOnDrop(*k)).collect();
    env.cedana(&["freeze", "job", "fz"]).ok();
    let mut tree = vec![root];
    tree.extend(&kids);
    wait_stopped(&tree);
    assert_eq!(job_field(&env, "fz", "state"), "frozen");
    let at_freeze = last_count(&log).expect("count");
    stays_at(&log, at_freeze, Duration::from_millis(500));

    env.cedana(&["unfreeze", "job", "fz"]).ok();
    assert_eq!(job_field(&env, "fz", "state"), "running");
    assert_eq!(next_after(&log, at_freeze), at_freeze + 1);
    wait_count_above(&log, at_freeze + 5);
    for p in &tree {
        assert_ne!(proc_state(*p), Some('T'), "PID {p} running again");
    }
    env.cedana(&["job", "kill", "fz", "--signal", "KILL"]).ok();
}
