//! Dump and restore flags against real CRIU (and real runc), checked by what they do:
//! `--pid-file` receives the restored PID; `--tcp-close` brings a connection back
//! closed; `--file-locks`, `--shell-job`, `--link-remap`, `--external` reach CRIU's
//! command line (a streamed dump runs CRIU's CLI, seen through [`CriuRecorder`]), are
//! recorded and applied again at restore; on the runc route runc itself receives
//! `--shell-job` / `--file-locks` (a recording wrapper as `runc.binary_path`). Without
//! any flag, a held `flock`, an unlinked open file and a foreign session (shell job) are
//! detected: the dump works, the metadata records the option chosen, and the restored
//! process still holds the lock and the file's content, and counts on.

mod runc_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cedana_e2e::*;
use serde_json::Value;

fn ps_job(env: &Env, jid: &str) -> Value {
    let v = env.cedana(&["--json", "ps"]).ok().json();
    v.as_array()
        .and_then(|a| a.iter().find(|j| j["jid"] == jid).cloned())
        .unwrap_or_else(|| panic!("job {jid} not listed: {v}"))
}

fn wait_state(env: &Env, jid: &str, want: &str) {
    wait_for(
        &format!("job {jid} to be {want}"),
        Duration::from_secs(10),
        || (ps_job(env, jid)["state"] == want).then_some(()),
    );
}

/// Runs `sh -c script` as job `jid`; returns its log.
fn run_sh(env: &Env, jid: &str, script: &str) -> PathBuf {
    run_job(env, jid, &["sh", "-c", script])
}

/// Runs `command` as job `jid`; returns its log.
fn run_job(env: &Env, jid: &str, command: &[&str]) -> PathBuf {
    let mut args = vec!["run", "process", "--jid", jid, "--"];
    args.extend_from_slice(command);
    env.cedana(&args).ok();
    PathBuf::from(ps_job(env, jid)["log_path"].as_str().expect("log"))
}

/// `dump job JID` (directory checkpoint) as JSON.
fn dump_job(env: &Env, jid: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "dump", "job", jid, "--compression", "none"];
    args.extend_from_slice(extra);
    env.cedana(&args).ok().json()
}

#[test]
fn pid_file_receives_the_restored_pid() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    for daemon in [false, true] {
        let log = env.path(&format!("counter-{daemon}.log"));
        let mut w = Workload::start(&log, &["counter", "20"]);
        wait_count_above(&log, 3);
        let pid = w.pid.to_string();
        let v = env
            .cedana(&["--json", "dump", "process", &pid, "--no-server"])
            .ok()
            .json();
        w.reap();
        let at_dump = last_count(&log).expect("count");
        let path = v["path"].as_str().expect("path").to_string();
        let pid_file = env.path(&format!("restored-{daemon}.pid"));
        let pf = pid_file.display().to_string();
        let mut args = vec![
            "--json",
            "restore",
            "process",
            "--path",
            &path,
            "--pid-file",
            &pf,
        ];
        if !daemon {
            args.push("--no-server");
        }
        let r = env.cedana(&args).ok().json();
        let restored = r["pid"].as_i64().expect("pid") as i32;
        let _guard = KillOnDrop(restored);
        let written = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        assert_eq!(
            written.trim().parse::<i32>().ok(),
            Some(restored),
            "daemon={daemon}: pid file says {written:?}"
        );
        assert_eq!(restored, w.pid, "CRIU restores the original PID");
        assert_eq!(
            next_after(&log, at_dump),
            at_dump + 1,
            "the restored one counts"
        );
        kill(restored);
    }
}

#[test]
fn tcp_close_brings_the_connection_back_closed() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (addr, seen) = echo_server();
    let log = env.path("tcp.log");
    let mut w = Workload::start(&log, &["tcp-client", &addr, "50"]);
    wait_for("pings", Duration::from_secs(10), || {
        (seen.load(Ordering::SeqCst) >= 3).then_some(())
    });
    let pid = w.pid.to_string();
    let v = env
        .cedana(&[
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--tcp-close",
        ])
        .ok()
        .json();
    w.reap();
    assert_eq!(v["metadata"]["criu_options"]["tcp_close"], true, "{v}");
    let path = v["path"].as_str().expect("path").to_string();
    let r = env
        .cedana(&[
            "--json",
            "restore",
            "process",
            "--path",
            &path,
            "--no-server",
        ])
        .ok()
        .json();
    let restored = r["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(restored);
    // The client finds its connection closed and exits saying so (the workload exits
    // non-zero when the connection breaks).
    wait_for(
        "the restored client to give up on its closed connection",
        Duration::from_secs(10),
        || (!pid_alive(restored)).then_some(()),
    );
    let text = std::fs::read_to_string(&log).expect("log");
    let tail = text.lines().last().unwrap_or_default();
    assert!(
        tail.contains("send") || tail.contains("receive") || tail.contains("closed"),
        "the client's last words are about its connection: {tail:?}"
    );
}

/// A CRIU command line recorded by [`CriuRecorder`] for `verb` (dump or restore).
fn recorded(calls: &[String], verb: &str) -> String {
    calls
        .iter()
        .find(|c| c.split_whitespace().any(|a| a == verb))
        .cloned()
        .unwrap_or_else(|| panic!("no `criu {verb}` recorded: {calls:?}"))
}

#[test]
fn forced_flags_reach_criu_are_recorded_and_applied_again_at_restore() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let criu = CriuRecorder::new(&env.path("criu"));
    let log = env.path("counter.log");
    let mut w = Workload::start(&log, &["counter", "20"]);
    wait_count_above(&log, 3);
    let pid = w.pid.to_string();
    let external = "mnt[/cedana-e2e-no-such-mount]:key1";
    let v = env
        .cedana(&[
            "--set",
            &criu.setting(),
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--streams",
            "2",
            "--file-locks",
            "--shell-job",
            "--link-remap",
            "--external",
            external,
        ])
        .ok()
        .json();
    w.reap();
    let at_dump = last_count(&log).expect("count");
    let opts = &v["metadata"]["criu_options"];
    for k in ["file_locks", "shell_job", "link_remap"] {
        assert_eq!(opts[k], true, "{k} recorded: {opts}");
    }
    assert_eq!(opts["external"], serde_json::json!([external]), "{opts}");
    let dump = recorded(&criu.calls(), "dump");
    for f in ["--file-locks", "--shell-job", "--link-remap"] {
        assert!(dump.split_whitespace().any(|a| a == f), "{f} on {dump}");
    }
    assert!(dump.contains(&format!("--external {external}")), "{dump}");

    criu.clear();
    let path = v["path"].as_str().expect("path").to_string();
    let r = env
        .cedana(&[
            "--set",
            &criu.setting(),
            "--json",
            "restore",
            "process",
            "--path",
            &path,
            "--no-server",
        ])
        .ok()
        .json();
    let restored = r["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(restored);
    let restore = recorded(&criu.calls(), "restore");
    for f in ["--file-locks", "--shell-job", "--link-remap"] {
        assert!(
            restore.split_whitespace().any(|a| a == f),
            "{f} on {restore}"
        );
    }
    assert!(
        restore.contains(&format!("--external {external}")),
        "{restore}"
    );
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "counts on");
}

/// Whether `path` is locked by someone: `flock -n` cannot take it.
fn locked(path: &Path) -> bool {
    let st = std::process::Command::new("flock")
        .arg("-n")
        .arg(path)
        .arg("true")
        .status()
        .expect("flock");
    !st.success()
}

/// Dumps job `jid` (`command`, a counter holding an exclusive flock on `lock`) with no
/// flags, checks file_locks was chosen, restores it and checks the restored tree holds
/// the lock again.
fn held_lock_survives(env: &Env, jid: &str, lock: &Path, command: &[&str]) {
    let log = run_job(env, jid, command);
    wait_count_above(&log, 3);
    assert!(locked(lock), "the job holds the lock");
    let v = dump_job(env, jid, &[]);
    wait_state(env, jid, "halted");
    assert_eq!(
        v["metadata"]["criu_options"]["file_locks"], true,
        "file_locks detected: {}",
        v["metadata"]["criu_options"]
    );
    assert!(
        !locked(lock),
        "the dumped tree is gone, and its lock with it"
    );
    let at_dump = last_count(&log).expect("count");
    env.cedana(&["restore", "job", jid]).ok();
    wait_state(env, jid, "running");
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "counts on");
    assert!(locked(lock), "the restored job holds the lock again");
    env.cedana(&["job", "kill", jid, "--signal", "KILL"]).ok();
    wait_for("the lock to be released", Duration::from_secs(10), || {
        (!locked(lock)).then_some(())
    });
}

/// A counter that takes the lock itself and keeps it (its PID is the one /proc/locks
/// names).
#[test]
fn held_flock_is_detected_and_held_again_after_restore() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let lock = env.path("perl.lock");
    let lock_s = lock.display().to_string();
    let perl = "use Fcntl qw(:flock); open(my $f, '>', $ARGV[0]) or die; \
                flock($f, LOCK_EX) or die; $| = 1; my $i = 0; \
                while (1) { $i++; print \"$i\\n\"; select(undef, undef, undef, 0.05) }";
    held_lock_survives(&env, "perl-lock", &lock, &["perl", "-e", perl, &lock_s]);
}

/// How shell scripts lock: `exec 9>LOCK; flock 9`. The lock belongs to the shell's open
/// file, but /proc/locks names the `flock` process, which has exited.
#[test]
fn lock_taken_by_the_flock_utility_is_detected() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let lock = env.path("util.lock");
    let script = format!(
        "exec 9>'{}'; flock 9; i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done",
        lock.display()
    );
    held_lock_survives(&env, "flock-lock", &lock, &["sh", "-c", &script]);
}

#[test]
fn unlinked_open_file_is_detected_and_its_content_survives() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let file = env.path("scratch.txt");
    let content = format!("kept after unlink {}", std::process::id());
    let script = format!(
        "exec 3<>'{f}'; printf '%s' '{content}' >&3; rm '{f}'; \
         i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done",
        f = file.display()
    );
    let log = run_sh(&env, "unlinked", &script);
    wait_count_above(&log, 3);
    assert!(!file.exists());
    let v = dump_job(&env, "unlinked", &[]);
    wait_state(&env, "unlinked", "halted");
    assert_eq!(
        v["metadata"]["criu_options"]["link_remap"], true,
        "link_remap detected: {}",
        v["metadata"]["criu_options"]
    );
    let at_dump = last_count(&log).expect("count");
    env.cedana(&["restore", "job", "unlinked"]).ok();
    wait_state(&env, "unlinked", "running");
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "counts on");
    let pid = ps_job(&env, "unlinked")["pid"].as_i64().expect("pid");
    let fd = format!("/proc/{pid}/fd/3");
    let target = std::fs::read_link(&fd).expect("fd 3 open");
    assert!(
        target.to_string_lossy().ends_with("(deleted)"),
        "still an unlinked file: {}",
        target.display()
    );
    let read = std::fs::read_to_string(&fd).expect("read fd 3");
    assert_eq!(read, content, "the unlinked file's content");
    assert!(!file.exists(), "the restore did not bring the name back");
    env.cedana(&["job", "kill", "unlinked", "--signal", "KILL"])
        .ok();
}

/// The runc route: runc itself receives `--shell-job` and `--file-locks` on checkpoint
/// (given as flags) and again on restore (recorded), seen by a wrapper that records its
/// argv and execs the real runc.
#[test]
fn runc_receives_shell_job_and_file_locks() {
    use runc_support::*;
    use std::os::unix::fs::PermissionsExt;
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    let record = env.path("runc-calls");
    let wrapper = env.path("runc-recorder");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            record.display(),
            runc_bin().display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(env.path("etc")).expect("etc");
    std::fs::write(
        env.path("etc/config.json"),
        serde_json::json!({"runc": {"binary_path": wrapper}}).to_string(),
    )
    .expect("config");
    env.start_daemon();
    let pair = CounterPair::start(&env);
    let root_s = pair.root.display().to_string();
    let v = env
        .cedana(&[
            "--json",
            "dump",
            "runc",
            "orig",
            "--root",
            &root_s,
            "--shell-job",
            "--file-locks",
        ])
        .ok()
        .json();
    let opts = &v["metadata"]["criu_options"];
    assert_eq!(opts["shell_job"], true, "{opts}");
    assert_eq!(opts["file_locks"], true, "{opts}");
    let calls = std::fs::read_to_string(&record).unwrap_or_default();
    let checkpoint = calls
        .lines()
        .find(|l| l.split_whitespace().any(|a| a == "checkpoint"))
        .unwrap_or_else(|| panic!("runc checkpoint not run through the wrapper: {calls}"));
    for f in ["--shell-job", "--file-locks"] {
        assert!(
            checkpoint.split_whitespace().any(|a| a == f),
            "{f}: {checkpoint}"
        );
    }
    let last = *numbers(&pair.bundle.join("rootfs/tmp/count"))
        .last()
        .expect("counted");

    let path = v["path"].as_str().expect("path").to_string();
    let out = pair.restore(&env, &path, true);
    assert!(out.status.success(), "restore: {out:?}");
    pair.rt.wait_status("copy", "running");
    let calls = std::fs::read_to_string(&record).unwrap_or_default();
    let restore = calls
        .lines()
        .find(|l| l.split_whitespace().any(|a| a == "restore"))
        .unwrap_or_else(|| panic!("runc restore not run through the wrapper: {calls}"));
    for f in ["--shell-job", "--file-locks"] {
        assert!(restore.split_whitespace().any(|a| a == f), "{f}: {restore}");
    }
    assert_eq!(
        next_after(&pair.fresh.join("rootfs/tmp/count"), last),
        last + 1,
        "the restored container counts on"
    );
}

/// The children of `pid`.
fn children(pid: i64) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process whose session and group leader (its shell) stays outside the dumped tree:
/// shell_job is detected, the dump works without flags and the restored copy counts on.
#[test]
fn shell_job_is_detected_for_a_process_of_a_foreign_session() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let w = bin("cedana-workload").display().to_string();
    let log = run_sh(&env, "shell", &format!("'{w}' counter 20 & wait"));
    wait_count_above(&log, 3);
    let sh = ps_job(&env, "shell")["pid"].as_i64().expect("pid");
    let counter = wait_for("the counter child", Duration::from_secs(5), || {
        children(sh).first().copied()
    });
    // The daemon's clean-up kills the job's root (the shell); the counter is ours.
    let _child = KillOnDrop(counter);
    let pid = counter.to_string();
    let v = env
        .cedana(&["--json", "dump", "process", &pid, "--no-server"])
        .ok()
        .json();
    assert_eq!(
        v["metadata"]["criu_options"]["shell_job"], true,
        "shell_job detected: {}",
        v["metadata"]["criu_options"]
    );
    let at_dump = last_count(&log).expect("count");
    let path = v["path"].as_str().expect("path").to_string();
    let r = env
        .cedana(&[
            "--json",
            "restore",
            "process",
            "--path",
            &path,
            "--no-server",
        ])
        .ok()
        .json();
    let restored = r["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(restored);
    assert_eq!(restored, counter);
    assert_eq!(next_after(&log, at_dump), at_dump + 1, "counts on");
}
