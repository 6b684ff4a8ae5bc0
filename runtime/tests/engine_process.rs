//! The engine against real CRIU: dump and restore a counting shell process through the
//! whole chain. Needs root and CRIU (`make deps`); skipped without root.

mod common;

use std::path::Path;

use cedana_config::Config;
use cedana_runtime::engine::{DumpRequest, Engine, RestoreRequest};
use cedana_runtime::error::EngineError;
use common::{last, root, start_counter, wait_above};

fn engine(dir: &Path) -> Engine {
    let mut config = Config::default();
    config.checkpoint.dir = dir.join("ck");
    Engine::new(config)
}

#[tokio::test]
async fn counter_survives_dump_and_restore_through_the_chain() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("count.log");
    let mut child = start_counter(&log, "0.1");
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
    let mut child = start_counter(&log, "0.1");
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
