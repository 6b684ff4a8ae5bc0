//! Streamed checkpoints (`--streams N`): CRIU streams its images into N shards compressed
//! in parallel; the counter keeps counting after restore, no uncompressed image is
//! written, and a damaged shard is refused before CRIU starts.

use std::path::{Path, PathBuf};

use cedana_e2e::*;

fn streamed_dump(env: &Env, w: &Workload, extra: &[&str]) -> PathBuf {
    streamed_dump_with(env, &[], w, extra)
}

/// [`streamed_dump`] with `global` flags before the command (where `--set` must go).
fn streamed_dump_with(env: &Env, global: &[&str], w: &Workload, extra: &[&str]) -> PathBuf {
    let pid = w.pid.to_string();
    let mut args = global.to_vec();
    args.extend([
        "--json",
        "dump",
        "process",
        &pid,
        "--no-server",
        "--streams",
        "4",
    ]);
    args.extend_from_slice(extra);
    let out = env.cedana(&args).ok();
    out.json()["path"].as_str().expect("path").into()
}

#[test]
fn streamed_counter_restores_and_keeps_counting() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    for codec in ["zstd", "lz4"] {
        let log = env.path(&format!("{codec}.log"));
        let mut w = Workload::start(&log, &["counter", "50"]);
        wait_count_above(&log, 3);
        let path = streamed_dump(&env, &w, &["--compression", codec]);
        w.reap();
        let names = dir_names(&path);
        assert!(names.contains(&"streams.json".to_string()), "{names:?}");
        let ext = if codec == "zstd" { "zst" } else { "lz4" };
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("shard-") && n.ends_with(ext))
                .count(),
            4
        );
        assert!(
            !names.iter().any(|n| n.ends_with(".img")),
            "uncompressed image written: {names:?}"
        );
        // Shard digests are taken while writing: they must match the bytes on disk.
        let md: serde_json::Value = serde_json::from_slice(
            &std::fs::read(path.join("metadata.json")).expect("metadata.json"),
        )
        .expect("json");
        for n in names.iter().filter(|n| n.starts_with("shard-")) {
            let sum = std::process::Command::new("sha256sum")
                .arg(path.join(n))
                .output()
                .expect("sha256sum");
            let sum = String::from_utf8_lossy(&sum.stdout);
            assert_eq!(
                md["files"][n]["sha256"].as_str(),
                sum.split_whitespace().next(),
                "{n}: recorded digest = sha256 of the file"
            );
        }
        let at_dump = last_count(&log).expect("count");
        let p = path.to_string_lossy().to_string();
        let out = env
            .cedana(&["--json", "restore", "process", "--path", &p, "--no-server"])
            .ok();
        let pid = out.json()["pid"].as_i64().expect("pid") as i32;
        let _guard = KillOnDrop(pid);
        assert_eq!(
            next_after(&log, at_dump),
            at_dump + 1,
            "{codec}: carried on from the checkpoint"
        );
        kill(pid);
    }
}

/// A damaged shard is refused naming it, and CRIU never runs: the restore goes through
/// a recording CRIU wrapper, which the dump (through the same wrapper) shows is wired in.
fn damaged_shard_is_refused(damage: impl Fn(&Path)) {
    let env = Env::new();
    let log = env.path("c.log");
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 2);
    let criu = CriuRecorder::new(&env.path("criu"));
    let setting = criu.setting();
    let path = streamed_dump_with(&env, &["--set", &setting], &w, &["--leave-running"]);
    assert!(
        criu.calls().iter().any(|c| c.contains("--stream")),
        "the streamed dump did not run CRIU through the wrapper: {:?}",
        criu.calls()
    );
    criu.clear();
    drop(w);
    damage(&path.join("shard-0.zst"));
    let p = path.to_string_lossy().to_string();
    let out = env.cedana(&[
        "--set",
        &setting,
        "restore",
        "process",
        "--path",
        &p,
        "--no-server",
    ]);
    assert_ne!(out.code, 0, "a damaged shard must not restore");
    assert!(
        out.stderr.contains("shard-0.zst"),
        "the error names the shard: {}",
        out.stderr
    );
    assert!(
        criu.calls().is_empty(),
        "refused only after CRIU ran: {:?}\n{}",
        criu.calls(),
        out.stderr
    );
}

#[test]
fn truncated_shard_is_refused_before_criu_runs() {
    if !e2e_enabled() {
        return;
    }
    damaged_shard_is_refused(|shard| {
        let len = std::fs::metadata(shard).expect("stat").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(shard)
            .expect("open");
        f.set_len(len / 2).expect("truncate");
    });
}

#[test]
fn corrupted_shard_is_refused_before_criu_runs() {
    if !e2e_enabled() {
        return;
    }
    damaged_shard_is_refused(|shard| {
        let mut bytes = std::fs::read(shard).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(shard, bytes).expect("write");
    });
}

/// "No uncompressed copy is written when streaming", measured where it would break: a
/// 256 MiB, mostly-zero workload streams onto a 32 MiB tmpfs, with the temp dir on an
/// 8 MiB one, and the dump's peak memory stays bounded; the restore carries on.
#[test]
fn streaming_fits_a_small_disk_with_bounded_memory() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let disk = Tmpfs::mount(&env.path("disk"), 32);
    let tmp = Tmpfs::mount(&env.path("tmp"), 8);
    let log = env.path("zeros.log");
    let mut w = Workload::start(&log, &["zeros", "256"]);
    wait_count_above(&log, 1);
    let pid = w.pid.to_string();
    let dir = disk.path.to_string_lossy().to_string();
    // GNU time reports the dump's peak resident memory (KiB) on its last stderr line.
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin("cedana"))
        .args(["--config-dir"])
        .arg(env.path("etc"))
        .args([
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--streams",
            "2",
        ])
        .args(["--dir", &dir])
        .env("TMPDIR", &tmp.path)
        .output()
        .expect("run the dump under /usr/bin/time");
    let run = Run::from_output(out);
    assert_eq!(run.code, 0, "the streamed dump fits: {}", run.stderr);
    let peak_kib: u64 = run
        .stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {:?}", run.stderr));
    assert!(
        peak_kib < 128 * 1024,
        "the streamed dump of 256 MiB used {peak_kib} KiB of memory"
    );
    let path = PathBuf::from(run.json()["path"].as_str().expect("path"));
    assert!(path.starts_with(&disk.path), "{}", path.display());
    w.reap();
    let last = last_count(&log).expect("counted");
    let _restored = KillOnDrop(restore_process_and_check(&env, &path, &log, last));
}

/// A streamed dump whose shards do not fit says so (not CRIU's "Broken pipe"), keeps
/// nothing, and the workload runs on; both with the tree stopped (committed at
/// post-dump) and with --leave-running.
fn full_disk_is_named(extra: &[&str]) {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    // 16 MiB of the workload's memory is random bytes: its shards cannot fit in 8 MiB.
    let small = Tmpfs::mount(&env.path("small"), 8);
    let log = env.path("memory.log");
    let w = Workload::start(&log, &["memory", "64"]);
    let _guard = KillOnDrop(w.pid);
    wait_count_above(&log, 1);
    let (pid, dir) = (w.pid.to_string(), small.path.to_string_lossy().to_string());
    let mut args = vec![
        "dump",
        "process",
        &pid,
        "--no-server",
        "--streams",
        "2",
        "--dir",
        &dir,
    ];
    args.extend_from_slice(extra);
    let failed = env.cedana(&args);
    assert_ne!(failed.code, 0, "the shards cannot fit: {}", failed.stdout);
    let said = failed.stderr.to_lowercase();
    assert!(
        failed.stderr.contains(&format!("no space left on {dir}")),
        "the error names the full directory: {}",
        failed.stderr
    );
    assert!(
        said.contains("--dir") && !said.contains("broken pipe"),
        "and says what to do, not CRIU's consequence: {}",
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
}

#[test]
fn streamed_dump_onto_a_full_disk_says_so_and_the_process_runs_on() {
    full_disk_is_named(&[]);
}

#[test]
fn streamed_leave_running_dump_onto_a_full_disk_says_so() {
    full_disk_is_named(&["--leave-running"]);
}
