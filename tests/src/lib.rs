//! Support for the end-to-end tests: find the built binaries, start workloads the way a
//! user would, run `cedana`, and start a private daemon in a temp dir that is torn down
//! (with everything it started) when the test ends.
//!
//! The tests need root and CRIU 4.1.1 (`make deps`). Without root they are skipped with
//! a `SKIPPED:` line (see [`skip`]); with `CEDANA_TEST_E2E=1` (CI) a missing precondition is
//! a failure; with root, a missing CRIU is always a failure, not a skip.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod containerd;
pub mod cri;
pub mod gpu;
pub mod guest;
pub mod s3;

/// Set to `1` (CI does) to make every missing precondition a test failure.
pub const REQUIRE_ENV: &str = "CEDANA_TEST_E2E";
/// When set, every skip also appends its `SKIPPED:` line to this file, so a run can
/// count what it did not test.
pub const SKIP_LOG_ENV: &str = "CEDANA_TEST_SKIP_LOG";

/// Whether `CEDANA_TEST_E2E` asks for every end-to-end test to really run.
pub fn e2e_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A test cannot run here because `why`; `fix` says how to get what is missing.
/// Under `CEDANA_TEST_E2E=1` this panics (a skipped test would otherwise count as passed);
/// otherwise it prints `SKIPPED: <test>: <why>` to stderr, appends that line to
/// `$CEDANA_TEST_SKIP_LOG` if set, and returns false for the caller's early return.
#[track_caller]
pub fn skip(why: &str, fix: &str) -> bool {
    // libtest runs each test on a thread named after it.
    let here = std::panic::Location::caller();
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(n) if n != "main" => n.to_string(),
        _ => format!("{}:{}", here.file(), here.line()),
    };
    if e2e_required() {
        panic!("{test}: {why}; {REQUIRE_ENV}=1 requires every end-to-end test to run: {fix}");
    }
    let line = format!("SKIPPED: {test}: {why} ({fix}; set {REQUIRE_ENV}=1 to fail instead)");
    use std::io::Write;
    // Straight to fd 2, not eprintln!: libtest captures the print macros of a passing
    // test, and a skip must show in every run.
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            panic!(
                "cannot append to {SKIP_LOG_ENV}={}: {e}",
                Path::new(&log).display()
            );
        }
    }
    false
}

/// Returns true when the end-to-end tests can run here; otherwise [`skip`]s (a failure
/// under `CEDANA_TEST_E2E=1`).
#[track_caller]
pub fn e2e_enabled() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip(
            "needs root (CRIU)",
            "run the tests as root after `make deps`",
        );
    }
    true
}

/// Directory holding the workspace's built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Cargo settings for the tests that run the Makefile's release build (`make install`,
/// `make bench`): the same targets and flags at a lower optimisation level, without
/// debug info, so CI builds them in about the time of a debug build. Those tests check
/// what the targets do, never how fast the binaries run.
pub const QUICK_RELEASE: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
];

/// Path of a workspace binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// `name` on PATH (then /usr/sbin, /sbin, where root's tools live), if installed.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A new private dir on `/dev/shm` (a tmpfs): a test's own `checkpoint.staging_dir`.
pub fn memory_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("cedana-e2e-staging-")
        .tempdir_in("/dev/shm")
        .expect("a dir in /dev/shm")
}

/// A busybox-static rootfs at `rootfs`: bin/ with every applet as a symlink, proc, dev,
/// sys and tmp, plus the `extra` directories.
pub fn busybox_rootfs(rootfs: &Path, extra: &[&str]) {
    for d in ["bin", "proc", "dev", "sys", "tmp"].iter().chain(extra) {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
    }
    let busybox = which("busybox").unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Last complete number printed by a counter workload into `log`.
pub fn last_count(log: &Path) -> Option<u64> {
    let text = fs::read_to_string(log).ok()?;
    let complete = text.strip_suffix('\n')?;
    complete.lines().last()?.trim().parse().ok()
}

/// Every number in the log, in order.
pub fn counts(log: &Path) -> Vec<u64> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The number written right after the last occurrence of `value` in `log` (one number
/// a line), once there is one: a counter that carried on from `value` writes
/// `value + 1`, one restarted from zero writes 1.
pub fn next_after(log: &Path, value: u64) -> u64 {
    wait_for(
        &format!("a number after {value} in {}", log.display()),
        Duration::from_secs(15),
        || {
            let c = counts(log);
            let i = c.iter().rposition(|v| *v == value)?;
            c.get(i + 1).copied()
        },
    )
}

/// A CRIU stand-in written into a test's temp dir: a script that appends its arguments
/// to a record file and execs the real CRIU. Pointing `criu.binary_path` at it tells a
/// test whether CRIU ran at all (version checks included), not just what errors said.
pub struct CriuRecorder {
    /// The wrapper script.
    pub wrapper: PathBuf,
    /// One line per invocation: its arguments.
    pub record: PathBuf,
}

impl CriuRecorder {
    /// Writes the wrapper into `dir` (created if missing).
    pub fn new(dir: &Path) -> CriuRecorder {
        use std::os::unix::fs::PermissionsExt;
        let real = which("criu").expect("criu not installed: run `make deps`");
        fs::create_dir_all(dir).expect("recorder dir");
        let wrapper = dir.join("criu-recorder");
        let record = dir.join("criu-calls");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            record.display(),
            real.display()
        );
        fs::write(&wrapper, script).expect("write criu wrapper");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
        CriuRecorder { wrapper, record }
    }

    /// `criu.binary_path=<wrapper>`, for `--set`.
    pub fn setting(&self) -> String {
        format!("criu.binary_path={}", self.wrapper.display())
    }

    /// The recorded invocations, oldest first (none if CRIU never ran).
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Forgets what was recorded so far.
    pub fn clear(&self) {
        let _ = fs::remove_file(&self.record);
    }
}

/// Waits until the counter in `log` passes `above`, returning the new value.
pub fn wait_count_above(log: &Path, above: u64) -> u64 {
    wait_for(
        &format!("counter in {} to pass {above}", log.display()),
        Duration::from_secs(10),
        || last_count(log).filter(|v| *v > above),
    )
}

/// A process started by a test, killed and reaped on drop.
pub struct Workload {
    /// PID of the workload.
    pub pid: i32,
    /// File receiving its stdout and stderr.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Workload {
    /// Starts `cedana-workload ARGS` in its own session, output to `log`.
    pub fn start(log: &Path, args: &[&str]) -> Workload {
        Self::start_with_env(log, args, &[])
    }

    /// [`Workload::start`] with more environment variables.
    pub fn start_with_env(log: &Path, args: &[&str], vars: &[(&str, &Path)]) -> Workload {
        // Append mode, like a job's log: a restored copy writes after what is there.
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("create workload log");
        let err = out.try_clone().expect("dup log");
        let mut cmd = Command::new(bin("cedana-workload"));
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.envs(vars.iter().copied());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start workload");
        Workload {
            pid: child.id() as i32,
            log: log.to_path_buf(),
            child: Some(child),
        }
    }

    /// Reaps the workload after CRIU killed it (dump without --leave-running).
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Whether the process is still alive (not a zombie).
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a PID is alive and not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Kills a process we are not the parent of (e.g. a restored one).
pub fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
}

/// Kills a PID on drop: for restored processes, which are not our children.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill(self.0);
    }
}

/// The outcome of a `cedana` invocation.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The outcome of a finished command.
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "cedana failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed with a message containing `needle` (case-insensitive).
    pub fn fails_with(self, needle: &str) -> Run {
        assert_ne!(
            self.code, 0,
            "expected failure, got success:\n{}",
            self.stdout
        );
        let all = format!("{}{}", self.stdout, self.stderr).to_lowercase();
        assert!(
            all.contains(&needle.to_lowercase()),
            "error should mention {needle:?}; got:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Parses stdout as JSON, if it is JSON.
    pub fn json_opt(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// A private cedana setup in a temp dir: config overrides for socket, database, checkpoint
/// and job directories, and (optionally) a running daemon.
pub struct Env {
    /// The temp dir holding everything.
    pub dir: TempDir,
    daemon: Option<Child>,
    /// Where `cedana` comes from: the workspace build unless [`Env::with_binaries`].
    binaries: Option<PathBuf>,
    /// Environment of every `cedana` run here, the daemon's included.
    vars: Vec<(String, String)>,
    /// Config overrides (`KEY=VALUE`) of every `cedana` run here, the daemon's included.
    settings: Vec<String>,
}

impl Env {
    /// A fresh setup with no daemon.
    pub fn new() -> Env {
        // Under /var/tmp rather than /tmp-as-tmpfs only to keep CRIU images off RAM.
        let dir = tempfile::Builder::new()
            .prefix("cedana-e2e-")
            .tempdir()
            .expect("temp dir");
        Env {
            dir,
            daemon: None,
            binaries: None,
            vars: Vec::new(),
            settings: Vec::new(),
        }
    }

    /// A fresh setup whose `cedana` is the one in `dir` (an installed copy, say).
    pub fn with_binaries(dir: &Path) -> Env {
        let mut env = Env::new();
        env.binaries = Some(dir.to_path_buf());
        env
    }

    /// Sets `vars` in the environment of every `cedana` run here (the daemon's too).
    pub fn with_vars(mut self, vars: Vec<(String, String)>) -> Env {
        self.vars.extend(vars);
        self
    }

    /// Adds `settings` (`KEY=VALUE` config overrides) to every `cedana` run here (the
    /// daemon's too).
    pub fn with_settings(mut self, settings: Vec<String>) -> Env {
        self.settings.extend(settings);
        self
    }

    /// Path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Daemon socket path.
    pub fn socket(&self) -> PathBuf {
        self.path("cedana.sock")
    }

    /// Checkpoint directory.
    pub fn checkpoints(&self) -> PathBuf {
        self.path("checkpoints")
    }

    fn overrides(&self) -> Vec<String> {
        [
            ("address", self.socket()),
            ("db_path", self.path("cedana.db")),
            ("checkpoint.dir", self.checkpoints()),
            ("jobs.log_dir", self.path("jobs")),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", v.display()))
        .chain(self.settings.iter().cloned())
        .flat_map(|kv| ["--set".to_string(), kv])
        .collect()
    }

    /// A `cedana` command with this setup's config.
    pub fn cmd(&self) -> Command {
        let cedana = match &self.binaries {
            Some(dir) => dir.join("cedana"),
            None => bin("cedana"),
        };
        let mut c = Command::new(cedana);
        c.arg("--config-dir")
            .arg(self.path("etc"))
            .args(self.overrides());
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null());
        c
    }

    /// Runs `cedana ARGS` and collects its output.
    pub fn cedana(&self, args: &[&str]) -> Run {
        Run::from_output(self.cmd().args(args).output().expect("run cedana"))
    }

    /// Job `jid` as `cedana --json ps` lists it, if it is listed.
    pub fn job(&self, jid: &str) -> Option<serde_json::Value> {
        let v = self.cedana(&["--json", "ps"]).ok().json();
        v.as_array()
            .and_then(|a| a.iter().find(|j| j["jid"] == jid).cloned())
    }

    /// Job `jid` as `cedana --json ps` lists it; panics with the listing when it is not.
    pub fn listed_job(&self, jid: &str) -> serde_json::Value {
        self.job(jid).unwrap_or_else(|| {
            let all = self.cedana(&["--json", "ps"]).ok().stdout;
            panic!("job {jid} not listed: {all}")
        })
    }

    /// Runs the test workload (`cedana-workload ARGS`) as job `jid` through the daemon;
    /// returns the job's log once the workload has printed its first line.
    pub fn run_workload_job(&self, jid: &str, args: &[&str]) -> PathBuf {
        let workload = bin("cedana-workload").to_string_lossy().to_string();
        let mut cmd = vec!["run", "process", "--jid", jid, "--", &workload];
        cmd.extend_from_slice(args);
        self.cedana(&cmd).ok();
        let log = PathBuf::from(self.listed_job(jid)["log_path"].as_str().expect("log_path"));
        wait_for("the job's first output", Duration::from_secs(60), || {
            last_count(&log).map(|_| ())
        });
        log
    }

    /// A counter (`cedana-workload counter 50`) as job `jid`; returns its log once it has
    /// counted past 3.
    pub fn run_counter_job(&self, jid: &str) -> PathBuf {
        let log = self.run_workload_job(jid, &["counter", "50"]);
        wait_count_above(&log, 3);
        log
    }

    /// Starts the daemon and waits until it answers.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already started");
        let log = File::create(self.path("daemon.log")).expect("daemon log");
        let err = log.try_clone().expect("dup");
        let child = self
            .cmd()
            .args(["daemon", "start"])
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start daemon");
        self.daemon = Some(child);
        let sock = self.socket();
        wait_for("daemon to answer", Duration::from_secs(20), || {
            (sock.exists() && self.cedana(&["ps"]).code == 0).then_some(())
        });
    }

    /// The running daemon's PID.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|c| c.id() as i32)
    }

    /// Stops the daemon (SIGTERM, then SIGKILL) and waits for it.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the daemon with SIGKILL (a crash) and reaps it.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's log, for failure messages.
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill every job the daemon started so no test leaves processes behind.
        if self.daemon.is_some() {
            if let Ok(out) = self.cmd().args(["--json", "ps"]).output() {
                if let Ok(serde_json::Value::Array(jobs)) = serde_json::from_slice(&out.stdout) {
                    for j in jobs {
                        if let Some(pid) = j.get("pid").and_then(|p| p.as_i64()) {
                            if j.get("state").and_then(|s| s.as_str()) != Some("halted") {
                                kill(pid as i32);
                            }
                        }
                    }
                }
            }
        }
        self.stop_daemon();
    }
}

/// A tmpfs of a given size mounted at a directory, for full-disk tests; unmounted (and
/// everything in it gone) on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path` (created if needed).
    pub fn mount(path: &Path, mib: u64) -> Tmpfs {
        fs::create_dir_all(path).expect("create tmpfs mount point");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m,mode=0700").as_str()),
        )
        .unwrap_or_else(|e| panic!("mount a {mib} MiB tmpfs at {}: {e}", path.display()));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Restores the checkpoint at `path` in-process (`--no-server`); the counter in `log`
/// must go on at `last + 1`. Returns the restored PID (the caller owns the process).
pub fn restore_process_and_check(env: &Env, path: &Path, log: &Path, last: u64) -> i32 {
    let p = path.to_string_lossy().to_string();
    let out = env
        .cedana(&["--json", "restore", "process", "--path", &p, "--no-server"])
        .ok();
    let pid = out.json()["pid"].as_i64().expect("pid") as i32;
    let guard = KillOnDrop(pid);
    assert_eq!(
        next_after(log, last),
        last + 1,
        "the restored counter restarted"
    );
    std::mem::forget(guard);
    pid
}

/// Names in `dir` (hidden ones included), sorted; empty if it does not exist.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A TCP echo server on 127.0.0.1 that counts the lines it echoes and stays connected
/// while its one client is checkpointed; returns its address and the count.
pub fn echo_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = std::sync::Arc::new(AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut writer = stream.try_clone().expect("clone");
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            if writeln!(writer, "echo {line}").is_err() {
                return;
            }
        }
    });
    (addr, seen)
}
