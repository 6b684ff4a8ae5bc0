//! The containerd section of metadata.json (`containerd`): what restore needs to create
//! the new container.

use serde::{Deserialize, Serialize};

use crate::image::metadata::MetadataSection;

/// What a containerd checkpoint records, so restore can create the new container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerdMeta {
    /// Namespace at dump time.
    pub namespace: String,
    /// Container id at dump time.
    pub id: String,
    /// Image reference the container was created from.
    pub image: String,
    /// Runtime name (e.g. `io.containerd.runc.v2`).
    pub runtime: String,
    /// Type URL of the runtime options.
    pub runtime_options_type: String,
    /// The runtime options, protobuf encoded, base64 (as `ctr containers info` shows them).
    pub runtime_options: String,
    /// Snapshotter of the rootfs.
    pub snapshotter: String,
}

impl MetadataSection for ContainerdMeta {
    const KEY: &'static str = "containerd";
}
