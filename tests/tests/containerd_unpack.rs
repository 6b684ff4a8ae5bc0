//! `cedana restore containerd` into a containerd whose snapshotter no longer holds the
//! image's unpacked layers (as on a host that only has the image's content): the restore
//! unpacks the image first, as `ctr containers create` would, records the snapshot on the
//! image's config so garbage collection keeps it, and the restored counter carries on.

use std::time::Duration;

use cedana_e2e::containerd::{Containerd, RUNC};
use cedana_e2e::{bin, wait_for, Env};

const COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo $i > /c.tmp; mv /c.tmp /count; sleep 0.2; done";

/// Keys of the committed snapshots (`ctr snapshots ls`: KEY PARENT KIND).
fn committed(c: &Containerd) -> Vec<String> {
    c.ok(&["snapshots", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.last() == Some(&"Committed")).then(|| f[0].to_string())
        })
        .collect()
}

#[test]
fn restore_unpacks_an_image_the_snapshotter_lacks() {
    let Some(c) = Containerd::setup() else { return };
    let env = Env::new();
    let runc_binary = bin("cedana-runc").display().to_string();
    c.run_detached(
        &[RUNC, "--runc-binary", &runc_binary],
        "orig",
        &["sh", "-c", COUNTER],
    );
    let before = wait_for("orig to count", Duration::from_secs(30), || {
        c.last_count("orig").filter(|n| *n > 5)
    });
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let d = env
        .cedana(&[
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
            "--no-server",
        ])
        .ok()
        .json();
    let path = d["path"].as_str().expect("path").to_string();
    // The dump stopped orig: remove its task, container and snapshot.
    c.ok(&["task", "delete", "--force", "orig"]);
    c.ok(&["containers", "delete", "orig"]);
    // The image's layers, unpacked by the import, go; its content stays.
    let layers = committed(&c);
    assert_eq!(layers.len(), 1, "one unpacked layer: {layers:?}");
    c.ok(&["snapshots", "rm", &layers[0]]);
    assert!(committed(&c).is_empty());

    let r = env.cedana(&[
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
        "--no-server",
    ]);
    assert_eq!(
        r.code,
        0,
        "restore failed: {}{}\ncontainerd log tail:\n{}",
        r.stdout,
        r.stderr,
        c.log_tail()
    );
    assert_eq!(committed(&c), layers, "the layer is unpacked again");
    let content = c.ok(&["content", "ls"]);
    let label = format!("containerd.io/gc.ref.snapshot.overlayfs={}", layers[0]);
    assert!(content.contains(&label), "{content}");
    let after = wait_for("copy to count on", Duration::from_secs(30), || {
        c.last_count("copy").filter(|n| *n > before)
    });
    assert!(after > before, "{after} after {before}");
    c.kill_and_remove("copy");
}
