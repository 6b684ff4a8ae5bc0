//! Streaming by default: a dump given neither `--streams` nor `--compression` streams
//! into one zstd shard per core (capped) for processes, jobs and runc containers, and
//! says so in metadata.json's `packing`; where it cannot (the configured compression is
//! gzip, `--streams 0`, a container on a terminal) it packs the archive, records why,
//! says it once on stderr, and the checkpoint restores either way.

mod runc_support;

use std::path::Path;
use std::time::Duration;

use cedana_e2e::*;
use runc_support::*;

/// The shard files of a streamed checkpoint directory.
fn shards(dir: &Path) -> usize {
    dir_names(dir)
        .iter()
        .filter(|n| n.starts_with("shard-") && n.ends_with(".zst"))
        .count()
}

/// A dump's `metadata.packing`: streamed into as many shards as there are files, none of
/// them an uncompressed image.
fn assert_streamed(md: &serde_json::Value, images: &Path) {
    let n = md["packing"]["streams"].as_u64().expect("packing.streams");
    assert!(n >= 1, "streamed by default: {md}");
    assert!(
        md["packing"].get("not_streamed").is_none(),
        "no fallback: {md}"
    );
    assert!(
        images.join("streams.json").is_file(),
        "{}",
        images.display()
    );
    assert_eq!(shards(images), n as usize, "{:?}", dir_names(images));
    assert!(
        !dir_names(images).iter().any(|f| f.ends_with(".img")),
        "no uncompressed image: {:?}",
        dir_names(images)
    );
}

#[test]
fn process_dump_streams_by_default_and_restores() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("counter.log");
    let mut w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 3);
    let pid = w.pid.to_string();
    let out = env
        .cedana(&["--json", "dump", "process", &pid, "--no-server"])
        .ok();
    w.reap();
    assert!(
        !out.stderr.contains("not streamed"),
        "streamed, nothing to say: {}",
        out.stderr
    );
    let v = out.json();
    let path = Path::new(v["path"].as_str().expect("path")).to_path_buf();
    assert_streamed(&v["metadata"], &path);
    // metadata.json on disk says the same as the reply.
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("metadata.json")).expect("read"))
            .expect("json");
    assert_eq!(on_disk["packing"], v["metadata"]["packing"]);
    let last = last_count(&log).expect("counted");
    let restored = restore_process_and_check(&env, &path, &log, last);
    kill(restored);
}

#[test]
fn gzip_config_and_streams_0_fall_back_to_the_archive_and_say_why() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    for (flags, suffix, why) in [
        (
            &["--set", "checkpoint.compression=gzip"][..],
            ".tar.gz",
            "checkpoint.compression is gzip",
        ),
        (&[][..], ".tar.zst", "--streams 0"),
    ] {
        let log = env.path(&format!("counter{suffix}.log"));
        let mut w = Workload::start(&log, &["counter", "50"]);
        wait_count_above(&log, 3);
        let pid = w.pid.to_string();
        let mut args = flags.to_vec();
        args.extend(["--json", "dump", "process", &pid, "--no-server"]);
        if why == "--streams 0" {
            args.extend(["--streams", "0"]);
        }
        let out = env.cedana(&args).ok();
        w.reap();
        let said: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("not streamed"))
            .collect();
        assert_eq!(said.len(), 1, "said once: {}", out.stderr);
        assert!(said[0].contains(why), "{}", said[0]);
        let v = out.json();
        let path = v["path"].as_str().expect("path").to_string();
        assert!(path.ends_with(suffix), "{path}");
        assert!(Path::new(&path).is_file(), "an archive: {path}");
        assert_eq!(v["metadata"]["packing"]["streams"], 0, "{v}");
        let recorded = v["metadata"]["packing"]["not_streamed"]
            .as_str()
            .expect("why recorded");
        assert!(recorded.contains(why), "{recorded}");
        let last = last_count(&log).expect("counted");
        let restored = restore_process_and_check(&env, Path::new(&path), &log, last);
        kill(restored);
        wait_for("the restored counter gone", Duration::from_secs(10), || {
            (!pid_alive(restored)).then_some(())
        });
    }
}

#[test]
fn job_dump_streams_by_default_and_restores() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let workload = bin("cedana-workload").to_string_lossy().to_string();
    env.cedana(&[
        "run", "process", "--jid", "c", "--", &workload, "counter", "50",
    ])
    .ok();
    let job = |env: &Env| -> serde_json::Value {
        let list = env.cedana(&["--json", "ps"]).ok().json();
        list.as_array()
            .and_then(|a| a.iter().find(|j| j["jid"] == "c").cloned())
            .expect("job c listed")
    };
    let log = std::path::PathBuf::from(job(&env)["log_path"].as_str().expect("log_path"));
    wait_count_above(&log, 3);
    let out = env.cedana(&["--json", "dump", "job", "c"]).ok();
    let v = out.json();
    let path = Path::new(v["path"].as_str().expect("path")).to_path_buf();
    assert_streamed(&v["metadata"], &path);
    wait_for("job c halted", Duration::from_secs(10), || {
        (job(&env)["state"] == "halted").then_some(())
    });
    let last = last_count(&log).expect("counted");
    env.cedana(&["restore", "job", "c"]).ok();
    assert_eq!(
        next_after(&log, last),
        last + 1,
        "the job's counter went on"
    );
    env.cedana(&["job", "kill", "c", "--signal", "KILL"]).ok();
}

#[test]
fn runc_container_dump_streams_by_default_and_restores() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let pair = CounterPair::start(&env);
    let (path, md) = dump_runc(&env, &pair.root, "orig");
    assert_streamed(&md, &Path::new(&path).join("checkpoint"));
    assert!(pair.rt.state("orig").is_none(), "dumped container is gone");
    let last = *numbers(&pair.bundle.join("rootfs/tmp/count"))
        .last()
        .expect("counted");
    let out = pair.restore(&env, &path, false);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pair.rt.wait_status("copy", "running");
    let count = pair.fresh.join("rootfs/tmp/count");
    assert_eq!(next_after(&count, last), last + 1, "the container went on");
}

/// `setsid script -qec CMD /dev/null`: CMD on a pseudo-terminal of its own (runc runs a
/// `process.terminal` container in the foreground on it), output discarded.
fn on_a_terminal(cmd: &std::process::Command) -> std::process::Child {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    std::process::Command::new("setsid")
        .args(["script", "-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script (util-linux)")
}

/// A container on a terminal cannot stream (CRIU hands the new pty master over RPC
/// only): the default dump packs the zstd archive, says why once and records it; the
/// container restores from it (in the foreground, on a terminal) and keeps counting.
#[test]
fn terminal_container_falls_back_to_the_archive_and_restores() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let (bundle, fresh) = (env.path("bundle"), env.path("fresh"));
    build_bundle(&bundle, COUNTER, Net::Own);
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("spec")).expect("json");
    spec["process"]["terminal"] = true.into();
    std::fs::write(&config, spec.to_string()).expect("write spec");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
    let _g = [Ctr::new(&root, "term"), Ctr::new(&root, "copy")];
    let rt = Rt::runc(&root);
    let mut run = rt.cmd();
    run.args(["run", "--bundle", bundle.to_str().expect("utf8"), "term"]);
    let mut running = on_a_terminal(&run);
    wait_above(&bundle.join("rootfs/tmp/count"), 5);

    let dir = env.checkpoints();
    let out = env
        .cedana(&[
            "--json",
            "dump",
            "runc",
            "term",
            "--root",
            root.to_str().expect("utf8"),
            "--dir",
            dir.to_str().expect("utf8"),
            "--no-server",
        ])
        .ok();
    let _ = running.wait();
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("not streamed"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {}", out.stderr);
    assert!(said[0].contains("terminal"), "says why: {}", said[0]);
    let v = out.json();
    let path = v["path"].as_str().expect("path").to_string();
    assert!(path.ends_with(".tar.zst"), "the zstd archive: {path}");
    assert_eq!(v["metadata"]["packing"]["streams"], 0, "{v}");
    let why = v["metadata"]["packing"]["not_streamed"]
        .as_str()
        .expect("why recorded");
    assert!(why.contains("terminal"), "{why}");
    let last = *numbers(&bundle.join("rootfs/tmp/count"))
        .last()
        .expect("counted");

    let mut restore = env.cmd();
    restore.args([
        "restore",
        "runc",
        "--path",
        &path,
        "--bundle",
        fresh.to_str().expect("utf8"),
        "--id",
        "copy",
        "--root",
        root.to_str().expect("utf8"),
        "--no-server",
    ]);
    let mut restoring = on_a_terminal(&restore);
    let count = fresh.join("rootfs/tmp/count");
    assert_eq!(next_after(&count, last), last + 1, "the container went on");
    rt.wait_status("copy", "running");
    let _ = rt.out(&["kill", "copy", "KILL"]);
    let _ = restoring.wait();
}
