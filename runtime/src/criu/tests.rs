//! CRIU driver tests: locating the binary and parsing answers with fakes, then (as root,
//! with CRIU installed; required under `CEDANA_TEST_E2E=1`) version, a failed dump and a dump
//! and restore round trip against the real CRIU.

use super::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::test_util::{counts, need_root, next_after, skip};

#[test]
fn version_display_and_number() {
    let v = CriuVersion {
        major: 4,
        minor: 1,
        sublevel: 1,
        gitid: None,
    };
    assert_eq!(v.to_string(), "4.1.1");
    assert_eq!(v.as_number(), 40101);
    let old = CriuVersion {
        major: 3,
        minor: 15,
        sublevel: 0,
        gitid: Some("v3.15".into()),
    };
    assert_eq!(old.as_number(), 31500);
    assert!(old.as_number() < version_number(MIN_VERSION));
    assert!(v.as_number() >= version_number(MIN_VERSION));
}

fn fake_binary(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn locate_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_binary(dir.path(), "my-criu", 0o755);
    let criu = Criu::locate(&bin).unwrap();
    assert_eq!(criu.binary(), bin.as_path());

    let noexec = fake_binary(dir.path(), "not-exec", 0o644);
    assert!(matches!(
        Criu::locate(&noexec),
        Err(CriuError::NotFound { .. })
    ));
    // A directory is not a binary.
    assert!(matches!(
        Criu::locate(dir.path()),
        Err(CriuError::NotFound { .. })
    ));
}

#[test]
fn locate_bare_name_via_path() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let bin = fake_binary(dir.path(), "cedana-test-criu", 0o755);
    let path_var = std::env::join_paths([other.path(), dir.path()]).unwrap();
    let criu = locate_in(Path::new("cedana-test-criu"), Some(path_var)).unwrap();
    assert_eq!(criu.binary(), bin.as_path());
}

#[test]
fn locate_missing_is_not_found_with_hint() {
    let dir = tempfile::tempdir().unwrap();
    let err = locate_in(
        Path::new("cedana-no-such-criu"),
        Some(dir.path().as_os_str().to_owned()),
    )
    .unwrap_err();
    match &err {
        CriuError::NotFound { binary, hint } => {
            assert_eq!(binary, Path::new("cedana-no-such-criu"));
            assert_eq!(hint, NOT_FOUND_HINT);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("CEDANA_CRIU_BINARY_PATH"));
    assert!(matches!(
        Criu::locate(&dir.path().join("criu")),
        Err(CriuError::NotFound { .. })
    ));
}

#[test]
fn check_warnings_parsing() {
    let text = "Looks good but some kernel features are missing\n\
                which, depending on your process tree, may cause\n\
                dump or restore failure.\n\
                Version: 4.1.1Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n\
                Error (criu/cr-check.c:1): UFFD is not supported\n";
    assert_eq!(
        check_warnings(text),
        vec![
            "Dirty tracking is OFF. Memory snapshot will not work.".to_string(),
            "UFFD is not supported".to_string(),
        ]
    );
    assert_eq!(check_warnings("odd\n\n output \n"), vec!["odd", "output"]);
}

#[test]
fn spawn_failure_is_reported() {
    let criu = Criu::new("/nonexistent/criu");
    assert!(matches!(criu.version(), Err(CriuError::Spawn { .. })));
    assert!(matches!(criu.check(), Err(CriuError::Spawn { .. })));
}

#[test]
fn swrk_that_exits_without_answering_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_binary(dir.path(), "criu", 0o755);
    let err = Criu::new(bin).version().unwrap_err();
    assert!(matches!(err, CriuError::Protocol { .. }), "{err:?}");
    // ...and a dump/restore one is a failure pointing at the log.
    let bin = dir.path().join("criu");
    let images = tempfile::tempdir().unwrap();
    let opts = CriuOpts::default();
    let err = Criu::new(bin)
        .dump(&DumpArgs {
            pid: 1,
            images_dir: images.path(),
            work_dir: None,
            opts: &opts,
            post_dump: None,
        })
        .unwrap_err();
    match err {
        CriuError::Failed { op, log_path, .. } => {
            assert_eq!(op, "dump");
            assert_eq!(log_path, images.path().join("dump.log"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---- tests that need root and a real CRIU ----

/// The installed CRIU, or None after [`skip`] (a failure under `CEDANA_TEST_E2E=1`).
#[track_caller]
fn real_criu() -> Option<Criu> {
    if !need_root("real CRIU") {
        return None;
    }
    match Criu::locate(Path::new("criu")) {
        Ok(c) => Some(c),
        Err(e) => {
            skip(&e.to_string(), "run `make deps` (builds CRIU 4.1.1)");
            None
        }
    }
}

#[test]
fn real_version_and_features() {
    let Some(criu) = real_criu() else { return };
    let v = criu.version().unwrap();
    assert_eq!(v.major, 4, "{v}");
    assert!(v.as_number() >= 40000);
    criu.require(MIN_VERSION).unwrap();
    assert!(matches!(
        criu.require((99, 0, 0)),
        Err(CriuError::TooOld { .. })
    ));
    let f = criu.feature_check().unwrap();
    eprintln!("features: {f:?}");
    let report = criu.check().unwrap();
    eprintln!("check: {report:?}");
    assert!(report.ok, "{}", report.output);
}

#[test]
fn real_failed_dump_has_log_tail() {
    let Some(criu) = real_criu() else { return };
    let images = tempfile::tempdir().unwrap();
    let opts = CriuOpts::default();
    // Pid max + 1 can never exist.
    let err = criu
        .dump(&DumpArgs {
            pid: 4_194_304 + 1,
            images_dir: images.path(),
            work_dir: None,
            opts: &opts,
            post_dump: None,
        })
        .unwrap_err();
    eprintln!("{err}");
    match &err {
        CriuError::Failed {
            op,
            log_path,
            log_tail,
            ..
        } => {
            assert_eq!(*op, "dump");
            assert_eq!(log_path, &images.path().join("dump.log"));
            assert!(!log_tail.is_empty());
            assert!(log_tail
                .iter()
                .all(|l| !l.contains("Can't setup RLIMIT_NOFILE")));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("dump.log"));
}

/// The last number the counter appended to `file`.
fn read_counter(file: &Path) -> Option<u64> {
    counts(file).last().copied()
}

fn wait_for_counter(file: &Path, above: u64, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(n) = read_counter(file).filter(|n| *n > above) {
            return Some(n);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn set_subreaper(on: bool) {
    // SAFETY: plain prctl on the calling process.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            libc::c_ulong::from(on),
            0,
            0,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
}

/// Pids of the tasks CRIU seized, from its dump log ("Seized task 123, state 1").
fn seized_pids(log: &Path) -> Vec<i32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("Seized task ").nth(1))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Reap `pid`, which is (or is about to become) our child; gives up if it never does.
fn reap_orphan(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(_) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => return,
            Err(_) if Instant::now() > deadline => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn real_dump_restore_round_trip() {
    let Some(criu) = real_criu() else { return };
    let work = tempfile::tempdir().unwrap();
    let counter = work.path().join("counter");
    let images = work.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i >> {}; sleep 0.1; done",
        counter.display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Orphans of the dumped tree must come to us to be reaped: this machine's init may not.
    set_subreaper(true);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    wait_for_counter(&counter, 2, Duration::from_secs(5)).expect("counter never started");

    let opts = CriuOpts::default();
    let dumped = criu.dump(&DumpArgs {
        pid,
        images_dir: &images,
        work_dir: None,
        opts: &opts,
        post_dump: None,
    });
    let dumped = match dumped {
        Ok(d) => d,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            set_subreaper(false);
            panic!("dump failed: {e}");
        }
    };
    assert_eq!(dumped.log_path, images.join("dump.log"));
    assert!(dumped.log_path.exists());
    // leave_running=false: CRIU killed the tree; we are its parent, so reap it.
    let status = child.wait().unwrap();
    assert!(!status.success());
    let at_dump = read_counter(&counter).unwrap();

    // The dumped tree usually includes a `sleep` child; CRIU killed it too and, as we are a
    // subreaper, it is now our zombie. Its pid, and the session/group id 'pid' it still
    // references, must be free again for the restore (EEXIST otherwise).
    for p in seized_pids(&dumped.log_path) {
        if p != pid {
            reap_orphan(p);
        }
    }

    let restored = criu
        .restore(&RestoreArgs {
            images_dir: &images,
            work_dir: None,
            opts: &opts,
            rst_sibling: true,
        })
        .unwrap_or_else(|e| {
            set_subreaper(false);
            panic!("restore failed (dumped pid {pid}): {e}")
        });
    assert_eq!(restored.pid, pid, "restored with the dumped pid");
    assert_eq!(restored.log_path, images.join("restore.log"));
    let rpid = Pid::from_raw(restored.pid);

    // rst_sibling: the restored root is our child.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", restored.pid)).unwrap();
    let ppid: i32 = stat
        .rsplit(") ")
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // Appended, not overwritten: the value after the dump's shows whether it carried on.
    let next = next_after(&counter, at_dump, Duration::from_secs(5));
    let progressed = wait_for_counter(&counter, at_dump + 3, Duration::from_secs(5));

    // Kill the whole restored session (the shell and its current `sleep`) and reap it all.
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    kill(rpid, Signal::SIGKILL).unwrap();
    let ws = waitpid(rpid, None).unwrap();
    for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        reap_orphan(c);
    }
    set_subreaper(false);
    assert!(
        matches!(ws, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "{ws:?}"
    );

    assert_eq!(
        ppid,
        std::process::id() as i32,
        "restored root is our child"
    );
    assert_eq!(
        next,
        Some(at_dump + 1),
        "the restored counter carries on from {at_dump}: {:?}",
        counts(&counter)
    );
    assert!(
        progressed.is_some(),
        "counter stuck at {:?} (dumped at {at_dump})",
        read_counter(&counter)
    );
}

#[test]
fn network_lock_names_round_trip_and_iptables_sends_nothing() {
    for lock in [
        NetworkLock::Iptables,
        NetworkLock::Nftables,
        NetworkLock::Skip,
    ] {
        assert_eq!(NetworkLock::parse(lock.name()), Some(lock));
    }
    assert_eq!(NetworkLock::parse("ebpf"), None);
    let criu = Criu::new("/x/criu");
    assert_eq!(
        criu.clone()
            .with_network_lock(NetworkLock::Iptables)
            .network_lock(),
        None
    );
    assert_eq!(
        criu.with_network_lock(NetworkLock::Nftables).network_lock(),
        Some(NetworkLock::Nftables)
    );
}
