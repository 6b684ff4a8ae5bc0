//! A container restored through the daemon (`restore runc`, `restore containerd`) is a
//! job: `ps` lists it, its output goes to a log of its own under jobs.log_dir (never the
//! daemon's stdout, where it once overwrote the daemon's log), `job attach` follows it,
//! `job kill` stops it. Issue 11, item 3.

mod runc_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, RUNC};
use cedana_e2e::{bin, counts, last_count, wait_for, Env};
use runc_support::*;

/// Prints 1, 2, 3, ... to stdout, one a line.
const PRINTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";

/// Waits (30 s: the host may be busy) until the counter in `log` passes `above`.
fn wait_count_above(log: &Path, above: u64) -> u64 {
    wait_for(
        &format!("the counter in {} to pass {above}", log.display()),
        Duration::from_secs(30),
        || last_count(log).filter(|v| *v > above),
    )
}

/// The job `jid` as `ps --json` shows it.
fn ps_job(env: &Env, jid: &str) -> serde_json::Value {
    let ps = env.cedana(&["--json", "ps"]).ok().json();
    ps.as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["jid"] == jid).cloned())
        .unwrap_or_else(|| panic!("job {jid} not in ps: {ps}"))
}

/// Waits until the counter in `log` is still for a moment (its writer gone), returns it.
fn settled_count(log: &Path) -> u64 {
    let mut last = None;
    wait_for("the log to settle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = last_count(log);
        let settled = (now.is_some() && now == last).then_some(now);
        last = now;
        settled.flatten()
    })
}

/// Checks the restored job: listed as running with `kind` and a log of its own under
/// jobs.log_dir that starts at `last + 1`; the daemon's stdout holds none of it; `job
/// kill` stops it and `job attach` then replays its output and ends.
fn check_restored_job(env: &Env, restored: &serde_json::Value, kind: &str, last: u64) {
    let jid = restored["jid"].as_str().unwrap_or_default().to_string();
    assert!(
        !jid.is_empty(),
        "the restored container is no job: {restored}"
    );
    let job = ps_job(env, &jid);
    assert_eq!(job["kind"], kind, "{job}");
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(job["pid"], restored["pid"], "{job}");
    let log = PathBuf::from(job["log_path"].as_str().unwrap_or_default());
    assert_eq!(
        log,
        env.path(&format!("jobs/{jid}.log")),
        "the job's own log, under jobs.log_dir"
    );
    let first = wait_for(
        "the restored container's first line in its job log",
        Duration::from_secs(30),
        || counts(&log).first().copied(),
    );
    assert_eq!(
        first,
        last + 1,
        "the restored counter carried on in its own log"
    );
    wait_count_above(&log, last + 3);
    let daemon = env.daemon_log();
    assert!(
        !daemon.lines().any(|l| l.trim().parse::<u64>().is_ok()),
        "the container's output reached the daemon's stdout:\n{daemon}"
    );
    env.cedana(&["job", "kill", &jid, "--timeout", "1"]).ok();
    assert_eq!(ps_job(env, &jid)["state"], "halted");
    let attached = env.cedana(&["job", "attach", &jid]).ok();
    assert!(
        attached.stdout.contains(&format!("\n{}\n", last + 2)),
        "attach replays the job's output: {}",
        attached.stdout
    );
}

#[test]
fn restore_runc_through_the_daemon_is_a_job() {
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_bundle(&bundle, &["sh", "-c", PRINTER], Net::Own);
    let fresh = env.path("fresh");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
    let _guards = [Ctr::new(&root, "orig"), Ctr::new(&root, "copy")];
    let (r, b) = (root.to_str().expect("utf8"), bundle.to_str().expect("utf8"));
    // A runc job: its stdout is a pipe to a relay, which CRIU checkpoints as such.
    env.cedana(&[
        "run", "runc", "--bundle", b, "--id", "orig", "--root", r, "--jid", "orig",
    ])
    .ok();
    let orig_log = env.path("jobs/orig.log");
    wait_count_above(&orig_log, 5);
    let dir = env.checkpoints().display().to_string();
    let d = env
        .cedana(&["--json", "dump", "runc", "orig", "--root", r, "--dir", &dir])
        .ok()
        .json();
    let path = d["path"].as_str().expect("path").to_string();
    let last = settled_count(&orig_log);
    let f = fresh.to_str().expect("utf8");
    let restored = env
        .cedana(&[
            "--json", "restore", "runc", "--path", &path, "--bundle", f, "--id", "copy", "--root",
            r,
        ])
        .ok()
        .json();
    check_restored_job(&env, &restored, "runc", last);
    // With --no-server a container is no job: --attach would have nothing to follow.
    env.cedana(&[
        "restore",
        "runc",
        "--path",
        &path,
        "--bundle",
        f,
        "--id",
        "other",
        "--root",
        r,
        "--no-server",
        "--attach",
    ])
    .fails_with("--attach follows a job's log");
    // The plain text output names the job too.
    let text = env.cedana(&["ps"]).ok().stdout;
    assert!(
        text.contains(restored["jid"].as_str().unwrap_or("-")),
        "{text}"
    );
}

#[test]
fn restore_containerd_through_the_daemon_is_a_job() {
    let Some(c) = Containerd::setup() else { return };
    let mut env = Env::new();
    env.start_daemon();
    let runc_binary = bin("cedana-runc").display().to_string();
    // The original's output goes to a file through the shim's pipes, which CRIU
    // checkpoints; the restore gives the new container a log of its own.
    let orig_log = env.path("orig.log");
    let log_uri = format!("file://{}", orig_log.display());
    c.run_detached(
        &[RUNC, "--runc-binary", &runc_binary, "--log-uri", &log_uri],
        "orig",
        &["sh", "-c", PRINTER],
    );
    wait_count_above(&orig_log, 5);
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let target = [
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
    ];
    let mut dump = vec!["--json", "dump", "containerd", "orig", "--dir", &dir];
    dump.extend(target);
    let d = env.cedana(&dump).ok().json();
    let path = d["path"].as_str().expect("path").to_string();
    let last = settled_count(&orig_log);
    let mut restore = vec![
        "--json",
        "restore",
        "containerd",
        "--path",
        &path,
        "--id",
        "copy",
    ];
    restore.extend(target);
    let r = env.cedana(&restore);
    assert_eq!(
        r.code,
        0,
        "restore failed: {}{}\ncontainerd log tail:\n{}",
        r.stdout,
        r.stderr,
        c.log_tail()
    );
    check_restored_job(&env, &r.json(), "containerd", last);
    // The (killed) containerd job restores as its container again, never as a bare
    // process tree: the same job, of kind containerd, its task running in containerd.
    let jid = r.json()["jid"].as_str().unwrap_or_default().to_string();
    let again = env
        .cedana(&["--json", "restore", "job", &jid, "--path", &path])
        .ok()
        .json();
    assert_eq!(again["jid"], jid.as_str(), "{again}");
    let job = ps_job(&env, &jid);
    assert_eq!(job["kind"], "containerd", "{job}");
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(c.task_status("copy").as_deref(), Some("RUNNING"));
    c.remove_all();
}
