//! Kubernetes' path to our shim, without a kubelet (issue 15, item 1): a private
//! containerd with its CRI plugin runs a host-network pod on runtime handler `cedana`
//! (our shim), as kubelet would through a RuntimeClass; its container counts, its CRI log
//! grows, ExecSync works, and Stop/Remove leave nothing behind.

use cedana_e2e::cri::{Cri, HANDLER, RUNC_HANDLER};
use k8s_cri::v1::ContainerState;

fn pod_runs_a_counter(handler: &str) {
    let Some(cri) = Cri::setup() else { return };
    let (pod, c) = cri.run_counter_pod("counter", handler);
    assert_eq!(cri.state(&c), ContainerState::ContainerRunning);
    let first = cri.wait_count_above(&c, 5);
    let later = cri.wait_count_above(&c, first + 5);
    assert!(later > first);
    // The log grows with the count: every number once, in order.
    let logged = cri.log_counts(&c);
    assert!(logged.len() >= 5, "log: {logged:?}");
    assert_eq!(logged, (1..=logged.len() as u64).collect::<Vec<_>>());
    let (code, out, _) = cri
        .exec(&c, &["sh", "-c", "echo hi; exit 3"])
        .expect("exec");
    assert_eq!((code, out.trim()), (3, "hi"));
    // The container is in its own PID namespace (its shell is PID 1).
    let (_, out, _) = cri.exec(&c, &["cat", "/proc/1/cmdline"]).expect("exec");
    assert!(out.starts_with("/bin/sh"), "PID 1 is {out:?}");
    cri.stop_container(&c, 1).expect("StopContainer");
    assert_eq!(cri.state(&c), ContainerState::ContainerExited);
    cri.remove_container(&c).expect("RemoveContainer");
    cri.remove_pod(&pod.id).expect("remove the pod");
    assert!(cri.pods().is_empty());
    assert!(
        cri.ctrd.containers().is_empty(),
        "{:?}",
        cri.ctrd.containers()
    );
    cri.ctrd.assert_no_shims_left();
}

#[test]
fn cri_pod_on_the_cedana_handler_runs_logs_and_execs() {
    pod_runs_a_counter(HANDLER);
}

#[test]
fn cri_pod_on_the_runc_handler_runs_logs_and_execs() {
    pod_runs_a_counter(RUNC_HANDLER);
}
