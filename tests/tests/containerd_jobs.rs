//! containerd containers as daemon jobs, against a private containerd: `run containerd
//! IMAGE -- CMD` starts one from an image with its output in the job log, `manage
//! containerd ID` adopts one `ctr run` started; both are listed, killed and deleted like
//! any job, and a run one is dumped and restored as a job (`dump job`/`restore job`, same
//! container id) and through `dump containerd`/`restore containerd`, and counts on.

use std::path::Path;
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, COUNTER, IMAGE};
use cedana_e2e::{last_count, pid_alive, wait_for, Env};

/// Prints 1, 2, 3, ... to stdout: the job log shows it.
const PRINTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";

/// `--containerd-address A --namespace N` of this containerd.
fn at(c: &Containerd) -> Vec<String> {
    vec![
        "--containerd-address".into(),
        c.socket().display().to_string(),
        "--namespace".into(),
        c.namespace.clone(),
    ]
}

/// Waits until the log's last number passes `above`.
fn wait_log_above(log: &Path, above: u64) -> u64 {
    wait_for(
        &format!("{} to pass {above}", log.display()),
        Duration::from_secs(30),
        || last_count(log).filter(|v| *v > above),
    )
}

#[test]
fn run_containerd_is_a_job_that_logs_dumps_and_restores() {
    let Some(c) = Containerd::setup() else { return };
    let mut env = Env::new();
    env.start_daemon();
    let mut run: Vec<String> = ["--json", "run", "containerd", IMAGE, "--id", "r1"]
        .map(String::from)
        .to_vec();
    run.extend(at(&c));
    run.extend(["--jid", "cr1", "--", "sh", "-c", PRINTER].map(String::from));
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let started = env.cedana(&run).ok().json();
    let pid = started["pid"].as_i64().expect("pid") as i32;

    let listed = env.listed_job("cr1");
    assert_eq!(listed["kind"], "containerd", "{listed}");
    assert_eq!(listed["state"], "running", "{listed}");
    assert_eq!(listed["container_id"], "r1", "{listed}");
    assert!(
        c.ok(&["task", "ls"]).contains(&pid.to_string()),
        "containerd's task is the job"
    );
    let log = Path::new(listed["log_path"].as_str().expect("log")).to_path_buf();
    wait_log_above(&log, 5);

    // The same id again, and an image the namespace lacks: refused, nothing left over.
    let mut again = run.clone();
    again[1] = "run";
    let jid_at = again.iter().position(|a| *a == "cr1").expect("jid");
    again[jid_at] = "cr2";
    env.cedana(&again).fails_with("already exists");
    again[3] = "docker.io/library/no-such-image:1";
    let id_at = again.iter().position(|a| *a == "r1").expect("id");
    again[id_at] = "r2";
    env.cedana(&again).fails_with("no-such-image");
    assert!(!c.containers().contains(&"r2".to_string()));

    // As a job: `dump job` stops it, `restore job` brings it back into the same
    // container id and job, counting on in the same log.
    let dir = env.checkpoints().display().to_string();
    env.cedana(&["dump", "job", "cr1", "--dir", &dir]).ok();
    wait_for("the dumped job to halt", Duration::from_secs(10), || {
        (env.listed_job("cr1")["state"] == "halted").then_some(())
    });
    let last = last_count(&log).expect("counted");
    let back = env.cedana(&["--json", "restore", "job", "cr1"]).ok().json();
    assert_eq!(back["jid"], "cr1", "{back}");
    let next = wait_log_above(&log, last);
    assert!(next < last + 100, "{last} -> {next}");
    let listed = env.listed_job("cr1");
    assert_eq!(listed["state"], "running", "{listed}");
    assert_eq!(listed["container_id"], "r1", "{listed}");
    assert_eq!(listed["checkpoints"], 1, "{listed}");
    // A live job's container is not restored over.
    env.cedana(&["restore", "job", "cr1"])
        .fails_with("is still running");
    let before = next;

    // Dumped through the daemon (which stops it), restored into a new container that
    // continues the count in its own job's log.
    let mut dump = vec!["--json", "dump", "containerd", "r1", "--dir", &dir];
    let target = at(&c);
    dump.extend(target.iter().map(String::as_str));
    let dumped = env.cedana(&dump).ok().json();
    let path = dumped["path"].as_str().expect("path").to_string();
    wait_for("the dumped job to halt", Duration::from_secs(10), || {
        (env.listed_job("cr1")["state"] == "halted").then_some(())
    });
    let last = last_count(&log).expect("counted");
    assert!(last >= before);
    let mut restore = vec![
        "--json",
        "restore",
        "containerd",
        "--path",
        &path,
        "--id",
        "r3",
    ];
    restore.extend(target.iter().map(String::as_str));
    let restored = env.cedana(&restore).ok().json();
    let jid = restored["jid"].as_str().expect("jid").to_string();
    let new_log = env.listed_job(&jid)["log_path"]
        .as_str()
        .expect("log")
        .to_string();
    let next = wait_log_above(Path::new(&new_log), last);
    assert!(next > last && next < last + 100, "{last} -> {next}");

    // Jobs like any other: killed, then deleted with their stopped container.
    env.cedana(&["kill", &jid, "--timeout", "0"]).ok();
    env.cedana(&["delete", &jid]).ok();
    env.cedana(&["delete", "cr1"]).ok();
    wait_for("the containers to go", Duration::from_secs(10), || {
        let left = c.containers();
        (!left.contains(&"r3".to_string()) && !left.contains(&"r1".to_string())).then_some(())
    });
    assert!(!pid_alive(pid));
}

#[test]
fn manage_containerd_adopts_a_running_container() {
    let Some(c) = Containerd::setup() else { return };
    let mut env = Env::new();
    env.start_daemon();
    c.ok(&["run", "-d", IMAGE, "m1", "sh", "-c", COUNTER]);
    c.wait_count_above("m1", 3);
    let task_pid = c
        .ok(&["task", "ls"])
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"m1"))
                .then(|| f[1].parse::<i64>().ok())
                .flatten()
        })
        .expect("m1's task");
    let mut manage = vec!["--json", "manage", "containerd", "m1", "--jid", "m"];
    let target = at(&c);
    manage.extend(target.iter().map(String::as_str));
    let adopted = env.cedana(&manage).ok().json();
    assert_eq!(adopted["pid"].as_i64(), Some(task_pid), "{adopted}");
    assert_eq!(env.listed_job("m")["kind"], "containerd");

    // Once the container stops, the job halts.
    c.ok(&["task", "kill", "-s", "KILL", "m1"]);
    wait_for("the adopted job to halt", Duration::from_secs(10), || {
        (env.listed_job("m")["state"] == "halted").then_some(())
    });

    // A container without a running task, and one that does not exist: refused.
    let mut stopped = vec!["manage", "containerd", "m1"];
    stopped.extend(target.iter().map(String::as_str));
    env.cedana(&stopped).fails_with("has no running task");
    stopped[2] = "nope";
    env.cedana(&stopped).fails_with("nope");
    c.remove_all();
}
