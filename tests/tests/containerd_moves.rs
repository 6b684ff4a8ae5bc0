//! A containerd counter container moved three times in a row with `cedana dump
//! containerd` / `cedana restore containerd`: a restored task's stdin is the host's
//! /dev/null (the shim's runtime gets no stdin, and runc maps the checkpointed stdin
//! pipe onto its own), which CRIU could not dump again; each move goes on at last + 1.

use std::fs;
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, RUNC};
use cedana_e2e::{bin, counts, next_after, wait_for, Env};

#[test]
fn containerd_container_moves_three_times() {
    let Some(c) = Containerd::setup() else { return };
    let env = Env::new();
    // The count goes to a host dir bind-mounted in: every copy appends to one file.
    let out = env.path("out");
    fs::create_dir_all(&out).expect("mkdir");
    let log = out.join("count");
    let mount = format!("type=bind,src={},dst=/out,options=rbind:rw", out.display());
    let runc_binary = bin("cedana-runc").display().to_string();
    c.run_detached(
        &[RUNC, "--runc-binary", &runc_binary, "--mount", &mount],
        "m0",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i >> /out/count; sleep 0.1; done",
        ],
    );
    wait_for("m0 to count", Duration::from_secs(30), || {
        (counts(&log).len() > 5).then_some(())
    });
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let ids = ["m0", "m1", "m2", "m3"];
    for (n, pair) in ids.windows(2).enumerate() {
        let (from, to) = (pair[0], pair[1]);
        let d = env.cedana(&[
            "--json",
            "dump",
            "containerd",
            from,
            "--containerd-address",
            &address,
            "--namespace",
            &c.namespace,
            "--dir",
            &dir,
            "--no-server",
        ]);
        assert_eq!(
            d.code,
            0,
            "move {}: dump {from}: {}{}",
            n + 1,
            d.stdout,
            d.stderr
        );
        wait_for(&format!("{from} to stop"), Duration::from_secs(20), || {
            (c.task_status(from).as_deref() != Some("RUNNING")).then_some(())
        });
        let last = *counts(&log).last().expect("counted");
        let path = d.json()["path"].as_str().expect("path").to_string();
        let r = env.cedana(&[
            "--json",
            "restore",
            "containerd",
            "--path",
            &path,
            "--id",
            to,
            "--containerd-address",
            &address,
            "--namespace",
            &c.namespace,
            "--no-server",
        ]);
        assert_eq!(
            r.code,
            0,
            "move {}: restore {to}: {}{}\ncontainerd log tail:\n{}",
            n + 1,
            r.stdout,
            r.stderr,
            c.log_tail()
        );
        assert_eq!(
            next_after(&log, last),
            last + 1,
            "move {} ({from} -> {to})",
            n + 1
        );
    }
    c.remove_all();
}

/// With containerd's own runc (no cedana-runc), a task `cedana restore containerd` made
/// can be checkpointed by containerd itself: its stdin is a pipe (from a FIFO), not the
/// host's /dev/null, which plain runc's CRIU could not dump.
#[test]
fn a_restored_task_can_be_checkpointed_by_ctr() {
    let Some(c) = Containerd::setup() else { return };
    let env = Env::new();
    let out = env.path("out");
    fs::create_dir_all(&out).expect("mkdir");
    let log = out.join("count");
    let mount = format!("type=bind,src={},dst=/out,options=rbind:rw", out.display());
    c.run_detached(
        &[RUNC, "--mount", &mount],
        "p0",
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i >> /out/count; sleep 0.1; done",
        ],
    );
    wait_for("p0 to count", Duration::from_secs(30), || {
        (counts(&log).len() > 5).then_some(())
    });
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let d = env.cedana(&[
        "--json",
        "dump",
        "containerd",
        "p0",
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
        "--dir",
        &dir,
        "--no-server",
    ]);
    assert_eq!(d.code, 0, "dump p0: {}{}", d.stdout, d.stderr);
    wait_for("p0 to stop", Duration::from_secs(20), || {
        (c.task_status("p0").as_deref() != Some("RUNNING")).then_some(())
    });
    let last = *counts(&log).last().expect("counted");
    let path = d.json()["path"].as_str().expect("path").to_string();
    let r = env.cedana(&[
        "restore",
        "containerd",
        "--path",
        &path,
        "--id",
        "p1",
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
        "--no-server",
    ]);
    assert_eq!(
        r.code,
        0,
        "restore p1: {}{}\n{}",
        r.stdout,
        r.stderr,
        c.log_tail()
    );
    assert_eq!(next_after(&log, last), last + 1, "p1 goes on");
    let k = c.ctr(&["task", "checkpoint", "p1"]);
    assert_eq!(
        k.code,
        0,
        "ctr task checkpoint of a restored task: {}{}\ncontainerd log tail:\n{}",
        k.stdout,
        k.stderr,
        c.log_tail()
    );
    let now = *counts(&log).last().expect("counted");
    assert!(
        next_after(&log, now) == now + 1,
        "p1 runs on after its checkpoint"
    );
    c.remove_all();
}
