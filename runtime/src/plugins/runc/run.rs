//! Running a container as a daemon job: `runtime run --detach` with no terminal, its
//! stdin on /dev/null and its stdout/stderr on a pipe whose other end a log relay (a
//! `cat` in its own session) appends to the job log.
//!
//! Why a pipe and not the log file itself: CRIU dumps an open regular file by its path
//! in the container's mount namespace, where a host log file does not exist, so such a
//! container could not be checkpointed. runc checkpoints stdio pipes and on restore maps
//! them onto the runtime's own stdio, so a restored container writes to a new relay.
//! The relay is not the daemon's thread, so a daemon restart does not break the pipe.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::error::RuncError;
use super::rootfs_baseline::{self, Baseline};
use super::runtime::{self, ContainerState, Runtime};
use super::target::{RuncStdio, RuncTarget};
use crate::engine::{blocking, Engine, Env};
use crate::error::EngineError;
use crate::oci;

/// The relay: copies its stdin (the pipe) to its stdout (the log, appended).
const RELAY_PROGRAM: &str = "cat";

/// Run a new container (`Engine::run_runc`).
#[derive(Debug, Clone, Default)]
pub struct RuncRun {
    /// The container to create (its id must be free).
    pub target: RuncTarget,
    /// Bundle directory: `config.json` (with `process.terminal` false) and the rootfs.
    pub bundle: PathBuf,
    /// File receiving the container's stdout and stderr (appended).
    pub log_path: PathBuf,
}

/// A started container.
#[derive(Debug, Clone)]
pub struct RuncRunResponse {
    /// Its state right after the start (`pid` is the init's host PID).
    pub state: ContainerState,
}

/// A pipe whose read end a relay process appends to `log`; returns the write end.
/// The relay exits when every write end is closed (the container and its restores gone).
pub fn log_relay(log: &Path) -> Result<RuncStdio, EngineError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| EngineError::io(format!("cannot open log {}", log.display()), e))?;
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::io("create the log pipe", e.into()))?;
    let mut cmd = Command::new(RELAY_PROGRAM);
    cmd.stdin(Stdio::from(read))
        .stdout(Stdio::from(file))
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; its own session keeps the relay out of the
    // daemon's process group and terminal, so it outlives a daemon restart.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| EngineError::io(format!("start the log relay ({RELAY_PROGRAM})"), e))?;
    // Reap it when it ends (if we are gone by then, init does).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(RuncStdio(Arc::new(write)))
}

/// Refuses what cannot run detached as a job before anything starts.
fn check_bundle(bundle: &Path) -> Result<(), RuncError> {
    let spec = oci::read_bundle_spec(bundle).map_err(|e| RuncError::Bundle {
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    })?;
    if oci::uses_terminal(&spec) {
        return Err(RuncError::Bundle {
            path: bundle.to_path_buf(),
            reason: "process.terminal is true: a job has no terminal (its output goes to the \
                     job log); set it to false"
                .into(),
        });
    }
    Ok(())
}

// An operation of this plugin's own, on the engine the transports hold: defined here so
// that the engine's module does not name runc.
impl Engine {
    /// Starts a runc container detached, its output to `req.log_path` (through a relay,
    /// so it can be checkpointed); its init is not our child.
    pub async fn run_runc(&self, req: RuncRun) -> Result<RuncRunResponse, EngineError> {
        run_container(self.env(), req).await
    }
}

/// Starts the container detached, output to the log relay; returns its state.
pub async fn run_container(env: &Env, req: RuncRun) -> Result<RuncRunResponse, EngineError> {
    if req.target.id.is_empty() {
        return Err(EngineError::InvalidRequest {
            field: "id",
            reason: "give the container's id with --id".into(),
        });
    }
    let configured = env.config.runc.binary_path.clone();
    blocking(move || {
        check_bundle(&req.bundle)?;
        let rt = Runtime::new(&req.target, &configured)?;
        let id = req.target.id.clone();
        if rt.exists(&id)? {
            return Err(RuncError::Exists { id }.into());
        }
        let out = log_relay(&req.log_path)?;
        let dup = || {
            out.0
                .try_clone()
                .map_err(|e| EngineError::io("duplicate the log pipe", e))
        };
        let work = tempfile::Builder::new()
            .prefix("cedana-runc-run-")
            .tempdir()
            .map_err(|e| EngineError::io("create a temp dir", e))?;
        let pid_file = work.path().join("pid");
        // What the rootfs holds before the container runs: its later dumps find
        // deletions against it (see rootfs_baseline).
        let baseline = rootfs_baseline::rootfs_of_bundle(&req.bundle).map(|r| Baseline {
            since_ns: rootfs_baseline::now_ns(),
            files: rootfs_baseline::list(&r),
            deleted: Vec::new(),
        });
        let status = rt
            .command()
            .args(runtime::run_args(&req.bundle, Some(&pid_file), &id))
            .stdin(Stdio::null())
            .stdout(dup()?)
            .stderr(dup()?)
            .status()
            .map_err(|e| EngineError::io("start the runtime's run", e))?;
        drop(out);
        if !status.success() {
            return Err(RuncError::Command {
                command: format!("{} run --detach {id}", rt.binary().display()),
                status: status.to_string(),
                detail: format!(
                    "the runtime's message is in the log {}",
                    req.log_path.display()
                ),
            }
            .into());
        }
        if let Some(b) = baseline {
            let dir = rootfs_baseline::state_dir(req.target.root.as_deref(), &id);
            if let Err(e) = rootfs_baseline::write_marker(&dir, &b) {
                tracing::warn!(error = %e, "deletions in this container will not be recorded");
            }
        }
        let mut state = rt.state(&id)?;
        if state.pid <= 0 {
            state.pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
        }
        Ok(RuncRunResponse { state })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_bundle_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.json"),
            crate::oci::tests::spec_json(true, "rootfs"),
        )
        .expect("write");
        let err = check_bundle(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("terminal"), "{err}");
        std::fs::write(
            dir.path().join("config.json"),
            crate::oci::tests::spec_json(false, "rootfs"),
        )
        .expect("write");
        assert!(check_bundle(dir.path()).is_ok());
    }

    #[test]
    fn the_relay_appends_to_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("job.log");
        std::fs::write(&log, "before\n").expect("write");
        let w = log_relay(&log).expect("relay");
        let fd = Arc::try_unwrap(w.0).expect("sole owner");
        let mut f = std::fs::File::from(fd);
        std::io::Write::write_all(&mut f, b"after\n").expect("write");
        drop(f); // EOF: the relay flushes and exits
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if std::fs::read_to_string(&log).expect("read") == "before\nafter\n" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "relay never wrote");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
