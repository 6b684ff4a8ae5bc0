//! A streamed dump to S3 uploads while CRIU writes: a 1 GiB workload dumped to a real
//! moto server from a daemon whose temp dir is a small tmpfs (a full local copy of the
//! checkpoint could not fit there, and its usage is polled through the dump), with the
//! daemon's extra resident memory under 128 MiB; another daemon restores it from the
//! bucket and it counts on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedana_e2e::s3::Moto;
use cedana_e2e::*;

const BUCKET: &str = "big";
/// The workload's memory: the 1 GiB.
const WORKLOAD_MIB: u64 = 1024;
/// The dumping daemon's temp dir: far below the checkpoint's size (a quarter of the
/// workload is random bytes, so its shards hold over 256 MiB).
const TMPFS_MIB: u64 = 64;
/// Most bytes the temp dir and the checkpoint dir may hold at once during the dump:
/// CRIU's log, the stream index, metadata; never a shard.
const LOCAL_BOUND: u64 = 16 << 20;
/// Most extra resident memory of the daemon doing the upload.
const RSS_BOUND: u64 = 128 << 20;

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb << 10)
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// Bytes of the files under `dir` (what `du` would count, as apparent sizes).
fn usage(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => usage(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[test]
fn a_1gib_dump_streams_into_the_bucket_with_no_local_copy_and_restores() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let a = Env::new();
    let tmp = Tmpfs::mount(&a.path("tmp"), TMPFS_MIB);
    let mut vars = moto.aws_env();
    vars.push(("TMPDIR".into(), tmp.path.display().to_string()));
    let mut a = a.with_vars(vars);
    a.start_daemon();
    let mut b = Env::new().with_vars(moto.aws_env());
    b.start_daemon();

    let workload = bin("cedana-workload").to_string_lossy().to_string();
    let mib = WORKLOAD_MIB.to_string();
    a.cedana(&[
        "run", "process", "--jid", "big", "--", &workload, "memory", &mib,
    ])
    .ok();
    let log = a.job("big").expect("job")["log_path"]
        .as_str()
        .expect("log_path")
        .to_string();
    let log = Path::new(&log).to_path_buf();
    wait_for(
        "the workload to fill its memory",
        Duration::from_secs(90),
        || last_count(&log).map(|_| ()),
    );

    let daemon = a.daemon_pid().expect("daemon pid");
    let before = status_bytes(daemon, "VmRSS");
    // Poll what the dumping side holds on local disk while the dump runs.
    let (stop, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let watched = [tmp.path.clone(), a.checkpoints()];
    let poller = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now: u64 = watched.iter().map(|d| usage(d)).sum();
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let url = format!("s3://{BUCKET}/moves");
    let t = Instant::now();
    let dumped = a.cedana(&[
        "--json", "dump", "job", "big", "--dir", &url, "--name", "ck",
    ]);
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    poller.join().expect("poller");
    let dumped = dumped.ok().json();
    let hwm = status_bytes(daemon, "VmHWM");
    let extra = hwm.saturating_sub(before);
    let peak = peak.load(Ordering::SeqCst);
    let shards: Vec<(String, u64)> = moto
        .keys(BUCKET)
        .into_iter()
        .filter(|(k, _)| k.contains("/shard-"))
        .collect();
    let stored: u64 = shards.iter().map(|(_, s)| s).sum();
    eprintln!(
        "dump of {WORKLOAD_MIB} MiB to s3: {} ms, {} shards, {} MiB stored, local peak {} KiB, \
         daemon RSS {} MiB -> HWM {} MiB (+{} MiB)",
        took.as_millis(),
        shards.len(),
        stored >> 20,
        peak >> 10,
        before >> 20,
        hwm >> 20,
        extra >> 20
    );
    let path = dumped["path"].as_str().expect("path").to_string();
    assert!(path.starts_with(&url), "{dumped}");
    assert!(
        !shards.is_empty(),
        "the dump streamed shards into the bucket"
    );
    assert!(
        stored > TMPFS_MIB << 20,
        "the checkpoint ({stored} bytes) is bigger than the temp dir it never filled"
    );
    assert!(
        peak < LOCAL_BOUND,
        "local disk held {peak} bytes during the dump (bound {LOCAL_BOUND})"
    );
    assert!(
        extra < RSS_BOUND,
        "the daemon's resident memory grew by {extra} bytes (bound {RSS_BOUND})"
    );
    assert!(
        moto.open_uploads(BUCKET).is_empty(),
        "no open multipart upload"
    );
    assert!(dir_names(&a.checkpoints()).is_empty());
    let at_dump = last_count(&log).expect("count");
    a.cedana(&["job", "delete", "big"]).ok();

    // Another daemon, sharing only the bucket, restores it: it counts on.
    let t = Instant::now();
    b.cedana(&["restore", "job", "big", "--path", &path]).ok();
    eprintln!("restore from s3: {} ms", t.elapsed().as_millis());
    assert_eq!(next_after(&log, at_dump), at_dump + 1);
    assert_eq!(b.job("big").expect("B lists it")["state"], "running");
    b.cedana(&["job", "kill", "big", "--signal", "KILL"]).ok();
    drop(a);
    drop(tmp);
}
