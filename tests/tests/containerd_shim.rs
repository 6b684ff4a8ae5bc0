//! End-to-end tests of containerd-shim-cedana-v2 driven by a private containerd and `ctr`:
//! the same scenarios through `io.containerd.runc.v2` and ours give the same results,
//! exit codes survive, nothing leaks, and checkpoint/restore keeps a counter counting.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, CEDANA, IMAGE, RUNC};
use cedana_e2e::{skip, wait_for};

/// The STATUS column of `ctr task ls` for `id`.
fn status(c: &Containerd, id: &str) -> String {
    c.task_status(id).unwrap_or_else(|| "-".into())
}

/// The observable results of the task scenario on `runtime`, with PIDs and numbers
/// normalized away.
fn scenario(c: &Containerd, runtime: &str, id: &str) -> Vec<String> {
    let mut seen = Vec::new();
    c.run_detached(&[runtime], id, &["/bin/sleep", "1000"]);
    seen.push(format!("after run: {}", status(c, id)));
    let e = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        id,
        "/bin/sh",
        "-c",
        "echo from-exec; exit 3",
    ]);
    seen.push(format!("exec: {} rc={}", e.stdout.trim(), e.code));
    let ps = c.ok(&["task", "ps", id]);
    seen.push(format!("ps: {} processes", ps.lines().count() - 1));
    c.ok(&["task", "pause", id]);
    seen.push(format!("after pause: {}", status(c, id)));
    let r = c.ctr(&["task", "pause", id]);
    seen.push(format!("pause again fails: {}", r.code != 0));
    c.ok(&["task", "resume", id]);
    seen.push(format!("after resume: {}", status(c, id)));
    let metrics: Vec<String> = c
        .ok(&["task", "metrics", id])
        .lines()
        .skip_while(|l| !l.starts_with("METRIC"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    seen.push(format!("metrics: {}", metrics.join(",")));
    c.ok(&["task", "kill", "-s", "KILL", id]);
    wait_for("task to stop", Duration::from_secs(10), || {
        (status(c, id) == "STOPPED").then_some(())
    });
    seen.push(format!("after kill: {}", status(c, id)));
    let d = c.ctr(&["task", "delete", id]);
    seen.push(format!("delete rc={}", d.code));
    c.ok(&["containers", "delete", id]);
    seen.push(format!("after delete: {}", status(c, id)));
    seen
}

#[test]
fn containerd_same_results_as_runc_v2() {
    let Some(c) = Containerd::setup() else { return };
    let ours = scenario(&c, CEDANA, "diff-cedana");
    let theirs = scenario(&c, RUNC, "diff-runc");
    assert_eq!(ours, theirs, "containerd log:\n{}", c.log_tail());
    assert!(ours.iter().any(|l| l == "exec: from-exec rc=3"), "{ours:?}");
    assert!(ours.iter().any(|l| l == "after pause: PAUSED"), "{ours:?}");
}

/// `ctr run -t` under a pseudo-terminal sized 33x111: what the container sees, and rc.
fn tty_run(c: &Containerd, runtime: &str, id: &str) -> (String, i32) {
    let cmd = format!(
        "stty rows 33 cols 111; ctr --address {} --namespace {} run -t --rm --runtime {runtime} {IMAGE} {id} \
         /bin/sh -c 'sleep 0.5; stty size; tty; exit 5'",
        c.socket().display(),
        c.namespace
    );
    let out = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout)
        .replace(['\r', '\0'], "")
        .trim()
        .to_string();
    (text, out.status.code().unwrap_or(-1))
}

#[test]
fn containerd_tty_and_resize_like_runc_v2() {
    let Some(c) = Containerd::setup() else { return };
    if which_script().is_none() {
        skip("`script` (util-linux) not installed", "run `make deps`");
        return;
    }
    let ours = tty_run(&c, CEDANA, "tty-cedana");
    let theirs = tty_run(&c, RUNC, "tty-runc");
    assert_eq!(ours, theirs);
    assert!(ours.0.contains("33 111"), "terminal not resized: {ours:?}");
    assert!(ours.0.contains("/dev/pts/"), "no terminal: {ours:?}");
    assert_eq!(ours.1, 5);
}

fn which_script() -> Option<()> {
    std::process::Command::new("script")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| ())
}

#[test]
fn containerd_exit_codes_reach_ctr_and_events() {
    let Some(c) = Containerd::setup() else { return };
    let mut events = c
        .ctr_cmd(&["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr events");
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let mut out = events.stdout.take().expect("events stdout");
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .expect("events buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    // Subscribed once an event published now shows up: labelling the namespace
    // publishes /namespaces/update (a fixed sleep raced the subscription).
    let mut probe = 0;
    wait_for(
        "`ctr events` to be subscribed",
        Duration::from_secs(10),
        || {
            probe += 1;
            c.ok(&[
                "namespaces",
                "label",
                &c.namespace,
                &format!("probe={probe}"),
            ]);
            std::thread::sleep(Duration::from_millis(50));
            seen.lock()
                .expect("events buffer")
                .contains("/namespaces/update")
                .then_some(())
        },
    );

    // ctr run (attached) returns the container's exit code.
    let r = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        CEDANA,
        IMAGE,
        "exit7",
        "/bin/sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(r.code, 7, "{r:?}");

    // A detached one: ctr 1.7 has no `task wait`; `task delete` reports the status.
    c.run_detached(&[CEDANA], "exit7d", &["/bin/sh", "-c", "sleep 0.5; exit 7"]);
    wait_for("exit7d to stop", Duration::from_secs(10), || {
        (status(&c, "exit7d") == "STOPPED").then_some(())
    });
    let d = c.ctr(&["task", "delete", "exit7d"]);
    assert!(d.stderr.contains("exit code 7"), "{d:?}");
    c.ok(&["containers", "delete", "exit7d"]);

    // Killed: 137.
    c.run_detached(&[CEDANA], "killed", &["/bin/sleep", "100"]);
    c.ok(&["task", "kill", "-s", "KILL", "killed"]);
    wait_for("killed to stop", Duration::from_secs(10), || {
        (status(&c, "killed") == "STOPPED").then_some(())
    });
    let d = c.ctr(&["task", "delete", "killed"]);
    assert!(d.stderr.contains("exit code 137"), "{d:?}");
    c.ok(&["containers", "delete", "killed"]);

    let _ = events.kill();
    let _ = events.wait();
    let _ = reader.join();
    let text = seen.lock().expect("events buffer").clone();
    let exits: Vec<&str> = text.lines().filter(|l| l.contains("/tasks/exit")).collect();
    assert!(
        exits
            .iter()
            .any(|l| l.contains("\"exit7d\"") && l.contains("\"exit_status\":7")),
        "no exit event with status 7 for exit7d:\n{text}"
    );
    assert!(
        exits
            .iter()
            .any(|l| l.contains("\"killed\"") && l.contains("\"exit_status\":137")),
        "no exit event with status 137:\n{text}"
    );
    for topic in ["/tasks/create", "/tasks/start", "/tasks/delete"] {
        assert!(text.contains(topic), "no {topic} event:\n{text}");
    }
}

/// How many containers the leak test starts: the acceptance count (about 15 s here).
const LEAK_LOOP: usize = 100;

#[test]
fn containerd_many_containers_leave_nothing_behind() {
    let Some(c) = Containerd::setup() else { return };
    // A private FIFO dir: ctr's default (/run/containerd/fifo) is shared with anything
    // else on the host that runs ctr.
    let fifo_dir = c.dir.path().join("fifo");
    std::fs::create_dir_all(&fifo_dir).expect("fifo dir");
    let fifo_arg = fifo_dir.display().to_string();
    let fifo_dir = fifo_dir.as_path();
    let fifos_before = count_entries(fifo_dir);
    for i in 0..LEAK_LOOP {
        let id = format!("leak-{i}");
        let r = c.ctr(&[
            "run",
            "--rm",
            "--fifo-dir",
            &fifo_arg,
            "--runtime",
            CEDANA,
            IMAGE,
            &id,
            "/bin/echo",
            "hi",
        ]);
        assert_eq!(r.code, 0, "run {id}: {r:?}\n{}", c.log_tail());
        assert_eq!(r.stdout.trim(), "hi");
    }
    assert!(c.containers().is_empty(), "{:?}", c.containers());
    c.assert_no_shims_left();
    assert!(c.mounts().is_empty(), "mounts left: {:?}", c.mounts());
    assert!(
        count_entries(fifo_dir) <= fifos_before,
        "FIFOs left in {}",
        fifo_dir.display()
    );
    let bundles = c
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task")
        .join(&c.namespace);
    assert_eq!(
        count_entries(&bundles),
        0,
        "bundles left in {}",
        bundles.display()
    );
}

fn count_entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Every number the counter in `id` appended to /count, read through `ctr task exec`
/// (a fresh exec id per call, from `exec`).
fn counts(c: &Containerd, id: &str, exec: &mut u32) -> Vec<u64> {
    *exec += 1;
    let exec_id = format!("{id}-cat-{exec}");
    let out = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        &exec_id,
        id,
        "/bin/cat",
        "/count",
    ]);
    out.lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad count line {l:?} in {out:?}"))
        })
        .collect()
}

/// The last number in `id`'s /count.
fn count(c: &Containerd, id: &str, exec: &mut u32) -> u64 {
    counts(c, id, exec).last().copied().unwrap_or(0)
}

/// Waits until `id`'s counter passes `above`; returns it.
fn wait_count_above(c: &Containerd, id: &str, exec: &mut u32, above: u64) -> u64 {
    wait_for(
        &format!("{id}'s counter to pass {above}"),
        Duration::from_secs(20),
        || Some(count(c, id, exec)).filter(|v| *v > above),
    )
}

#[test]
fn containerd_checkpoint_and_restore_counter_continues() {
    let Some(c) = Containerd::setup() else { return };
    // The name in the command keeps the two containers' specs apart: containerd 1.7
    // refuses a checkpoint whose spec blob is already in its content store ("content ...
    // already exists"), for runc.v2 too, so one container is checkpointed once.
    let counter = |name: &str| {
        // Appended, one number a line: the restored file shows where the checkpoint
        // stopped and what came next.
        format!("i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.1; done; : {name}")
    };
    c.run_detached(&[CEDANA], "ck-task", &["/bin/sh", "-c", &counter("task")]);
    c.run_detached(&[CEDANA], "ck-src", &["/bin/sh", "-c", &counter("src")]);
    let mut exec = 0;
    wait_count_above(&c, "ck-task", &mut exec, 2);
    // High enough that a restart from 1 cannot pass for the checkpointed counter.
    wait_count_above(&c, "ck-src", &mut exec, 20);

    // ctr task checkpoint (leaves it running): a checkpoint image in the content store.
    let out = c.ok(&["task", "checkpoint", "ck-task"]);
    let reference = out.trim().to_string();
    assert!(
        reference.starts_with("containerd.io/checkpoint/ck-task"),
        "{out}"
    );
    assert!(c.ok(&["image", "ls", "-q"]).contains(&reference));
    assert_eq!(status(&c, "ck-task"), "RUNNING");
    let a = count(&c, "ck-task", &mut exec);
    wait_count_above(&c, "ck-task", &mut exec, a);

    // Whole container, task and rw layer (containerd pauses the task for both, so the
    // layer's /count ends where the memory image does), then restore into a new one.
    c.ok(&[
        "container",
        "checkpoint",
        "--task",
        "--rw",
        "ck-src",
        "cedana.test/ck:1",
    ]);
    let before = count(&c, "ck-src", &mut exec);
    c.ok(&["task", "kill", "-s", "KILL", "ck-src"]);
    // ctr 1.7 has no `task wait`: wait for the status instead.
    wait_for("ck-src to stop", Duration::from_secs(10), || {
        (status(&c, "ck-src") == "STOPPED").then_some(())
    });
    c.ok(&["task", "delete", "ck-src"]);
    c.ok(&["containers", "delete", "ck-src"]);

    c.ok(&[
        "container",
        "restore",
        "--live",
        "--rw",
        "ck-dst",
        "cedana.test/ck:1",
    ]);
    assert_eq!(status(&c, "ck-dst"), "RUNNING");
    // Right after the restore the file already holds the checkpoint's numbers (past 20,
    // which a counter started now needs two seconds to reach).
    let at_restore = count(&c, "ck-dst", &mut exec);
    assert!(
        at_restore > 20,
        "restored /count holds {at_restore}: not the checkpoint's (> 20)"
    );
    // Past the value seen after the checkpoint: the restored counter has written its
    // next numbers.
    wait_count_above(&c, "ck-dst", &mut exec, before + 2);
    // The rw layer holds 1..=N (N >= 20, where the checkpoint stopped) and the restored
    // process appended N+1, N+2, ...: every number is the previous one plus one. A
    // restarted counter would append 1 after N, a lost layer would not start at 1.
    let seq = counts(&c, "ck-dst", &mut exec);
    let expected: Vec<u64> = (1..=seq.len() as u64).collect();
    assert_eq!(
        seq, expected,
        "the restored counter did not carry on from the checkpoint"
    );
}

#[test]
fn containerd_bad_input_gives_clear_errors() {
    let Some(c) = Containerd::setup() else { return };
    // Checkpoint of a stopped task.
    c.run_detached(&[CEDANA], "bad-stopped", &["/bin/true"]);
    wait_for("task to stop", Duration::from_secs(10), || {
        (status(&c, "bad-stopped") == "STOPPED").then_some(())
    });
    let r = c.ctr(&["task", "checkpoint", "bad-stopped"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.to_lowercase().contains("stopped"), "{r:?}");
    c.ok(&["task", "delete", "bad-stopped"]);
    c.ok(&["containers", "delete", "bad-stopped"]);

    // Runtime options that cannot be read or parsed.
    let r = run_with_config(&c, "/nonexistent/cedana.toml", "bad-opts", &["/bin/true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent/cedana.toml"), "{r:?}");
    let bad = c.dir.path().join("bad.toml");
    std::fs::write(&bad, "SystemdCgroup = maybe\n").unwrap();
    let bad = bad.display().to_string();
    let r = run_with_config(&c, &bad, "bad-opts2", &["/bin/true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("SystemdCgroup"), "{r:?}");

    // Nothing stuck: no tasks, and no shim left for the refused containers.
    let _ = c.ctr(&["containers", "delete", "bad-opts"]);
    let _ = c.ctr(&["containers", "delete", "bad-opts2"]);
    assert_eq!(c.ok(&["task", "ls", "-q"]).trim(), "");
    c.assert_no_shims_left();
}

/// `ctr run --rm` on our runtime with runtime options from `cfg`.
fn run_with_config(c: &Containerd, cfg: &str, id: &str, cmd: &[&str]) -> cedana_e2e::Run {
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        CEDANA,
        "--runtime-config-path",
        cfg,
    ];
    args.extend([IMAGE, id]);
    args.extend_from_slice(cmd);
    c.ctr(&args)
}

#[test]
fn containerd_binary_name_from_runtime_options() {
    let Some(c) = Containerd::setup() else { return };
    let cfg = c.dir.path().join("runtime.toml");
    std::fs::write(&cfg, "BinaryName = \"/usr/sbin/runc\"\n").unwrap();
    let cfg = cfg.display().to_string();
    let r = run_with_config(&c, &cfg, "binname", &["/bin/echo", "hi"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        c.log().contains("created binname (pid") && c.log().contains("runtime /usr/sbin/runc)"),
        "{}",
        c.log_tail()
    );
}
