//! The task service: the shim's table of containers (one shim serves every container of
//! its group) and the task verbs that change it or publish an event. Each verb finds the
//! container or process, calls its verb in container.rs, publishes the event (events.rs)
//! and answers; task.rs maps them onto the ttrpc Task methods, startup.rs builds the
//! service. Errors map to ttrpc codes in error.rs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::util::convert_to_any;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskStart,
};
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::topics;
use log::{info, warn};

use crate::container::Container;
use crate::error::{Result, ShimError};
use crate::events::timestamp;
use crate::io::StdioPaths;
use crate::options;
use crate::process::{Process, State};
use crate::reaper::{Exit, Reaper};
use crate::stats;

pub use crate::startup::{CedanaShim, RUNTIME_NAME};

/// How long delete waits for a killed, never-started init to be reaped.
const DELETE_EXIT_WAIT: Duration = Duration::from_secs(10);

/// The task service's state, shared with the watchers.
pub(crate) struct Inner {
    pub(crate) containers: Mutex<HashMap<String, Arc<Container>>>,
    pub(crate) reaper: Reaper,
    pub(crate) publisher: RemotePublisher,
    pub(crate) namespace: String,
    pub(crate) exit: Arc<ExitSignal>,
}

/// The task service (one per shim process, for every container of its group).
#[derive(Clone)]
pub struct TaskService {
    pub(crate) inner: Arc<Inner>,
}

impl TaskService {
    pub(crate) fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.inner
            .containers
            .lock()
            .expect("containers")
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    pub(crate) async fn do_create(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse> {
        if self.container(&req.id).is_ok() {
            return Err(ShimError::AlreadyExists(format!("container {}", req.id)));
        }
        let opts = options::decode(req.options.as_ref())?;
        let c = Arc::new(
            Container::create(&req, opts, &self.inner.namespace, &self.inner.reaper).await?,
        );
        let pid = c.init.pid();
        if pid > 0 {
            self.watch_exit(c.init.clone(), pid);
        }
        self.inner
            .containers
            .lock()
            .expect("containers")
            .insert(req.id.clone(), c.clone());
        info!(
            "created {} (pid {pid}, runtime {})",
            req.id,
            c.runtime.binary.display()
        );
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        )
        .await;
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    pub(crate) async fn do_start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let watched_before = p.pid() > 0;
        let r = c.start(&p, &self.inner.reaper).await;
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                p.started_tx.send_replace(true);
                return Err(e);
            }
        };
        if !watched_before {
            self.watch_exit(p.clone(), pid);
        }
        if req.exec_id.is_empty() {
            self.watch_oom(c.clone(), pid);
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                },
            )
            .await;
        } else {
            self.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                },
            )
            .await;
        }
        p.started_tx.send_replace(true);
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    pub(crate) async fn do_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        if matches!(p.state(), State::Running | State::Paused) {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot delete process {}: it is running",
                p.event_id()
            )));
        }
        if req.exec_id.is_empty() {
            c.delete_runtime(&self.inner.reaper).await?;
            p.started_tx.send_replace(true);
        } else {
            c.execs.lock().expect("execs").remove(&req.exec_id);
            let _ = std::fs::remove_file(c.exec_spec_path(&req.exec_id));
        }
        let exit = if p.pid() > 0 {
            match tokio::time::timeout(DELETE_EXIT_WAIT, p.wait()).await {
                Ok(e) => e,
                Err(_) => {
                    warn!("process {} not reaped after delete", p.event_id());
                    p.exit().unwrap_or(Exit {
                        status: 255,
                        at: SystemTime::now(),
                    })
                }
            }
        } else {
            p.exit().unwrap_or(Exit {
                status: 0,
                at: SystemTime::now(),
            })
        };
        if req.exec_id.is_empty() {
            self.inner
                .containers
                .lock()
                .expect("containers")
                .remove(&req.id);
            self.publish(
                topics::TASK_DELETE_EVENT_TOPIC,
                TaskDelete {
                    container_id: req.id.clone(),
                    pid: p.pid() as u32,
                    exit_status: exit.status as u32,
                    exited_at: Some(timestamp(exit.at)).into(),
                    id: req.id.clone(),
                    ..Default::default()
                },
            )
            .await;
        }
        Ok(api::DeleteResponse {
            pid: p.pid() as u32,
            exit_status: exit.status as u32,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    pub(crate) async fn do_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        if c.init.state() == State::Stopped {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is stopped",
                req.id
            )));
        }
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("exec without a process spec".into()))?;
        {
            let mut execs = c.execs.lock().expect("execs");
            if execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists(format!("exec {}", req.exec_id)));
            }
            std::fs::write(c.exec_spec_path(&req.exec_id), &spec.value)
                .map_err(ShimError::io("write exec process spec"))?;
            let stdio = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            execs.insert(
                req.exec_id.clone(),
                Arc::new(Process::new(&req.id, &req.exec_id, stdio)),
            );
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        )
        .await;
        Ok(())
    }

    pub(crate) async fn do_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let exit = p.exit();
        Ok(api::StateResponse {
            id: p.event_id().to_string(),
            bundle: c.bundle.display().to_string(),
            pid: p.pid() as u32,
            status: p.status().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map(|e| e.status as u32).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub(crate) async fn do_pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let pids = c.pids(&self.inner.reaper).await?;
        let execs: HashMap<u32, String> = c
            .execs
            .lock()
            .expect("execs")
            .values()
            .map(|p| (p.pid() as u32, p.exec_id.clone()))
            .collect();
        let mut processes = Vec::new();
        for pid in pids {
            let mut info = api::ProcessInfo {
                pid,
                ..Default::default()
            };
            if let Some(exec_id) = execs.get(&pid) {
                let d = ProcessDetails {
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                info.info = Some(convert_to_any(Box::new(d))?).into();
            }
            processes.push(info);
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub(crate) async fn do_checkpoint(&self, req: api::CheckpointTaskRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let args = options::checkpoint_args(&req, &c.options.criu_work_path)?;
        let image_path = args.image_path.clone();
        c.checkpoint(args, &self.inner.reaper).await?;
        self.publish(
            topics::TASK_CHECKPOINTED_EVENT_TOPIC,
            TaskCheckpointed {
                container_id: req.id.clone(),
                checkpoint: image_path,
                ..Default::default()
            },
        )
        .await;
        Ok(())
    }

    pub(crate) async fn do_stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let c = self.container(&req.id)?;
        let pid = c.init.pid();
        if pid <= 0 || c.init.state() == State::Stopped {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        Ok(api::StatsResponse {
            stats: Some(stats::metrics_any(pid)?).into(),
            ..Default::default()
        })
    }
}
