//! `cedana dump containerd` / `restore containerd` of a container that runs on OUR shim
//! (`io.containerd.cedana.v2`), against a private containerd (issue 11, item 2). The
//! dump stops the container, so the checkpoint must restore: it does, into a new
//! container on our shim whose counter carries on. A container whose runtime options
//! cannot carry the checkpoint path (runtimeoptions.v1.Options, from
//! `--runtime-config-path`) is refused before anything is frozen, and keeps running.

use cedana_e2e::containerd::{Containerd, CEDANA, COUNTER};
use cedana_e2e::Env;

fn dump_restore_on_our_shim(daemon: bool) {
    let Some(c) = Containerd::setup() else { return };
    let mut env = Env::new();
    if daemon {
        env.start_daemon();
    }
    c.run_detached(&[CEDANA], "orig", &["sh", "-c", COUNTER]);
    c.wait_count_above("orig", 10);
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let target = [
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
    ];
    let mut dump = vec!["--json", "dump", "containerd", "orig", "--dir", &dir];
    dump.extend(target);
    let mut restore = vec!["--json", "restore", "containerd", "--id", "copy"];
    restore.extend(target);
    if !daemon {
        dump.push("--no-server");
        restore.push("--no-server");
    }
    let d = env.cedana(&dump).ok().json();
    assert_eq!(d["metadata"]["containerd"]["runtime"], CEDANA, "{d}");
    let path = d["path"].as_str().expect("path").to_string();
    restore.extend(["--path", &path]);
    let r = env.cedana(&restore);
    assert_eq!(
        r.code,
        0,
        "restore of a container of our shim failed: {}{}\ncontainerd log tail:\n{}",
        r.stdout,
        r.stderr,
        c.log_tail()
    );
    assert_eq!(c.task_status("copy").as_deref(), Some("RUNNING"));
    let info: serde_json::Value =
        serde_json::from_str(&c.ok(&["containers", "info", "copy"])).expect("info json");
    assert_eq!(info["Runtime"]["Name"], CEDANA, "{info}");
    // The rootfs diff holds 1..=N; the restored process appends N+1, N+2, ...: every
    // number is the previous one plus one (a restart would append 1 after N).
    let seq = c.counts("copy");
    let last = *seq.last().expect("a restored count");
    let grown = c.wait_count_above("copy", last + 3);
    let seq = c.counts("copy");
    let expected: Vec<u64> = (1..=seq.len() as u64).collect();
    assert_eq!(seq, expected, "the restored counter did not carry on");
    assert!(grown > 10, "{seq:?}");
    c.remove_all();
}

#[test]
fn containerd_dump_restore_on_our_shim_no_server() {
    dump_restore_on_our_shim(false);
}

#[test]
fn containerd_dump_restore_on_our_shim_through_daemon() {
    dump_restore_on_our_shim(true);
}

#[test]
fn containerd_unrestorable_runtime_options_are_refused_before_the_dump() {
    let Some(c) = Containerd::setup() else { return };
    let env = Env::new();
    let config = env.path("runtime.toml");
    std::fs::write(&config, "BinaryName = \"cedana-runc\"\n").expect("runtime config");
    let config = config.display().to_string();
    c.run_detached(
        &[CEDANA, "--runtime-config-path", &config],
        "typed",
        &["sh", "-c", COUNTER],
    );
    let before = c.wait_count_above("typed", 2);
    let address = c.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let r = env
        .cedana(&[
            "dump",
            "containerd",
            "typed",
            "--containerd-address",
            &address,
            "--namespace",
            &c.namespace,
            "--dir",
            &dir,
            "--no-server",
        ])
        .fails_with("runtimeoptions.v1.Options");
    assert!(r.stderr.contains("ctr container restore"), "{}", r.stderr);
    assert!(r.stderr.contains("keeps running"), "{}", r.stderr);
    // Nothing was frozen or written: the container counts on.
    assert_eq!(c.task_status("typed").as_deref(), Some("RUNNING"));
    c.wait_count_above("typed", before + 2);
    assert!(cedana_e2e::dir_names(&env.checkpoints()).is_empty());
    c.remove_all();
}
