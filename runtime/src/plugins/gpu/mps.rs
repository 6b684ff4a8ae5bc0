//! NVIDIA MPS (the Multi-Process Service): a CUDA process started where an MPS control
//! daemon listens at its pipe directory runs as an MPS client, whose GPU state lives in
//! the MPS server and cannot be checkpointed. Seen before anything is touched: the
//! process's pipe directory (`CUDA_MPS_PIPE_DIRECTORY` in its environment, else
//! `/tmp/nvidia-mps`) holds the daemon's `control` socket, looked up in the process's own
//! root (a container has its own `/tmp`). Only looked at, never connected to: the path
//! comes from the job's environment, and a root daemon does not dial sockets its callers
//! name.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::GpuError;

/// Where CUDA and the MPS daemon meet when `CUDA_MPS_PIPE_DIRECTORY` is unset.
pub const DEFAULT_PIPE_DIR: &str = "/tmp/nvidia-mps";

/// The MPS pipe directory of a process whose environment (`/proc/PID/environ`, NUL
/// separated) is `environ`.
pub fn pipe_dir(environ: &[u8]) -> PathBuf {
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"CUDA_MPS_PIPE_DIRECTORY="))
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(OsStr::from_bytes(dir)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPE_DIR))
}

/// The MPS control socket process `pid` is a client of, as the process names it; `None`
/// when its pipe directory holds none (or its environment cannot be read).
pub fn control_socket(pid: i32) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let control = pipe_dir(&environ).join("control");
    let relative = control.strip_prefix("/").unwrap_or(&control);
    let seen = Path::new(&format!("/proc/{pid}/root")).join(relative);
    let meta = std::fs::symlink_metadata(seen).ok()?;
    meta.file_type().is_socket().then_some(control)
}

/// The refusal of the first of `pids` that is an MPS client, if one is.
pub fn refusal(pids: &[i32]) -> Option<GpuError> {
    let (pid, socket) = pids
        .iter()
        .find_map(|&p| control_socket(p).map(|s| (p, s)))?;
    Some(GpuError::Unsupported {
        pid,
        reason: format!(
            "it runs as a client of NVIDIA MPS (its MPS pipe directory holds the control \
             socket {}), whose GPU state lives in the MPS server and cannot be checkpointed; \
             run the job without MPS (stop it with `echo quit | nvidia-cuda-mps-control`, or \
             start the job with CUDA_MPS_PIPE_DIRECTORY naming a directory without a daemon) \
             to make it checkpointable; a socket left by a daemon that died is taken for a \
             live one: remove it",
            socket.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipe_dir_comes_from_the_environment_else_the_default() {
        let env = b"HOME=/root\0CUDA_MPS_PIPE_DIRECTORY=/run/mps\0PATH=/bin\0";
        assert_eq!(pipe_dir(env), Path::new("/run/mps"));
        assert_eq!(pipe_dir(b"HOME=/root\0"), Path::new(DEFAULT_PIPE_DIR));
        assert_eq!(
            pipe_dir(b"CUDA_MPS_PIPE_DIRECTORY=\0"),
            Path::new(DEFAULT_PIPE_DIR)
        );
    }
}
