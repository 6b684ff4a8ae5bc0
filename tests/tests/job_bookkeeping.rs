//! Bookkeeping of jobs and their checkpoints: `dump runc` of a job's container counts
//! against that job, and deleting a job leaves its checkpoints listed without a job
//! rather than under an id that no longer exists.

mod runc_support;

use std::time::Duration;

use cedana_e2e::{wait_for, Env};
use runc_support::*;

fn checkpoints(env: &Env, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--json", "checkpoints"];
    args.extend_from_slice(extra);
    env.cedana(&args)
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_jobs_container_dump_counts_against_the_job_and_outlives_its_deletion() {
    if !runc_available() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let root = env.path("runc-root");
    let root_s = root.to_str().expect("utf8").to_string();
    let bundle = env.path("bundle");
    build_bundle(
        &bundle,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.05; done",
        ],
        Net::Own,
    );
    let _g = Ctr::new(&root, "bk-ctr");
    env.cedana(&[
        "run",
        "runc",
        "--bundle",
        bundle.to_str().expect("utf8"),
        "--id",
        "bk-ctr",
        "--root",
        &root_s,
        "--jid",
        "bk",
    ])
    .ok();
    wait_above(&bundle.join("rootfs/tmp/count"), 3);
    // By container id, as a runc user would, not by job id.
    let out = env
        .cedana(&["--json", "dump", "runc", "bk-ctr", "--root", &root_s])
        .ok()
        .json();
    let path = out["path"].as_str().expect("path").to_string();
    let mine = checkpoints(&env, &["bk"]);
    assert_eq!(mine.len(), 1, "the job's checkpoint: {mine:?}");
    assert_eq!(mine[0]["path"], path.as_str());
    wait_for("the job to halt", Duration::from_secs(15), || {
        let ps = env.cedana(&["--json", "ps"]).ok().json();
        let halted = ps
            .as_array()?
            .iter()
            .any(|j| j["jid"] == "bk" && j["state"] == "halted");
        halted.then_some(())
    });
    env.cedana(&["job", "delete", "bk"]).ok();
    let all = checkpoints(&env, &[]);
    let kept: Vec<&serde_json::Value> = all.iter().filter(|c| c["path"] == path.as_str()).collect();
    assert_eq!(kept.len(), 1, "the checkpoint is kept: {all:?}");
    let jid = &kept[0]["jid"];
    assert!(
        jid.is_null() || jid == "",
        "it no longer names the deleted job: {jid}"
    );
    assert!(std::path::Path::new(&path).exists(), "its files are kept");
}
