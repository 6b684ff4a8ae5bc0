//! Faults of S3 checkpoint storage, against a real moto server: each one a clear error
//! that says what to do, the workload left running, nothing listed, nothing orphaned;
//! a checkpoint changed in the bucket is refused before CRIU starts.

use std::time::Duration;

use cedana_e2e::s3::{free_port, Moto, SECRET_KEY};
use cedana_e2e::*;

const BUCKET: &str = "faults";

/// The job keeps running and counting after a failed dump; nothing is listed.
fn still_running(env: &Env, jid: &str, log: &std::path::Path) {
    assert_eq!(env.job(jid).expect("job")["state"], "running");
    let now = last_count(log).expect("count");
    wait_count_above(log, now + 1);
    let listed = env.cedana(&["--json", "checkpoints"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    let out = env.daemon_log();
    assert!(
        !out.contains(SECRET_KEY),
        "the secret reached the daemon log"
    );
}

fn daemon(vars: Vec<(String, String)>) -> Env {
    let mut env = Env::new().with_vars(vars);
    env.start_daemon();
    env
}

#[test]
fn missing_bucket_and_no_server_are_clear_errors_and_the_job_runs_on() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let env = daemon(moto.aws_env());
    let log = env.run_workload_job("c", &["counter", "50"]);
    let r = env
        .cedana(&["dump", "job", "c", "--dir", "s3://no-such-bucket/x"])
        .fails_with("bucket \"no-such-bucket\" does not exist");
    eprintln!("bucket: {}", r.stderr);
    assert!(r.stderr.contains("create it"), "{}", r.stderr);
    assert!(!r.stderr.contains(SECRET_KEY));
    still_running(&env, "c", &log);
    drop(env);

    // Nothing listening where the endpoint points.
    let mut vars = moto.aws_env();
    let dead = format!("http://127.0.0.1:{}", free_port());
    vars.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    vars.push(("AWS_ENDPOINT_URL".into(), dead.clone()));
    let env = daemon(vars);
    let log = env.run_workload_job("c", &["counter", "50"]);
    let r = env
        .cedana(&["dump", "job", "c", "--dir", "s3://faults/x"])
        .fails_with(&format!("cannot reach the S3 server at {dead}"));
    eprintln!("no server: {}", r.stderr);
    assert!(r.stderr.contains("AWS_ENDPOINT_URL"), "{}", r.stderr);
    still_running(&env, "c", &log);
}

#[test]
fn wrong_credentials_are_a_clear_error_without_the_secret() {
    if !e2e_enabled() {
        return;
    }
    let Some((moto, id, secret)) = Moto::start_with_auth(BUCKET) else {
        skip("no moto server", "run scripts/install-deps.sh");
        return;
    };
    let mut vars = moto.aws_env();
    vars.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    vars.push(("AWS_ACCESS_KEY_ID".into(), id));
    vars.push(("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()));
    let env = daemon(vars);
    let log = env.run_workload_job("c", &["counter", "50"]);
    let r = env
        .cedana(&["dump", "job", "c", "--dir", &format!("s3://{BUCKET}/x")])
        .fails_with("refused our credentials");
    eprintln!("credentials: {}", r.stderr);
    assert!(r.stderr.contains("AWS_SECRET_ACCESS_KEY"), "{}", r.stderr);
    assert!(!r.stderr.contains(SECRET_KEY) && !r.stdout.contains(SECRET_KEY));
    assert!(!r.stderr.contains(&secret));
    still_running(&env, "c", &log);
}

#[test]
fn a_changed_file_in_the_bucket_is_refused_before_criu_starts() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let env = daemon(moto.aws_env());
    let log = env.run_workload_job("c", &["counter", "50"]);
    let url = format!("s3://{BUCKET}/x");
    let d = env
        .cedana(&[
            "--json",
            "dump",
            "job",
            "c",
            "--dir",
            &url,
            "--compression",
            "none",
        ])
        .ok()
        .json();
    let path = d["path"].as_str().expect("path").to_string();
    let at_dump = last_count(&log).expect("count");
    let (key, size) = moto
        .keys(BUCKET)
        .into_iter()
        .find(|(k, _)| k.contains("pages-") && k.ends_with(".img"))
        .expect("a pages image in the bucket");
    moto.put(BUCKET, &key, &vec![0x5a; size as usize]);
    let rel = key.rsplit('/').next().unwrap_or_default().to_string();
    let r = env
        .cedana(&["restore", "job", "c", "--path", &path])
        .fails_with(&rel);
    eprintln!("changed: {}", r.stderr);
    assert!(
        r.stderr.to_lowercase().contains("sha256") || r.stderr.contains("digest"),
        "{}",
        r.stderr
    );
    // CRIU never ran: the counter did not come back.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(last_count(&log), Some(at_dump));
    assert_ne!(env.job("c").expect("job")["state"], "running");
}

#[test]
fn a_failed_commit_leaves_no_object_and_no_open_multipart_upload() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    // The commit fails when metadata.json is due: after the packed archive's parts are
    // up (64 MiB of random bytes do not compress below the 5 MiB part size).
    let mut vars = moto.aws_env();
    vars.push(("CEDANA_TEST_FAULT".into(), "commit-metadata".into()));
    let env = daemon(vars);
    let log = env.run_workload_job("m", &["memory", "256"]);
    env.cedana(&["dump", "job", "m", "--dir", &format!("s3://{BUCKET}/x")])
        .fails_with("commit-metadata");
    still_running(&env, "m", &log);
    assert_eq!(moto.keys(BUCKET), Vec::<(String, u64)>::new());
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
}

#[test]
fn a_shard_upload_failing_mid_stream_aborts_its_multipart_uploads() {
    if !e2e_enabled() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    // Each shard's upload fails after 12 MiB (two parts up, the server still there): the
    // streamed dump stops, and what it had open is aborted at once.
    let mut vars = moto.aws_env();
    vars.push(("CEDANA_TEST_FAULT".into(), "commit-shard".into()));
    let env = daemon(vars);
    let log = env.run_workload_job("m", &["memory", "384"]);
    let t = std::time::Instant::now();
    let r = env
        .cedana(&["dump", "job", "m", "--dir", &format!("s3://{BUCKET}/x")])
        .fails_with("commit-shard");
    eprintln!("mid-stream ({} ms): {}", t.elapsed().as_millis(), r.stderr);
    still_running(&env, "m", &log);
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
    assert_eq!(moto.keys(BUCKET), Vec::<(String, u64)>::new());
}

#[test]
fn the_server_stopped_mid_upload_is_a_clear_error_and_the_job_runs_on() {
    if !e2e_enabled() {
        return;
    }
    let Some(mut moto) = Moto::start() else {
        return;
    };
    moto.create_bucket(BUCKET);
    let env = daemon(moto.aws_env());
    let log = env.run_workload_job("m", &["memory", "384"]);
    let mut dump = env.cmd();
    dump.args(["dump", "job", "m", "--dir", &format!("s3://{BUCKET}/x")]);
    dump.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = dump.spawn().expect("dump");
    wait_for(
        "a multipart upload to start",
        Duration::from_secs(60),
        || (!moto.open_uploads(BUCKET).is_empty()).then_some(()),
    );
    moto.stop();
    let r = Run::from_output(child.wait_with_output().expect("dump"));
    let r = r.fails_with("cannot reach the S3 server");
    eprintln!("mid-upload: {}", r.stderr);
    assert!(!r.stderr.contains(SECRET_KEY));
    still_running(&env, "m", &log);
}
