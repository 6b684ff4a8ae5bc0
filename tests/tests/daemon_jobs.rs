//! The daemon and managed jobs: run, dump, restore by job id, `ps` states, restart,
//! socket permissions.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cedana_e2e::*;
use serde_json::Value;

fn state(env: &Env, jid: &str) -> String {
    env.listed_job(jid)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_state(env: &Env, jid: &str, want: &str) {
    wait_for(
        &format!("job {jid} to be {want}"),
        Duration::from_secs(10),
        || (state(env, jid) == want).then_some(()),
    );
}

#[test]
fn job_is_dumped_and_restored_by_id_and_its_log_keeps_flowing() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let log = env.run_counter_job("counter");
    assert_eq!(state(&env, "counter"), "running");

    // Two checkpoints; restore must pick the latest.
    env.cedana(&[
        "dump",
        "job",
        "counter",
        "--leave-running",
        "--name",
        "first",
    ])
    .ok();
    let first = last_count(&log).expect("count");
    wait_count_above(&log, first + 5);
    env.cedana(&["dump", "job", "counter", "--name", "second"])
        .ok();
    wait_state(&env, "counter", "halted");
    let at_dump = last_count(&log).expect("count");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        last_count(&log),
        Some(at_dump),
        "dumped job must be stopped"
    );

    env.cedana(&["restore", "job", "counter"]).ok();
    wait_state(&env, "counter", "running");
    let c = wait_for("output after restore", Duration::from_secs(10), || {
        let c = counts(&log);
        let i = c.iter().rposition(|v| *v == at_dump)?;
        c.get(i + 1).copied()
    });
    assert_eq!(
        c,
        at_dump + 1,
        "restored from the latest checkpoint, continuing"
    );
    wait_count_above(&log, at_dump + 5);

    let list = env.cedana(&["--json", "checkpoints"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    env.cedana(&["job", "kill", "counter", "--signal", "KILL"])
        .ok();
    wait_state(&env, "counter", "halted");
}

#[test]
fn no_such_job_is_a_clear_error() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    env.cedana(&["dump", "job", "nope"]).fails_with("nope");
    env.cedana(&["restore", "job", "nope"]).fails_with("nope");
}

#[test]
fn restarted_daemon_lists_the_same_jobs_and_checkpoints() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let _log = env.run_counter_job("survivor");
    env.cedana(&["dump", "job", "survivor", "--leave-running"])
        .ok();
    let jobs_before = env.cedana(&["--json", "ps"]).ok().json();
    let cks_before = env.cedana(&["--json", "checkpoints"]).ok().json();
    env.stop_daemon();
    env.start_daemon();
    let jobs_after = env.cedana(&["--json", "ps"]).ok().json();
    let cks_after = env.cedana(&["--json", "checkpoints"]).ok().json();
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|j| j[key].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&jobs_before, "jid"), ids(&jobs_after, "jid"));
    assert_eq!(ids(&cks_before, "id"), ids(&cks_after, "id"));
    assert!(!ids(&cks_after, "id").is_empty());
    // The process outlived the daemon, so the job is still running.
    assert_eq!(state(&env, "survivor"), "running");
    let pid = env.listed_job("survivor")["pid"].as_i64().expect("pid") as i32;
    kill(pid);
    wait_state(&env, "survivor", "halted");
}

#[test]
fn socket_is_private_and_non_root_users_are_refused() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    // Let other users reach the socket's directory, so only the socket guards the daemon.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    env.start_daemon();
    let mode = std::fs::metadata(env.socket())
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o002,
        0,
        "socket must not be world-writable: {mode:o}"
    );
    assert_eq!(mode, 0o600);
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("cedana"))
        .arg("--set")
        .arg(format!("address={}", env.socket().display()))
        .arg("ps")
        .output()
        .expect("setpriv");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a non-root user must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("permission"), "{err}");
}
