//! README.md, section "Using it": its first shell block (`make install`) and its second,
//! run as written, the second with the workspace's build and again with the binaries
//! `make install` put under a temp prefix. The blocks are read from the README itself,
//! so a change there that this test does not follow fails here; placeholders
//! (`my-server --port 8080`, `JID`, `PID`, `/tmp/ck`, `NAME`) become a counting
//! workload, its job id, its PID and a temp dir.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cedana_e2e::*;

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The commands of the README's "Using it" shell block holding `marker`, comments
/// dropped, one argv per line.
fn readme_block(marker: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Using it"))
        .expect("a \"Using it\" section");
    let block = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default())
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("the shell block with {marker:?}"));
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// What the block must hold, in order: keep in step with the README.
const EXPECTED: &[&str] = &[
    "cedana daemon start &",
    "cedana daemon stop",
    "cedana run process -- my-server --port 8080",
    "cedana ps",
    "cedana dump job JID",
    "cedana restore job JID",
    "cedana job attach JID",
    "cedana dump process PID --no-server --compression none --dir /tmp/ck",
    "cedana restore process --path /tmp/ck/NAME --no-server",
];

/// `argv` (without `cedana`) with the placeholders filled in.
fn fill(argv: &[String], jid: &str, pid: i32, ck: &Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "my-server" => {
                out.push(bin("cedana-workload").display().to_string());
                out.push("counter".into());
                i += 3; // my-server --port 8080
                continue;
            }
            "JID" => out.push(jid.into()),
            "PID" => out.push(pid.to_string()),
            "/tmp/ck" => out.push(ck.display().to_string()),
            "/tmp/ck/NAME" => out.push(ck.join(name).display().to_string()),
            w => out.push(w.into()),
        }
        i += 1;
    }
    out
}

/// Runs `cedana --json ARGV` and returns its JSON answer.
fn json(env: &Env, argv: &[String]) -> serde_json::Value {
    let mut args: Vec<&str> = vec!["--json"];
    args.extend(argv.iter().map(String::as_str));
    env.cedana(&args).ok().json()
}

#[test]
fn using_it_block_runs_as_written() {
    if !e2e_enabled() {
        return;
    }
    using_it(Env::new());
}

/// `make install` as the README's first block has it, under a temp `PREFIX` (its own
/// target dir, beside the tests' build); then the second block with those binaries.
#[test]
fn make_install_then_the_using_it_block_with_the_installed_binaries() {
    if !e2e_enabled() {
        return;
    }
    let first: Vec<String> = readme_block("make install")
        .iter()
        .map(|a| a.join(" "))
        .collect();
    assert_eq!(
        first.first().map(String::as_str),
        Some("make install"),
        "README \"Using it\" changed: update this test"
    );
    let prefix = tempfile::tempdir().expect("prefix");
    let target = workspace().join("target/make-install");
    let out = std::process::Command::new("make")
        .arg("install")
        .arg(format!("PREFIX={}", prefix.path().display()))
        .arg(format!("CARGO_TARGET_DIR={}", target.display()))
        .current_dir(workspace())
        // The Makefile's release build, at a lower optimisation level: this test checks
        // what `make install` does, not how fast the result runs, and CI time is bounded.
        .envs(cedana_e2e::QUICK_RELEASE)
        .stdin(Stdio::null())
        .output()
        .expect("run make");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "make install failed:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    let bin_dir = prefix.path().join("bin");
    for b in [
        "cedana",
        "cedana-runc",
        "cedana-criu-relay",
        "containerd-shim-cedana-v2",
        "cedana-gpu-helper",
    ] {
        assert!(bin_dir.join(b).is_file(), "{b} installed");
    }
    // Release, as the README says: the very files of the release build, not the debug
    // build the tests use.
    let release = target.join("release");
    for b in ["cedana", "containerd-shim-cedana-v2"] {
        let (installed, built) = (
            std::fs::read(bin_dir.join(b)).expect("read installed"),
            std::fs::read(release.join(b)).expect("read the release build"),
        );
        assert!(installed == built, "{b} installed is not the release build");
    }
    let unit = std::fs::read_to_string(prefix.path().join("lib/systemd/system/cedana.service"))
        .expect("the systemd unit installed");
    let exec = format!("ExecStart={}/cedana daemon start", bin_dir.display());
    assert!(unit.lines().any(|l| l.trim() == exec), "{exec} in:\n{unit}");
    using_it(Env::with_binaries(&bin_dir));
}

/// Runs the "Using it" block that drives the daemon and the CLI with `env`'s `cedana`.
fn using_it(mut env: Env) {
    let block = readme_block("cedana daemon start");
    let joined: Vec<String> = block.iter().map(|a| a.join(" ")).collect();
    assert_eq!(
        joined, EXPECTED,
        "README \"Using it\" changed: update this test"
    );
    let ck = env.path("ck");
    let (mut jid, mut pid, mut name) = (String::new(), 0, String::new());
    let mut log = PathBuf::new();
    for argv in &block {
        let args = fill(&argv[1..], &jid, pid, &ck, &name);
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["daemon", "start", "&"] => env.start_daemon(),
            // Shown second in the README as the way out; run last, below.
            ["daemon", "stop"] => {}
            ["run", "process", ..] => {
                let v = json(&env, &args);
                jid = v["jid"].as_str().expect("jid").into();
                pid = v["pid"].as_i64().expect("pid") as i32;
                log = PathBuf::from(v["log_path"].as_str().expect("log"));
                wait_count_above(&log, 2);
            }
            ["ps"] => {
                let out = env.cedana(&args.iter().map(String::as_str).collect::<Vec<_>>());
                assert!(out.ok().stdout.contains(&jid), "ps lists the job");
            }
            ["dump", "job", ..] => {
                json(&env, &args);
                wait_for("the job to halt", Duration::from_secs(10), || {
                    (!pid_alive(pid)).then_some(())
                });
            }
            ["restore", "job", ..] => {
                let last = last_count(&log).expect("counted");
                json(&env, &args);
                assert_eq!(next_after(&log, last), last + 1, "restored job carries on");
            }
            ["job", "attach", ..] => {
                // attach follows until stopped: read what it shows for a while.
                let mut child = env
                    .cmd()
                    .args(&args)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("attach");
                let mut stdout = child.stdout.take().expect("stdout");
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    let start = Instant::now();
                    let mut seen = Vec::new();
                    while start.elapsed() < Duration::from_secs(3) {
                        match stdout.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        if seen.iter().filter(|b| **b == b'\n').count() >= 3 {
                            break;
                        }
                    }
                    let _ = tx.send(seen);
                });
                let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
                let _ = child.kill();
                let _ = child.wait();
                let text = String::from_utf8_lossy(&seen);
                assert!(
                    text.lines().any(|l| l.trim().parse::<u64>().is_ok()),
                    "attach shows the counter: {text:?}"
                );
            }
            ["dump", "process", ..] => {
                let v = json(&env, &args);
                name = v["name"].as_str().expect("name").into();
                wait_for("the process to stop", Duration::from_secs(10), || {
                    (!pid_alive(pid)).then_some(())
                });
            }
            ["restore", "process", ..] => {
                let last = last_count(&log).expect("counted");
                let v = json(&env, &args);
                let back = v["pid"].as_i64().expect("pid") as i32;
                let _k = KillOnDrop(back);
                assert_eq!(back, pid, "the original PID");
                assert_eq!(
                    next_after(&log, last),
                    last + 1,
                    "restored process carries on"
                );
            }
            other => panic!("README command not mirrored here: {other:?}"),
        }
    }
    let out = env.cedana(&["daemon", "stop"]).ok();
    assert!(out.stdout.contains("stopped"), "{}", out.stdout);
    assert!(!env.socket().exists(), "the daemon is gone");
}
