//! Requests and responses of the engine's operations, as the transports build them, and
//! the contexts they travel in through the chains. Nothing here knows a plugin: what is
//! specific to a runtime travels as a [`Target`] of the plugin's own type.

mod context;
mod extensions;
mod target;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use context::{DumpCtx, RestoreCtx};
pub use extensions::Extensions;
pub use target::{CloneTarget, Target};

use crate::chain::StepTiming;
use crate::image::compression::Compression;
use crate::image::metadata::{CheckpointKind, Metadata};
use crate::process::state::ProcessInfo;
use crate::streamer::{RemoteShards, ShardSink};

/// CRIU options a caller may force. `None` lets the engine detect the right value from
/// the process's real state (or, on restore, from the checkpoint's metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CriuFlags {
    /// Checkpoint/restore established TCP connections.
    pub tcp_established: Option<bool>,
    /// Restore TCP connections as closed.
    pub tcp_close: Option<bool>,
    /// Checkpoint/restore file locks.
    pub file_locks: Option<bool>,
    /// The tree belongs to a session/terminal outside it.
    pub shell_job: Option<bool>,
    /// Allow link remapping of unlinked or hard-linked open files.
    pub link_remap: Option<bool>,
    /// External resources in CRIU's `--external` syntax.
    pub external: Vec<String>,
}

/// Checkpoint a process tree.
#[derive(Debug, Clone, Default)]
pub struct DumpRequest {
    /// Root of the tree.
    pub pid: i32,
    /// Directory the checkpoint goes into (default: `checkpoint.dir`).
    pub dir: Option<PathBuf>,
    /// Checkpoint name (default: generated from the process name, PID and time).
    pub name: Option<String>,
    /// How the checkpoint is packed (default: `checkpoint.compression`).
    pub compression: Option<Compression>,
    /// Keep the tree running after the dump (default: `checkpoint.leave_running`).
    pub leave_running: Option<bool>,
    /// Options to force.
    pub flags: CriuFlags,
    /// Write the CRIU images straight into this directory, with metadata.json beside
    /// them (an OCI runtime's `--image-path` semantics): no staging, no packing, `dir`, `name` and
    /// `compression` unused. The directory may exist but must hold no checkpoint.
    pub image_path: Option<PathBuf>,
    /// Stream the images through N compressed shards (`criu --stream`) instead of
    /// writing them out and packing them; the checkpoint is then a directory. `Some(0)`
    /// asks for the archive; `None` packs the archive unless `streams_by_default`.
    pub streams: Option<u32>,
    /// With `streams` and `compression` unset: stream into one shard per core (capped)
    /// wherever the route can, else fall back to the archive and record why (metadata
    /// `packing`). The CLI and the daemon set it; library callers opt in.
    pub streams_by_default: bool,
    /// What to checkpoint when it is not a plain process tree (a container, ...): its
    /// kind picks the route, and the plugin owning that kind finds the tree.
    pub target: Option<Box<dyn Target>>,
    /// Where a streamed dump's shards go instead of the checkpoint's directory (a kata
    /// guest sends them to the host as CRIU writes them); their digests are recorded.
    pub shard_sink: Option<ShardSink>,
}

/// `kind()`, `target::<T>()` and `target_mut::<T>()` for a request with a `target` field.
macro_rules! target_access {
    ($request:ty, $what:literal) => {
        impl $request {
            #[doc = concat!("What is being ", $what, ", which picks the route.")]
            pub fn kind(&self) -> CheckpointKind {
                self.target
                    .as_ref()
                    .map_or(CheckpointKind::PROCESS, |t| t.kind())
            }

            /// The target as `T`, when it is one.
            pub fn target<T: Target>(&self) -> Option<&T> {
                target::downcast(self.target.as_deref())
            }

            /// The target as a mutable `T`, when it is one.
            pub fn target_mut<T: Target>(&mut self) -> Option<&mut T> {
                target::downcast_mut(self.target.as_deref_mut())
            }
        }
    };
}

target_access!(DumpRequest, "checkpointed");

/// A finished checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpResponse {
    /// Where the checkpoint is (directory or archive).
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// How it is packed.
    pub compression: Compression,
    /// Bytes on disk (archive size, or sum of the directory's files).
    pub size_bytes: u64,
    /// Wall time of the whole dump in milliseconds.
    pub duration_ms: u64,
    /// Its metadata.
    pub metadata: Metadata,
    /// Time each step of the chain took (filled by the engine after the chain).
    #[serde(default)]
    pub profile: Vec<StepTiming>,
}

/// Restore a process tree from a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Checkpoint directory or archive.
    pub path: PathBuf,
    /// Options to force over those recorded in the checkpoint.
    pub flags: CriuFlags,
    /// Write the restored root PID to this file.
    pub pid_file: Option<PathBuf>,
    /// Restore the tree without its memory and serve the pages over userfaultfd (`criu
    /// lazy-pages`) while it runs; process trees only.
    pub lazy: bool,
    /// What to restore into (a new container, ...); `None` restores a plain process tree.
    pub target: Option<Box<dyn Target>>,
    /// The streamed checkpoint's shards, read from elsewhere: `path` then holds only its
    /// index and metadata.json (a kata guest reads the shards from the host).
    pub remote_shards: Option<RemoteShards>,
    /// GPU UUID pairs (checkpoint's GPU, this host's GPU): a GPU job restored onto other
    /// GPUs than it ran on (the gpu plugin checks and uses them); empty: the same GPUs.
    pub gpu_map: Vec<(String, String)>,
}

target_access!(RestoreRequest, "restored");

/// A restored process tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreResponse {
    /// PID of the restored root (the original PID).
    pub pid: i32,
    /// Wall time of the whole restore in milliseconds.
    pub duration_ms: u64,
    /// Metadata of the checkpoint restored from.
    pub metadata: Metadata,
    /// Exit status of the restored container when the restore waited for it (a container
    /// restored in the foreground); `None` when it runs on.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Time each step of the chain took (filled by the engine after the chain).
    #[serde(default)]
    pub profile: Vec<StepTiming>,
}

/// Start a process to be managed as a job.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Program (a path, or a name looked up in PATH).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory (default: `/`).
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// File receiving stdout and stderr (appended).
    pub log_path: PathBuf,
    /// The log, already open: used instead of opening `log_path`, so a caller that must
    /// open it with someone else's rights (the daemon, for its caller) can.
    pub log_file: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Run the program as this user instead of as ourselves.
    pub user: Option<RunAs>,
}

/// A user a program runs as: set in the child (groups, then gid, then uid) before exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAs {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A started process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResponse {
    /// Its PID; the caller is its parent and must reap it.
    pub pid: i32,
}

/// Adopt an existing process.
#[derive(Debug, Clone, Default)]
pub struct ManageRequest {
    /// The process.
    pub pid: i32,
}

/// An adopted process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManageResponse {
    /// What it is.
    pub info: ProcessInfo,
}
