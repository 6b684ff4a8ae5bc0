//! Checkpoints in S3-compatible object storage (a real moto server on 127.0.0.1) and a
//! move between two daemons that share nothing but the bucket: a counter job dumped to
//! `s3://` on daemon A, deleted there, restored by daemon B as the same job, counting on.

use std::time::Duration;

use cedana_e2e::s3::{Moto, SECRET_KEY};
use cedana_e2e::*;

const BUCKET: &str = "ckpts";

fn wait_state(env: &Env, jid: &str, want: &str) {
    wait_for(
        &format!("job {jid} to be {want}"),
        Duration::from_secs(15),
        || (env.job(jid)?["state"] == want).then_some(()),
    );
}

/// Two daemons with their own config, socket, db and checkpoint dir; a bucket between.
fn setup() -> Option<(Moto, Env, Env)> {
    if !e2e_enabled() {
        return None;
    }
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET);
    let mut a = Env::new().with_vars(moto.aws_env());
    let mut b = Env::new().with_vars(moto.aws_env());
    a.start_daemon();
    b.start_daemon();
    Some((moto, a, b))
}

/// Dumps `jid` on `a` into `url`, deletes it there, restores it on `b`; checks it counts on.
fn move_counter(moto: &Moto, a: &Env, b: &Env, jid: &str, extra: &[&str]) {
    let url = format!("s3://{BUCKET}/moves/{jid}");
    let log = a.run_counter_job(jid);
    let mut args = vec!["--json", "dump", "job", jid, "--dir", &url, "--name", "ck"];
    args.extend_from_slice(extra);
    let dumped = a.cedana(&args).ok().json();
    let path = dumped["path"].as_str().expect("path").to_string();
    assert!(path.starts_with(&url), "{dumped}");
    wait_state(a, jid, "halted");
    let at_dump = last_count(&log).expect("count");
    // The checkpoint is in the bucket, metadata.json and all, and nowhere on A's disk.
    let keys = moto.keys(BUCKET);
    assert!(
        keys.iter()
            .any(|(k, _)| k.starts_with(&format!("moves/{jid}/ck"))),
        "{keys:?}"
    );
    assert!(dir_names(&a.checkpoints()).is_empty());
    assert!(moto.open_uploads(BUCKET).is_empty());
    // A lists it where it lives, and forgets the job.
    let listed = a.cedana(&["--json", "checkpoints"]).ok().json();
    assert!(listed.to_string().contains(&path), "{listed}");
    a.cedana(&["job", "delete", jid]).ok();
    assert!(a.job(jid).is_none());

    // B has never seen the job: it re-creates it from the checkpoint.
    assert!(b.job(jid).is_none());
    b.cedana(&["restore", "job", jid, "--path", &path]).ok();
    wait_state(b, jid, "running");
    let next = wait_for("output after restore", Duration::from_secs(10), || {
        let c = counts(&log);
        let i = c.iter().rposition(|v| *v == at_dump)?;
        c.get(i + 1).copied()
    });
    assert_eq!(next, at_dump + 1, "B's job counts on from A's last value");
    let on_b = b.job(jid).expect("B lists the job");
    assert_eq!(on_b["state"], "running", "{on_b}");
    b.cedana(&["job", "kill", jid, "--signal", "KILL"]).ok();
    wait_state(b, jid, "halted");
    // No secret in anything either daemon wrote.
    for env in [a, b] {
        assert!(
            !env.daemon_log().contains(SECRET_KEY),
            "secret in a daemon log"
        );
    }
}

#[test]
fn a_counter_job_moves_between_daemons_through_the_bucket() {
    let Some((moto, a, b)) = setup() else {
        return;
    };
    move_counter(&moto, &a, &b, "mover", &["--compression", "none"]);
    move_counter(&moto, &a, &b, "packed", &["--compression", "zstd"]);
}

#[test]
fn a_streamed_dump_moves_too() {
    let Some((moto, a, b)) = setup() else {
        return;
    };
    move_counter(&moto, &a, &b, "streamed", &["--streams", "4"]);
    let shards = moto
        .keys(BUCKET)
        .into_iter()
        .filter(|(k, _)| k.contains("/shard-"))
        .count();
    assert_eq!(shards, 4, "four shards uploaded");
}

#[test]
fn unserved_schemes_are_refused_by_name() {
    let Some((_moto, a, _b)) = setup() else {
        return;
    };
    let _log = a.run_counter_job("stays");
    for url in ["gs://b/x", "http://127.0.0.1:1/x"] {
        a.cedana(&["dump", "job", "stays", "--dir", url])
            .fails_with(&format!("{}://", url.split(':').next().unwrap_or_default()));
    }
    assert_eq!(a.job("stays").expect("job")["state"], "running");
    let cwd_junk = std::env::current_dir().expect("cwd").join("gs:");
    assert!(!cwd_junk.exists(), "no local dir named after the scheme");
}

#[test]
fn remote_checkpoints_are_listed_inspected_and_deleted_where_they_live() {
    let Some((moto, a, _b)) = setup() else {
        return;
    };
    let _log = a.run_counter_job("kept");
    let url = format!("s3://{BUCKET}/listed");
    for name in ["one", "two"] {
        a.cedana(&[
            "dump",
            "job",
            "kept",
            "--dir",
            &url,
            "--name",
            name,
            "--leave-running",
        ])
        .ok();
    }
    let listed = a.cedana(&["--json", "checkpoints"]).ok().json();
    let cks = listed.as_array().expect("list").clone();
    assert_eq!(cks.len(), 2, "{listed}");
    for ck in &cks {
        let path = ck["path"].as_str().expect("path");
        assert!(
            path.starts_with(&format!("{url}/")),
            "the db records the URL: {ck}"
        );
    }
    let id = cks[0]["id"].as_str().expect("id").to_string();
    let gone = cks[0]["path"].as_str().expect("path").to_string();
    let inspected = a
        .cedana(&["--json", "checkpoint", "inspect", &id])
        .ok()
        .json();
    assert_eq!(inspected["path"], cks[0]["path"]);
    assert!(inspected["metadata"]["files"].is_object(), "{inspected}");
    a.cedana(&["checkpoint", "delete", &id]).ok();
    let key = gone
        .trim_start_matches(&format!("s3://{BUCKET}/"))
        .to_string();
    let keys = moto.keys(BUCKET);
    assert!(!keys.iter().any(|(k, _)| k.starts_with(&key)), "{keys:?}");
    assert!(!keys.is_empty(), "the other checkpoint stays: {keys:?}");
    let listed = a.cedana(&["--json", "checkpoints"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    a.cedana(&["job", "kill", "kept", "--signal", "KILL"]).ok();
}
