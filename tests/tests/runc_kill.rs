//! `cedana job kill` of a runc job whose PID 1 is a shell: the shell ignores SIGTERM
//! (a namespace's init without a handler), so kill must escalate to SIGKILL after the
//! grace period, as `docker stop` does, and `job delete` must then work.

mod runc_support;

use std::time::{Duration, Instant};

use cedana_e2e::{wait_for, Env};
use runc_support::*;

/// Busybox sh as PID 1, looping; it has no TERM trap.
const SHELL_LOOP: &[&str] = &["sh", "-c", "while true; do sleep 0.2; done"];

fn state(env: &Env, jid: &str) -> String {
    let v = env.cedana(&["--json", "ps"]).ok().json();
    v.as_array()
        .and_then(|a| a.iter().find(|j| j["jid"] == jid))
        .and_then(|j| j["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn job_kill_escalates_to_sigkill_for_a_shell_as_pid_1() {
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let root = env.path("runc-root");
    let root_s = root.to_str().expect("utf8").to_string();
    let bundle = env.path("bundle");
    build_bundle(&bundle, SHELL_LOOP, Net::Own);
    let _g = Ctr::new(&root, "kill-ctr");
    env.cedana(&[
        "run",
        "runc",
        "--bundle",
        bundle.to_str().expect("utf8"),
        "--id",
        "kill-ctr",
        "--root",
        &root_s,
        "--jid",
        "k1",
    ])
    .ok();
    let rt = Rt::runc(&root);
    rt.wait_status("kill-ctr", "running");
    assert_eq!(state(&env, "k1"), "running");

    let grace = 2;
    let start = Instant::now();
    let out = env
        .cedana(&["job", "kill", "k1", "--timeout", &grace.to_string()])
        .ok();
    let took = start.elapsed();
    assert!(
        out.stdout.contains("SIGKILL"),
        "the shell ignores TERM, so KILL followed: {}",
        out.stdout
    );
    assert!(
        took >= Duration::from_secs(grace) && took < Duration::from_secs(grace + 8),
        "kill took {took:?} (grace {grace} s)"
    );
    assert_eq!(state(&env, "k1"), "halted", "{}", env.daemon_log());

    env.cedana(&["job", "delete", "k1"]).ok();
    wait_for("container deleted", Duration::from_secs(15), || {
        rt.state("kill-ctr").is_none().then_some(())
    });
}
