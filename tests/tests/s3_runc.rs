//! A runc container moved between two daemons through S3-compatible storage (a real
//! moto server): dumped to `s3://` by daemon A, restored by daemon B (separate state,
//! its own runc root) as a new container from the portable checkpoint, counting on.

mod runc_support;

use std::path::Path;
use std::time::Duration;

use cedana_e2e::s3::{Moto, SECRET_KEY};
use cedana_e2e::{counts, last_count, wait_for, Env};
use runc_support::*;

/// Prints 1, 2, 3, ... to stdout, one a line.
const PRINTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";
const BUCKET: &str = "containers";

fn wait_count_above(log: &Path, above: u64) -> u64 {
    wait_for(
        &format!("the counter in {} to pass {above}", log.display()),
        Duration::from_secs(30),
        || last_count(log).filter(|v| *v > above),
    )
}

/// The count once the log stops growing (its writer checkpointed and gone).
fn settled_count(log: &Path) -> u64 {
    let mut last = None;
    wait_for("the log to settle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = last_count(log);
        let settled = (now.is_some() && now == last).then_some(now);
        last = now;
        settled.flatten()
    })
}

fn move_container(extra: &[&str]) {
    if !runc_available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let mut a = Env::new().with_vars(moto.aws_env());
    let mut b = Env::new().with_vars(moto.aws_env());
    a.start_daemon();
    b.start_daemon();
    let (root_a, root_b) = (a.path("runc-root"), b.path("runc-root"));
    let bundle = a.path("bundle");
    build_bundle(&bundle, &["sh", "-c", PRINTER], Net::Own);
    // B has only a pristine rootfs of the same image, as another host would.
    let fresh = b.path("bundle");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
    let _guards = [Ctr::new(&root_a, "orig"), Ctr::new(&root_b, "copy")];
    let (ra, rb) = (
        root_a.to_str().expect("utf8"),
        root_b.to_str().expect("utf8"),
    );
    let b_dir = bundle.to_str().expect("utf8");
    a.cedana(&[
        "run", "runc", "--bundle", b_dir, "--id", "orig", "--root", ra, "--jid", "orig",
    ])
    .ok();
    let orig_log = a.path("jobs/orig.log");
    wait_count_above(&orig_log, 5);
    let url = format!("s3://{BUCKET}/hosts/a");
    let mut dump = vec![
        "--json", "dump", "runc", "orig", "--root", ra, "--dir", &url,
    ];
    dump.extend_from_slice(extra);
    let d = a.cedana(&dump).ok().json();
    let path = d["path"].as_str().expect("path").to_string();
    assert!(path.starts_with(&url), "{d}");
    let last = settled_count(&orig_log);
    assert!(dir_is_empty(&a.checkpoints()), "no local copy on A");

    let f = fresh.to_str().expect("utf8");
    let restored = b
        .cedana(&[
            "--json", "restore", "runc", "--path", &path, "--bundle", f, "--id", "copy", "--root",
            rb,
        ])
        .ok()
        .json();
    let jid = restored["jid"].as_str().expect("jid").to_string();
    let ps = b.cedana(&["--json", "ps"]).ok().json();
    let job = ps
        .as_array()
        .and_then(|j| j.iter().find(|j| j["jid"] == jid.as_str()).cloned())
        .unwrap_or_else(|| panic!("B's ps lacks {jid}: {ps}"));
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("runc"), Some("running"))
    );
    let log = b.path(&format!("jobs/{jid}.log"));
    let first = wait_for(
        "the restored container's output",
        Duration::from_secs(30),
        || counts(&log).first().copied(),
    );
    assert_eq!(
        first,
        last + 1,
        "the container counts on from A's last value on B"
    );
    wait_count_above(&log, last + 3);
    b.cedana(&["job", "kill", &jid, "--timeout", "1"]).ok();
    for env in [&a, &b] {
        assert!(!env.daemon_log().contains(SECRET_KEY));
    }
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn a_runc_container_moves_between_daemons_through_the_bucket() {
    move_container(&[]);
}

#[test]
fn a_runc_container_moves_with_four_streams() {
    move_container(&["--streams", "4"]);
}
