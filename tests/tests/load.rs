//! Load: 20 jobs dumped and restored concurrently through one daemon, twice. Every
//! operation succeeds, no checkpoint is mixed up (each restored job has its own PID and
//! its counter carries on at last+1 in its own log), and the daemon keeps answering
//! `ps` quickly throughout, measured by a client thread while the load runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedana_e2e::*;

const JOBS: usize = 20;
const ROUNDS: usize = 2;
/// The slowest `ps` answer (connect + ListJobs) allowed while the load runs, in ms: the
/// issue's goal. History: 861 ms with the streamer inside the daemon (its threads and
/// buffers queued the handlers on the process's one memory map); 50-155 ms with the
/// streamer in its own process, because each image file's reader zero-filled a 4 MiB
/// buffer (with 20 dumps, ~80 reader threads runnable at once); 14-18 ms once readers
/// stopped doing that (median 4 ms).
const PS_BOUND_MS: u64 = 100;
/// Overrides [`PS_BOUND_MS`] on a host whose cores other work keeps busy (a shared
/// machine with a load far above its core count), where scheduling alone exceeds it.
const PS_BOUND_ENV: &str = "CEDANA_TEST_PS_BOUND_MS";
/// The whole test, jobs started to last check, runs in CI: keep it bounded.
const TEST_BOUND: Duration = Duration::from_secs(120);

/// A job of the load: its id, its PID, its log.
struct Job {
    jid: String,
    pid: i32,
    log: PathBuf,
}

fn jobs_by_jid(env: &Env) -> BTreeMap<String, serde_json::Value> {
    let ps = env.cedana(&["--json", "ps"]).ok().json();
    ps.as_array()
        .expect("ps lists jobs")
        .iter()
        .map(|j| (j["jid"].as_str().expect("jid").to_string(), j.clone()))
        .collect()
}

/// Runs `cedana --json ARGS JID` for every job at once; returns each job's outcome.
fn all_at_once(env: &Env, jobs: &[Job], args: &[&str], deadline: Instant) -> Vec<Run> {
    let children: Vec<Child> = jobs
        .iter()
        .map(|j| {
            let mut cmd = env.cmd();
            // The 20 clients are the test's load generator, like the CRIU work the daemon
            // runs at nice 10: what is measured is the daemon's answer, not how soon 20
            // freshly exec'd debug binaries get a core.
            // SAFETY: setpriority is async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                    Ok(())
                });
            }
            cmd.arg("--json")
                .args(args)
                .arg(&j.jid)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start cedana")
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| Run::from_output(c.wait_with_output().expect("cedana finished")))
        .collect();
    assert!(
        Instant::now() < deadline,
        "`{}` of {JOBS} jobs ran past the test's bound",
        args.join(" ")
    );
    for (j, r) in jobs.iter().zip(&runs) {
        assert_eq!(
            r.code,
            0,
            "`{}` of {} failed: {}\ndaemon log:\n{}",
            args.join(" "),
            j.jid,
            r.stderr,
            env.daemon_log()
        );
    }
    runs
}

/// A process's nice value (field 19 of /proc/PID/stat).
fn nice(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_comm = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    after_comm
        .split_whitespace()
        .nth(16)
        .and_then(|v| v.parse().ok())
        .expect("nice field")
}

/// Asks the daemon for its jobs, as `cedana ps` does (a fresh connection each time),
/// until `stop`; returns how long each answer took.
fn probe_ps(socket: PathBuf, stop: Arc<AtomicBool>) -> Vec<Duration> {
    // This thread measures the daemon, so it must not itself wait for a CPU behind the
    // load it started: above the default priority (root may; Linux's nice is per thread).
    // SAFETY: setpriority on the calling thread (who = 0); no memory involved.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut took = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        rt.block_on(async {
            let mut c = cedana_cli::client::connect(&socket).await.expect("connect");
            c.list_jobs(cedana_cli::proto::Empty {})
                .await
                .expect("ps answers");
        });
        let e = t.elapsed();
        if e > Duration::from_millis(100) {
            // When, to line it up with the daemon's log and the host's load.
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!("slow ps: {e:?}, answered at {:.3}", at.as_secs_f64());
        }
        took.push(e);
        std::thread::sleep(Duration::from_millis(20));
    }
    took
}

#[test]
fn twenty_jobs_dumped_and_restored_at_once_twice() {
    if !e2e_enabled() {
        return;
    }
    let deadline = Instant::now() + TEST_BOUND;
    let mut env = Env::new();
    // A temp dir of its own (CRIU's work dirs, failed-dump logs): other cedana runs on
    // this host prune the shared one.
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).expect("private temp dir");
    std::env::set_var("TMPDIR", &tmp);
    env.start_daemon();
    let workload = bin("cedana-workload");
    let workload = workload.to_str().expect("utf8 path");
    for i in 0..JOBS {
        let jid = format!("load-{i:02}");
        env.cedana(&[
            "run", "process", "--jid", &jid, "--", workload, "counter", "50",
        ])
        .ok();
    }
    let listed = jobs_by_jid(&env);
    let jobs: Vec<Job> = (0..JOBS)
        .map(|i| {
            let jid = format!("load-{i:02}");
            let j = &listed[&jid];
            Job {
                pid: j["pid"].as_i64().expect("pid") as i32,
                log: PathBuf::from(j["log_path"].as_str().expect("log")),
                jid,
            }
        })
        .collect();
    for j in &jobs {
        wait_count_above(&j.log, 1);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (socket, stop) = (env.socket(), Arc::clone(&stop));
        std::thread::spawn(move || probe_ps(socket, stop))
    };
    for round in 1..=ROUNDS {
        let nices: Vec<i64> = jobs.iter().map(|j| nice(j.pid)).collect();
        all_at_once(&env, &jobs, &["dump", "job"], deadline);
        let lasts: Vec<u64> = jobs
            .iter()
            .map(|j| {
                assert!(
                    !pid_alive(j.pid),
                    "round {round}: {} still runs after its dump",
                    j.jid
                );
                last_count(&j.log).expect("counted")
            })
            .collect();
        let restored = all_at_once(&env, &jobs, &["restore", "job"], deadline);
        for (((j, r), last), was) in jobs.iter().zip(&restored).zip(lasts).zip(nices) {
            assert_eq!(
                r.json()["pid"].as_i64(),
                Some(i64::from(j.pid)),
                "round {round}: {} came back with another tree's PID",
                j.jid
            );
            assert_eq!(
                nice(j.pid),
                was,
                "round {round}: {} runs at the daemon's bulk priority, not its own",
                j.jid
            );
            assert_eq!(
                next_after(&j.log, last),
                last + 1,
                "round {round}: {} did not carry on from its own checkpoint",
                j.jid
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut took = prober.join().expect("prober");
    took.sort();
    let (n, max) = (took.len(), took.last().copied().unwrap_or_default());
    let median = took.get(n / 2).copied().unwrap_or_default();
    eprintln!("ps under load: {n} answers, median {median:?}, max {max:?}");
    assert!(n >= 10, "ps was asked only {n} times");
    let bound = Duration::from_millis(
        std::env::var(PS_BOUND_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PS_BOUND_MS),
    );
    assert!(
        max < bound,
        "the daemon took {max:?} to answer ps under load (bound {bound:?}, from \
         {PS_BOUND_ENV} or {PS_BOUND_MS} ms; median {median:?})"
    );
    assert!(
        Instant::now() < deadline,
        "the load test ran past {TEST_BOUND:?}"
    );
}
