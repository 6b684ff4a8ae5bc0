//! Kubernetes' path into containerd without a kubelet: a private containerd (see
//! [`Containerd`]) with its CRI plugin on, our shim registered as runtime handler
//! `cedana` (and containerd's runc shim as `runc`), an offline pause image and the busybox
//! image imported into namespace `k8s.io`, and a CRI (`runtime.v1`) client that runs the
//! calls kubelet runs: RunPodSandbox, CreateContainer, StartContainer, ContainerStatus,
//! ExecSync, logs, Stop/Remove. Pods use the host network, so no CNI is needed. A third
//! handler, `standin`, runs pods on a runtime that is neither (see [`STANDIN_HANDLER`]).
//!
//! What this sandbox needs (ENVIRONMENT.md): `restrict_oom_score_adj` (no
//! CAP_SYS_RESOURCE for the sandbox's oom_score_adj of -998), no `hostname` in a
//! host-network pod's config, and `sandbox_image` naming the offline pause image.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use crate::containerd::{build_busybox_image_with, containerd_available, Containerd, IMAGE};
use crate::{wait_for, Env, Run};

/// A CRI call's result (the status boxed: it is large).
pub type CriResult<T> = Result<T, Box<tonic::Status>>;

/// The runtime handler (a RuntimeClass's `handler`) that names our shim.
pub const HANDLER: &str = "cedana";
/// The handler of containerd's own runc shim.
pub const RUNC_HANDLER: &str = "runc";
/// A handler on a runtime that is neither runc nor ours (`io.containerd.standin.v2`):
/// a stand-in for kata, gVisor and the like, whose shim is ours under another name, so
/// its pods run but cedana must refuse to checkpoint them.
pub const STANDIN_HANDLER: &str = "standin";
/// The containerd namespace the CRI plugin keeps pods in.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The offline pause image (`sandbox_image`): busybox that sleeps.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:cedana-offline";
/// The annotation our shim restores a new container from.
pub const RESTORE_ANNOTATION: &str = "cedana.io/restore-from";

/// A counter for pods: like [`crate::containerd::COUNTER`] (1, 2, 3, ... appended to
/// /count every 0.1 s), and each number also on stdout, so the container's CRI log grows.
pub const POD_COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo $i; echo $i >> /count; sleep 0.1; done";

/// A private containerd with CRI, and a CRI client to it.
pub struct Cri {
    /// The containerd (its `ctr` calls use namespace `k8s.io`).
    pub ctrd: Containerd,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// The CRI plugin's config: runtimes `runc` and `cedana` (our shim, passed the
/// `cedana.io/*` annotations of pods and containers), the offline sandbox image, and
/// what this sandbox needs (see the module doc). CNI dirs are private and empty:
/// host-network pods need none.
pub fn config(d: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{runc}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{runc}]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{standin}]
      runtime_type = "io.containerd.standin.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{cedana}]
      runtime_type = "io.containerd.cedana.v2"
      pod_annotations = ["cedana.io/*"]
      container_annotations = ["cedana.io/*"]
"#,
        root = d.join("root").display(),
        state = d.join("state").display(),
        sock = d.join("c.sock").display(),
        cni = d.join("cni").display(),
        pause = PAUSE_IMAGE,
        runc = RUNC_HANDLER,
        cedana = HANDLER,
        standin = STANDIN_HANDLER,
    )
}

/// The parts of a pod the tests choose.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Pod name (also its uid, made unique).
    pub name: String,
    /// Runtime handler.
    pub handler: String,
}

/// A pod the harness ran.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Sandbox id.
    pub id: String,
    /// Its config, which each CreateContainer repeats.
    pub config: PodSandboxConfig,
}

impl Cri {
    /// A private containerd with CRI, the pause and busybox images imported into
    /// `k8s.io`, and a client; None (with the reason printed) when the end-to-end tests
    /// cannot run here.
    #[track_caller]
    pub fn setup() -> Option<Cri> {
        if !crate::e2e_enabled() || !containerd_available() {
            return None;
        }
        let mut ctrd = Containerd::start_with(config);
        ctrd.namespace = K8S_NAMESPACE.into();
        ctrd.import_busybox();
        let d = ctrd.dir.path().to_path_buf();
        let pause = d.join("pause-oci.tar");
        // PID 1 of the sandbox: killed with SIGKILL when the pod stops.
        build_busybox_image_with(
            &d.join("pause-build"),
            &pause,
            PAUSE_IMAGE,
            &["/bin/sleep", "2147483647"],
        );
        ctrd.ok(&["image", "import", &pause.display().to_string()]);
        // The stand-in runtime's shim, on containerd's PATH (DIR/bin).
        fs::create_dir_all(d.join("bin")).expect("shim dir");
        std::os::unix::fs::symlink(
            crate::bin("containerd-shim-cedana-v2"),
            d.join("bin/containerd-shim-standin-v2"),
        )
        .expect("stand-in shim");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = ctrd.socket();
        let channel = rt
            .block_on(containerd_client::connect(&socket))
            .expect("connect to containerd's CRI socket");
        let client = RuntimeServiceClient::new(channel);
        Some(Cri { ctrd, rt, client })
    }

    /// Runs a CRI call on the harness's runtime.
    fn call<T>(
        &self,
        f: impl FnOnce(
            RuntimeServiceClient<Channel>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>>,
        >,
    ) -> CriResult<T> {
        self.rt
            .block_on(f(self.client.clone()))
            .map(tonic::Response::into_inner)
            .map_err(Box::new)
    }

    /// Where pod `name`'s container logs go.
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        self.ctrd.dir.path().join("pods").join(pod)
    }

    /// Runs a host-network pod (RunPodSandbox) with `annotations`.
    pub fn run_pod(&self, spec: &PodSpec, annotations: HashMap<String, String>) -> CriResult<Pod> {
        let log_dir = self.log_dir(&spec.name);
        fs::create_dir_all(&log_dir).expect("pod log dir");
        let uid = format!(
            "{}-{}",
            spec.name,
            self.ctrd.dir.path().display().to_string().replace('/', "")
        );
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.clone(),
                uid,
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            annotations,
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: spec.handler.clone(),
        };
        let id = self
            .call(|mut c| Box::pin(async move { c.run_pod_sandbox(req).await }))?
            .pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// Creates container `name` in `pod` running `sh -c script`, with `annotations`.
    pub fn create_container(
        &self,
        pod: &Pod,
        name: &str,
        script: &str,
        annotations: HashMap<String, String>,
    ) -> CriResult<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into()],
            args: vec!["-c".into(), script.into()],
            log_path: format!("{name}.log"),
            annotations,
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        Ok(self
            .call(|mut c| Box::pin(async move { c.create_container(req).await }))?
            .container_id)
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> CriResult<()> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.call(|mut c| Box::pin(async move { c.start_container(req).await }))
            .map(|_| ())
    }

    /// A pod on `handler` with one started container `name` running `script`.
    pub fn run_counter_pod(&self, name: &str, handler: &str) -> (Pod, String) {
        let pod = self
            .run_pod(
                &PodSpec {
                    name: name.into(),
                    handler: handler.into(),
                },
                HashMap::new(),
            )
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.ctrd.log_tail()));
        let c = self
            .create_container(&pod, "counter", POD_COUNTER, HashMap::new())
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.ctrd.log_tail()));
        self.start_container(&c)
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.ctrd.log_tail()));
        (pod, c)
    }

    /// ContainerStatus.
    pub fn status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.call(|mut c| Box::pin(async move { c.container_status(req).await }))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .status
            .expect("a container status")
    }

    /// The container's state as CRI reports it.
    pub fn state(&self, id: &str) -> ContainerState {
        ContainerState::try_from(self.status(id).state).unwrap_or(ContainerState::ContainerUnknown)
    }

    /// ExecSync `cmd` in the container: (exit code, stdout, stderr).
    pub fn exec(&self, id: &str, cmd: &[&str]) -> CriResult<(i32, String, String)> {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        self.call(|mut c| Box::pin(async move { c.exec_sync(req).await }))
            .map(|r| {
                (
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout).into_owned(),
                    String::from_utf8_lossy(&r.stderr).into_owned(),
                )
            })
    }

    /// Every number in the container's /count, read with ExecSync.
    pub fn counts(&self, id: &str) -> Vec<u64> {
        match self.exec(id, &["cat", "/count"]) {
            Ok((0, out, _)) => out.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            _ => Vec::new(),
        }
    }

    /// Waits until the container's /count passes `above`; returns its last number.
    pub fn wait_count_above(&self, id: &str, above: u64) -> u64 {
        wait_for(
            &format!("{id}'s counter to pass {above}"),
            Duration::from_secs(30),
            || self.counts(id).last().copied().filter(|v| *v > above),
        )
    }

    /// The numbers the container printed to stdout, from its CRI log file (lines of
    /// `TIME STREAM TAG MESSAGE`).
    pub fn log_counts(&self, id: &str) -> Vec<u64> {
        let path = self.status(id).log_path;
        fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3)?.trim().parse().ok())
            .collect()
    }

    /// StopContainer (with a grace period of `timeout` seconds).
    pub fn stop_container(&self, id: &str, timeout: i64) -> CriResult<()> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.call(|mut c| Box::pin(async move { c.stop_container(req).await }))
            .map(|_| ())
    }

    /// RemoveContainer.
    pub fn remove_container(&self, id: &str) -> CriResult<()> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call(|mut c| Box::pin(async move { c.remove_container(req).await }))
            .map(|_| ())
    }

    /// StopPodSandbox and RemovePodSandbox (its containers go with it).
    pub fn remove_pod(&self, id: &str) -> CriResult<()> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(|mut c| Box::pin(async move { c.stop_pod_sandbox(req).await }))?;
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(|mut c| Box::pin(async move { c.remove_pod_sandbox(req).await }))
            .map(|_| ())
    }

    /// `cedana dump containerd ID --namespace k8s.io` against this containerd, without a
    /// daemon, into `env`'s checkpoint dir, with `extra` flags.
    pub fn dump(&self, env: &Env, id: &str, extra: &[&str]) -> Run {
        let address = self.ctrd.socket().display().to_string();
        let dir = env.checkpoints().display().to_string();
        let mut args = vec![
            "--json",
            "dump",
            "containerd",
            id,
            "--containerd-address",
            &address,
            "--namespace",
            K8S_NAMESPACE,
            "--dir",
            &dir,
            "--no-server",
        ];
        args.extend(extra);
        env.cedana(&args)
    }

    /// A new pod on handler `cedana` whose container `counter` carries the restore
    /// annotation naming `checkpoint` (with `on_pod`, the pod carries it instead, as
    /// kubelet passes only pod annotations, and containerd copies it onto the sandbox
    /// too): created and started (the start's result returned).
    pub fn restore_pod(
        &self,
        name: &str,
        checkpoint: &Path,
        on_pod: bool,
    ) -> (Pod, String, CriResult<()>) {
        let path = checkpoint.display().to_string();
        let pod_annotations = if on_pod {
            HashMap::from([(RESTORE_ANNOTATION.to_string(), path.clone())])
        } else {
            HashMap::new()
        };
        let pod = self
            .run_pod(
                &PodSpec {
                    name: name.into(),
                    handler: HANDLER.into(),
                },
                pod_annotations,
            )
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.ctrd.log_tail()));
        let annotations = if on_pod {
            HashMap::new()
        } else {
            HashMap::from([(RESTORE_ANNOTATION.into(), path)])
        };
        // The command is what a fresh start would run; a restore never runs it.
        let c = self
            .create_container(&pod, "counter", POD_COUNTER, annotations)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.ctrd.log_tail()));
        let started = self.start_container(&c);
        (pod, c, started)
    }

    /// Ids of every pod sandbox CRI knows.
    pub fn pods(&self) -> Vec<String> {
        let req = ListPodSandboxRequest { filter: None };
        self.call(|mut c| Box::pin(async move { c.list_pod_sandbox(req).await }))
            .map(|r| r.items.into_iter().map(|p| p.id).collect())
            .unwrap_or_default()
    }
}

/// Host network (no CNI), pod-wide PID and IPC namespaces as kubelet's defaults.
fn host_network() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        // Through CRI first, so its own records go; the containerd harness then removes
        // whatever is left and stops containerd.
        for id in self.pods() {
            let _ = self.remove_pod(&id);
        }
    }
}
