//! `make bench` (README "Development") runs every benchmark end to end, at the smallest
//! sizes so CI can afford it: each script finishes, prints its ratios against the stock
//! tools measured in the same run, and saves its figures as JSON. The figures themselves
//! are for people to read on a quiet machine, not for this test to judge.

use std::path::Path;
use std::process::{Command, Stdio};

use cedana_e2e::e2e_enabled;

#[test]
fn make_bench_runs_every_benchmark_at_the_smallest_sizes() {
    if !e2e_enabled() {
        return;
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = tempfile::Builder::new()
        .prefix("cedana-bench-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    let results = scratch.path().join("results");
    std::fs::create_dir_all(&results).expect("results dir");
    let out = Command::new("make")
        .arg("bench")
        // Shares the release build with the `make install` test.
        .arg(format!(
            "CARGO_TARGET_DIR={}",
            ws.join("target/make-install").display()
        ))
        .current_dir(&ws)
        .envs(cedana_e2e::QUICK_RELEASE)
        .env("BENCH_SIZES", "16")
        .env("BENCH_RUNC_SIZES", "16")
        .env("BENCH_LAZY_SIZES", "16")
        .env("BENCH_RUNS", "1")
        .env("BENCH_STREAMS", "2")
        .env("BENCH_SHIM_RUNS", "2")
        .env("BENCH_SHIM_CONTAINERS", "1")
        .env("BENCH_SHIM_CKPT_MIB", "16")
        .env("BENCH_SHIM_CKPT_RUNS", "1")
        .env("BENCH_PASSTHROUGH_RUNS", "10")
        // Minutes under emulation even at its smallest; the kata e2e tests cover that path.
        .env("BENCH_SKIP_KATA", "1")
        .env("BENCH_DIR", scratch.path().join("work"))
        .env("BENCH_RESULTS_DIR", &results)
        .stdin(Stdio::null())
        .output()
        .expect("run make bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "make bench failed:\n{}\n{}",
        &stdout[stdout.len().saturating_sub(3000)..],
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    assert!(
        stdout.contains("ratios: against"),
        "the checkpoint benchmarks print their ratios:\n{stdout}"
    );
    let mut saved: Vec<String> = std::fs::read_dir(&results)
        .expect("results")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    for prefix in [
        "checkpoint-",
        "runc-checkpoint-",
        "runc-passthrough-",
        "lazy-restore-",
    ] {
        let name = saved
            .iter()
            .find(|n| n.starts_with(prefix) && n.ends_with(".json"))
            .unwrap_or_else(|| panic!("no {prefix}*.json among {saved:?}"));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(results.join(name)).expect("read"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let filled = v
            .as_object()
            .is_some_and(|o| o.values().any(|x| !x.is_null()));
        assert!(filled, "{name} holds figures: {v}");
    }
    // The S3 benchmark's JSON carries ours/baseline ratios for dump and restore, every
    // variant (zstd archive and streamed) of the size it ran.
    let s3 = saved
        .iter()
        .find(|n| n.starts_with("s3-") && n.ends_with(".json"))
        .unwrap_or_else(|| panic!("no s3-*.json among {saved:?}"));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join(s3)).expect("read"))
            .unwrap_or_else(|e| panic!("{s3}: {e}"));
    for key in [
        "dump/ours/16",
        "dump/streams-2/16",
        "restore/ours/16",
        "restore/streams-2/16",
    ] {
        let r = v["ratios"][key].as_f64().unwrap_or_default();
        assert!(r > 0.0, "{s3} has the ratio {key}: {v}");
    }
}
