//! CRIU options the engine can turn on. Recorded in a checkpoint's metadata so that a
//! restore applies the same ones without the caller repeating them.

use serde::{Deserialize, Serialize};

/// The CRIU options used for a dump (and re-applied on restore).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CriuOpts {
    /// Keep the process tree running after the dump.
    pub leave_running: bool,
    /// Checkpoint/restore established TCP connections (TCP repair mode).
    pub tcp_established: bool,
    /// Restore TCP sockets as closed instead of repairing them.
    pub tcp_close: bool,
    /// Checkpoint/restore file locks (flock/posix/ofd).
    pub file_locks: bool,
    /// The tree is attached to a terminal/session it does not own (a "shell job").
    pub shell_job: bool,
    /// Allow link remapping of open-but-unlinked or hard-linked files.
    pub link_remap: bool,
    /// Allow unix sockets whose peer is outside the dumped tree.
    pub ext_unix_sk: bool,
    /// External resources, in CRIU's `--external` syntax (e.g. `mnt[/path]:key`).
    pub external: Vec<String>,
    /// Files already open in the restorer handed to the restored tree: (fd, key).
    #[serde(skip)]
    pub inherit_fds: Vec<(i32, String)>,
}
