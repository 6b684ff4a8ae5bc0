//! `cedana dump runc` / `cedana restore runc` (in-process and through the daemon): one
//! portable checkpoint that restores under a new id into a fresh copy of the original
//! rootfs, with the container's rootfs changes; and a TCP connection inside a container
//! that keeps talking after a checkpoint taken with no extra flags.

mod runc_support;

use std::fs;

use cedana_e2e::{wait_for, Env};
use runc_support::*;

/// Dumps, restores as `new_id` into a fresh rootfs copy, and checks the counter and the
/// rootfs file. `daemon`: through the daemon, else `--no-server`.
fn dump_restore_new_id(daemon: bool) {
    let mut env = Env::new();
    if daemon {
        env.start_daemon();
    }
    let pair = CounterPair::start(&env);
    let (root, bundle, fresh, rt) = (&pair.root, &pair.bundle, &pair.fresh, &pair.rt);
    let count = bundle.join("rootfs/tmp/count");
    // A file written from inside the container, with bytes that must survive.
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    fs::write(env.path("payload"), &payload).expect("payload");
    let w = rt.out(&[
        "exec",
        "orig",
        "sh",
        "-c",
        "mkdir -p /data/sub && printf 'written inside\\n' > /data/sub/note.txt",
    ]);
    assert_eq!(w.code, 0, "{w:?}");
    fs::write(bundle.join("rootfs/data/blob.bin"), &payload).expect("blob");

    let root_s = root.to_str().expect("utf8");
    let dir = env.checkpoints();
    let mut args = vec![
        "--json",
        "dump",
        "runc",
        "orig",
        "--root",
        root_s,
        "--dir",
        dir.to_str().expect("utf8"),
        // The portable archive (dumps stream by default; runc_streams.rs covers that).
        "--compression",
        "zstd",
    ];
    if !daemon {
        args.push("--no-server");
    }
    let out = env.cedana(&args).ok();
    let v = out.json();
    let path = v["path"].as_str().expect("path").to_string();
    assert!(path.ends_with(".tar.zst"), "zstd by default: {path}");
    let md = &v["metadata"];
    assert_eq!(md["kind"], "runc");
    assert_eq!(md["container"]["layout"], "portable");
    for f in [
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "checkpoint/inventory.img",
    ] {
        assert!(md["files"][f]["sha256"].is_string(), "{f} digested: {md}");
    }
    assert!(rt.state("orig").is_none(), "dumped container is gone");
    // CRIU's own figures, read from runc's CRIU work dir, as for processes.
    assert!(
        md["criu_stats"]["dump"]["pages_written"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "a container dump carries CRIU's stats: {}",
        md["criu_stats"]
    );
    let last = *numbers(&count).last().expect("counted");

    let out = pair.restore(&env, &path, daemon);
    assert!(
        out.status.success(),
        "restore: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    rt.wait_status("copy", "running");
    assert!(fresh.join("config.json").is_file(), "config from spec.dump");
    let new_count = fresh.join("rootfs/tmp/count");
    assert_eq!(
        next_after(&new_count, last),
        last + 1,
        "counter continued in the new container"
    );
    assert_eq!(
        fs::read(fresh.join("rootfs/data/blob.bin")).expect("blob"),
        payload,
        "rootfs file, same bytes"
    );
    assert_eq!(
        fs::read_to_string(fresh.join("rootfs/data/sub/note.txt")).expect("note"),
        "written inside\n"
    );
    // Restoring again under the same id is refused; the running copy is untouched.
    env.cedana(&pair.restore_args(&path, false))
        .fails_with("already exists");
    assert_eq!(rt.state("copy").expect("copy")["status"], "running");
}

#[test]
fn dump_runc_restores_under_a_new_id_in_process() {
    if !runc_available() {
        return;
    }
    dump_restore_new_id(false);
}

#[test]
fn dump_runc_restores_under_a_new_id_through_the_daemon() {
    if !runc_available() {
        return;
    }
    dump_restore_new_id(true);
}

#[test]
fn query_and_bad_input() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let root_s = root.to_str().expect("utf8");
    let bundle = env.path("bundle");
    build_bundle(&bundle, &["sleep", "1000"], Net::Own);
    let _g = Ctr::new(&root, "q1");
    Rt::runc(&root).run_detached(&bundle, "q1");
    let v = env
        .cedana(&["--json", "query", "runc", "--root", root_s, "--no-server"])
        .ok()
        .json();
    assert_eq!(v[0]["id"], "q1");
    assert_eq!(v[0]["status"], "running");
    assert!(v[0]["pid"].as_i64().unwrap_or(0) > 0);
    env.cedana(&["query", "runc", "nope", "--root", root_s, "--no-server"])
        .fails_with("does not exist");
    env.cedana(&["dump", "runc", "nope", "--root", root_s, "--no-server"])
        .fails_with("does not exist");
    // A corrupt archive: refused before anything is made.
    let bad = env.path("bad.tar.zst");
    fs::write(&bad, b"\x28\xb5\x2f\xfdgarbage").expect("write");
    env.cedana(&[
        "restore",
        "runc",
        "--path",
        bad.to_str().expect("utf8"),
        "--bundle",
        bundle.to_str().expect("utf8"),
        "--id",
        "q2",
        "--root",
        root_s,
        "--detach",
        "--no-server",
    ])
    .fails_with("corrupt");
    assert!(Rt::runc(&root).state("q2").is_none());
    assert_eq!(
        Rt::runc(&root).state("q1").expect("q1")["status"],
        "running"
    );
}

/// A client and an echo server inside one container's network namespace, talking over
/// loopback: checkpointed with no flags (the engine sees the connection and turns on
/// tcp_established), restored (cedana-runc sets `lo` up in the new network namespace),
/// and still exchanging data on the same connection.
#[test]
fn tcp_connection_inside_a_container_survives() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_tcp_bundle(&bundle);
    let config = bundle.join("config.json");
    let spec_before = fs::read(&config).expect("spec");
    let b = bundle.to_str().expect("utf8");
    let cr = Rt::cedana(&root);
    let _g = Ctr::new(&root, "tcp");
    cr.run_detached(&bundle, "tcp");
    let echo = bundle.join("rootfs/tmp/echo");
    wait_above(&echo, 5);
    let img = env.path("img");
    let i = img.to_str().expect("utf8");
    cr.out(&["checkpoint", "--image-path", i, "tcp"]).ok();
    let md: serde_json::Value =
        serde_json::from_slice(&fs::read(img.join("metadata.json")).expect("md")).expect("json");
    assert_eq!(
        md["criu_options"]["tcp_established"], true,
        "detected: {md}"
    );
    let last = *numbers(&echo).last().expect("echoed");
    let (code, err) = cr.detached(
        &["restore", "-d", "--image-path", i, "--bundle", b, "tcp"],
        &bundle,
    );
    assert_eq!(code, 0, "restore with no flags: {err}");
    assert_eq!(
        fs::read(&config).expect("spec"),
        spec_before,
        "the bundle's config.json is put back after the restore"
    );
    // The same connection: numbers go on from where they were, no restart at 1.
    assert_eq!(next_after(&echo, last), last + 1);
    wait_above(&echo, last + 10);
    wait_for("still running", std::time::Duration::from_secs(5), || {
        (cr.state("tcp")?["status"] == "running").then_some(())
    });
}
