//! What a caller (CLI, daemon, shim, `cedana-runc`) tells the engine about a runc
//! container: which runtime, which state root, which container, and runc's own flags.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::KIND;
use crate::engine::DumpCtx;
use crate::image::metadata::CheckpointKind;
use crate::request::Target;

/// A container of an OCI runtime driven through runc's command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncTarget {
    /// Runtime binary (default: config `runc.binary_path`).
    pub binary: Option<PathBuf>,
    /// State root (`--root`; default: the runtime's own, `/run/runc` for runc).
    pub root: Option<PathBuf>,
    /// Container id.
    pub id: String,
    /// `--log` file of the runtime.
    pub log: Option<PathBuf>,
    /// `--log-format` (`text` or `json`).
    pub log_format: Option<String>,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--debug`.
    pub debug: bool,
    /// `--criu` (the CRIU binary runc should use).
    pub criu: Option<PathBuf>,
    /// Other global flags, passed through untouched before the subcommand.
    pub extra_global_args: Vec<String>,
}

impl RuncTarget {
    /// A container `id` of the configured runtime in state root `root`.
    pub fn new(id: impl Into<String>, root: Option<PathBuf>) -> Self {
        Self {
            id: id.into(),
            root,
            ..Default::default()
        }
    }
}

/// Checkpoint a runc container (the target of a `runc` dump).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncDump {
    /// The container.
    pub target: RuncTarget,
    /// runc's `--work-path` (CRIU's logs); default: a temp dir kept only on failure
    /// (portable checkpoints) or the image path (runc's default).
    pub work_path: Option<PathBuf>,
    /// `checkpoint` flags the engine does not interpret, passed through untouched
    /// (e.g. `--manage-cgroups-mode soft`, `--auto-dedup`).
    pub extra_args: Vec<String>,
}

/// Restore into a runc container (the target of a `runc` restore).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncRestore {
    /// The container to create (its id must be free).
    pub target: RuncTarget,
    /// Bundle directory (`--bundle`): its `config.json`, or, for a portable checkpoint
    /// without one, the checkpoint's `spec.dump` written there; its rootfs must be a
    /// fresh copy of the original container's.
    pub bundle: PathBuf,
    /// `--detach`: return once the container runs (else wait for it to exit).
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-subreaper`.
    pub no_subreaper: bool,
    /// `--work-path` (CRIU's restore log).
    pub work_path: Option<PathBuf>,
    /// `restore` flags passed through untouched.
    pub extra_args: Vec<String>,
    /// The runtime's stdout and stderr (runc maps the container's checkpointed stdio
    /// pipes onto them); `None`: the caller's own.
    pub stdio: Option<RuncStdio>,
}

/// A descriptor given to the runtime as its stdout and stderr (its stdin is /dev/null),
/// typically the write end of a job's log pipe. Shared, so requests stay `Clone`;
/// two are equal when they are the same descriptor.
#[derive(Debug, Clone)]
pub struct RuncStdio(pub Arc<OwnedFd>);

impl PartialEq for RuncStdio {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RuncStdio {}

impl Target for RuncDump {
    fn kind(&self) -> CheckpointKind {
        KIND
    }
}

impl Target for RuncRestore {
    fn kind(&self) -> CheckpointKind {
        KIND
    }

    fn images_may_lack_metadata(&self) -> bool {
        // runc's --image-path: a directory runc itself wrote is restored as is.
        true
    }
}

/// The runc container a dump route works on: the request's own target, or the one a
/// plugin routing through runc resolved its target to (containerd: the runc container
/// under its shim), handed on in the context.
pub fn dump_target(ctx: &DumpCtx) -> Option<&RuncDump> {
    ctx.ext.get::<RuncDump>().or_else(|| ctx.req.target())
}
