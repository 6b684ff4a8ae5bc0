//! A container's task: its state, one created from a checkpoint and started, one
//! killed and deleted.

use std::time::Duration;

use containerd_client::services::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status;
use containerd_client::types::Mount;
use prost_types::Any;

use super::client::{not_found, Client};
use super::error::ContainerdError;

/// How long a killed task may take to exit before it is deleted anyway.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What containerd says of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// Its init process.
    pub pid: u32,
    /// Its status.
    pub status: Status,
}

impl TaskState {
    /// Whether it runs (or is paused), so that it can be checkpointed.
    pub fn is_live(&self) -> bool {
        self.pid > 0 && matches!(self.status, Status::Running | Status::Paused)
    }

    /// Its status in lower case, as users read it (`running`, `stopped`, ...).
    pub fn status_name(&self) -> String {
        self.status.as_str_name().to_lowercase()
    }
}

impl Client {
    /// The container's task; `None` when it has none.
    pub async fn task(&self) -> Result<Option<TaskState>, ContainerdError> {
        let req = GetRequest {
            container_id: self.target().id.clone(),
            exec_id: String::new(),
        };
        match self.tasks().get(self.request(req)).await {
            Ok(r) => Ok(r.into_inner().process.map(|p| TaskState {
                pid: p.pid,
                status: p.status(),
            })),
            Err(s) if not_found(&s) => Ok(None),
            Err(s) => Err(self.failed("Tasks.Get", s)),
        }
    }

    /// Creates the container's task on `rootfs`, with `options` (for a restore: runc
    /// options naming the checkpoint), its stdin from the FIFO `stdin`, stdout and stderr
    /// to the URI `out`.
    pub async fn create_task(
        &self,
        rootfs: Vec<Mount>,
        (stdin, out): (&str, &str),
        options: Option<Any>,
    ) -> Result<(), ContainerdError> {
        let req = CreateTaskRequest {
            container_id: self.target().id.clone(),
            rootfs,
            stdin: stdin.into(),
            stdout: out.into(),
            stderr: out.into(),
            options,
            ..Default::default()
        };
        self.tasks()
            .create(self.request(req))
            .await
            .map_err(|s| self.failed("Tasks.Create", s))?;
        Ok(())
    }

    /// Starts the task (for a task created from a checkpoint: the runtime's restore);
    /// its PID.
    pub async fn start_task(&self) -> Result<i32, ContainerdError> {
        let req = StartRequest {
            container_id: self.target().id.clone(),
            exec_id: String::new(),
        };
        let r = self
            .tasks()
            .start(self.request(req))
            .await
            .map_err(|s| self.failed("Tasks.Start", s))?;
        i32::try_from(r.into_inner().pid).map_err(|_| ContainerdError::Call {
            call: format!("containerd Tasks.Start ({})", self.target().id),
            detail: "the PID it returned is out of range".into(),
        })
    }

    /// Kills the task's processes, waits (a while) for it to exit and deletes it: best
    /// effort, for cleanup.
    pub async fn force_delete_task(&self) {
        let id = self.target().id.clone();
        let kill = KillRequest {
            container_id: id.clone(),
            exec_id: String::new(),
            signal: libc::SIGKILL as u32,
            all: true,
        };
        // A task whose process never started or already exited answers NotFound or
        // FailedPrecondition here, has nothing to wait for, and is deleted all the same.
        match self.tasks().kill(self.request(kill)).await {
            Ok(_) => {
                let wait = WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                };
                let mut tasks = self.tasks();
                let waited = tokio::time::timeout(KILL_WAIT, tasks.wait(self.request(wait)));
                if waited.await.is_err() {
                    tracing::warn!(%id, "killed task did not exit in {KILL_WAIT:?}; deleting it anyway");
                }
            }
            Err(s) => tracing::debug!(%id, error = %s.message(), "kill before delete"),
        }
        let req = DeleteTaskRequest {
            container_id: id.clone(),
        };
        if let Err(s) = self.tasks().delete(self.request(req)).await {
            if !not_found(&s) {
                tracing::warn!(%id, error = %s.message(), "could not delete the task");
            }
        }
    }
}
