//! Files a runc container holds outside its mount namespace. A plain `runc run -d ID >
//! FILE` container writes its stdout into a host file: `cedana dump runc` dumps it as an
//! external file and the restore hands the same file back, so the counter keeps writing
//! into it. And a container restored by us (whose stdin is then the host's /dev/null,
//! which runc maps onto the checkpointed stdin pipe) can be moved again, three times in
//! a row, each time going on at last + 1.

mod runc_support;

use std::fs;
use std::process::Stdio;

use cedana_e2e::{last_count, wait_count_above, Env};
use runc_support::*;

/// A counter on stdout.
const STDOUT_COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done",
];

#[test]
fn stdout_redirected_to_a_host_file_is_carried() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_bundle(&bundle, STDOUT_COUNTER, Net::Own);
    let fresh = env.path("fresh");
    fs::create_dir_all(&fresh).expect("mkdir");
    copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
    let rt = Rt::runc(&root);
    let (orig, copy) = (unique_id(&env, "orig"), unique_id(&env, "copy"));
    let _g = [Ctr::new(&root, &orig), Ctr::new(&root, &copy)];
    // `runc run -d orig > out.log`: the container's stdout is the host file itself.
    let log = env.path("out.log");
    let st = rt
        .cmd()
        .args([
            "run",
            "-d",
            "--bundle",
            bundle.to_str().expect("utf8"),
            orig.as_str(),
        ])
        .current_dir(&bundle)
        .stdout(fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .status()
        .expect("runc run");
    assert!(st.success(), "runc run -d");
    wait_count_above(&log, 5);
    let (path, md) = dump_runc(&env, &root, orig.as_str());
    let ext = &md["container"]["external_files"];
    assert_eq!(
        ext[0]["path"],
        log.display().to_string(),
        "the log is external: {md}"
    );
    assert!(
        rt.state(orig.as_str()).is_none(),
        "dumped container is gone"
    );
    let last = last_count(&log).expect("counted");
    restore_runc_detached(&env, &root, &path, &fresh, copy.as_str());
    rt.wait_status(copy.as_str(), "running");
    assert_eq!(
        next_after(&log, last),
        last + 1,
        "the restored counter writes on into the same file"
    );
}

#[test]
fn a_restored_container_moves_again_three_times() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_bundle(&bundle, COUNTER, Net::Own);
    let pristine = env.path("pristine");
    copy_tree(&bundle.join("rootfs"), &pristine);
    let rt = Rt::runc(&root);
    let ids = ["orig", "m1", "m2", "m3"].map(|n| unique_id(&env, n));
    let _g = ids.each_ref().map(|id| Ctr::new(&root, id));
    // Its stdin is a pipe, as under containerd's shim: runc maps that pipe onto its own
    // stdin at restore, the host's /dev/null here.
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    let st = rt
        .cmd()
        .args([
            "run",
            "-d",
            "--bundle",
            bundle.to_str().expect("utf8"),
            ids[0].as_str(),
        ])
        .current_dir(&bundle)
        .stdin(Stdio::from(rd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runc run");
    assert!(st.success(), "runc run -d");
    drop(wr);
    let mut count = bundle.join("rootfs/tmp/count");
    wait_above(&count, 5);
    for (n, pair) in ids.windows(2).enumerate() {
        let (from, to) = (pair[0].as_str(), pair[1].as_str());
        let (path, _) = dump_runc(&env, &root, from);
        assert!(rt.state(from).is_none(), "{from} is gone after its dump");
        let last = *numbers(&count).last().expect("counted");
        let fresh = env.path(&format!("fresh{n}"));
        fs::create_dir_all(&fresh).expect("mkdir");
        copy_tree(&pristine, &fresh.join("rootfs"));
        restore_runc_detached(&env, &root, &path, &fresh, to);
        rt.wait_status(to, "running");
        count = fresh.join("rootfs/tmp/count");
        assert_eq!(
            next_after(&count, last),
            last + 1,
            "move {} ({from} -> {to})",
            n + 1
        );
    }
}
