//! Helpers shared by the engine's integration tests: a counting shell process in its own
//! session, and waits on its output.

#![allow(dead_code)] // each test file uses a subset

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The crate's one skip helper (`test_util::skip`), shared with the unit tests.
#[path = "../../src/test_util.rs"]
mod test_util;

/// Whether the root-only tests can run; otherwise [`test_util::skip`]s (a failure under
/// `CEDANA_TEST_E2E=1`).
#[track_caller]
pub fn root() -> bool {
    test_util::need_root("CRIU")
}

/// Last complete number in the log.
pub fn last(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.strip_suffix('\n')?.lines().last()?.parse().ok()
}

/// Waits until the counter passes `v`.
pub fn wait_above(log: &Path, v: u64) -> u64 {
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

/// Starts `sh` counting into `log` every `interval` seconds, as a session leader.
pub fn start_counter(log: &Path, interval: &str) -> Child {
    let out = File::create(log).expect("log");
    let script = format!("i=0; while :; do echo $i; i=$((i+1)); sleep {interval}; done");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
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
