//! A daemon killed (SIGKILL) in the middle of a streamed upload to S3 leaves multipart
//! uploads open on the server; its next start aborts them from its journal: nothing is
//! left in the bucket, nothing is listed, the workload runs on, and a retry succeeds.
//! The same for a `--no-server` dump killed mid-upload: the next dump cleans up.

use std::process::{Child, Stdio};
use std::time::Duration;

use cedana_e2e::s3::Moto;
use cedana_e2e::*;

const BUCKET: &str = "crash";

/// Starts `cmd` and waits until it has a multipart upload open in the bucket.
fn start_upload(moto: &Moto, mut cmd: std::process::Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("dump");
    wait_for(
        "a multipart upload to start",
        Duration::from_secs(60),
        || (!moto.open_uploads(BUCKET).is_empty()).then_some(()),
    );
    child
}

/// A dump of process `pid` to `url` without a daemon, leaving it running.
fn no_server_dump<'a>(pid: &'a str, url: &'a str) -> Vec<&'a str> {
    vec![
        "dump",
        "process",
        pid,
        "--dir",
        url,
        "--leave-running",
        "--no-server",
    ]
}

/// The bucket holds nothing (no object, no open upload) once `what` cleaned up.
fn bucket_is_clean(moto: &Moto, what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        moto.open_uploads(BUCKET).is_empty().then_some(())
    });
    assert_eq!(moto.keys(BUCKET), Vec::<(String, u64)>::new());
}

#[test]
fn a_daemon_killed_mid_upload_leaves_no_open_upload_after_its_restart() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let mut env = Env::new().with_vars(moto.aws_env());
    env.start_daemon();
    let log = env.run_workload_job("m", &["memory", "384"]);
    let url = format!("s3://{BUCKET}/x");
    let mut dump = env.cmd();
    dump.args(["dump", "job", "m", "--dir", &url]);
    let client = start_upload(&moto, dump);
    env.kill_daemon();
    let _ = client.wait_with_output();
    let orphaned = moto.open_uploads(BUCKET);
    eprintln!("open after the kill: {orphaned:?}");
    assert!(!orphaned.is_empty(), "the kill left uploads open");

    env.start_daemon();
    bucket_is_clean(&moto, "the restarted daemon to abort the uploads");
    assert!(
        env.daemon_log()
            .contains("aborted the unfinished multipart upload"),
        "{}",
        env.daemon_log()
    );
    let listed = env.cedana(&["--json", "checkpoints"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    // The workload never stopped counting.
    let now = last_count(&log).expect("count");
    wait_count_above(&log, now + 1);
    // A retry to the same prefix succeeds.
    let d = env
        .cedana(&["--json", "dump", "job", "m", "--dir", &url])
        .ok()
        .json();
    assert!(d["path"].as_str().expect("path").starts_with(&url), "{d}");
    assert!(moto.open_uploads(BUCKET).is_empty());
    let listed = env.cedana(&["--json", "checkpoints"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn a_no_server_dump_killed_mid_upload_is_cleaned_up_by_the_next_dump() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let env = Env::new().with_vars(moto.aws_env());
    let log = env.path("w.log");
    let w = Workload::start(&log, &["memory", "384"]);
    let pid = w.pid;
    wait_for(
        "the workload to fill its memory",
        Duration::from_secs(60),
        || last_count(&log).map(|_| ()),
    );
    let url = format!("s3://{BUCKET}/y");
    let p = pid.to_string();
    let mut dump = env.cmd();
    dump.args(no_server_dump(&p, &url));
    let mut cli = start_upload(&moto, dump);
    let _ = cli.kill();
    let _ = cli.wait();
    assert!(
        !moto.open_uploads(BUCKET).is_empty(),
        "the kill left uploads open"
    );
    let now = last_count(&log).expect("count");
    wait_count_above(&log, now + 1);
    let mut retry = no_server_dump(&p, &url);
    retry.extend(["--name", "retry"]);
    env.cedana(&retry).ok();
    assert!(
        moto.open_uploads(BUCKET).is_empty(),
        "the next dump aborted them"
    );
    let keys = moto.keys(BUCKET);
    assert!(
        keys.iter().all(|(k, _)| k.starts_with("y/retry/")),
        "only the retry's objects: {keys:?}"
    );
    drop(w);
}

/// A process killed after it recorded an upload and before the server's answer reached
/// its record (a window the kills above can land in) leaves the key only: the next dump
/// finds the upload by it and aborts it, and leaves the uploads of other keys alone.
/// The server checks signatures: the listing, which object_store has no call for, is
/// signed as its own requests are.
#[test]
fn an_upload_whose_id_never_reached_the_journal_is_found_by_its_key() {
    if !e2e_enabled() {
        return;
    }
    let Some((moto, id, secret)) = Moto::start_with_s3_user(BUCKET) else {
        panic!("moto did not start with auth (run scripts/install-deps.sh)");
    };
    let moto = moto.with_keys(&id, &secret);
    let env = Env::new().with_vars(moto.aws_env());
    let (cut, other) = ("z/cut/pages-1.img", "z/elsewhere/pages-1.img");
    moto.start_upload(BUCKET, cut);
    moto.start_upload(BUCKET, other);
    // As the killed process left it (the journal lives beside the database).
    let journal = env.path("s3-uploads");
    std::fs::create_dir_all(&journal).expect("journal dir");
    let record = journal.join("1-cut.upload");
    std::fs::write(&record, format!(r#"{{"bucket":"{BUCKET}","key":"{cut}"}}"#)).expect("record");

    let log = env.path("w.log");
    let w = Workload::start(&log, &["counter", "50"]);
    wait_for("the workload to count", Duration::from_secs(30), || {
        last_count(&log).map(|_| ())
    });
    let p = w.pid.to_string();
    let url = format!("s3://{BUCKET}/z");
    env.cedana(&no_server_dump(&p, &url)).ok();
    assert_eq!(moto.open_uploads(BUCKET), vec![other.to_string()]);
    assert!(
        !record.exists(),
        "the record is settled once its upload is gone"
    );
    drop(w);
}
