//! Two operations never share state they did not ask to share: two dumps racing for one
//! checkpoint name never mix their images (one wins, the other fails clearly and its
//! workload runs on), dumps of one tree at once are refused with a clear message, and
//! so are restores of one checkpoint at once (one restores, the other is told the PID
//! is being restored or in use, never CRIU's raw "File exists").

use std::process::{Child, Stdio};

use cedana_e2e::*;

/// Starts `cedana --json dump process PID ARGS` through the daemon, in the background.
fn spawn_dump(env: &Env, pid: i32, extra: &[&str]) -> Child {
    env.cmd()
        .args(["--json", "dump", "process", &pid.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a dump")
}

fn finish(child: Child) -> Run {
    Run::from_output(child.wait_with_output().expect("dump finished"))
}

#[test]
fn two_dumps_racing_for_one_name_never_mix_their_images() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let (log_a, log_b) = (env.path("a.log"), env.path("b.log"));
    let mut a = Workload::start(&log_a, &["memory", "64"]);
    let mut b = Workload::start(&log_b, &["memory", "64"]);
    let _guards = (KillOnDrop(a.pid), KillOnDrop(b.pid));
    wait_count_above(&log_a, 1);
    wait_count_above(&log_b, 1);
    let (da, db) = (
        // Archives (dumps stream by default): one file each, whose name they race for.
        spawn_dump(&env, a.pid, &["--name", "n", "--compression", "zstd"]),
        spawn_dump(&env, b.pid, &["--name", "n", "--compression", "zstd"]),
    );
    let (ra, rb) = (finish(da), finish(db));
    let (winner, loser, win_log, lose_log) = match (ra.code, rb.code) {
        (0, c) if c != 0 => (&mut a, &mut b, &log_a, (rb, &log_b)),
        (c, 0) if c != 0 => (&mut b, &mut a, &log_b, (ra, &log_a)),
        _ => panic!(
            "exactly one dump may take the name:\nA: {} {}\nB: {} {}",
            ra.code, ra.stderr, rb.code, rb.stderr
        ),
    };
    let (lost, loser_log) = lose_log;
    assert!(
        lost.stderr.contains("already exists"),
        "the loser says why: {}",
        lost.stderr
    );
    assert!(loser.alive(), "the losing dump killed its workload");
    let before = last_count(loser_log).expect("counting");
    wait_count_above(loser_log, before + 1);
    winner.reap();
    let last = last_count(win_log).expect("counted");
    let names: Vec<String> = dir_names(&env.checkpoints())
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        names,
        ["n.tar.zst"],
        "one checkpoint, nothing hidden listed"
    );
    // It holds the winner's memory: the winner's counter goes on, in the winner's log.
    let path = env.checkpoints().join("n.tar.zst");
    let p = path.to_string_lossy().to_string();
    let out = env
        .cedana(&["--json", "restore", "process", "--path", &p, "--no-server"])
        .ok();
    let pid = out.json()["pid"].as_i64().expect("pid") as i32;
    let _restored = KillOnDrop(pid);
    assert_eq!(pid, winner.pid, "the winner's tree came back");
    assert_eq!(next_after(win_log, last), last + 1);
}

#[test]
fn dumps_of_one_tree_at_once_are_refused_clearly() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let log = env.path("m.log");
    let w = Workload::start(&log, &["memory", "96"]);
    let _guard = KillOnDrop(w.pid);
    wait_count_above(&log, 1);
    let dumps: Vec<Child> = (0..3)
        .map(|i| {
            let name = format!("same-{i}");
            spawn_dump(&env, w.pid, &["--leave-running", "--name", &name])
        })
        .collect();
    let runs: Vec<Run> = dumps.into_iter().map(finish).collect();
    let ok = runs.iter().filter(|r| r.code == 0).count();
    // Three requests sent at once, each dump taking a good second: they overlap.
    assert!(
        ok < runs.len(),
        "the dumps overlapped, so some were refused"
    );
    assert!(
        ok >= 1,
        "one dump goes through: {:?}",
        runs.iter().map(|r| &r.stderr).collect::<Vec<_>>()
    );
    for r in runs.iter().filter(|r| r.code != 0) {
        assert!(
            r.stderr.contains("being checkpointed by another request"),
            "a concurrent dump is refused clearly, not by CRIU: {}",
            r.stderr
        );
    }
    assert!(w.alive(), "leave-running dumps keep the workload");
    let before = last_count(&log).expect("counting");
    wait_count_above(&log, before + 1);
}

/// Dumps a counter (stopping it) into a checkpoint directory; returns its path, the
/// workload's PID, its log and its last count.
fn stopped_counter(env: &Env, name: &str) -> (String, i32, std::path::PathBuf, u64) {
    let log = env.path(&format!("{name}.log"));
    // Some memory, so that each restore takes long enough for the two to overlap.
    let mut w = Workload::start(&log, &["memory", "32"]);
    wait_count_above(&log, 1);
    let pid = w.pid.to_string();
    let out = env
        .cedana(&[
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--name",
            name,
            "--compression",
            "none",
        ])
        .ok();
    w.reap();
    let last = last_count(&log).expect("counted");
    let path = out.json()["path"].as_str().expect("path").to_string();
    (path, w.pid, log, last)
}

/// Two restores of one checkpoint at once: one restores, the other is refused clearly.
fn one_restore_wins(env: &Env, no_server: bool) {
    let (path, pid, log, last) =
        stopped_counter(env, if no_server { "by-cli" } else { "by-daemon" });
    let restore = || {
        let mut c = env.cmd();
        c.args(["--json", "restore", "process", "--path", &path]);
        if no_server {
            c.arg("--no-server");
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("restore")
    };
    let (a, b) = (restore(), restore());
    let runs = [finish(a), finish(b)];
    let _restored = KillOnDrop(pid);
    let ok: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one restore succeeds: {:?}",
        runs.iter().map(|r| &r.stderr).collect::<Vec<_>>()
    );
    assert_eq!(
        ok[0].json()["pid"].as_i64(),
        Some(i64::from(pid)),
        "its own PID"
    );
    let refused = runs.iter().find(|r| r.code != 0).expect("one refused");
    eprintln!("the refused restore said: {}", refused.stderr);
    assert!(
        !refused.stderr.contains("File exists"),
        "CRIU's raw message reached the user: {}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains(&format!("PID {pid} is being restored by another request"))
            || refused
                .stderr
                .contains(&format!("PID {pid} is still in use by")),
        "the refusal says why: {}",
        refused.stderr
    );
    assert_eq!(next_after(&log, last), last + 1, "the winner carries on");
}

#[test]
fn restores_of_one_checkpoint_at_once_through_the_daemon() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    one_restore_wins(&env, false);
}

#[test]
fn restores_of_one_checkpoint_at_once_without_the_daemon() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    one_restore_wins(&env, true);
}
