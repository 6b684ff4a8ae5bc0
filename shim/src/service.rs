//! The shim: bootstrap (`start` / `delete`) and the task service (ttrpc, task API v2).
//! Task methods are thin: find the container or process, call its verb, publish the
//! event, answer. The work is in container.rs; errors map to ttrpc codes in error.rs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::util::convert_to_any;
use containerd_shim::{Config, Flags, StartOpts};
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
    TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageDyn};
use containerd_shim_protos::shim::oci::{CheckpointOptions, ProcessDetails};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, context::Context};
use log::{info, warn};

use crate::container::{self, Container};
use crate::error::{Result, ShimError};
use crate::io::StdioPaths;
use crate::options;
use crate::process::{Process, State};
use crate::reaper::{Exit, Reaper};
use crate::runtime::CheckpointArgs;
use crate::stats;

/// Runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.cedana.v2";
/// Annotations that group containers into one shim (as containerd's runc shim does).
const GROUP_LABELS: &[&str] = &[
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// How long delete waits for a killed, never-started init to be reaped.
const DELETE_EXIT_WAIT: Duration = Duration::from_secs(10);
/// How often the OOM watcher looks at memory.events.
const OOM_POLL: Duration = Duration::from_secs(1);

/// Bootstrap half of the shim.
pub struct CedanaShim {
    id: String,
    namespace: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// The group a new container's shim belongs to (its own id unless annotated).
fn grouping(bundle: &Path, id: &str) -> String {
    let spec: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    GROUP_LABELS
        .iter()
        .find_map(|k| spec["annotations"][*k].as_str().map(str::to_string))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| id.to_string())
}

#[async_trait]
impl Shim for CedanaShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        CedanaShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let group = grouping(&self.bundle, &opts.id);
        let address = spawn(opts, &group, Vec::new()).await?;
        write_str_to_file(self.bundle.join("address"), &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        let reaper = Reaper::start().map_err(ShimError::io("reaper"))?;
        let rt = container::runtime_for_bundle(&self.bundle, &self.namespace).await;
        if let Err(e) = rt
            .run(
                &reaper,
                vec!["delete".into(), "--force".into(), self.id.clone()],
                None,
            )
            .await
        {
            warn!("shim delete of {}: {e}", self.id);
        }
        container::unmount_rootfs(&self.bundle);
        Ok(api::DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(timestamp(SystemTime::now())).into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let reaper = Reaper::start().expect("SIGCHLD handler");
        TaskService {
            inner: Arc::new(Inner {
                containers: Mutex::new(HashMap::new()),
                reaper,
                publisher,
                namespace: self.namespace.clone(),
                exit: self.exit.clone(),
            }),
        }
    }
}

struct Inner {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    reaper: Reaper,
    publisher: RemotePublisher,
    namespace: String,
    exit: Arc<ExitSignal>,
}

/// The task service (one per shim process, for every container of its group).
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.inner
            .containers
            .lock()
            .expect("containers")
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .inner
            .publisher
            .publish(Context::default(), topic, &self.inner.namespace, event)
            .await
        {
            warn!("publish {topic}: {e}");
        }
    }

    /// Waits for `p`'s exit (from the reaper), records it and publishes it after the
    /// start event.
    fn watch_exit(&self, p: Arc<Process>, pid: i32) {
        let rx = self.inner.reaper.claim(pid);
        let svc = self.clone();
        tokio::spawn(async move {
            let Ok(exit) = rx.await else { return };
            p.set_exited(exit);
            p.wait_started().await;
            if let Some(io) = p.io.lock().await.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(2), io.wait_output()).await;
            }
            svc.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(TaskExit {
                    container_id: p.container_id.clone(),
                    id: p.event_id().to_string(),
                    pid: pid as u32,
                    exit_status: exit.status as u32,
                    exited_at: Some(timestamp(exit.at)).into(),
                    ..Default::default()
                }),
            )
            .await;
        });
    }

    /// Publishes an OOM event whenever the container's cgroup counts a new OOM kill.
    fn watch_oom(&self, c: Arc<Container>, pid: i32) {
        let Ok(dir) = stats::oom_dir(pid) else {
            return;
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let mut seen = stats::oom_kills(&dir);
            while c.init.state() != State::Stopped {
                tokio::time::sleep(OOM_POLL).await;
                let now = stats::oom_kills(&dir);
                if now > seen {
                    seen = now;
                    svc.publish(
                        topics::TASK_OOM_EVENT_TOPIC,
                        Box::new(TaskOOM {
                            container_id: c.id.clone(),
                            ..Default::default()
                        }),
                    )
                    .await;
                }
            }
        });
    }

    async fn do_create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
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
            Box::new(TaskCreate {
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
            }),
        )
        .await;
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn do_start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
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
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            )
            .await;
        } else {
            self.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            )
            .await;
        }
        p.started_tx.send_replace(true);
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn do_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
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
                Box::new(TaskDelete {
                    container_id: req.id.clone(),
                    pid: p.pid() as u32,
                    exit_status: exit.status as u32,
                    exited_at: Some(timestamp(exit.at)).into(),
                    id: req.id.clone(),
                    ..Default::default()
                }),
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

    async fn do_exec(&self, req: api::ExecProcessRequest) -> Result<()> {
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
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(())
    }

    async fn do_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
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

    async fn do_pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
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

    async fn do_checkpoint(&self, req: api::CheckpointTaskRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let o = match req.options.as_ref() {
            Some(any) if !any.value.is_empty() || !any.type_url.is_empty() => {
                if !any
                    .type_url
                    .ends_with("containerd.runc.v1.CheckpointOptions")
                {
                    return Err(ShimError::InvalidArgument(format!(
                        "unknown checkpoint options type {:?}: expected \
                         containerd.runc.v1.CheckpointOptions",
                        any.type_url
                    )));
                }
                CheckpointOptions::parse_from_bytes(&any.value).map_err(|e| {
                    ShimError::InvalidArgument(format!("cannot decode checkpoint options: {e}"))
                })?
            }
            _ => CheckpointOptions::default(),
        };
        let image_path = if o.image_path.is_empty() {
            req.path.clone()
        } else {
            o.image_path.clone()
        };
        if image_path.is_empty() {
            return Err(ShimError::InvalidArgument(
                "checkpoint without an image path".into(),
            ));
        }
        let work_path = if o.work_path.is_empty() {
            c.options.criu_work_path.clone()
        } else {
            o.work_path.clone()
        };
        let args = CheckpointArgs {
            image_path: image_path.clone(),
            work_path,
            leave_running: !o.exit,
            open_tcp: o.open_tcp,
            external_unix_sockets: o.external_unix_sockets,
            terminal: o.terminal,
            file_locks: o.file_locks,
            empty_namespaces: o.empty_namespaces.clone(),
            cgroups_mode: o.cgroups_mode.clone(),
        };
        c.checkpoint(args, &self.inner.reaper).await?;
        self.publish(
            topics::TASK_CHECKPOINTED_EVENT_TOPIC,
            Box::new(TaskCheckpointed {
                container_id: req.id.clone(),
                checkpoint: image_path,
                ..Default::default()
            }),
        )
        .await;
        Ok(())
    }

    async fn do_stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
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

type TtrpcResult<T> = ttrpc::Result<T>;

#[async_trait]
impl Task for TaskService {
    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        Ok(self.do_state(req).await?)
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        Ok(self.do_create(req).await?)
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        Ok(self.do_start(req).await?)
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.do_delete(req).await?)
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        Ok(self.do_pids(req).await?)
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        c.pause(true, &self.inner.reaper).await?;
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: req.id,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        c.pause(false, &self.inner.reaper).await?;
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: req.id,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::new())
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        self.do_checkpoint(req).await?;
        Ok(api::Empty::new())
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        c.kill(&req.exec_id, req.signal, req.all, &self.inner.reaper)
            .await?;
        Ok(api::Empty::new())
    }

    async fn exec(
        &self,
        _: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        self.do_exec(req).await?;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        if let Some(io) = p.io.lock().await.as_ref() {
            io.resize(req.width, req.height)?;
        }
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            if let Some(io) = p.io.lock().await.as_ref() {
                io.close_stdin();
            }
        }
        Ok(api::Empty::new())
    }

    async fn update(
        &self,
        _: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let resources = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update without resources".into()))?;
        c.update(&resources.value, &self.inner.reaper).await?;
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        let exit = p.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status as u32,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        Ok(self.do_stats(req).await?)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container(&req.id).map(|c| c.init.pid()).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if self.inner.containers.lock().expect("containers").is_empty() {
            self.inner.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_from_annotations() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(grouping(d.path(), "c1"), "c1");
        std::fs::write(
            d.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping(d.path(), "c1"), "sb1");
    }
}
