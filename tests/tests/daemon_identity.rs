//! The daemon acts with its caller's identity: a `socket_group` member reaches the
//! daemon (so its requests meet the daemon's own checks, not the socket's mode), runs
//! jobs as itself, may not write where it could not, may not touch root's processes or
//! jobs, and dumps and restores its own jobs; root keeps full power.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cedana_e2e::*;
use serde_json::Value;

/// A system user with a group of its own, made for one test and removed after it.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> Option<TestUser> {
        let name = format!("cdn{:x}{:x}", std::process::id(), rand_suffix());
        let made = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .status()
            .ok()?;
        if !made.success() {
            return None;
        }
        let user = nix::unistd::User::from_name(&name).ok()??;
        Some(TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Declared before the Env in each test, so dropped after it: the daemon and the
        // user's jobs are gone by now.
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() & 0xfffff)
        .unwrap_or(0)
}

/// Removes a path when the test ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A daemon whose `socket_group` is the test user's group, with its temp dir reachable
/// by that user (only the socket's mode and the daemon guard the daemon).
fn setup() -> Option<(TestUser, Env)> {
    if !e2e_enabled() {
        return None;
    }
    if which("useradd").is_none() {
        skip("needs useradd", "install the passwd package");
        return None;
    }
    let Some(user) = TestUser::create() else {
        skip(
            "cannot create a test user",
            "run as root with useradd working",
        );
        return None;
    };
    let mut env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let etc = env.path("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(
        etc.join("config.json"),
        format!("{{\"socket_group\": \"{}\"}}", user.name),
    )
    .expect("config");
    std::fs::set_permissions(
        etc.join("config.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod config");
    env.start_daemon();
    let mode = std::fs::metadata(env.socket()).expect("socket").mode() & 0o777;
    assert_eq!(mode, 0o660, "a socket_group socket is 0660");
    Some((user, env))
}

/// `cedana ARGS` as the test user (its uid and its own group only).
fn as_member(env: &Env, user: &TestUser, args: &[&str]) -> Run {
    let out = env
        .cmd()
        .args(args)
        .current_dir(env.dir.path())
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .expect("run cedana as the test user");
    Run::from_output(out)
}

/// The member's refusals must come from the daemon (naming the uid), not from the OS
/// refusing the socket.
fn daemon_refused(run: Run, user: &TestUser, what: &str) -> Run {
    let run = run.fails_with(&format!("uid {} may not {what}", user.uid));
    assert!(
        !run.stderr.contains("os error 13") || run.stderr.contains("may not"),
        "{}",
        run.stderr
    );
    run
}

fn jobs(run: Run) -> Vec<Value> {
    run.ok().json().as_array().cloned().unwrap_or_default()
}

fn job_of(list: &[Value], jid: &str) -> Option<Value> {
    list.iter().find(|j| j["jid"] == jid).cloned()
}

/// Real, effective, saved and fs uid of a process.
fn uids(pid: i64) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(|n| n.parse().expect("uid"))
        .collect()
}

fn run_member_counter(env: &Env, user: &TestUser, jid: &str) -> (i64, PathBuf) {
    let workload = bin("cedana-workload").display().to_string();
    as_member(
        env,
        user,
        &[
            "run", "process", "--jid", jid, "--", &workload, "counter", "50",
        ],
    )
    .ok();
    let job = job_of(&jobs(as_member(env, user, &["--json", "ps"])), jid).expect("own job listed");
    let log = PathBuf::from(job["log_path"].as_str().expect("log_path"));
    wait_count_above(&log, 3);
    (job["pid"].as_i64().expect("pid"), log)
}

/// Whether CAP_SYS_RESOURCE is in our effective set.
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << CAP_SYS_RESOURCE) != 0
}

/// CRIU reads a process's rlimits with prlimit(2), which for another uid's process
/// needs CAP_SYS_RESOURCE; some sandboxes drop it. Skips (fails under CEDANA_TEST_E2E=1)
/// without it.
fn can_dump_other_uids() -> bool {
    if has_cap_sys_resource() {
        return true;
    }
    skip(
        "CRIU cannot dump another uid's process here: CAP_SYS_RESOURCE is not in our effective set",
        "run the tests as root with the full capability set",
    )
}

fn wait_state(env: &Env, jid: &str, want: &str) {
    wait_for(
        &format!("job {jid} to be {want}"),
        Duration::from_secs(10),
        || {
            let list = jobs(env.cedana(&["--json", "ps"]));
            (job_of(&list, jid)?["state"] == want).then_some(())
        },
    );
}

#[test]
fn member_job_runs_as_the_member_not_root() {
    let Some((user, env)) = setup() else { return };
    let (pid, log) = run_member_counter(&env, &user, "mine");
    assert_eq!(
        uids(pid),
        vec![user.uid; 4],
        "the job must run as the member"
    );
    let gids = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let gid_line = gids.lines().find(|l| l.starts_with("Gid:")).expect("Gid");
    assert!(
        gid_line
            .split_whitespace()
            .skip(1)
            .all(|g| g == user.gid.to_string()),
        "{gid_line}"
    );
    assert_eq!(std::fs::metadata(&log).expect("log").uid(), user.uid);
}

#[test]
fn member_may_not_write_where_it_could_not() {
    let Some((user, env)) = setup() else { return };
    let target = PathBuf::from(format!("/etc/cedana-test-{}", user.name));
    let _cleanup = RemoveOnDrop(target.clone());
    let workload = bin("cedana-workload").display().to_string();
    let out = target.display().to_string();
    daemon_refused(
        as_member(
            &env,
            &user,
            &["run", "process", "--out", &out, "--", &workload, "counter"],
        ),
        &user,
        "write the job log",
    );
    assert!(!target.exists(), "{} must not be created", target.display());

    // Its own job may not be dumped into /etc either.
    run_member_counter(&env, &user, "mine");
    daemon_refused(
        as_member(&env, &user, &["dump", "job", "mine", "--dir", "/etc"]),
        &user,
        "write checkpoints into /etc",
    );
    assert!(!Path::new("/etc/mine").exists());
    // Nor into object storage, reached with the daemon's credentials (root only).
    daemon_refused(
        as_member(&env, &user, &["dump", "job", "mine", "--dir", "s3://b/x"]),
        &user,
        "dump to s3://b/x",
    );
    daemon_refused(
        as_member(
            &env,
            &user,
            &["restore", "job", "moved", "--path", "s3://b/x/ck"],
        ),
        &user,
        "restore s3://b/x/ck",
    );
    let list = jobs(as_member(&env, &user, &["--json", "ps"]));
    assert_eq!(job_of(&list, "mine").expect("job")["state"], "running");
}

#[test]
fn member_may_not_touch_roots_processes_or_jobs() {
    let Some((user, env)) = setup() else { return };
    let root_proc = Workload::start(&env.path("root.log"), &["counter"]);
    wait_count_above(&env.path("root.log"), 2);
    let pid = root_proc.pid.to_string();
    let mine = env.path("mine");
    std::fs::create_dir(&mine).expect("mkdir");
    nix::unistd::chown(&mine, Some(user.uid.into()), Some(user.gid.into())).expect("chown");
    let dir = mine.display().to_string();
    let run = daemon_refused(
        as_member(&env, &user, &["dump", "process", &pid, "--dir", &dir]),
        &user,
        &format!("dump PID {pid}"),
    );
    assert!(run.stderr.contains("it belongs to uid 0"), "{}", run.stderr);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        root_proc.alive(),
        "a refused dump leaves the process running"
    );
    daemon_refused(
        as_member(&env, &user, &["freeze", "process", &pid]),
        &user,
        &format!("freeze PID {pid}"),
    );

    // Root's job: invisible to the member, and not its to act on.
    let workload = bin("cedana-workload").display().to_string();
    env.cedana(&[
        "run", "process", "--jid", "roots", "--", &workload, "counter",
    ])
    .ok();
    let list = jobs(as_member(&env, &user, &["--json", "ps"]));
    assert!(
        job_of(&list, "roots").is_none(),
        "member sees root's job: {list:?}"
    );
    daemon_refused(
        as_member(&env, &user, &["job", "kill", "roots"]),
        &user,
        "kill job roots",
    );
    daemon_refused(
        as_member(&env, &user, &["dump", "job", "roots", "--dir", &dir]),
        &user,
        "dump job roots",
    );
    let list = jobs(env.cedana(&["--json", "ps"]));
    assert_eq!(
        job_of(&list, "roots").expect("root's job")["state"],
        "running"
    );

    // A checkpoint of root's process: the member may not restore it.
    env.cedana(&["dump", "job", "roots", "--leave-running", "--name", "r"])
        .ok();
    let ck = env.cedana(&["--json", "checkpoints"]).ok().json();
    let path = ck[0]["path"].as_str().expect("path").to_string();
    let checkpoints = as_member(&env, &user, &["--json", "checkpoints"])
        .ok()
        .json();
    assert_eq!(
        checkpoints.as_array().map(Vec::len),
        Some(0),
        "{checkpoints}"
    );
    as_member(&env, &user, &["restore", "process", "--path", &path]).fails_with("may not");

    // A kata guest is root's alone (its agent acts as root in the VM): each kata route
    // is refused before the daemon opens any connection to the agent.
    let agent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    agent.set_nonblocking(true).expect("nonblocking");
    let addr = agent.local_addr().expect("addr").to_string();
    for args in [
        vec!["dump", "kata", "--pid", "1", "--tcp", &addr, "--dir", &dir],
        vec!["restore", "kata", "--path", &path, "--tcp", &addr],
        vec!["query", "kata", "--tcp", &addr],
    ] {
        daemon_refused(as_member(&env, &user, &args), &user, "drive a kata guest");
    }
    assert!(
        agent.accept().is_err(),
        "the daemon connected to the agent for a refused caller"
    );
}

// Ignored (visibly, in the summary) on these machines: CRIU needs CAP_SYS_RESOURCE to
// dump another uid's process, and their root lacks it. Run with `--ignored` elsewhere.
#[test]
#[ignore = "needs CAP_SYS_RESOURCE (CRIU's prlimit on another uid's process); these machines lack it"]
fn member_dumps_and_restores_its_own_job_as_itself() {
    let Some((user, env)) = setup() else { return };
    if !can_dump_other_uids() {
        return;
    }
    let mine = env.path("mine");
    std::fs::create_dir(&mine).expect("mkdir");
    nix::unistd::chown(&mine, Some(user.uid.into()), Some(user.gid.into())).expect("chown");
    let dir = mine.display().to_string();
    let (_, log) = run_member_counter(&env, &user, "mine");
    as_member(&env, &user, &["dump", "job", "mine", "--dir", &dir]).ok();
    wait_state(&env, "mine", "halted");
    let last = last_count(&log).expect("count");
    let ck = as_member(&env, &user, &["--json", "checkpoints"])
        .ok()
        .json();
    assert_eq!(ck.as_array().map(Vec::len), Some(1), "{ck}");
    let ck_path = PathBuf::from(ck[0]["path"].as_str().expect("path"));
    assert!(ck_path.starts_with(&mine), "{}", ck_path.display());

    let pid_file = mine.join("restored.pid");
    let pid_arg = pid_file.display().to_string();
    as_member(
        &env,
        &user,
        &["restore", "job", "mine", "--pid-file", &pid_arg],
    )
    .ok();
    wait_state(&env, "mine", "running");
    let list = jobs(as_member(&env, &user, &["--json", "ps"]));
    let pid = job_of(&list, "mine").expect("job")["pid"]
        .as_i64()
        .expect("pid");
    assert_eq!(uids(pid), vec![user.uid; 4], "restored as the member");
    assert_eq!(next_after(&log, last), last + 1, "the counter carries on");
    let written = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(written.trim(), pid.to_string());
    assert_eq!(
        std::fs::metadata(&pid_file).expect("pid file").uid(),
        user.uid
    );
}

#[test]
fn root_keeps_full_power() {
    let Some((user, env)) = setup() else { return };
    let (pid, _) = run_member_counter(&env, &user, "mine");
    let list = jobs(env.cedana(&["--json", "ps"]));
    assert!(job_of(&list, "mine").is_some(), "root sees every job");

    // Root still runs jobs as root and checkpoints wherever it likes, /etc included.
    let workload = bin("cedana-workload").display().to_string();
    env.cedana(&[
        "run", "process", "--jid", "roots", "--", &workload, "counter",
    ])
    .ok();
    let list = jobs(env.cedana(&["--json", "ps"]));
    let root_pid = job_of(&list, "roots").expect("root's job")["pid"]
        .as_i64()
        .expect("pid");
    assert_eq!(uids(root_pid), vec![0; 4]);
    let etc_dir = PathBuf::from(format!("/etc/cedana-test-{}", user.name));
    let _cleanup = RemoveOnDrop(etc_dir.clone());
    let dir = etc_dir.display().to_string();
    env.cedana(&["dump", "job", "roots", "--leave-running", "--dir", &dir])
        .ok();
    assert_eq!(std::fs::read_dir(&etc_dir).expect("ck dir").count(), 1);
    if has_cap_sys_resource() {
        env.cedana(&["dump", "job", "mine", "--leave-running", "--dir", &dir])
            .ok();
    }

    // And acts on the member's job.
    env.cedana(&["job", "kill", "mine"]).ok();
    wait_for("member's job to stop", Duration::from_secs(10), || {
        (!pid_alive(pid as i32)).then_some(())
    });
}
