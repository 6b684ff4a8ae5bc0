//! The container section of metadata.json (`container`), written by the runc plugin for
//! runc and containerd checkpoints alike.

use serde::{Deserialize, Serialize};

use crate::image::metadata::MetadataSection;

/// Layout of a container checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerLayout {
    /// runc's own: CRIU images at the top, as `runc checkpoint --image-path` writes them.
    #[default]
    Images,
    /// Portable (Podman/CRI-O style): `checkpoint/` (CRIU images), `config.dump` and
    /// `spec.dump` (the OCI config), `rootfs-diff.tar` (what the container changed).
    Portable,
}

/// What a container checkpoint records about its container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerMeta {
    /// Container id at dump time.
    pub id: String,
    /// OCI runtime binary that made the checkpoint.
    pub runtime: String,
    /// Its version line.
    pub runtime_version: String,
    /// Runtime state root (`--root`).
    pub root: String,
    /// Bundle directory at dump time.
    pub bundle: String,
    /// Root filesystem at dump time.
    pub rootfs: String,
    /// When the container was created (RFC 3339, from the runtime's state).
    pub created: String,
    /// How the checkpoint is laid out.
    pub layout: ContainerLayout,
    /// Entries in rootfs-diff.tar (portable layout).
    pub rootfs_diff_entries: u64,
    /// Paths in `deleted.files` (portable layout): removed from the rootfs at restore.
    pub rootfs_deleted_entries: u64,
    /// Since when rootfs changes were taken (RFC 3339) and from what (`upperdir`,
    /// `baseline`, `init-start`): see `plugins/runc/rootfs_diff.rs`.
    pub rootfs_diff_since: String,
    /// Files the container held open outside its mount namespace, which CRIU dumped as
    /// external and restore hands back open (see `plugins/runc/external.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_files: Vec<ExternalFile>,
}

/// A file a container had open that lives outside its mount namespace (a host log file
/// its stdout was redirected to, the host's /dev/null after a restore).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalFile {
    /// CRIU's key, `file[MNT_ID:INODE]` in hex: `--external` at dump, `--inherit-fd` at
    /// restore.
    pub key: String,
    /// Its host path at dump time, reopened at restore.
    pub path: String,
    /// The descriptors holding it at dump time, as `PID:FD` (for messages).
    pub fds: Vec<String>,
}

impl MetadataSection for ContainerMeta {
    const KEY: &'static str = "container";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::metadata::Metadata;

    #[test]
    fn the_section_sits_at_the_top_of_metadata_json_as_before() {
        let mut md = Metadata {
            kind: crate::plugins::runc::KIND,
            ..Default::default()
        };
        let container = ContainerMeta {
            id: "c1".into(),
            layout: ContainerLayout::Portable,
            ..Default::default()
        };
        md.set_section(&container).expect("set");
        let json: serde_json::Value = serde_json::to_value(&md).expect("json");
        assert_eq!(json["kind"], "runc");
        assert_eq!(json["container"]["id"], "c1");
        assert_eq!(json["container"]["layout"], "portable");
        let back: Metadata = serde_json::from_value(json).expect("parse");
        assert_eq!(
            back.section::<ContainerMeta>().expect("ok"),
            Some(container)
        );
        assert_eq!(format!("{:?}", back.kind), "Runc");
        let mut broken = back;
        broken
            .sections
            .insert("container".into(), serde_json::json!({"id": 5}));
        let e = broken.section::<ContainerMeta>().expect_err("damaged");
        assert!(e.to_string().contains("container"), "{e}");
    }
}
