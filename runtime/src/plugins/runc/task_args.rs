//! The runtime commands a containerd shim drives besides `checkpoint` (which is
//! [`super::runtime::checkpoint_args`]): `create`, `exec --detach`, `kill` and
//! `restore --detach`, after the global flags, with the same flag constants as the rest
//! of the runc command line. Golden-tested in the shim, whose argument order they keep.

use std::ffi::OsString;
use std::path::Path;

use super::runtime::{
    ALL, BUNDLE, CONSOLE_SOCKET, DETACH, IMAGE_PATH, NO_PIVOT, PID_FILE, WORK_PATH,
};

/// `--process`: the process spec `exec` runs.
const PROCESS: &str = "--process";

/// The flags `create` and `restore` share, then the container id.
fn with_container_tail(
    mut a: Vec<OsString>,
    console_socket: Option<&Path>,
    no_pivot: bool,
    id: &str,
) -> Vec<OsString> {
    if let Some(c) = console_socket {
        a.extend([CONSOLE_SOCKET.into(), c.into()]);
    }
    if no_pivot {
        a.push(NO_PIVOT.into());
    }
    a.push(id.into());
    a
}

/// `create --bundle B --pid-file P [--console-socket S] [--no-pivot] ID`.
pub fn create_args(
    id: &str,
    bundle: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
    no_pivot: bool,
) -> Vec<OsString> {
    let a = vec![
        "create".into(),
        BUNDLE.into(),
        bundle.into(),
        PID_FILE.into(),
        pid_file.into(),
    ];
    with_container_tail(a, console_socket, no_pivot, id)
}

/// `exec --detach --process SPEC --pid-file P [--console-socket S] ID`.
pub fn exec_args(
    id: &str,
    process_json: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
) -> Vec<OsString> {
    let a = vec![
        "exec".into(),
        DETACH.into(),
        PROCESS.into(),
        process_json.into(),
        PID_FILE.into(),
        pid_file.into(),
    ];
    with_container_tail(a, console_socket, false, id)
}

/// `kill [--all] ID SIGNAL`.
pub fn kill_args(id: &str, signal: u32, all: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["kill".into()];
    if all {
        a.push(ALL.into());
    }
    a.extend([id.into(), signal.to_string().into()]);
    a
}

/// Where a detached restore reads its checkpoint and writes its PID.
#[derive(Debug, Clone, Copy)]
pub struct DetachedRestore<'a> {
    /// The container's bundle.
    pub bundle: &'a Path,
    /// The CRIU images.
    pub image_path: &'a Path,
    /// CRIU's work dir (logs).
    pub work_path: &'a Path,
    /// Where the runtime writes the restored init's PID.
    pub pid_file: &'a Path,
    /// `--console-socket`, for a container with a terminal.
    pub console_socket: Option<&'a Path>,
    /// `--no-pivot`.
    pub no_pivot: bool,
}

/// `restore --detach --bundle B --image-path I --work-path W --pid-file P ... ID`.
pub fn restore_detached_args(id: &str, r: &DetachedRestore<'_>) -> Vec<OsString> {
    let a = vec![
        "restore".into(),
        DETACH.into(),
        BUNDLE.into(),
        r.bundle.into(),
        IMAGE_PATH.into(),
        r.image_path.into(),
        WORK_PATH.into(),
        r.work_path.into(),
        PID_FILE.into(),
        r.pid_file.into(),
    ];
    with_container_tail(a, r.console_socket, r.no_pivot, id)
}
