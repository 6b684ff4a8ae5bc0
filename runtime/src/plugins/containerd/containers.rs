//! containerd's container records: read one, check an id is free, create one (spec,
//! runtime, snapshot), remove one with its task and snapshot.

use std::collections::HashMap;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, DeleteContainerRequest, GetContainerRequest,
};
use prost_types::Any;

use super::client::{not_found, Client};
use super::error::ContainerdError;
use super::image::ResolvedImage;
use super::options::{RUNC_OPTIONS_TYPE_URL, SPEC_TYPE_URL};

/// The runtime whose containers `ctr` creates with (empty) runc options; the others get
/// none. Restored containers are created the same way.
const RUNC_V2: &str = "io.containerd.runc.v2";

/// A container's record (the fields the plugin uses).
#[derive(Debug, Clone, Default)]
pub struct ContainerInfo {
    /// Image reference.
    pub image: String,
    /// Runtime name, e.g. `io.containerd.runc.v2`.
    pub runtime: String,
    /// The runtime's options, as containerd keeps them.
    pub runtime_options: Option<Any>,
    /// Snapshotter of its root filesystem.
    pub snapshotter: String,
    /// Key of its snapshot.
    pub snapshot_key: String,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// The sandbox (pod) it belongs to, where containerd records one (empty: none).
    pub sandbox: String,
    /// The annotations of its OCI spec (CRI puts the sandbox id there).
    pub annotations: HashMap<String, String>,
}

/// The annotations of a container's OCI spec (JSON); none when it has no readable spec.
fn spec_annotations(spec: Option<&Any>) -> HashMap<String, String> {
    #[derive(serde::Deserialize, Default)]
    struct Annotated {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    spec.and_then(|a| serde_json::from_slice::<Annotated>(&a.value).ok())
        .unwrap_or_default()
        .annotations
}

/// What a new container is made of.
#[derive(Debug, Clone)]
pub struct NewContainer {
    /// Image reference it is created from.
    pub image: String,
    /// Runtime name.
    pub runtime: String,
    /// Snapshotter.
    pub snapshotter: String,
    /// Key of its (prepared) snapshot.
    pub snapshot_key: String,
    /// Its OCI spec.
    pub spec: serde_json::Value,
    /// Labels.
    pub labels: HashMap<String, String>,
}

impl Client {
    /// The container's record; [`ContainerdError::NotFound`] when there is none.
    pub async fn container(&self) -> Result<ContainerInfo, ContainerdError> {
        let t = self.target();
        let req = GetContainerRequest { id: t.id.clone() };
        let c = match self.containers().get(self.request(req)).await {
            Ok(r) => r.into_inner().container.unwrap_or_default(),
            Err(s) if not_found(&s) => {
                return Err(ContainerdError::NotFound {
                    id: t.id.clone(),
                    namespace: t.namespace.clone(),
                    address: t.address.clone(),
                })
            }
            Err(s) => return Err(self.failed("Containers.Get", s)),
        };
        let runtime = c.runtime.unwrap_or_default();
        let annotations = spec_annotations(c.spec.as_ref());
        Ok(ContainerInfo {
            sandbox: c.sandbox,
            annotations,
            image: c.image,
            runtime: runtime.name,
            runtime_options: runtime.options,
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            labels: c.labels,
        })
    }

    /// Whether a container of the id exists.
    pub async fn container_exists(&self) -> Result<bool, ContainerdError> {
        match self.container().await {
            Ok(_) => Ok(true),
            Err(ContainerdError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the container record (its snapshot must be prepared already).
    pub async fn create_container(&self, new: NewContainer) -> Result<(), ContainerdError> {
        let spec = serde_json::to_vec(&new.spec).map_err(|e| ContainerdError::Call {
            call: "encode the container's OCI spec".into(),
            detail: e.to_string(),
        })?;
        let options = (new.runtime == RUNC_V2).then(|| Any {
            type_url: RUNC_OPTIONS_TYPE_URL.into(),
            value: Vec::new(),
        });
        let container = Container {
            id: self.target().id.clone(),
            labels: new.labels,
            image: new.image,
            runtime: Some(Runtime {
                name: new.runtime,
                options,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec,
            }),
            snapshotter: new.snapshotter,
            snapshot_key: new.snapshot_key,
            ..Default::default()
        };
        let req = CreateContainerRequest {
            container: Some(container),
        };
        match self.containers().create(self.request(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Err(ContainerdError::Exists {
                id: self.target().id.clone(),
                namespace: self.target().namespace.clone(),
            }),
            Err(s) => Err(self.failed("Containers.Create", s)),
        }
    }

    /// Creates the container from `image` (unpacked first when the snapshotter lacks it)
    /// on a new snapshot named after it, with `spec` and `runtime`; the image's labels and
    /// `labels` on the record. A lease keeps the unpacked layers and the new snapshot from
    /// containerd's garbage collector until the record refers to them; a failure removes
    /// the snapshot again.
    pub async fn create_from_image(
        &self,
        image: &ResolvedImage,
        runtime: &str,
        snapshotter: &str,
        labels: HashMap<String, String>,
        spec: serde_json::Value,
    ) -> Result<(), ContainerdError> {
        let id = self.target().id.clone();
        let leased = self.leased().await?;
        let created = async {
            let parent = leased.unpack(image, snapshotter).await?;
            leased.prepare_snapshot(snapshotter, &id, &parent).await?;
            let mut all = image.labels.clone();
            all.extend(labels);
            let new = NewContainer {
                image: image.name.clone(),
                runtime: runtime.into(),
                snapshotter: super::snapshots::snapshotter_or_default(snapshotter).into(),
                snapshot_key: id.clone(),
                spec,
                labels: all,
            };
            if let Err(e) = leased.create_container(new).await {
                leased.remove_snapshot(snapshotter, &id).await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        leased.release().await;
        created
    }

    /// Removes the container, its task (killed first) and its snapshot: best effort,
    /// for cleanup after a failed restore.
    pub async fn remove_container(&self) {
        self.force_delete_task().await;
        let info = self.container().await.ok();
        if let Some(info) = info.filter(|i| !i.snapshot_key.is_empty()) {
            let req = RemoveSnapshotRequest {
                snapshotter: info.snapshotter,
                key: info.snapshot_key,
            };
            if let Err(s) = self.snapshots().remove(self.request(req)).await {
                if !not_found(&s) {
                    tracing::warn!(id = %self.target().id, error = %s.message(), "could not remove the container's snapshot");
                }
            }
        }
        let req = DeleteContainerRequest {
            id: self.target().id.clone(),
        };
        if let Err(s) = self.containers().delete(self.request(req)).await {
            if !not_found(&s) {
                tracing::warn!(id = %self.target().id, error = %s.message(), "could not delete the container");
            }
        }
    }
}
