//! `make demo` (scripts/demo.sh), the README's main path: it works, and however it ends
//! (success, a failed step, Ctrl-C) it leaves nothing running: neither its daemon nor
//! its job.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cedana_e2e::*;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh")
}

/// Processes (not us) whose command line names `dir` or whose stdout/stderr is a file
/// under it: the demo's daemon (its --set paths) and its job (its log).
fn processes_using(dir: &Path) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let writes_there = [1, 2].iter().any(|fd| {
            fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|t| t.to_string_lossy().starts_with(&needle))
        });
        if cmdline.contains(&needle) || writes_there {
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

/// Waits (a few seconds: a dying job's last child may linger briefly) until nothing uses
/// `dir`; returns what is left otherwise, after killing it so the test leaves nothing.
fn leftovers(dir: &Path) -> Vec<(i32, String)> {
    let start = Instant::now();
    loop {
        let left = processes_using(dir);
        if left.is_empty() || start.elapsed() > Duration::from_secs(5) {
            for (pid, _) in &left {
                kill(*pid);
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demo, in its own process group (as a terminal runs it), its output in `out`.
fn demo(env: &Env, work: &Path, out: &Path, extra_env: &[(&str, &str)]) -> std::process::Child {
    let log = fs::File::create(out).expect("demo output");
    let err = log.try_clone().expect("dup");
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .env("BIN", bin_dir())
        .env("DEMO_DIR", work)
        .envs(extra_env.iter().copied())
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    cmd.spawn().expect("start the demo")
}

fn finish(mut child: std::process::Child, out: &Path) -> (i32, String) {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait for the demo") {
            return (
                st.code().unwrap_or(-1),
                fs::read_to_string(out).unwrap_or_default(),
            );
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!(
                "the demo ran over 2 minutes:\n{}",
                fs::read_to_string(out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_succeeds_and_leaves_nothing_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (work, out) = (env.path("demo"), env.path("demo.out"));
    let (code, text) = finish(demo(&env, &work, &out, &[]), &out);
    let left = leftovers(&work);
    assert_eq!(code, 0, "the demo failed:\n{text}");
    assert!(text.contains("OK"), "the demo checks the counter:\n{text}");
    assert!(
        left.is_empty(),
        "the demo left processes running: {left:?}\n{text}"
    );
}

#[test]
fn a_failed_demo_leaves_nothing_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (work, out) = (env.path("demo"), env.path("demo.out"));
    // The daemon starts and runs the job, then its dump fails: no CRIU there.
    let no_criu = [("CEDANA_CRIU_BINARY_PATH", "/nonexistent/criu")];
    let (code, text) = finish(demo(&env, &work, &out, &no_criu), &out);
    let left = leftovers(&work);
    assert_ne!(code, 0, "the demo cannot succeed without CRIU:\n{text}");
    assert!(
        text.contains("Checkpoint it"),
        "it got as far as the dump:\n{text}"
    );
    assert!(
        left.is_empty(),
        "the failed demo left processes running: {left:?}\n{text}"
    );
}

#[test]
fn ctrl_c_during_the_demo_leaves_nothing_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (work, out) = (env.path("demo"), env.path("demo.out"));
    let child = demo(&env, &work, &out, &[]);
    // Once the job runs (its log has lines), press Ctrl-C: SIGINT to the whole group.
    wait_for("the demo's job to count", Duration::from_secs(60), || {
        let logs = fs::read_dir(work.join("jobs")).ok()?;
        logs.flatten()
            .any(|e| last_count(&e.path()).is_some_and(|n| n >= 2))
            .then_some(())
    });
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::SIGINT).expect("Ctrl-C");
    let (code, text) = finish(child, &out);
    let left = leftovers(&work);
    assert_ne!(
        code, 0,
        "an interrupted demo does not report success:\n{text}"
    );
    assert!(
        left.is_empty(),
        "Ctrl-C left processes running: {left:?}\n{text}"
    );
}
