//! `cedana dump containerd` / `cedana restore containerd` (through the daemon and with
//! `--no-server`) against a private containerd: a counter container run by
//! `io.containerd.runc.v2` with cedana-runc as its runc binary is checkpointed into one
//! portable checkpoint (CRIU images, spec, rootfs changes), then restored into a NEW
//! container that containerd lists and manages: the counter carries on from its last
//! value and a file the container wrote is there. Bad input names what was missing.

use std::time::Duration;

use cedana_e2e::containerd::{containerd_available, Containerd, IMAGE, RUNC};
use cedana_e2e::{bin, e2e_enabled, wait_for, Env};

/// Writes the count by rename, so a reader never sees it half-written.
const COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo $i > /c.tmp; mv /c.tmp /count; sleep 0.2; done";

fn dump_restore_into_new_container(daemon: bool) {
    let Some(c) = Containerd::setup() else { return };
    let mut env = Env::new();
    if daemon {
        env.start_daemon();
    }
    let runc_binary = bin("cedana-runc").display().to_string();
    c.run_detached(
        &[RUNC, "--runc-binary", &runc_binary],
        "orig",
        &["sh", "-c", COUNTER],
    );
    c.wait_count_above("orig", 5);
    c.ok(&[
        "task",
        "exec",
        "--exec-id",
        "w",
        "orig",
        "sh",
        "-c",
        "echo written-inside > /note",
    ]);
    let before = c.wait_count_above("orig", 5);
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let mut dump = vec![
        "--json",
        "dump",
        "containerd",
        "orig",
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
        "--dir",
        &dir,
    ];
    if !daemon {
        dump.push("--no-server");
    }
    let d = env.cedana(&dump).ok().json();
    assert_eq!(d["metadata"]["kind"], "containerd", "{d}");
    assert_eq!(d["metadata"]["containerd"]["image"], IMAGE, "{d}");
    wait_for("the original task to stop", Duration::from_secs(20), || {
        (c.task_status("orig").as_deref() != Some("RUNNING")).then_some(())
    });
    let path = d["path"].as_str().expect("path").to_string();
    let mut restore = vec![
        "--json",
        "restore",
        "containerd",
        "--path",
        &path,
        "--id",
        "copy",
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
    ];
    if !daemon {
        restore.push("--no-server");
    }
    let r = env.cedana(&restore);
    assert_eq!(
        r.code,
        0,
        "restore failed: {}{}\ncontainerd log tail:\n{}",
        r.stdout,
        r.stderr,
        c.log_tail()
    );
    assert!(r.json()["pid"].as_i64().unwrap_or(0) > 0, "{}", r.stdout);
    assert!(c.containers().contains(&"copy".to_string()));
    assert_eq!(c.task_status("copy").as_deref(), Some("RUNNING"));
    // It continues from where it stopped: never below the count seen before the dump
    // (a fresh start would write 1 within 0.2 s), and keeps counting.
    let mut last = before;
    for _ in 0..8 {
        let v = c
            .last_count("copy")
            .expect("a count in the restored container");
        assert!(v >= last, "restored counter went back: {v} after {last}");
        last = v;
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait_count_above("copy", last + 3);
    // containerd holds the recorded spec, moved to the new id.
    let info: serde_json::Value =
        serde_json::from_str(&c.ok(&["containers", "info", "copy"])).expect("info json");
    assert_eq!(
        info["Spec"]["linux"]["cgroupsPath"],
        format!("/{}/copy", c.namespace),
        "{info}"
    );
    assert_eq!(info["Image"], IMAGE);
    let note = c.ok(&["task", "exec", "--exec-id", "n", "copy", "cat", "/note"]);
    assert_eq!(note.trim(), "written-inside");
    c.remove_all();
}

#[test]
fn containerd_dump_restore_into_new_container_no_server() {
    dump_restore_into_new_container(false);
}

#[test]
fn containerd_dump_restore_into_new_container_through_daemon() {
    dump_restore_into_new_container(true);
}

#[test]
fn containerd_unknown_container_is_named_with_its_namespace() {
    if !e2e_enabled() || !containerd_available() {
        return;
    }
    let c = Containerd::start();
    let env = Env::new();
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let r = env
        .cedana(&[
            "dump",
            "containerd",
            "nosuch",
            "--containerd-address",
            &address,
            "--namespace",
            &c.namespace,
            "--dir",
            &dir,
            "--no-server",
        ])
        .fails_with("\"nosuch\" not found");
    assert!(
        r.stderr.contains(&c.namespace),
        "the namespace should be named: {}",
        r.stderr
    );
    // Streamed shards cannot go back through containerd's runc shim: refused up front.
    env.cedana(&[
        "dump",
        "containerd",
        "nosuch",
        "--containerd-address",
        &address,
        "--streams",
        "2",
        "--no-server",
    ])
    .fails_with("cannot read streamed shards");
    // An unreachable containerd says so.
    env.cedana(&[
        "dump",
        "containerd",
        "x",
        "--containerd-address",
        "/nonexistent/c.sock",
        "--no-server",
    ])
    .fails_with("containerd is unreachable at /nonexistent/c.sock");
}

/// `restore containerd --image REF`: the new container is created from REF (which must
/// be in the namespace) instead of the recorded image; a REF that is not there is
/// refused by name, and nothing is left behind.
#[test]
fn containerd_restore_with_another_image() {
    let Some(c) = Containerd::setup() else { return };
    let env = Env::new();
    let other = "example.com/cedana/other:1";
    c.import_busybox_as(other);
    c.run_detached(
        &[
            RUNC,
            "--runc-binary",
            &bin("cedana-runc").display().to_string(),
        ],
        "src",
        &["sh", "-c", COUNTER],
    );
    let before = c.wait_count_above("src", 3);
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let common = [
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
    ];
    let mut dump = vec![
        "--json",
        "dump",
        "containerd",
        "src",
        "--dir",
        &dir,
        "--no-server",
    ];
    dump.extend(common);
    let d = env.cedana(&dump).ok().json();
    let path = d["path"].as_str().expect("path").to_string();
    wait_for("the original task to stop", Duration::from_secs(20), || {
        (c.task_status("src").as_deref() != Some("RUNNING")).then_some(())
    });
    let restore = |id: &str, image: &str| {
        let mut args = vec![
            "restore",
            "containerd",
            "--path",
            &path,
            "--id",
            id,
            "--image",
            image,
            "--no-server",
        ];
        args.extend(common);
        env.cedana(&args)
    };
    let bad = restore("bad", "example.com/cedana/missing:1");
    assert_ne!(bad.code, 0, "a missing image cannot be used");
    assert!(
        bad.stderr.contains("example.com/cedana/missing:1"),
        "{}",
        bad.stderr
    );
    assert!(
        !c.containers().contains(&"bad".to_string()),
        "{:?}",
        c.containers()
    );
    let r = restore("copy", other);
    assert_eq!(r.code, 0, "{}{}\n{}", r.stdout, r.stderr, c.log_tail());
    let info = c.ok(&["container", "info", "copy"]);
    assert!(info.contains(other), "created from {other}: {info}");
    assert!(
        c.wait_count_above("copy", before) > before,
        "the copy counts on"
    );
    c.kill_and_remove("copy");
}
