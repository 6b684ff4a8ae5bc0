//! Snapshots: an image unpacked into a snapshotter (once per image and snapshotter, as
//! containerd's own client does it: prepare, apply the layer, commit under its chain
//! ID), a container's snapshot prepared on top of it, and a snapshot's mounts.

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::{ApplyRequest, Info, UpdateRequest};
use containerd_client::types::Mount;
use prost_types::FieldMask;

use super::client::{not_found, Client};
use super::error::ContainerdError;
use super::image::ResolvedImage;

/// containerd's default snapshotter on Linux, for a record that names none.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// Label on an image's config blob that keeps its unpacked snapshots from garbage
/// collection (followed by the snapshotter's name).
const GC_SNAPSHOT_LABEL: &str = "containerd.io/gc.ref.snapshot.";

/// `snapshotter`, or containerd's default when empty.
pub fn snapshotter_or_default(snapshotter: &str) -> &str {
    if snapshotter.is_empty() {
        DEFAULT_SNAPSHOTTER
    } else {
        snapshotter
    }
}

impl Client {
    /// The mounts of snapshot `key`.
    pub async fn snapshot_mounts(
        &self,
        snapshotter: &str,
        key: &str,
    ) -> Result<Vec<Mount>, ContainerdError> {
        let req = MountsRequest {
            snapshotter: snapshotter_or_default(snapshotter).into(),
            key: key.into(),
        };
        let r = self
            .snapshots()
            .mounts(self.request(req))
            .await
            .map_err(|s| self.failed(&format!("Snapshots.Mounts {key}"), s))?;
        Ok(r.into_inner().mounts)
    }

    /// Prepares the active snapshot `key` on `parent` (a chain ID, or "" for none).
    pub async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, ContainerdError> {
        let req = PrepareSnapshotRequest {
            snapshotter: snapshotter_or_default(snapshotter).into(),
            key: key.into(),
            parent: parent.into(),
            labels: Default::default(),
        };
        let r = self
            .snapshots()
            .prepare(self.request(req))
            .await
            .map_err(|s| self.failed(&format!("Snapshots.Prepare {key}"), s))?;
        Ok(r.into_inner().mounts)
    }

    /// Removes snapshot `key` (best effort, for cleanup).
    pub async fn remove_snapshot(&self, snapshotter: &str, key: &str) {
        let req = RemoveSnapshotRequest {
            snapshotter: snapshotter_or_default(snapshotter).into(),
            key: key.into(),
        };
        if let Err(s) = self.snapshots().remove(self.request(req)).await {
            if !not_found(&s) {
                tracing::warn!(key, error = %s.message(), "could not remove a snapshot");
            }
        }
    }

    async fn snapshot_exists(&self, snapshotter: &str, key: &str) -> Result<bool, ContainerdError> {
        let req = StatSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
        };
        match self.snapshots().stat(self.request(req)).await {
            Ok(_) => Ok(true),
            Err(s) if not_found(&s) => Ok(false),
            Err(s) => Err(self.failed(&format!("Snapshots.Stat {key}"), s)),
        }
    }

    /// Unpacks `image` into `snapshotter` unless it is there already; the chain ID of its
    /// top layer (the parent of a container's snapshot). Run it under a lease.
    pub async fn unpack(
        &self,
        image: &ResolvedImage,
        snapshotter: &str,
    ) -> Result<String, ContainerdError> {
        let snapshotter = snapshotter_or_default(snapshotter);
        let chain = image.chain_ids();
        if image.layers.len() != chain.len() {
            return Err(ContainerdError::Call {
                call: format!("unpack image {}", image.name),
                detail: format!(
                    "its manifest lists {} layers but its config {}",
                    image.layers.len(),
                    chain.len()
                ),
            });
        }
        let Some(top) = chain.last().cloned() else {
            // An image without layers: the container starts from an empty snapshot.
            return Ok(String::new());
        };
        if self.snapshot_exists(snapshotter, &top).await? {
            return Ok(top);
        }
        let mut parent = String::new();
        for ((layer, diff_id), chain_id) in image.layers.iter().zip(&image.diff_ids).zip(&chain) {
            if !self.snapshot_exists(snapshotter, chain_id).await? {
                self.apply_layer(image, snapshotter, layer, diff_id, &parent, chain_id)
                    .await?;
            }
            parent = chain_id.clone();
        }
        // The config refers to the unpacked snapshot, so the image keeps it alive.
        let label = format!("{GC_SNAPSHOT_LABEL}{snapshotter}");
        let req = UpdateRequest {
            info: Some(Info {
                digest: image.config.digest.clone(),
                labels: [(label.clone(), top.clone())].into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec![format!("labels.{label}")],
            }),
        };
        self.content()
            .update(self.request(req))
            .await
            .map_err(|s| self.failed("Content.Update", s))?;
        Ok(top)
    }

    /// One layer onto `parent`, committed as `chain_id`.
    async fn apply_layer(
        &self,
        image: &ResolvedImage,
        snapshotter: &str,
        layer: &containerd_client::types::Descriptor,
        diff_id: &str,
        parent: &str,
        chain_id: &str,
    ) -> Result<(), ContainerdError> {
        let key = format!(
            "extract-cedana-{}-{chain_id}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let mounts = self.prepare_snapshot(snapshotter, &key, parent).await?;
        let applied = async {
            let req = ApplyRequest {
                diff: Some(layer.clone()),
                mounts,
                payloads: Default::default(),
            };
            let r = self
                .diff()
                .apply(self.request(req))
                .await
                .map_err(|s| self.failed(&format!("Diff.Apply {}", layer.digest), s))?;
            let got = r.into_inner().applied.map(|d| d.digest).unwrap_or_default();
            if got != diff_id {
                return Err(ContainerdError::Call {
                    call: format!("unpack image {}", image.name),
                    detail: format!(
                        "layer {} unpacked to {got}, but the config says {diff_id}",
                        layer.digest
                    ),
                });
            }
            let req = CommitSnapshotRequest {
                snapshotter: snapshotter.into(),
                name: chain_id.into(),
                key: key.clone(),
                labels: Default::default(),
            };
            match self.snapshots().commit(self.request(req)).await {
                Ok(_) => Ok(()),
                // Unpacked meanwhile by someone else: theirs serves as well.
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    self.remove_snapshot(snapshotter, &key).await;
                    Ok(())
                }
                Err(s) => Err(self.failed(&format!("Snapshots.Commit {chain_id}"), s)),
            }
        }
        .await;
        if applied.is_err() {
            self.remove_snapshot(snapshotter, &key).await;
        }
        applied
    }
}
