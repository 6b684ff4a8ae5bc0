//! Checkpoint a pod's container and restore it into a NEW pod (issue 15, items 2 and 3),
//! the way Kubernetes' checkpoint API and a restore through a RuntimeClass would, on
//! containerd 1.7 (whose CRI has neither): `cedana dump containerd ID --namespace k8s.io`
//! checkpoints the container of a pod on handler `cedana`; a new pod whose container
//! carries `cedana.io/restore-from=PATH` is restored by our shim at start. CRI then
//! reports an ordinary running container whose counter carries on from its last value,
//! whose log grows, that execs and stops. A missing or damaged checkpoint fails the
//! container with the reason in its status, and nothing is left behind.

use std::fs;
use std::path::{Path, PathBuf};

use cedana_e2e::cri::{Cri, HANDLER, RESTORE_ANNOTATION, STANDIN_HANDLER};
use cedana_e2e::Env;
use k8s_cri::v1::ContainerState;

/// Checks the restored container `c`: RUNNING, its /count 1..=N without a restart (the
/// rootfs diff held 1..=last, the restored shell appends last+1, ...), its log continuing
/// from past `last` and growing, exec working; then stops it.
fn check_restored(cri: &Cri, c: &str, last: u64) {
    assert_eq!(cri.state(c), ContainerState::ContainerRunning);
    let now = cri.wait_count_above(c, last + 5);
    let seq = cri.counts(c);
    assert_eq!(
        seq,
        (1..=seq.len() as u64).collect::<Vec<_>>(),
        "the restored counter did not carry on"
    );
    assert!(now > last + 5);
    // Its CRI log is the new container's: it starts past the checkpointed value.
    let logged = cri.log_counts(c);
    let first = *logged.first().expect("the restored container logs");
    assert!(
        first > last,
        "log restarted at {first} (checkpoint at {last})"
    );
    assert_eq!(
        logged,
        (first..first + logged.len() as u64).collect::<Vec<_>>()
    );
    let (code, out, _) = cri.exec(c, &["sh", "-c", "echo ok"]).expect("exec");
    assert_eq!((code, out.trim()), (0, "ok"));
    cri.stop_container(c, 1).expect("StopContainer");
    assert_eq!(cri.state(c), ContainerState::ContainerExited);
}

/// The checkpoint's last count: the highest number in its rootfs diff's /count.
fn checkpointed_count(path: &Path) -> u64 {
    let root = unpacked(path);
    let mut diff = tar::Archive::new(fs::File::open(root.join("rootfs-diff.tar")).expect("diff"));
    for e in diff.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path()
            .expect("path")
            .to_string_lossy()
            .trim_start_matches("./")
            == "count"
        {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).expect("count");
            return s
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .max()
                .unwrap_or(0);
        }
    }
    panic!("no /count in the checkpoint's rootfs diff");
}

#[test]
fn cri_checkpointed_pod_restores_into_a_new_pod() {
    let Some(cri) = Cri::setup() else { return };
    let env = Env::new();
    let (pod, c) = cri.run_counter_pod("orig", HANDLER);
    cri.wait_count_above(&c, 10);
    let d = cri.dump(&env, &c, &[]).ok().json();
    let path = PathBuf::from(d["path"].as_str().expect("path"));
    // Without --leave-running the original stops, as a checkpoint before a move does.
    cedana_e2e::wait_for(
        "the original to stop",
        std::time::Duration::from_secs(10),
        || (cri.state(&c) == ContainerState::ContainerExited).then_some(()),
    );
    cri.remove_pod(&pod.id).expect("delete the original pod");
    let last = checkpointed_count(&unpacked(&path));
    // As kubelet would pass it: a pod annotation (containerd copies it onto the sandbox
    // too, which must start as usual).
    let (_, c2, started) = cri.restore_pod("copy", &path, true);
    started.unwrap_or_else(|e| panic!("restore start: {e}\n{}", cri.ctrd.log_tail()));
    check_restored(&cri, &c2, last);
}

/// A checkpoint archive (tar, or zstd by its name) unpacked into a dir beside it.
fn unpacked(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    let out = path.with_extension("unpacked");
    fs::create_dir_all(&out).expect("mkdir");
    let mut tar = std::process::Command::new("tar");
    if path.extension().is_some_and(|e| e == "zst") {
        tar.arg("--zstd");
    }
    let r = tar
        .arg("-xf")
        .arg(path)
        .arg("-C")
        .arg(&out)
        .output()
        .expect("tar");
    assert!(r.status.success(), "{r:?}");
    out
}

#[test]
fn cri_leave_running_checkpoint_in_forensic_layout_restores_beside_the_original() {
    let Some(cri) = Cri::setup() else { return };
    let env = Env::new();
    let (_pod, c) = cri.run_counter_pod("orig", HANDLER);
    cri.wait_count_above(&c, 10);
    // Kubernetes' checkpoint API keeps the container running and writes an uncompressed
    // tar in the forensic layout.
    let d = cri
        .dump(&env, &c, &["--leave-running", "--compression", "tar"])
        .ok()
        .json();
    let archive = PathBuf::from(d["path"].as_str().expect("path"));
    let names = archive_names(&archive);
    for want in [
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "checkpoint/inventory.img",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing: {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("checkpoint/pages-")),
        "{names:?}"
    );
    let last = checkpointed_count(&archive);
    // The original counts on.
    assert_eq!(cri.state(&c), ContainerState::ContainerRunning);
    cri.wait_count_above(&c, last + 5);
    let (_, c2, started) = cri.restore_pod("copy", &archive, false);
    started.unwrap_or_else(|e| panic!("restore start: {e}\n{}", cri.ctrd.log_tail()));
    check_restored(&cri, &c2, last);
    assert_eq!(cri.state(&c), ContainerState::ContainerRunning);

    // Damaged: one CRIU image flipped. Missing: a path with nothing there.
    let bad = env.path("damaged.tar");
    let mut bytes = fs::read(&archive).expect("archive");
    let at = find(&bytes, b"pagemap").expect("a pagemap entry") + 1024;
    bytes[at] ^= 0xff;
    fs::write(&bad, bytes).expect("damaged copy");
    let missing = env.path("no-such-checkpoint");
    // Nothing stuck: the failed pods leave no shim and no mount behind once removed.
    let (shims, mounts) = (cri.ctrd.live_shims().len(), cri.ctrd.mounts().len());
    for (name, path, why) in [
        ("damaged", &bad, "damaged"),
        ("missing", &missing, "no such file"),
    ] {
        let (pod, c3, started) = cri.restore_pod(name, path, false);
        let e = started.expect_err("a bad checkpoint must not start");
        let msg = e.message().to_lowercase();
        assert!(
            msg.contains(RESTORE_ANNOTATION) && msg.contains(why),
            "{name}: {e}"
        );
        let st = cri.status(&c3);
        assert_eq!(
            st.state(),
            ContainerState::ContainerExited,
            "{name}: {st:?}"
        );
        assert!(
            st.message.to_lowercase().contains(why),
            "{name}: status {st:?}"
        );
        cri.remove_container(&c3)
            .expect("the failed container can be removed");
        cri.remove_pod(&pod.id).expect("its pod can be removed");
    }
    assert!(
        cedana_e2e::containerd::wait_until(std::time::Duration::from_secs(10), || {
            cri.ctrd.live_shims().len() == shims
        }),
        "shims left by the failed restores: {} before, {:?} now",
        shims,
        cri.ctrd.live_shims()
    );
    assert_eq!(cri.ctrd.mounts().len(), mounts, "{:?}", cri.ctrd.mounts());
    assert_eq!(cri.state(&c), ContainerState::ContainerRunning);
}

#[test]
fn cri_dump_of_an_unknown_container_says_so() {
    let Some(cri) = Cri::setup() else { return };
    let env = Env::new();
    cri.dump(&env, "no-such-container", &[])
        .fails_with("no-such-container");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Entry names of a tar archive, without a leading `./`.
fn archive_names(path: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(fs::File::open(path).expect("archive"));
    a.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let p = e.path().expect("path").to_string_lossy().into_owned();
            p.trim_start_matches("./").trim_end_matches('/').to_string()
        })
        .collect()
}

/// `cedana dump k8s POD` finds the pod's container through CRI and checkpoints it; an
/// unknown pod or container is named; a pod on a runtime that is not runc-based is
/// refused with why, before anything is frozen, and keeps running.
#[test]
fn cri_dump_k8s_finds_the_pod_and_refuses_other_runtimes() {
    let Some(cri) = Cri::setup() else { return };
    let env = Env::new();
    let address = cri.ctrd.socket().display().to_string();
    let dir = env.checkpoints().display().to_string();
    let dump_k8s = |args: &[&str]| {
        let mut all = vec!["--json", "dump", "k8s"];
        all.extend(args);
        all.extend([
            "--containerd-address",
            &address,
            "--dir",
            &dir,
            "--no-server",
        ]);
        env.cedana(&all)
    };
    let (_, c) = cri.run_counter_pod("counter", HANDLER);
    let (_, other) = cri.run_counter_pod("elsewhere", STANDIN_HANDLER);
    let before = cri.wait_count_above(&other, 2);
    cri.wait_count_above(&c, 3);
    let d = dump_k8s(&["counter", "--namespace", "default", "--leave-running"])
        .ok()
        .json();
    assert_eq!(d["metadata"]["containerd"]["id"], c.as_str(), "{d}");
    assert_eq!(d["metadata"]["containerd"]["namespace"], "k8s.io", "{d}");
    assert_eq!(cri.state(&c), ContainerState::ContainerRunning);
    dump_k8s(&["nosuchpod"]).fails_with("no pod named \"nosuchpod\"");
    dump_k8s(&["counter", "--container", "web"]).fails_with("no container named \"web\"");
    let r = dump_k8s(&["elsewhere"]).fails_with("io.containerd.standin.v2");
    assert!(r.stderr.contains("runc-based"), "{}", r.stderr);
    assert_eq!(cri.state(&other), ContainerState::ContainerRunning);
    cri.wait_count_above(&other, before + 3);
}
