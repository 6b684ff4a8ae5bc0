//! The commit protocol for runc containers: the container is held (paused) from before
//! CRIU until its checkpoint is committed. A commit that fails lets it run on, unpaused;
//! a daemon killed while it is held resumes it at its next start.

mod runc_support;

use std::time::Duration;

use cedana_e2e::{dir_names, wait_for, Env, Run};
use runc_support::*;

/// The counter in `orig`'s rootfs advances.
fn keeps_counting(pair: &CounterPair) {
    let count = pair.bundle.join("rootfs/tmp/count");
    let before = numbers(&count).last().copied().unwrap_or(0);
    wait_for("the container to count on", Duration::from_secs(10), || {
        (numbers(&count).last().copied().unwrap_or(0) > before + 1).then_some(())
    });
}

#[test]
fn a_failed_commit_resumes_the_container() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let pair = CounterPair::start(&env);
    let root = pair.root.to_string_lossy().to_string();
    for (stage, flags) in [
        ("digest", &[][..]),
        ("metadata", &[][..]),
        ("rename", &["--compression", "none"][..]),
    ] {
        let out = Run::from_output(
            env.cmd()
                .env("CEDANA_TEST_FAULT", format!("commit-{stage}"))
                .args(["dump", "runc", "orig", "--root", &root, "--no-server"])
                .args(flags)
                .output()
                .expect("run the dump"),
        );
        assert_ne!(out.code, 0, "{stage}: the fault must fail the dump");
        assert!(
            out.stderr.contains(&format!("commit-{stage}")),
            "{}",
            out.stderr
        );
        let state = pair.rt.state("orig").expect("the container still exists");
        assert_eq!(
            state["status"], "running",
            "{stage}: left {}",
            state["status"]
        );
        keeps_counting(&pair);
        assert_eq!(
            dir_names(&env.checkpoints()),
            Vec::<String>::new(),
            "{stage}: nothing of the failed dump is left"
        );
    }
}

/// Where the daemon is killed in a container's dump.
#[derive(Clone, Copy)]
enum Cut {
    /// While CRIU still dumps: runc's `checkpoint` outlives the daemon and leaves the
    /// container frozen when it ends, after the next daemon has started.
    DuringCriu,
    /// After CRIU, while the commit hangs (fault injected).
    DuringCommit,
}

/// Kills the daemon at `cut` in a dump of a running container; the next daemon resumes
/// the container and it counts on; no staging is left.
fn daemon_killed_while_held(cut: Cut) {
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    let pair = CounterPair::start(&env);
    let root = pair.root.to_string_lossy().to_string();
    if let Cut::DuringCommit = cut {
        // The daemon inherits the fault: its commit hangs while the container is paused.
        // SAFETY: the test is the only thread touching the environment here.
        unsafe { std::env::set_var("CEDANA_TEST_FAULT", "commit-stall") };
    }
    env.start_daemon();
    unsafe { std::env::remove_var("CEDANA_TEST_FAULT") };
    let client = env
        .cmd()
        .args(["dump", "runc", "orig", "--root", &root])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the dump");
    match cut {
        Cut::DuringCriu => pair.rt.wait_status("orig", "paused"),
        Cut::DuringCommit => wait_for("the commit to stall", Duration::from_secs(30), || {
            env.daemon_log().contains("commit stalled").then_some(())
        }),
    }
    env.kill_daemon();
    let _ = client.wait_with_output();
    if let Cut::DuringCommit = cut {
        // (While CRIU runs, the freezer state is CRIU's to change.)
        assert_eq!(
            pair.rt.state("orig").expect("exists")["status"],
            "paused",
            "held while the daemon was down"
        );
    }
    env.start_daemon();
    pair.rt.wait_status("orig", "running");
    keeps_counting(&pair);
    // Still running a while later: nothing froze it again behind the resume.
    std::thread::sleep(Duration::from_secs(2));
    keeps_counting(&pair);
    assert_eq!(pair.rt.state("orig").expect("exists")["status"], "running");
    let hidden: Vec<String> = dir_names(&env.checkpoints())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "staging left: {hidden:?}");
}

#[test]
fn a_daemon_killed_while_the_container_is_held_resumes_it_at_restart() {
    daemon_killed_while_held(Cut::DuringCommit);
}

#[test]
fn a_daemon_killed_while_criu_dumps_the_container_resumes_it_once_criu_ends() {
    daemon_killed_while_held(Cut::DuringCriu);
}
