//! The containerd route to and from S3 (a real moto server, a private containerd):
//! `cedana dump containerd ID --dir s3://...` stops a counter container on our shim and
//! uploads its portable checkpoint; `cedana restore containerd --path s3://...` brings it
//! back as a new container whose counter carries on. Nothing is left on local disk.

use cedana_e2e::containerd::{Containerd, CEDANA, COUNTER};
use cedana_e2e::s3::{Moto, SECRET_KEY};
use cedana_e2e::{dir_names, Env};

const BUCKET: &str = "containers";

#[test]
fn a_containerd_container_goes_to_s3_and_comes_back_counting() {
    let Some(c) = Containerd::setup() else { return };
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket(BUCKET);
    let mut env = Env::new().with_vars(moto.aws_env());
    env.start_daemon();
    c.run_detached(&[CEDANA], "orig", &["sh", "-c", COUNTER]);
    c.wait_count_above("orig", 10);
    let address = c.socket().display().to_string();
    let target = [
        "--containerd-address",
        &address,
        "--namespace",
        &c.namespace,
    ];
    let url = format!("s3://{BUCKET}/ctr");
    let mut dump = vec!["--json", "dump", "containerd", "orig", "--dir", &url];
    dump.extend(target);
    let d = env.cedana(&dump).ok().json();
    assert_eq!(d["metadata"]["containerd"]["runtime"], CEDANA, "{d}");
    let path = d["path"].as_str().expect("path").to_string();
    assert!(path.starts_with(&url), "{d}");
    // The default archive (`.tar.zst`): one object, completed at the commit.
    let keys = moto.keys(BUCKET);
    let object = path
        .trim_start_matches(&format!("s3://{BUCKET}/"))
        .to_string();
    assert!(keys.iter().any(|(k, _)| *k == object), "{keys:?}");
    assert!(moto.open_uploads(BUCKET).is_empty());
    assert!(dir_names(&env.checkpoints()).is_empty(), "nothing local");
    assert_ne!(c.task_status("orig").as_deref(), Some("RUNNING"));

    let mut restore = vec!["--json", "restore", "containerd", "--id", "copy"];
    restore.extend(target);
    restore.extend(["--path", &path]);
    let r = env.cedana(&restore);
    assert_eq!(
        r.code,
        0,
        "restore from s3 failed: {}{}\ncontainerd log tail:\n{}",
        r.stdout,
        r.stderr,
        c.log_tail()
    );
    assert_eq!(c.task_status("copy").as_deref(), Some("RUNNING"));
    // The rootfs diff holds 1..=N; the restored process appends N+1, N+2, ...
    let last = *c.counts("copy").last().expect("a restored count");
    c.wait_count_above("copy", last + 3);
    let seq = c.counts("copy");
    let expected: Vec<u64> = (1..=seq.len() as u64).collect();
    assert_eq!(seq, expected, "the restored counter did not carry on");
    assert!(!env.daemon_log().contains(SECRET_KEY));
    c.remove_all();
}
