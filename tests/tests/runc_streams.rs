//! Streamed container checkpoints: `cedana dump runc --streams 4` has runc use
//! cedana-criu-relay as its CRIU, which runs `criu dump --stream` into our shards; the
//! restored container keeps counting, no uncompressed image is written, a damaged shard
//! is refused before CRIU runs and leaves no container. Without the stream setting the
//! relay is plain CRIU to runc.

mod runc_support;

use std::fs;
use std::path::Path;

use cedana_e2e::{bin, CriuRecorder, Env};
use runc_support::*;

/// The counter pair and the env (and daemon) it lives in. Fields drop in order: the
/// containers must go before the env removes their runtime root.
struct Setup {
    pair: CounterPair,
    env: Env,
}

fn setup(daemon: bool) -> Setup {
    let mut env = Env::new();
    if daemon {
        env.start_daemon();
    }
    let pair = CounterPair::start(&env);
    Setup { pair, env }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Every file name under `dir`, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("ls").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            let rel = p.strip_prefix(dir).expect("under dir");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

impl Setup {
    /// `cedana dump runc orig --streams 4`; returns the checkpoint directory.
    fn dump(&self, daemon: bool, extra: &[&str]) -> String {
        self.dump_with(&[], daemon, extra)
    }

    /// [`Setup::dump`] with `global` flags before the command (where `--set` must go).
    fn dump_with(&self, global: &[&str], daemon: bool, extra: &[&str]) -> String {
        let dir = self.env.checkpoints();
        let mut args = global.to_vec();
        args.extend([
            "--json",
            "dump",
            "runc",
            "orig",
            "--root",
            s(&self.pair.root),
            "--dir",
            s(&dir),
            "--streams",
            "4",
        ]);
        args.extend_from_slice(extra);
        if !daemon {
            args.push("--no-server");
        }
        let out = self.env.cedana(&args).ok();
        out.json()["path"].as_str().expect("path").to_string()
    }

    /// `cedana restore runc --detach` into `copy` on the fresh rootfs.
    fn restore(&self, path: &str, daemon: bool) -> std::process::Output {
        self.pair.restore(&self.env, path, daemon)
    }
}

fn streamed_container_keeps_counting(daemon: bool) {
    let st = setup(daemon);
    let path = st.dump(daemon, &[]);
    assert!(
        Path::new(&path).is_dir(),
        "a streamed checkpoint is a directory"
    );
    let names = tree(Path::new(&path));
    let shards = names
        .iter()
        .filter(|n| n.starts_with("checkpoint/shard-") && n.ends_with(".zst"))
        .count();
    assert_eq!(shards, 4, "four zstd shards: {names:?}");
    for f in [
        "checkpoint/streams.json",
        "checkpoint/descriptors.json",
        "spec.dump",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.ends_with(".img")),
        "no uncompressed image written: {names:?}"
    );
    assert!(
        st.pair.rt.state("orig").is_none(),
        "dumped container is gone"
    );
    let last = *numbers(&st.pair.bundle.join("rootfs/tmp/count"))
        .last()
        .expect("counted");

    let out = st.restore(&path, daemon);
    assert!(
        out.status.success(),
        "restore: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    st.pair.rt.wait_status("copy", "running");
    let count = st.pair.fresh.join("rootfs/tmp/count");
    assert_eq!(
        next_after(&count, last),
        last + 1,
        "counter continued in the new container"
    );
}

#[test]
fn streamed_container_restores_and_keeps_counting() {
    if !runc_available() {
        return;
    }
    streamed_container_keeps_counting(false);
}

#[test]
fn streamed_container_through_the_daemon() {
    if !runc_available() {
        return;
    }
    streamed_container_keeps_counting(true);
}

#[test]
fn damaged_container_shard_is_refused_before_criu_runs() {
    if !runc_available() {
        return;
    }
    let st = setup(false);
    // CRIU is a recording wrapper: the relay runs it for the dump (so it is wired in),
    // and the refused restore must not run it at all (nor runc, which would).
    let criu = CriuRecorder::new(&st.env.path("criu"));
    let setting = criu.setting();
    let path = st.dump_with(&["--set", &setting], false, &["--leave-running"]);
    assert!(
        criu.calls().iter().any(|c| c.contains("--stream")),
        "the relay did not run CRIU through the wrapper: {:?}",
        criu.calls()
    );
    criu.clear();
    st.pair.rt.wait_status("orig", "running");
    let shard = Path::new(&path).join("checkpoint/shard-0.zst");
    let len = fs::metadata(&shard).expect("shard").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    let out = st
        .env
        .cmd()
        .args(["--set", &setting, "--json"])
        .args(st.pair.restore_args(&path, false))
        .output()
        .expect("restore");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a truncated shard must not restore");
    assert!(
        err.contains("shard-0.zst"),
        "the error names the shard: {err}"
    );
    assert!(
        criu.calls().is_empty(),
        "refused only after CRIU ran: {:?}\n{err}",
        criu.calls()
    );
    assert!(st.pair.rt.state("copy").is_none(), "no half-made container");
    st.pair.rt.wait_status("orig", "running");
}

#[test]
fn relay_without_the_stream_setting_is_plain_criu() {
    if !runc_available() {
        return;
    }
    let st = setup(false);
    let relay = bin("cedana-criu-relay");
    let images = st.env.path("images");
    let with_relay = |args: &[&str]| {
        let mut all = vec!["--criu", s(&relay)];
        all.extend_from_slice(args);
        st.pair.rt.detached(&all, &st.pair.bundle)
    };
    let (code, err) = with_relay(&["checkpoint", "--image-path", s(&images), "orig"]);
    assert_eq!(code, 0, "runc checkpoint with the relay as CRIU: {err}");
    assert!(
        images.join("inventory.img").is_file(),
        "CRIU wrote its images"
    );
    let last = *numbers(&st.pair.bundle.join("rootfs/tmp/count"))
        .last()
        .expect("counted");
    let (code, err) = with_relay(&[
        "restore",
        "-d",
        "--image-path",
        s(&images),
        "--bundle",
        s(&st.pair.bundle),
        "orig",
    ]);
    assert_eq!(code, 0, "runc restore with the relay as CRIU: {err}");
    st.pair.rt.wait_status("orig", "running");
    let count = st.pair.bundle.join("rootfs/tmp/count");
    assert_eq!(
        next_after(&count, last),
        last + 1,
        "the container carried on from the checkpoint"
    );
    wait_above(&count, last + 3);
}

/// TCP over loopback inside a container, streamed with no extra flags: the relay forwards
/// CRIU's setup-namespaces to runc, whose prestart hook (added by the engine) sets `lo`
/// up before CRIU reconnects the sockets; the connection keeps exchanging data.
#[test]
fn tcp_connection_in_a_streamed_container_survives() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_tcp_bundle(&bundle);
    let fresh = env.path("fresh");
    fs::create_dir_all(&fresh).expect("mkdir");
    copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
    let rt = Rt::runc(&root);
    let _g = [Ctr::new(&root, "tcp"), Ctr::new(&root, "tcp2")];
    rt.run_detached(&bundle, "tcp");
    wait_above(&bundle.join("rootfs/tmp/echo"), 5);
    let dir = env.checkpoints();
    let out = env
        .cedana(&[
            "--json",
            "dump",
            "runc",
            "tcp",
            "--root",
            s(&root),
            "--dir",
            s(&dir),
            "--streams",
            "4",
            "--no-server",
        ])
        .ok()
        .json();
    assert_eq!(
        out["metadata"]["criu_options"]["tcp_established"], true,
        "{out}"
    );
    let last = *numbers(&bundle.join("rootfs/tmp/echo"))
        .last()
        .expect("echoed");
    let path = out["path"].as_str().expect("path");
    env.cedana(&[
        "restore",
        "runc",
        "--path",
        path,
        "--bundle",
        s(&fresh),
        "--id",
        "tcp2",
        "--root",
        s(&root),
        "--detach",
        "--no-server",
    ])
    .ok();
    let echo = fresh.join("rootfs/tmp/echo");
    assert_eq!(next_after(&echo, last), last + 1, "the same connection");
    wait_above(&echo, last + 10);
    rt.wait_status("tcp2", "running");
}
