//! The engine against real CRIU: dump and restore a counting shell process through the
//! whole chain. Needs root and CRIU (`make deps`); skipped without root.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cedana_config::Config;
use cedana_runtime::engine::{DumpRequest, Engine, RestoreRequest};
use cedana_runtime::error::EngineError;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: needs root and CRIU");
    false
}

fn last(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.strip_suffix('\n')?.lines().last()?.parse().ok()
}

fn wait_above(log: &Path, v: u64) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(n) = last(log).filter(|n| *n > v) {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "counter stuck at {:?}",
            last(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn engine(dir: &Path) -> Engine {
    let mut config = Config::default();
    config.checkpoint.dir = dir.join("ck");
    Engine::new(config)
}

fn start_counter(log: &Path) -> std::process::Child {
    let out = File::create(log).expect("log");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done",
    ])
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().expect("spawn counter")
}

#[tokio::test]
async fn counter_survives_dump_and_restore_through_the_chain() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("count.log");
    let mut child = start_counter(&log);
    let before = wait_above(&log, 3);
    let engine = engine(tmp.path());
    let dumped = engine
        .dump(DumpRequest {
            pid: child.id() as i32,
            ..Default::default()
        })
        .await
        .expect("dump");
    child.wait().expect("reap dumped process");
    assert!(
        dumped.path.to_string_lossy().ends_with(".tar.zst"),
        "{:?}",
        dumped.path
    );
    assert!(
        !dumped.metadata.criu_options.shell_job,
        "session leader is not a shell job"
    );
    let at_dump = last(&log).expect("count at dump");
    assert!(at_dump >= before);

    let restored = engine
        .restore(RestoreRequest {
            path: dumped.path.clone(),
            ..Default::default()
        })
        .await
        .expect("restore");
    assert_eq!(
        restored.pid,
        child.id() as i32,
        "CRIU restores the original PID"
    );
    let after = wait_above(&log, at_dump + 2);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.lines().skip(1).any(|l| l == "0"),
        "the counter restarted from zero"
    );
    assert!(after > at_dump);
    // The restored process is our child (rst_sibling): kill and reap it.
    let pid = nix::unistd::Pid::from_raw(restored.pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

#[tokio::test]
async fn dump_into_existing_target_is_refused_and_process_keeps_running() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("count.log");
    let mut child = start_counter(&log);
    wait_above(&log, 1);
    let engine = engine(tmp.path());
    std::fs::create_dir_all(tmp.path().join("ck")).expect("mkdir");
    std::fs::write(tmp.path().join("ck/taken.tar.zst"), b"x").expect("write");
    let err = engine
        .dump(DumpRequest {
            pid: child.id() as i32,
            name: Some("taken".into()),
            ..Default::default()
        })
        .await
        .expect_err("target exists");
    assert!(matches!(err, EngineError::TargetExists { .. }), "{err}");
    let v = last(&log).expect("count");
    wait_above(&log, v);
    child.kill().expect("kill");
    child.wait().expect("reap");
}
