//! Kubernetes pods on this node, read through the CRI (`runtime.v1`, the `k8s-cri`
//! client) that containerd serves on its own socket: the calls kubelet makes to list
//! pods and their containers. `query k8s` prints them; `dump k8s` finds a pod's container
//! with [`container_of`].

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ContainerState, ListContainersRequest, ListPodSandboxRequest, PodSandboxState};
use tokio::net::UnixStream;
use tonic::transport::Channel;

/// The annotation our shim restores a new container from (see the shim's
/// `restore_from`), shown with the container.
pub const RESTORE_ANNOTATION: &str = "cedana.io/restore-from";

/// The containerd namespace of CRI's pods.
pub const CONTAINERD_NAMESPACE: &str = "k8s.io";

/// A pod sandbox and its containers.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// `ready` or `notready`.
    pub state: String,
    /// Runtime handler (the RuntimeClass's handler; empty for the default runtime).
    pub handler: String,
    /// Its containers.
    pub containers: Vec<Container>,
}

/// A container of a pod.
#[derive(Debug, Clone)]
pub struct Container {
    /// Container id (containerd's, in namespace k8s.io).
    pub id: String,
    /// Container name in the pod.
    pub name: String,
    /// `created`, `running`, `exited` or `unknown`.
    pub state: String,
    /// Image as the pod named it.
    pub image: String,
    /// The checkpoint it was restored from, if it asked for one.
    pub restore_from: Option<String>,
}

impl Pod {
    /// As JSON (what `--json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        let containers: Vec<_> = self
            .containers
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "name": c.name, "state": c.state, "image": c.image,
                    "restore_from": c.restore_from,
                })
            })
            .collect();
        serde_json::json!({
            "id": self.id, "name": self.name, "namespace": self.namespace, "uid": self.uid,
            "state": self.state, "runtime_handler": self.handler, "containers": containers,
        })
    }
}

/// Connects to the CRI at `socket` (containerd's socket).
pub async fn connect(socket: &Path) -> anyhow::Result<RuntimeServiceClient<Channel>> {
    if let Err(e) = UnixStream::connect(socket).await {
        bail!(
            "cannot reach containerd's CRI at {}: {e}; give containerd's socket with \
             --containerd-address",
            socket.display()
        );
    }
    let channel = crate::client::unix_channel(socket)
        .await
        .with_context(|| format!("cannot connect to containerd at {}", socket.display()))?;
    Ok(RuntimeServiceClient::new(channel))
}

/// A CRI call's failure, with what to do when containerd serves no CRI.
fn cri_error(socket: &Path, call: &str, s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::Unimplemented {
        return anyhow!(
            "containerd at {} does not serve the CRI (runtime.v1): is its CRI plugin \
             (io.containerd.grpc.v1.cri) disabled?",
            socket.display()
        );
    }
    anyhow!("CRI {call} at {}: {}", socket.display(), s.message())
}

/// Pods on this node with their containers, those named `names` (all when empty) in
/// `namespace` (all when None), sorted by namespace and name. A name that matches no
/// pod is an error.
pub async fn pods(
    socket: &Path,
    names: &[String],
    namespace: Option<&str>,
) -> anyhow::Result<Vec<Pod>> {
    let mut client = connect(socket).await?;
    let sandboxes = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .map_err(|s| cri_error(socket, "ListPodSandbox", s))?
        .into_inner()
        .items;
    let containers = client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .map_err(|s| cri_error(socket, "ListContainers", s))?
        .into_inner()
        .containers;
    let mut pods: Vec<Pod> = sandboxes
        .into_iter()
        .filter_map(|s| {
            let m = s.metadata.clone().unwrap_or_default();
            let wanted = (names.is_empty() || names.contains(&m.name))
                && namespace.map_or(true, |ns| ns == m.namespace);
            wanted.then(|| Pod {
                state: state_name(
                    PodSandboxState::try_from(s.state)
                        .map(|st| st.as_str_name())
                        .unwrap_or("unknown"),
                ),
                containers: containers
                    .iter()
                    .filter(|c| c.pod_sandbox_id == s.id)
                    .map(|c| Container {
                        id: c.id.clone(),
                        name: c
                            .metadata
                            .as_ref()
                            .map(|m| m.name.clone())
                            .unwrap_or_default(),
                        state: state_name(
                            ContainerState::try_from(c.state)
                                .map(|st| st.as_str_name())
                                .unwrap_or("unknown"),
                        ),
                        image: c
                            .image
                            .as_ref()
                            .map(|i| i.image.clone())
                            .unwrap_or_default(),
                        restore_from: c.annotations.get(RESTORE_ANNOTATION).cloned(),
                    })
                    .collect(),
                id: s.id,
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                handler: s.runtime_handler,
            })
        })
        .collect();
    if let Some(missing) = names.iter().find(|n| !pods.iter().any(|p| &p.name == *n)) {
        bail!(
            "no pod named {missing:?}{} on this node (containerd at {}); `cedana query k8s` \
             lists them",
            namespace
                .map(|ns| format!(" in namespace {ns:?}"))
                .unwrap_or_default(),
            socket.display()
        );
    }
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(pods)
}

/// Pod `pod` (in `namespace`, else in the only namespace that has one of that name) and
/// its container `container` (else its only running one).
pub async fn container_of(
    socket: &Path,
    pod: &str,
    namespace: Option<&str>,
    container: Option<&str>,
) -> anyhow::Result<(Pod, Container)> {
    let found = pods(socket, &[pod.to_string()], namespace).await?;
    let p = match found.as_slice() {
        [p] => p.clone(),
        many => {
            let namespaces: Vec<&str> = many.iter().map(|p| p.namespace.as_str()).collect();
            bail!(
                "pods named {pod:?} are in namespaces {}: give --namespace",
                namespaces.join(", ")
            )
        }
    };
    let names = || {
        p.containers
            .iter()
            .map(|c| format!("{} ({})", c.name, c.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let c = match container {
        Some(name) => p
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                anyhow!(
                    "pod {pod:?} has no container named {name:?}; it has: {}",
                    names()
                )
            })?,
        None => {
            let running: Vec<&Container> = p
                .containers
                .iter()
                .filter(|c| c.state == "running")
                .collect();
            match running.as_slice() {
                [c] => *c,
                [] => bail!("pod {pod:?} has no running container (it has: {})", names()),
                _ => bail!(
                    "pod {pod:?} runs several containers ({}): give --container",
                    names()
                ),
            }
        }
    };
    Ok((p.clone(), c.clone()))
}

/// `CONTAINER_RUNNING` -> `running`, `SANDBOX_NOTREADY` -> `notready`.
fn state_name(proto: &str) -> String {
    proto
        .split_once('_')
        .map(|(_, s)| s)
        .unwrap_or(proto)
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_short() {
        assert_eq!(state_name("CONTAINER_RUNNING"), "running");
        assert_eq!(state_name("SANDBOX_NOTREADY"), "notready");
        assert_eq!(state_name("unknown"), "unknown");
    }

    #[tokio::test]
    async fn an_absent_socket_says_what_to_give() {
        let e = pods(Path::new("/nonexistent/c.sock"), &[], None)
            .await
            .expect_err("no socket");
        assert!(e.to_string().contains("--containerd-address"), "{e}");
    }
}
