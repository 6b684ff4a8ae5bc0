//! The agent's operations, one connection each: info, list, dump (`dump.rs`), restore
//! (`restore.rs`); and the hold a dumped tree stays in until the host has its checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::GuestError;
use super::transport::Stream;
use super::wire::{self, AgentInfo, Listing, Request};
use super::{container, dump, health, restore};
use crate::engine::Engine;

/// The built-in plugin whose checks (CRIU) matter in a guest.
const PROCESS_PLUGIN: &str = "process";

/// What every connection of one agent shares.
pub(super) struct Served {
    /// The engine, as the host daemon has it.
    pub engine: Arc<Engine>,
    /// Runs the engine's async operations for the connection threads.
    pub rt: tokio::runtime::Handle,
    /// Guest scratch space: `out/` for a dump's index and metadata, `in/` for a restore's.
    pub work: PathBuf,
    /// Where kata-agent lays out containers.
    pub kata_root: PathBuf,
}

/// Serves one request on `s`; a failure is sent back as the reply.
pub(super) fn handle(sv: &Served, mut s: Box<dyn Stream>) {
    let s_ref = s.as_mut();
    let req: Request = match wire::recv_msg(s_ref) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "bad request");
            let _ = wire::send_error(s_ref, &e);
            return;
        }
    };
    tracing::info!(?req, "request");
    let result = match req {
        Request::Info => wire::send_msg(s_ref, &info(sv)),
        Request::List => wire::send_msg(s_ref, &list(sv)),
        Request::Dump(spec) => dump::dump(sv, s_ref, spec),
        // It answers itself: the connection goes to the streamer's reads meanwhile.
        Request::Restore(spec) => return restore::restore(sv, s, spec),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "request failed");
        // The host may have gone already; the log keeps the error.
        let _ = wire::send_error(s.as_mut(), &e);
    }
}

fn info(sv: &Served) -> AgentInfo {
    let mut checks = health::checks();
    // Only the engine's own checks (CRIU): runc and containerd have no place in a guest.
    checks.extend(
        sv.engine
            .check()
            .into_iter()
            .filter(|c| c.plugin == PROCESS_PLUGIN),
    );
    AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        kernel: crate::host::host_info().kernel,
        checks,
    }
}

fn list(sv: &Served) -> Listing {
    let processes = container::processes();
    Listing {
        containers: container::list(&sv.kata_root, &processes),
        processes,
    }
}

/// A tree stopped with SIGSTOP for a dump: resumed on drop unless finished.
pub(super) struct Hold<'a> {
    engine: &'a Engine,
    pid: i32,
    done: bool,
}

impl<'a> Hold<'a> {
    pub(super) fn stop(engine: &'a Engine, pid: i32) -> Result<Self, GuestError> {
        engine.freeze(pid)?;
        Ok(Self {
            engine,
            pid,
            done: false,
        })
    }

    /// The checkpoint is committed on the host: the tree dies, or runs on if asked to.
    pub(super) fn finish(&mut self, leave_running: bool) {
        self.done = true;
        let ended = if leave_running {
            self.engine.unfreeze(self.pid)
        } else {
            crate::engine::freeze::signal_tree(self.pid, nix::sys::signal::Signal::SIGKILL)
        };
        if let Err(e) = ended {
            tracing::error!(pid = self.pid, error = %e, "cannot end the held tree");
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.engine.unfreeze(self.pid) {
                tracing::error!(pid = self.pid, error = %e, "cannot resume the tree after a failed dump");
            }
        }
    }
}
