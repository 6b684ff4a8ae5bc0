//! The commit protocol, by fault injection: a dump kills the workload only once its
//! checkpoint is complete and durable. A full disk while packing, or the daemon killed
//! (SIGKILL) at any moment of a dump, leaves the workload running, no partial checkpoint
//! listed, and a retry that succeeds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cedana_e2e::*;

/// After a dump was cut short: a workload still alive counts on, nothing of the dump is
/// left in `dir`, and a retry (`cedana --json RETRY`) succeeds and restores; one that died
/// was killed only after its commit, so its one complete checkpoint restores.
fn check_after_cut_short(env: &Env, w: &mut Workload, log: &Path, dir: &Path, retry: &[&str]) {
    let path = if w.alive() {
        let before = last_count(log).expect("counting");
        wait_count_above(log, before + 1);
        assert_eq!(
            dir_names(dir),
            Vec::<String>::new(),
            "something of the cut dump is left"
        );
        let mut args = vec!["--json"];
        args.extend_from_slice(retry);
        let out = env.cedana(&args).ok();
        PathBuf::from(out.json()["path"].as_str().expect("path"))
    } else {
        let done = dir_names(dir);
        assert_eq!(done.len(), 1, "one complete checkpoint: {done:?}");
        dir.join(&done[0])
    };
    w.reap();
    let last = last_count(log).expect("counted");
    let _restored = KillOnDrop(restore_process_and_check(env, &path, log, last));
}

/// Removes everything in `dir`, for the next round of a test.
fn empty_dir(dir: &Path) {
    for n in dir_names(dir) {
        let p = dir.join(n);
        let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
    }
}

/// Entries of the checkpoint dir that are not finished checkpoints (staging paths).
fn hidden(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn full_disk_while_packing_leaves_the_workload_running_and_a_retry_succeeds() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    // CRIU's ~50 MiB of images fit; a second, uncompressed copy (tar) does not.
    let small = Tmpfs::mount(&env.path("small"), 80);
    let log = env.path("memory.log");
    let mut w = Workload::start(&log, &["memory", "48"]);
    let _guard = KillOnDrop(w.pid);
    wait_count_above(&log, 1);
    let dir = small.path.to_string_lossy().to_string();
    let pid = w.pid.to_string();
    // CRIU's images wait there too, not in memory.
    let staging = format!("checkpoint.staging_dir={dir}");
    let failed = env.cedana(&[
        "--set",
        &staging,
        "dump",
        "process",
        &pid,
        "--no-server",
        "--dir",
        &dir,
        "--compression",
        "tar",
    ]);
    assert_ne!(failed.code, 0, "the dump cannot fit: {}", failed.stdout);
    assert!(
        failed.stderr.to_lowercase().contains("space"),
        "the error names the full disk: {}",
        failed.stderr
    );
    assert!(w.alive(), "a failed dump killed the workload");
    let before = last_count(&log).expect("counting");
    wait_count_above(&log, before + 1);
    assert_eq!(
        dir_names(&small.path),
        Vec::<String>::new(),
        "nothing of the failed dump is left"
    );

    // zstd fits: the retry succeeds, and only then does the workload stop.
    let out = env
        .cedana(&[
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--dir",
            &dir,
        ])
        .ok();
    let path = PathBuf::from(out.json()["path"].as_str().expect("path"));
    w.reap();
    assert!(!w.alive());
    let last = last_count(&log).expect("counted");
    assert_eq!(
        dir_names(&small.path).len(),
        1,
        "{:?}",
        dir_names(&small.path)
    );
    let _restored = KillOnDrop(restore_process_and_check(&env, &path, &log, last));
}

#[test]
fn daemon_killed_during_a_dump_never_costs_the_workload() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    let me = adopt_orphans();
    let ckpts = env.checkpoints();
    for delay_ms in [150u64, 600, 1500] {
        env.start_daemon();
        let log = env.path(&format!("memory-{delay_ms}.log"));
        let mut w = Workload::start(&log, &["memory", "128"]);
        let _guard = KillOnDrop(w.pid);
        wait_count_above(&log, 1);
        let mut client = env
            .cmd()
            .args(["--json", "dump", "process", &w.pid.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the dump");
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill_daemon_and_its_orphans(&mut env, &mut client, me, w.pid);
        env.start_daemon();
        assert_eq!(
            hidden(&ckpts),
            Vec::<String>::new(),
            "a partial checkpoint survived the restart ({delay_ms} ms)"
        );
        let pid = w.pid.to_string();
        check_after_cut_short(&env, &mut w, &log, &ckpts, &["dump", "process", &pid]);
        env.stop_daemon();
        empty_dir(&ckpts);
    }
}

/// The daemon killed while an archive's images wait in memory to be packed (the commit
/// held by an injected stall): the workload runs on, and the images, gigabytes of memory
/// in a real dump, are removed when the daemon starts again.
#[test]
fn daemon_killed_while_images_wait_in_memory_leaves_them_to_the_next_start() {
    if !e2e_enabled() {
        return;
    }
    let staging = memory_dir();
    let mut env = Env::new()
        .with_settings(vec![format!(
            "checkpoint.staging_dir={}",
            staging.path().display()
        )])
        .with_vars(vec![("CEDANA_TEST_FAULT".into(), "commit-stall".into())]);
    let me = adopt_orphans();
    env.start_daemon();
    let log = env.path("memory.log");
    let w = Workload::start(&log, &["memory", "64"]);
    let _guard = KillOnDrop(w.pid);
    wait_count_above(&log, 1);
    let pid = w.pid.to_string();
    let mut client = env
        .cmd()
        .args(["dump", "process", &pid, "--compression", "zstd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the dump");
    // CRIU is done and the commit stalls: the page images wait in the staging dir.
    wait_for("the images in memory", Duration::from_secs(20), || {
        let dumps = dir_names(staging.path());
        let waiting = dumps.iter().any(|d| {
            dir_names(&staging.path().join(d))
                .iter()
                .any(|f| f.starts_with("pages-"))
        });
        waiting.then_some(())
    });
    kill_daemon_and_its_orphans(&mut env, &mut client, me, w.pid);
    assert!(w.alive(), "the killed daemon cost the workload");
    assert!(
        !dir_names(staging.path()).is_empty(),
        "the images are left until the daemon starts again"
    );
    env.start_daemon();
    assert_eq!(
        dir_names(staging.path()),
        Vec::<String>::new(),
        "the restarted daemon removes the images the killed one left"
    );
    let before = last_count(&log).expect("counting");
    wait_count_above(&log, before + 1);
    env.stop_daemon();
}

/// A dump whose final name is taken while it runs (by another dump, or a user) cannot
/// commit: the workload runs on, on every route, and the existing entry is untouched.
#[test]
fn a_commit_that_fails_leaves_the_workload_running_on_every_route() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let dir = env.checkpoints();
    std::fs::create_dir_all(&dir).expect("checkpoint dir");
    for (route, flags, target) in [
        // The archive asked for by name (a dump streams by default).
        ("archive", &["--compression", "zstd"][..], "x.tar.zst"),
        ("directory", &["--compression", "none"][..], "x"),
        ("streamed", &["--streams", "2"][..], "x"),
    ] {
        let log = env.path(&format!("{route}.log"));
        let w = Workload::start(&log, &["memory", "128"]);
        wait_count_above(&log, 1);
        let mut args = vec![
            "dump".to_string(),
            "process".into(),
            w.pid.to_string(),
            "--no-server".into(),
            "--name".into(),
            "x".into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let dump = env
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the dump");
        // Once the dump is under way, someone else takes its name.
        wait_for("the dump to start", Duration::from_secs(10), || {
            (!hidden(&dir).is_empty()).then_some(())
        });
        std::fs::create_dir(dir.join(target)).expect("take the name");
        std::fs::write(dir.join(target).join("mine"), b"keep").ok();
        let out = Run::from_output(dump.wait_with_output().expect("dump"));
        assert_ne!(out.code, 0, "{route}: the commit cannot succeed");
        assert!(
            out.stderr.contains("already exists"),
            "{route}: the error says why: {}",
            out.stderr
        );
        assert!(w.alive(), "{route}: a failed commit killed the workload");
        let before = last_count(&log).expect("counting");
        wait_count_above(&log, before + 1);
        assert_eq!(hidden(&dir), Vec::<String>::new(), "{route}: staging left");
        assert_eq!(
            std::fs::read(dir.join(target).join("mine")).expect("kept"),
            b"keep",
            "{route}: the existing entry was touched"
        );
        std::fs::remove_dir_all(dir.join(target)).expect("clean");
    }
}

/// Scratch dirs of restores in the temp dir whose owner process is gone.
fn abandoned_restore_dirs() -> Vec<String> {
    dir_names(&std::env::temp_dir())
        .into_iter()
        .filter(|n| n.starts_with(".cedana-restore"))
        .filter(|n| {
            let owner = n.rsplit('.').nth(1).and_then(|s| s.split_once('-'));
            let pid = owner.and_then(|(p, _)| i32::from_str_radix(p, 16).ok());
            !pid.is_some_and(pid_alive)
        })
        .collect()
}

/// The daemon killed (SIGKILL) at several moments of a restore leaves either the whole
/// tree restored and running on, or nothing: no half-made process; its scratch dirs are
/// gone once the daemon is back, and a retry through it succeeds.
#[test]
fn daemon_killed_during_a_restore_leaves_all_or_nothing() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    let me = adopt_orphans();
    for delay_ms in [50u64, 300, 900] {
        let log = env.path(&format!("r-{delay_ms}.log"));
        let mut w = Workload::start(&log, &["memory", "128"]);
        let _guard = KillOnDrop(w.pid);
        wait_count_above(&log, 1);
        let pid = w.pid.to_string();
        let name = format!("r{delay_ms}");
        let out = env
            .cedana(&[
                "--json",
                "dump",
                "process",
                &pid,
                "--no-server",
                "--name",
                &name,
            ])
            .ok();
        let path = out.json()["path"].as_str().expect("path").to_string();
        w.reap();
        let last = last_count(&log).expect("counted");
        env.start_daemon();
        let mut client = env
            .cmd()
            .args(["--json", "restore", "process", "--path", &path])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the restore");
        std::thread::sleep(Duration::from_millis(delay_ms));
        env.kill_daemon();
        let _ = client.wait();
        // Whatever CRIU was doing, it ends: then the tree is either all there or gone.
        wait_for("CRIU to finish", Duration::from_secs(30), || {
            criu_child_of(me).is_none().then_some(())
        });
        // As init would for a real daemon's orphans: a task a streamed restore
        // (`--restore-sibling`, the daemon its parent) left dead holds its PID until reaped.
        reap_zombie_children(me);
        let restored = pid_alive(w.pid);
        env.start_daemon();
        assert_eq!(
            abandoned_restore_dirs(),
            Vec::<String>::new(),
            "{delay_ms} ms: the restarted daemon left a dead restore's scratch dirs"
        );
        if restored {
            let _r = KillOnDrop(w.pid);
            assert_eq!(
                next_after(&log, last),
                last + 1,
                "{delay_ms} ms: half-made tree"
            );
        } else {
            // Nothing came back: a retry through the restarted daemon does.
            let out = env
                .cedana(&["--json", "restore", "process", "--path", &path])
                .ok();
            let back = out.json()["pid"].as_i64().expect("pid") as i32;
            let _r = KillOnDrop(back);
            assert_eq!(back, w.pid);
            assert_eq!(next_after(&log, last), last + 1, "{delay_ms} ms: retry");
        }
        env.stop_daemon();
    }
}

/// The children of `parent` as /proc shows them: PID, command name and state letter.
fn children_of(parent: i32) -> Vec<(i32, String, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let comm = comm.split_once('(')?.1.to_string();
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next()?.to_string(), f.next()?.parse::<i32>().ok()?);
            (ppid == parent).then_some((pid, comm, state))
        })
        .collect()
}

/// A live (not zombie) `criu` process whose parent is `parent`: other tests on this
/// machine may run CRIU too, so only ours count.
fn criu_child_of(parent: i32) -> Option<i32> {
    children_of(parent)
        .into_iter()
        .find(|(_, comm, state)| comm == "criu" && state != "Z")
        .map(|(pid, ..)| pid)
}

/// A live (not zombie) child of `parent` other than `workload`: after a killed daemon,
/// what it had started (CRIU, or a child not yet become CRIU) that still runs.
fn orphan_of(parent: i32, workload: i32) -> Option<i32> {
    children_of(parent)
        .into_iter()
        .find(|(pid, _, state)| state != "Z" && *pid != workload)
        .map(|(pid, ..)| pid)
}

/// Kills the daemon mid-operation and waits for its client and for what it had forked
/// (CRIU, adopted by `me`) to let go of the workload `workload`. CRIU, orphaned, finds
/// nobody to commit at post-dump and lets the tree go; any orphan counts, not only one
/// already named criu: a child the daemon forked just before it died may not have
/// become CRIU yet.
fn kill_daemon_and_its_orphans(
    env: &mut Env,
    client: &mut std::process::Child,
    me: i32,
    workload: i32,
) {
    env.kill_daemon();
    let _ = client.wait();
    wait_for(
        "the daemon's orphans to let go",
        Duration::from_secs(30),
        || {
            reap_zombie_children(me);
            orphan_of(me, workload).is_none().then_some(())
        },
    );
}

/// Reaps this process's children that are zombies (orphans it adopted as subreaper).
fn reap_zombie_children(me: i32) {
    for (pid, ..) in children_of(me).into_iter().filter(|(_, _, s)| s == "Z") {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// Makes this test process the subreaper of what it starts, so a CRIU orphaned by a
/// killed daemon becomes our child and [`criu_child_of`] finds it.
fn adopt_orphans() -> i32 {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    std::process::id() as i32
}

/// CRIU itself killed (SIGKILL) at several moments of a dump: the workload runs on,
/// nothing is left in the checkpoint dir, and a retry succeeds.
#[test]
fn criu_killed_mid_dump_leaves_the_workload_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let dir = env.checkpoints();
    for delay_ms in [20u64, 150, 400] {
        let log = env.path(&format!("k-{delay_ms}.log"));
        let mut w = Workload::start(&log, &["memory", "256"]);
        let _guard = KillOnDrop(w.pid);
        wait_count_above(&log, 1);
        let pid = w.pid.to_string();
        let dump = env
            .cmd()
            .args(["dump", "process", &pid, "--no-server"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the dump");
        let client = dump.id() as i32;
        let criu = wait_for("CRIU to start", Duration::from_secs(10), || {
            criu_child_of(client)
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(criu), nix::sys::signal::SIGKILL);
        let _ = dump.wait_with_output();
        check_after_cut_short(
            &env,
            &mut w,
            &log,
            &dir,
            &["dump", "process", &pid, "--no-server"],
        );
        empty_dir(&dir);
    }
}

/// A CRIU that dies at dump time leaving a child of its own stopped (as a kerndat probe
/// child is when CRIU is killed mid-probe), holding CRIU's stderr and the streamer's
/// socket: the dump still fails at once, saying CRIU's last words, the stray is ended,
/// and the workload runs on.
#[test]
fn criu_dying_with_a_stopped_child_left_fails_the_dump_at_once() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let real = which("criu").expect("criu on PATH (make deps)");
    let stray = env.path("stray.pid");
    let script = env.path("criu-leaves-a-stopped-child");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/bash
for a in "$@"; do [ "$a" = dump ] && exec_dump=1; done
[ -n "$exec_dump" ] || exec {real} "$@"
( echo $BASHPID > {stray}; kill -STOP $BASHPID; sleep 600 ) &
until [ -s {stray} ]; do sleep 0.01; done
echo "stand-in: CRIU died, a stopped child left behind" >&2
exit 1
"#,
            real = real.display(),
            stray = stray.display()
        ),
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let log = env.path("w.log");
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 2);
    let started = std::time::Instant::now();
    let out = env
        .cmd()
        .env("CEDANA_CRIU_BINARY_PATH", &script)
        .args(["dump", "process", &w.pid.to_string(), "--no-server"])
        .output()
        .expect("run cedana");
    let failed = Run::from_output(out);
    assert_ne!(failed.code, 0, "{failed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the dump waited {:?} on what CRIU left behind",
        started.elapsed()
    );
    assert!(
        failed.stderr.contains("stand-in: CRIU died"),
        "CRIU's last words: {}",
        failed.stderr
    );
    let stray: i32 = std::fs::read_to_string(&stray)
        .expect("the stray's pid")
        .trim()
        .parse()
        .expect("a pid");
    let _guard = KillOnDrop(stray);
    wait_for("the stray to be ended", Duration::from_secs(10), || {
        (!pid_alive(stray)).then_some(())
    });
    assert!(w.alive(), "the workload was lost");
    let before = last_count(&log).expect("counting");
    wait_count_above(&log, before + 1);
}

/// A disk too small for CRIU's own images: the dump fails saying so, the workload runs on.
#[test]
fn full_disk_while_criu_writes_leaves_the_workload_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let small = Tmpfs::mount(&env.path("tiny"), 16);
    let log = env.path("tiny.log");
    let w = Workload::start(&log, &["memory", "48"]);
    wait_count_above(&log, 1);
    let dir = small.path.to_string_lossy().to_string();
    // CRIU's images wait there too, not in memory.
    let staging = format!("checkpoint.staging_dir={dir}");
    let out = env.cedana(&[
        "--set",
        &staging,
        "dump",
        "process",
        &w.pid.to_string(),
        "--no-server",
        "--dir",
        &dir,
        // The archive: CRIU writes uncompressed images (a streamed dump compresses
        // them as they come, and 48 MiB of this workload fit in 16 MiB that way).
        "--compression",
        "zstd",
    ]);
    assert_ne!(out.code, 0, "48 MiB of memory cannot fit in 16 MiB");
    assert!(
        out.stderr.to_lowercase().contains("space"),
        "the error names the full disk: {}",
        out.stderr
    );
    assert!(w.alive(), "a failed dump killed the workload");
    let before = last_count(&log).expect("counting");
    wait_count_above(&log, before + 1);
    assert_eq!(dir_names(&small.path), Vec::<String>::new());
}

/// ENOSPC injected at each stage of the commit (hashing, metadata.json, the rename), on
/// each route: the dump fails naming the stage, the workload runs on, nothing is left.
#[test]
fn enospc_at_each_commit_stage_leaves_the_workload_running() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let dir = env.checkpoints();
    for (route, flags) in [
        ("archive", &[][..]),
        ("directory", &["--compression", "none"][..]),
        ("streamed", &["--streams", "2"][..]),
    ] {
        for stage in ["digest", "metadata", "rename"] {
            if route == "archive" && stage == "rename" {
                continue; // the archive is renamed by the packer, covered by the race test
            }
            let log = env.path(&format!("{route}-{stage}.log"));
            let w = Workload::start(&log, &["memory", "32"]);
            wait_count_above(&log, 1);
            let pid = w.pid.to_string();
            let out = Run::from_output(
                env.cmd()
                    .env("CEDANA_TEST_FAULT", format!("commit-{stage}"))
                    .args(["dump", "process", &pid, "--no-server"])
                    .args(flags)
                    .output()
                    .expect("run the dump"),
            );
            assert_ne!(out.code, 0, "{route}/{stage}: the fault must fail the dump");
            assert!(
                out.stderr.contains(&format!("commit-{stage}"))
                    && out.stderr.contains("No space left"),
                "{route}/{stage}: the error names the stage and the cause: {}",
                out.stderr
            );
            assert!(w.alive(), "{route}/{stage}: the workload was killed");
            let before = last_count(&log).expect("counting");
            wait_count_above(&log, before + 1);
            assert_eq!(dir_names(&dir), Vec::<String>::new(), "{route}/{stage}");
        }
    }
}
