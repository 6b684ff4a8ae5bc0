//! Containers as jobs: restoring a container checkpoint through the daemon (`restore
//! runc`, `restore containerd`), and running or adopting a containerd container (`run
//! containerd`, `manage containerd`). The container becomes a job, so its output has a
//! log of its own under `jobs.log_dir` (never the daemon's stdout), `ps` lists it, `job
//! attach` follows it and `job kill` stops it. No container is the daemon's child (runc
//! forks the init and exits; containerd's shim is its parent), so all are polled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedana_runtime::engine::{RestoreRequest, RestoreResponse};
use cedana_runtime::error::EngineError;
use cedana_runtime::plugins::containerd::client::Client as ContainerdClient;
use cedana_runtime::plugins::containerd::error::ContainerdError;
use cedana_runtime::plugins::containerd::run::{ContainerdRun, DEFAULT_RUNTIME};
use cedana_runtime::plugins::containerd::{ContainerdRestore, ContainerdTarget};
use cedana_runtime::plugins::runc::run;
use cedana_runtime::plugins::runc::RuncRestore;

use super::convert;
use super::error::DaemonError;
use super::identity::Caller;
use super::jobs::{JobManager, Result};
use super::store::{ContainerRef, ContainerdAt, JobKind, JobRecord};
use crate::proto;

/// The checkpoint path a container restore needs.
fn checkpoint_path(req: &proto::RestoreRequest, what: &str) -> Result<String> {
    req.path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| DaemonError::InvalidArgument(format!("{what} needs a checkpoint --path")))
}

/// Removes a job log made for a restore that failed (nothing was written to it).
fn forget_log(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(path);
    }
}

/// Refuses `dump job` / `restore job` of a containerd job recorded without where its
/// container lives (by a daemon before containerd jobs kept it), saying what to run
/// instead.
pub fn refuse_containerd_job(job: &JobRecord, verb: &str) -> Result<()> {
    let located = job
        .container
        .as_ref()
        .is_some_and(|c| c.containerd.is_some());
    if job.kind != JobKind::Containerd || located {
        return Ok(());
    }
    Err(DaemonError::InvalidArgument(format!(
        "job {} is a {} recorded without its containerd address: {verb} it with `cedana \
         {verb} containerd` (a dump: `cedana dump containerd ID --namespace NS \
         --containerd-address A`; a restore: `cedana restore containerd --path P --id NEWID`)",
        job.jid, job.command
    )))
}

/// What a restored container is recorded as, once it runs.
struct RestoredJob {
    kind: JobKind,
    command: String,
    container: Option<ContainerRef>,
}

impl JobManager {
    /// Restores `engine_req` and records what runs as job `jid`, its output in `log`
    /// (removed again if the restore fails), polled from then on.
    async fn restore_as_job(
        self: &Arc<Self>,
        caller: &Caller,
        jid: &str,
        log: &Path,
        engine_req: RestoreRequest,
        job: RestoredJob,
    ) -> Result<RestoreResponse> {
        let resp = match self.engine.restore(engine_req).await {
            Ok(resp) => resp,
            Err(e) => {
                forget_log(log);
                return Err(e.into());
            }
        };
        let generation = self.bump_generation(jid);
        let record = self.insert(
            caller,
            jid,
            resp.pid,
            job.kind,
            job.command,
            log.display().to_string(),
            job.container,
        )?;
        self.spawn_poller(jid, resp.pid, record.start_time_ticks, generation);
        Ok(resp)
    }

    /// `restore runc` as a new runc job: its output goes through a log relay into
    /// `jobs.log_dir/JID.log`, and it is dumped and restored like a `run runc` job.
    pub(super) async fn restore_runc_as_job(
        self: &Arc<Self>,
        caller: &Caller,
        req: &proto::RestoreRequest,
    ) -> Result<proto::RestoreResponse> {
        let path = checkpoint_path(req, "restore runc")?;
        let mut req = req.clone();
        let r = req.runc.get_or_insert_with(Default::default);
        // The daemon cannot wait in the foreground for a container to exit: the job runs
        // detached, and `--attach` / `cedana job attach` follow it.
        r.detach = true;
        let container = r.container.clone().unwrap_or_default();
        let bundle = r.bundle.clone();
        let jid = self.fresh_jid(None)?;
        let (log, _) = self.open_log(caller, &jid, None)?;
        let mut engine_req = convert::restore_request(&req, PathBuf::from(&path));
        if let Some(r) = engine_req.target_mut::<RuncRestore>() {
            // runc maps the checkpointed stdio pipes onto its own stdio: the relay's pipe.
            r.stdio = Some(run::log_relay(&log)?);
        }
        let job = RestoredJob {
            kind: JobKind::Runc,
            command: format!("runc container {}", container.id),
            container: Some(ContainerRef {
                id: container.id.clone(),
                root: container.root.clone(),
                bundle,
                containerd: None,
            }),
        };
        let resp = self
            .restore_as_job(caller, &jid, &log, engine_req, job)
            .await?;
        tracing::info!(
            jid,
            pid = resp.pid,
            container = container.id,
            path,
            "container restored as a job"
        );
        Ok(convert::restore_reply(&resp, jid, Path::new(&path)))
    }

    /// `restore containerd` as a new job: containerd's shim writes the container's
    /// output to the job's own log, `jobs.log_dir/JID.log` (a fresh file: a log named
    /// after the container could hold an earlier container's output).
    pub(super) async fn restore_containerd_as_job(
        self: &Arc<Self>,
        caller: &Caller,
        req: &proto::RestoreRequest,
    ) -> Result<proto::RestoreResponse> {
        let path = checkpoint_path(req, "restore containerd")?;
        let jid = self.fresh_jid(None)?;
        let (log, _) = self.open_log(caller, &jid, None)?;
        let mut engine_req = convert::restore_request(req, PathBuf::from(&path));
        let target = match engine_req.target_mut::<ContainerdRestore>() {
            Some(c) => {
                c.log_path = Some(log.clone());
                c.target.clone()
            }
            None => {
                return Err(DaemonError::InvalidArgument(
                    "restore containerd needs the new container".into(),
                ))
            }
        };
        let job = RestoredJob {
            kind: JobKind::Containerd,
            command: containerd_command(&target),
            container: Some(containerd_ref(&target)),
        };
        let resp = self
            .restore_as_job(caller, &jid, &log, engine_req, job)
            .await?;
        tracing::info!(
            jid,
            pid = resp.pid,
            id = target.id,
            path,
            "containerd container restored as a job"
        );
        Ok(convert::restore_reply(&resp, jid, Path::new(&path)))
    }
}

/// How `ps` shows a containerd container.
fn containerd_command(t: &ContainerdTarget) -> String {
    format!(
        "containerd container {} (namespace {}, address {})",
        t.id, t.namespace, t.address
    )
}

/// What the store keeps of a containerd container.
fn containerd_ref(t: &ContainerdTarget) -> ContainerRef {
    ContainerRef {
        id: t.id.clone(),
        root: None,
        bundle: String::new(),
        containerd: Some(ContainerdAt {
            address: t.address.clone(),
            namespace: t.namespace.clone(),
        }),
    }
}

impl JobManager {
    /// `run containerd`: a new container from an image, its output to the job log.
    pub(super) async fn run_containerd(
        self: &Arc<Self>,
        caller: &Caller,
        jid: String,
        req: proto::ContainerdRun,
        args: Vec<String>,
        log: PathBuf,
    ) -> Result<JobRecord> {
        let target = convert::containerd_target(&req.container.unwrap_or_default());
        let run = ContainerdRun {
            target: target.clone(),
            image: req.image,
            args,
            runtime: req
                .runtime
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| DEFAULT_RUNTIME.into()),
            log_path: log.clone(),
        };
        let pid = match self.engine.run_containerd(run).await {
            Ok(pid) => pid,
            Err(e) => {
                forget_log(&log);
                return Err(e.into());
            }
        };
        let job = self.record_containerd_job(caller, &jid, pid, &target, &log)?;
        tracing::info!(jid, pid, id = target.id, "containerd container started");
        Ok(job)
    }

    /// `manage containerd`: adopt a container whose task runs; its PID from containerd.
    pub(super) async fn manage_containerd(
        self: &Arc<Self>,
        caller: &Caller,
        jid: String,
        c: proto::ContainerdContainer,
    ) -> Result<JobRecord> {
        let target = convert::containerd_target(&c);
        let failed = |e: ContainerdError| DaemonError::from(EngineError::from(e));
        let client = ContainerdClient::connect(&target).await.map_err(failed)?;
        client.container().await.map_err(failed)?;
        let task = client.task().await.map_err(failed)?;
        let Some(task) = task.clone().filter(|t| t.is_live()) else {
            return Err(failed(ContainerdError::NotRunning {
                id: target.id.clone(),
                namespace: target.namespace.clone(),
                status: task.map_or_else(|| "no task".into(), |t| t.status_name()),
            }));
        };
        let pid = i32::try_from(task.pid).map_err(|_| {
            DaemonError::InvalidArgument(format!("task PID {} is out of range", task.pid))
        })?;
        let job = self.record_containerd_job(caller, &jid, pid, &target, Path::new(""))?;
        tracing::info!(jid, pid, id = target.id, "containerd container adopted");
        Ok(job)
    }

    /// `job delete` of a containerd job: its container goes too when its task has ended
    /// (as `ctr run --rm` would); a live one (running something else by now) stays.
    pub(super) async fn remove_stopped_containerd(&self, jid: &str, id: &str, at: &ContainerdAt) {
        let target =
            ContainerdTarget::new(id, Some(at.address.clone()), Some(at.namespace.clone()));
        let Ok(client) = ContainerdClient::connect(&target).await else {
            return;
        };
        match client.task().await {
            Ok(Some(task)) if task.is_live() => {}
            Ok(_) => client.remove_container().await,
            Err(e) => tracing::warn!(jid, id, "cannot ask containerd for the task: {e}"),
        }
    }

    /// `restore job` of a containerd job: into its own container id again (a container
    /// of that id whose task has ended is removed first; a live one refused), its output
    /// to the job's log, the job pointed at the restored task.
    pub(super) async fn restore_containerd_job(
        self: &Arc<Self>,
        job: &JobRecord,
        req: &proto::RestoreRequest,
        path: PathBuf,
    ) -> Result<proto::RestoreResponse> {
        let c = job.container.clone().unwrap_or_default();
        let at = c.containerd.clone().unwrap_or_default();
        let target =
            ContainerdTarget::new(&c.id, Some(at.address.clone()), Some(at.namespace.clone()));
        let failed = |e: ContainerdError| DaemonError::from(EngineError::from(e));
        let client = ContainerdClient::connect(&target).await.map_err(failed)?;
        if client.container_exists().await.map_err(failed)? {
            match client.task().await.map_err(failed)? {
                Some(task) if task.is_live() => {
                    return Err(DaemonError::JobRunning {
                        jid: job.jid.clone(),
                        pid: task.pid as i32,
                        what: format!(
                            "its container {} is {}; dump it first (which stops it) or kill it",
                            c.id,
                            task.status_name()
                        ),
                    })
                }
                _ => client.remove_container().await,
            }
        }
        let mut req = req.clone();
        req.containerd = Some(proto::ContainerdRestore {
            container: Some(proto::ContainerdContainer {
                id: c.id.clone(),
                address: Some(at.address),
                namespace: Some(at.namespace),
            }),
            image: None,
        });
        let mut engine_req = convert::restore_request(&req, path.clone());
        if let Some(r) = engine_req.target_mut::<ContainerdRestore>() {
            r.log_path = (!job.log_path.is_empty()).then(|| PathBuf::from(&job.log_path));
        }
        let resp = self.engine.restore(engine_req).await?;
        let pid = resp.pid;
        let generation = self.bump_generation(&job.jid);
        let ticks = super::procfs::start_ticks(pid);
        self.store.set_process(&job.jid, pid, ticks)?;
        self.spawn_poller(&job.jid, pid, ticks, generation);
        tracing::info!(jid = job.jid, pid, id = c.id, path = %path.display(), "containerd job restored");
        Ok(convert::restore_reply(&resp, job.jid.clone(), &path))
    }

    /// Records a running containerd container as job `jid` and polls it.
    fn record_containerd_job(
        self: &Arc<Self>,
        caller: &Caller,
        jid: &str,
        pid: i32,
        target: &ContainerdTarget,
        log: &Path,
    ) -> Result<JobRecord> {
        let generation = self.bump_generation(jid);
        let job = self.insert(
            caller,
            jid,
            pid,
            JobKind::Containerd,
            containerd_command(target),
            log.display().to_string(),
            Some(containerd_ref(target)),
        )?;
        self.spawn_poller(jid, pid, job.start_time_ticks, generation);
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::JobState;

    #[test]
    fn a_containerd_job_is_not_dumped_as_a_process() {
        let mut job = JobRecord {
            jid: "j1".into(),
            pid: 1,
            kind: JobKind::Runc,
            state: JobState::Running,
            exit_code: None,
            command: "containerd container c2 (namespace default, address /s)".into(),
            log_path: String::new(),
            start_time_ticks: None,
            created_at: String::new(),
            updated_at: String::new(),
            container: None,
            owner_uid: 0,
        };
        assert!(refuse_containerd_job(&job, "dump").is_ok());
        job.kind = JobKind::Containerd;
        let e = refuse_containerd_job(&job, "dump").expect_err("refused");
        assert!(e.to_string().contains("cedana dump containerd"), "{e}");
        assert!(e.to_string().contains("namespace default"), "{e}");
    }
}
