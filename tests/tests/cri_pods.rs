//! Kubernetes' path to our shim, without a kubelet (issue 15, item 1): a private
//! containerd with its CRI plugin runs a host-network pod on runtime handler `cedana`
//! (our shim), as kubelet would through a RuntimeClass; its container counts, its CRI log
//! grows, ExecSync works, and Stop/Remove leave nothing behind. `cedana query k8s` lists
//! the pod and its container (table and JSON) and says so of a pod that is not there.

use cedana_e2e::cri::{Cri, HANDLER, RUNC_HANDLER};
use cedana_e2e::Env;
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
    query_lists_the_pod(&cri, handler, &c);
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

/// `cedana query k8s` shows pod `counter` and its running container `c`.
fn query_lists_the_pod(cri: &Cri, handler: &str, c: &str) {
    let env = Env::new();
    let address = cri.ctrd.socket().display().to_string();
    let q = |args: &[&str]| {
        let mut all = vec!["query", "k8s", "--containerd-address", &address];
        all.extend(args);
        env.cedana(&all)
    };
    q(&["counter", "--namespace", "default"]).ok();
    let pods = env
        .cedana(&["--json", "query", "k8s", "--containerd-address", &address])
        .ok()
        .json();
    let pods = pods.as_array().expect("a list of pods").clone();
    assert_eq!(pods.len(), 1, "{pods:?}");
    let p = &pods[0];
    assert_eq!(
        (p["name"].as_str(), p["namespace"].as_str()),
        (Some("counter"), Some("default"))
    );
    assert_eq!(p["runtime_handler"], handler);
    assert_eq!(p["state"], "ready");
    let cs = p["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(
        (cs[0]["id"].as_str(), cs[0]["name"].as_str()),
        (Some(c), Some("counter"))
    );
    assert_eq!(cs[0]["state"], "running");
    // The table: one row, the pod, its handler, the container and its id.
    let table = q(&["counter"]).ok().stdout;
    let row = table.lines().nth(1).expect("a row");
    for want in ["default", "counter", handler, "running", c] {
        assert!(
            row.split_whitespace().any(|f| f == want),
            "{want} not in {row:?}"
        );
    }
    q(&["nosuchpod"]).fails_with("no pod named \"nosuchpod\"");
    q(&["counter", "--namespace", "kube-system"]).fails_with("in namespace \"kube-system\"");
}
