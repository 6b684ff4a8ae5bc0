//! Child reaping for the shim, which is a child subreaper: container init and exec
//! processes are re-parented to it when `runc create/exec --detach` returns, and runtime
//! invocations (`runc ...`) are its children too.
//!
//! One SIGCHLD loop reaps every child with `waitpid(-1, WNOHANG)`. An exit goes to whoever
//! claimed that PID; an exit nobody claimed yet (a container that exits before `runc
//! create` has returned and its PID file has been read) is kept, so a later claim gets it
//! at once: exit statuses are never lost. Unclaimed exits are pruned after
//! [`UNCLAIMED_TTL`] to bound memory; PIDs are not reused that fast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long an exit nobody has claimed is remembered.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// How a child ended: its exit status (128 + signal when killed) and when.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, or 128 + signal number.
    pub status: i32,
    /// When the shim reaped it.
    pub at: SystemTime,
}

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// The reaper: cheap to clone, one per shim process.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl Reaper {
    /// Starts the SIGCHLD loop on the current tokio runtime.
    pub fn start() -> std::io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Returns a receiver that gets `pid`'s exit (at once if it already happened).
    pub fn claim(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.table.lock().expect("reaper table");
        if let Some((exit, _)) = t.unclaimed.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            t.waiters.insert(pid, tx);
        }
        rx
    }

    /// Reaps every exited child now.
    pub fn reap_all(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid: {e}");
                    return;
                }
            };
            self.deliver(
                pid,
                Exit {
                    status,
                    at: SystemTime::now(),
                },
            );
        }
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        debug!("reaped pid {pid}: status {}", exit.status);
        let mut t = self.table.lock().expect("reaper table");
        if let Some(tx) = t.waiters.remove(&pid) {
            let _ = tx.send(exit);
            return;
        }
        let now = Instant::now();
        t.unclaimed
            .retain(|_, (_, when)| now.duration_since(*when) < UNCLAIMED_TTL);
        t.unclaimed.insert(pid, (exit, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_before_claim_is_kept() {
        let r = Reaper::default();
        r.deliver(
            4242,
            Exit {
                status: 7,
                at: SystemTime::now(),
            },
        );
        let exit = r.claim(4242).await.unwrap();
        assert_eq!(exit.status, 7);
        // Claimed once: a second claim waits for a new exit.
        let mut rx = r.claim(4242);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn claim_then_exit() {
        let r = Reaper::default();
        let rx = r.claim(99);
        r.deliver(
            99,
            Exit {
                status: 137,
                at: SystemTime::now(),
            },
        );
        assert_eq!(rx.await.unwrap().status, 137);
    }
}
