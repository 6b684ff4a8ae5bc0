//! `cedana dump|restore process --no-server` against real CRIU: the counter keeps
//! counting, TCP connections keep talking, and bad input is refused cleanly.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cedana_e2e::*;

/// Dumps `pid` in-process and returns the checkpoint path from the JSON answer.
fn dump(env: &Env, pid: i32, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let pid = pid.to_string();
    let mut args = vec!["--json", "dump", "process", &pid, "--no-server"];
    args.extend_from_slice(extra);
    let out = env.cedana(&args).ok();
    let v = out.json();
    let path = v["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no path in {v}"))
        .into();
    (path, v)
}

/// Restores in-process and returns the restored PID.
fn restore(env: &Env, path: &Path, extra: &[&str]) -> i32 {
    let path = path.to_string_lossy().to_string();
    let mut args = vec![
        "--json",
        "restore",
        "process",
        "--path",
        &path,
        "--no-server",
    ];
    args.extend_from_slice(extra);
    let out = env.cedana(&args).ok();
    out.json()["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {}", out.stdout)) as i32
}

#[test]
fn counter_continues_after_restore_with_every_compression() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    for (compression, suffix) in [
        ("none", ""),
        ("tar", ".tar"),
        ("gzip", ".tar.gz"),
        ("lz4", ".tar.lz4"),
        ("zstd", ".tar.zst"),
    ] {
        let log = env.path(&format!("counter-{compression}.log"));
        let mut w = Workload::start(&log, &["counter", "50"]);
        wait_count_above(&log, 5);
        let dir = env.checkpoints().to_string_lossy().to_string();
        let (path, _) = dump(&env, w.pid, &["--compression", compression, "--dir", &dir]);
        w.reap();
        assert!(
            path.to_string_lossy().ends_with(suffix),
            "{compression}: {}",
            path.display()
        );
        if compression == "none" {
            assert!(
                path.join("metadata.json").is_file(),
                "a directory checkpoint"
            );
        } else {
            assert!(path.is_file(), "an archive");
        }
        let at_dump = last_count(&log).expect("count at dump");
        let pid = restore(&env, &path, &[]);
        let _guard = KillOnDrop(pid);
        assert_eq!(pid, w.pid, "restored with the original PID");
        assert_eq!(
            next_after(&log, at_dump),
            at_dump + 1,
            "{compression}: did not carry on"
        );
        wait_count_above(&log, at_dump + 3);
        kill(pid);
    }
}

#[test]
fn leave_running_keeps_the_process_and_restores_a_second_copy() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("counter.log");
    let w = Workload::start(&log, &["counter", "50"]);
    let before = wait_count_above(&log, 3);
    let (path, _) = dump(&env, w.pid, &["--leave-running"]);
    let during = last_count(&log).expect("count");
    let later = wait_count_above(&log, during + 3);
    assert!(w.alive(), "--leave-running must leave the process running");
    drop(w); // kill and reap the original
    let lines_before = counts(&log).len();
    let pid = restore(&env, &path, &[]);
    let _guard = KillOnDrop(pid);
    // The copy carries on from the dump's state: its first number is above what was
    // seen before the dump and not above what the original reached.
    let first = wait_for(
        "the restored copy to print",
        Duration::from_secs(10),
        || counts(&log).get(lines_before).copied(),
    );
    assert!(
        first > before && first <= later + 1,
        "restored copy printed {first} (dump at ~{during})"
    );
}

#[test]
fn established_tcp_connection_keeps_talking_without_extra_flags() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (addr, seen) = echo_server();
    let log = env.path("tcp.log");
    let mut w = Workload::start(&log, &["tcp-client", &addr, "50"]);
    wait_for("pings", Duration::from_secs(10), || {
        (seen.load(Ordering::SeqCst) >= 5).then_some(())
    });
    let (path, v) = dump(&env, w.pid, &[]);
    w.reap();
    assert_eq!(
        v["metadata"]["criu_options"]["tcp_established"],
        serde_json::json!(true),
        "tcp_established must be detected: {v}"
    );
    let at_dump = seen.load(Ordering::SeqCst);
    let pid = restore(&env, &path, &[]);
    let _guard = KillOnDrop(pid);
    wait_for("pings after restore", Duration::from_secs(10), || {
        (seen.load(Ordering::SeqCst) >= at_dump + 5).then_some(())
    });
    assert!(
        pid_alive(pid),
        "the client must still be connected and running"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("closed"), "connection broke: {text}");
}

#[test]
fn io_uring_process_is_refused_and_keeps_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("uring.log");
    let w = Workload::start(&log, &["io-uring"]);
    wait_count_above(&log, 2);
    let pid = w.pid.to_string();
    env.cedana(&["dump", "process", &pid, "--no-server", "--name", "uring"])
        .fails_with("io_uring");
    let v = last_count(&log).expect("count");
    wait_count_above(&log, v + 2);
    assert!(w.alive());
    let leftovers: Vec<_> = std::fs::read_dir(env.checkpoints())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "partial checkpoint left behind: {leftovers:?}"
    );
}

/// CRIU restores original PIDs, and right after a dump the dumped PID may still be held
/// by a zombie its parent has not reaped yet (init reaps late on some hosts). Here the
/// test is that parent: it holds the zombie while the restore runs, and the restore
/// must wait (past storage, with CRIU not started) and succeed once the PID is freed.
#[test]
fn restore_waits_until_the_dumped_pid_is_free() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("zombie.log");
    let mut w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 3);
    let (path, _) = dump(&env, w.pid, &[]);
    let at_dump = last_count(&log).expect("count");
    // CRIU killed it; unreaped, it is our zombie and its PID stays taken.
    assert!(
        Path::new(&format!("/proc/{}", w.pid)).exists(),
        "the dumped PID is held by its zombie"
    );

    let criu = CriuRecorder::new(&env.path("criu"));
    // The restore's temp dir: `.cedana-restore-work.*` appears there once storage is
    // ready, right before the wait for free PIDs.
    let tmp = env.path("restore-tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let p = path.to_string_lossy().to_string();
    let restore = env
        .cmd()
        .env("TMPDIR", &tmp)
        .args([
            "--set",
            &criu.setting(),
            // Far longer than the hold below, so only a missing wait can fail it.
            "--set",
            "criu.pid_wait_timeout_ms=60000",
            "--json",
            "restore",
            "process",
            "--path",
            &p,
            "--no-server",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start restore");
    let mut restore = KillChildOnDrop(Some(restore));
    wait_for(
        "the restore to prepare its work dir",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&tmp)
                .ok()?
                .flatten()
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".cedana-restore-work.")
                })
                .then_some(())
        },
    );
    // Held for a while: the restore must neither finish nor start CRIU meanwhile.
    let held = std::time::Instant::now();
    while held.elapsed() < Duration::from_millis(1500) {
        let child = restore.0.as_mut().expect("restore");
        if let Some(st) = child.try_wait().expect("try_wait") {
            let out = restore
                .0
                .take()
                .expect("restore")
                .wait_with_output()
                .expect("out");
            panic!(
                "restore ended ({st}) while PID {} was still taken: {}{}",
                w.pid,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            criu.calls().is_empty(),
            "CRIU started while PID {} was still taken: {:?}",
            w.pid,
            criu.calls()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    w.reap();
    let out = restore
        .0
        .take()
        .expect("restore")
        .wait_with_output()
        .expect("restore output");
    let run = Run::from_output(out).ok();
    let restored = run.json()["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(restored);
    assert_eq!(restored, w.pid, "restored with the freed PID");
    assert!(!criu.calls().is_empty(), "CRIU ran once the PID was free");
    assert_eq!(next_after(&log, at_dump), at_dump + 1);
}

/// Kills and reaps a child left running when a test fails.
struct KillChildOnDrop(Option<std::process::Child>);

impl Drop for KillChildOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn restore_names_the_process_holding_a_needed_pid() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("busy.log");
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 2);
    let (path, _) = dump(&env, w.pid, &["--leave-running"]);
    let path = path.to_string_lossy().to_string();
    env.cedana(&[
        "--set",
        "criu.pid_wait_timeout_ms=300",
        "restore",
        "process",
        "--path",
        &path,
        "--no-server",
    ])
    .fails_with(&format!(
        "PID {} is still in use by `cedana-workload`",
        w.pid
    ));
    assert!(w.alive(), "the original is untouched");
}
