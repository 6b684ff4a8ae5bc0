//! `metadata.json`: what a checkpoint holds and how it was made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::criu::options::CriuOpts;
use crate::process::state::ProcessState;

/// Current checkpoint format version; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the metadata inside a checkpoint directory.
pub const METADATA_FILE: &str = "metadata.json";

/// What was checkpointed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// A plain process tree.
    #[default]
    Process,
    /// A runc container.
    Runc,
    /// A containerd container.
    Containerd,
    /// A kata (VM) container.
    Kata,
}

/// Host a checkpoint was taken on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`uname -m`).
    pub arch: String,
}

/// Size and digest of one file of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// Sizes of a checkpoint, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sizes {
    /// Sum of the CRIU image files.
    pub images_bytes: u64,
    /// Size of the packed archive, when packed.
    pub archive_bytes: Option<u64>,
}

/// CRIU's statistics of one dump or restore (its `stats-dump` / `stats-restore`).
/// Times are microseconds, as CRIU counts them; pages are 4 KiB pages on x86.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CriuStats {
    /// The dump's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpStats>,
    /// The restore's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStats>,
}

/// CRIU's `dump_stats_entry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DumpStats {
    /// Time spent freezing the tree.
    pub freezing_time_us: u64,
    /// Time the tree stayed frozen (what the application felt).
    pub frozen_time_us: u64,
    /// Time spent collecting memory.
    pub memdump_time_us: u64,
    /// Time spent writing memory out.
    pub memwrite_time_us: u64,
    /// Pages looked at.
    pub pages_scanned: u64,
    /// Pages left out because a parent image had them.
    pub pages_skipped_parent: u64,
    /// Pages written.
    pub pages_written: u64,
    /// Pages left for lazy restore.
    pub pages_lazy: u64,
}

/// CRIU's `restore_stats_entry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreStats {
    /// Pages compared with the parent's.
    pub pages_compared: u64,
    /// Pages skipped as copy-on-write shared.
    pub pages_skipped_cow: u64,
    /// Time spent forking the tree.
    pub forking_time_us: u64,
    /// Time the whole restore took.
    pub restore_time_us: u64,
    /// Pages restored.
    pub pages_restored: u64,
}

/// Contents of `metadata.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// What was checkpointed.
    pub kind: CheckpointKind,
    /// Checkpoint name.
    pub name: String,
    /// When the dump finished (RFC 3339).
    pub created_at: String,
    /// Host the dump ran on.
    pub host: HostInfo,
    /// CRIU version that made the images.
    pub criu_version: String,
    /// CRIU options the dump used; restore applies the matching ones.
    pub criu_options: CriuOpts,
    /// The process tree as seen before the dump.
    pub process: ProcessState,
    /// Milliseconds spent per phase (e.g. `criu_dump`, `pack`).
    pub timings_ms: BTreeMap<String, u64>,
    /// Sizes.
    pub sizes: Sizes,
    /// Every file of the checkpoint except metadata.json, by relative path.
    pub files: BTreeMap<String, FileDigest>,
    /// CRIU's own figures of the dump (`stats-dump`), when CRIU wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_stats: Option<CriuStats>,
    /// The container, for container checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerMeta>,
    /// containerd's record of the container, for containerd checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdMeta>,
}

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
