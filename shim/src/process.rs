//! One process of a container (the init or an exec): its state machine, PID, stdio and
//! exit. Exits arrive from the reaper; they are published only after the start event was
//! (a process that exits at once still reports start, then exit, in that order).

use std::sync::Mutex;
use std::time::SystemTime;

use containerd_shim_protos::api::Status;
use tokio::sync::{watch, Mutex as AsyncMutex};

use crate::io::{ProcessIo, StdioPaths};
use crate::reaper::Exit;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Frozen (pause).
    Paused,
    /// Exited.
    Stopped,
}

/// A process of a container.
pub struct Process {
    /// Container id.
    pub container_id: String,
    /// Exec id ("" for the init).
    pub exec_id: String,
    /// Stdio paths.
    pub stdio: StdioPaths,
    inner: Mutex<Inner>,
    /// The shim's side of the stdio.
    pub io: AsyncMutex<Option<ProcessIo>>,
    exit_tx: watch::Sender<Option<Exit>>,
    /// Opened once the start event was published (exit events wait for it).
    pub started_tx: watch::Sender<bool>,
}

struct Inner {
    pid: i32,
    state: State,
}

impl Process {
    /// A new, created process.
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio,
            inner: Mutex::new(Inner {
                pid: 0,
                state: State::Created,
            }),
            io: AsyncMutex::new(None),
            exit_tx: watch::channel(None).0,
            started_tx: watch::channel(false).0,
        }
    }

    /// The id containerd uses in events (exec id, or the container id for the init).
    pub fn event_id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.container_id
        } else {
            &self.exec_id
        }
    }

    /// PID (0 before start for exec and restored processes).
    pub fn pid(&self) -> i32 {
        self.inner.lock().expect("process").pid
    }

    /// Sets the PID.
    pub fn set_pid(&self, pid: i32) {
        self.inner.lock().expect("process").pid = pid;
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.inner.lock().expect("process").state
    }

    /// Moves to `state` unless already stopped (an exit always wins).
    pub fn set_state(&self, state: State) {
        let mut i = self.inner.lock().expect("process");
        if i.state != State::Stopped {
            i.state = state;
        }
    }

    /// Records the exit.
    pub fn set_exited(&self, exit: Exit) {
        self.inner.lock().expect("process").state = State::Stopped;
        self.exit_tx.send_replace(Some(exit));
    }

    /// The exit, if it happened.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit_tx.borrow()
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit_tx.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The sender lives in self: unreachable while self exists.
                return Exit {
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }

    /// Waits until the start event was published.
    pub async fn wait_started(&self) {
        let mut rx = self.started_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// containerd's view of the state.
    pub fn status(&self) -> Status {
        match self.state() {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped => Status::STOPPED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_wins_over_later_state_changes() {
        let p = Process::new("c", "", StdioPaths::default());
        assert_eq!(p.status(), Status::CREATED);
        p.set_state(State::Running);
        p.set_exited(Exit {
            status: 7,
            at: SystemTime::now(),
        });
        p.set_state(State::Running);
        assert_eq!(p.state(), State::Stopped);
        assert_eq!(p.wait().await.status, 7);
        assert_eq!(p.event_id(), "c");
    }
}
