//! A containerd counter container moved three times in a row with `cedana dump
//! containerd` / `cedana restore containerd`: a restored task's stdin is the host's
//! /dev/null (the shim's runtime gets no stdin, and runc maps the checkpointed stdin
//! pipe onto its own), which CRIU could not dump again; each move goes on at last + 1.

use std::fs;
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, IMAGE, RUNC};
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
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNC,
        "--runc-binary",
        &runc_binary,
        "--mount",
        &mount,
        IMAGE,
        "m0",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i >> /out/count; sleep 0.1; done",
    ]);
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
