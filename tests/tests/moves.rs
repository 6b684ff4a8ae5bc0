//! A workload moves any number of times: a counter dumped and restored three times in a
//! row, by PID (`--no-server`) and as a daemon job, goes on from its last value each
//! time. (The runc and containerd routes: `runc_external_files.rs`, `containerd_moves.rs`.)

use std::time::Duration;

use cedana_e2e::*;

#[test]
fn a_process_moves_three_times() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("p.log");
    let mut w = Workload::start(&log, &["counter"]);
    let pid = w.pid;
    wait_count_above(&log, 2);
    let mut first = true;
    for round in 1..=3 {
        let name = format!("move-{round}");
        let p = pid.to_string();
        let out = env
            .cedana(&[
                "--json",
                "dump",
                "process",
                &p,
                "--no-server",
                "--name",
                &name,
            ])
            .ok();
        let path = std::path::PathBuf::from(out.json()["path"].as_str().expect("path"));
        if first {
            w.reap();
            first = false;
        }
        wait_for("the dumped process to go", Duration::from_secs(10), || {
            (!pid_alive(pid)).then_some(())
        });
        let last = last_count(&log).expect("counted");
        // The restored process is moved again next round, killed after the last.
        restore_process_and_check(&env, &path, &log, last);
        wait_count_above(&log, last + 2);
    }
    kill(pid);
}

#[test]
fn a_job_moves_three_times() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let v = env
        .cedana(&[
            "--json",
            "run",
            "process",
            "--jid",
            "mover",
            "--",
            &bin("cedana-workload").display().to_string(),
            "counter",
        ])
        .ok()
        .json();
    let log = std::path::PathBuf::from(v["log_path"].as_str().expect("log"));
    wait_count_above(&log, 2);
    for round in 1..=3 {
        let name = format!("job-move-{round}");
        env.cedana(&["dump", "job", "mover", "--name", &name]).ok();
        let last = last_count(&log).expect("counted");
        env.cedana(&["restore", "job", "mover"]).ok();
        assert_eq!(next_after(&log, last), last + 1, "move {round}");
    }
}
