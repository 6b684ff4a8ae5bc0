//! Checkpointing jobs: dump (recording the checkpoint), restore (a job from its latest
//! checkpoint, or a path as a new job), and deleting checkpoints (through the store that
//! holds them). A non-root caller acts only on its own processes, jobs and checkpoints,
//! and its paths are opened as itself (`identity.rs`; what it may restore:
//! `restore_guard.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cedana_runtime::adapters::defaults;
use cedana_runtime::error::EngineError;
use cedana_runtime::image::error::ImageError;
use cedana_runtime::image::metadata::Metadata;
use cedana_runtime::plugins::runc::error::RuncError;
use cedana_runtime::plugins::runc::run;
use cedana_runtime::plugins::runc::runtime::{ContainerStatus, Runtime};
use cedana_runtime::plugins::runc::{RuncRestore, RuncStdio};
use cedana_runtime::store::{Location, StoreError};

use super::containers::refuse_containerd_job;
use super::convert::{self, Recorded};
use super::error::DaemonError;
use super::identity::{self, Caller};
use super::jobs::{command_line, new_id, JobManager, Result};
use super::procfs;
use super::store::{now, JobKind, JobRecord, JobState};
use crate::proto;

/// How long an operation that stops a job waits for its watcher to see it halt.
const HALT_WAIT: Duration = Duration::from_secs(5);

/// Where the restored root's stdout went, as recorded in the checkpoint.
fn recorded_log_path(md: &Metadata) -> String {
    let root = md.process.pid;
    md.process
        .open_files
        .iter()
        .find(|f| f.pid == root && f.fd == 1 && f.target.starts_with('/'))
        .map(|f| f.target.clone())
        .unwrap_or_default()
}

impl JobManager {
    /// `dump`: checkpoint a process or a job and record the checkpoint.
    pub async fn dump(
        &self,
        caller: &Caller,
        mut req: proto::DumpRequest,
    ) -> Result<proto::DumpResponse> {
        use proto::target::Target;
        let (pid, job) = match req.target.as_ref().and_then(|t| t.target.clone()) {
            Some(Target::Pid(pid)) => {
                caller.require_process(pid, "dump")?;
                (pid, None)
            }
            // The runc plugin resolves the container's init PID itself; a job's container
            // is checkpointed as that job, so the checkpoint is counted against it.
            Some(Target::Runc(c)) => {
                caller.require_root("dump a container", "a rootful runtime is root power")?;
                (0, self.job_of_container(&c))
            }
            Some(Target::Containerd(_)) => {
                caller.require_root("dump a container", "a rootful runtime is root power")?;
                (0, None)
            }
            Some(Target::Jid(jid)) => {
                let job = self.live_job(caller, &jid, "dump")?;
                refuse_containerd_job(&job, "dump")?;
                // The job may have become someone else's since (a setuid program).
                caller.require_process(job.pid, "dump")?;
                (job.pid, Some(job))
            }
            None => {
                return Err(DaemonError::InvalidArgument(
                    "dump needs a PID or a job id".into(),
                ))
            }
        };
        // A non-root caller's checkpoint dir is opened as the caller, and the engine
        // writes through that descriptor.
        let dir = match caller.is_root() {
            true => None,
            false => {
                let dir = req
                    .dir
                    .clone()
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.engine.config().checkpoint.dir.clone());
                if Location::from_path(&dir).is_ok_and(|l| l.as_local().is_none()) {
                    // The daemon's credentials would write for the caller: root only.
                    return Err(DaemonError::Forbidden(format!(
                        "uid {} may not dump to {}: object storage is reached with the \
                         daemon's credentials, so only root may; dump to a local --dir",
                        caller.uid,
                        dir.display()
                    )));
                }
                let dir = identity::open_writable_dir(caller, &dir, "checkpoints into")?;
                req.dir = Some(identity::fd_path(&dir.fd).display().to_string());
                Some(dir)
            }
        };
        if let Some(c) = job.as_ref().and_then(|j| j.container.as_ref()) {
            caller.require_root("dump a container", "a rootful runtime is root power")?;
            // A container job is checkpointed through its runtime's plugin, as its
            // container.
            let target = match &c.containerd {
                Some(at) => Target::Containerd(proto::ContainerdContainer {
                    id: c.id.clone(),
                    address: Some(at.address.clone()),
                    namespace: Some(at.namespace.clone()),
                }),
                None => Target::Runc(proto::RuncContainer {
                    id: c.id.clone(),
                    root: c.root.clone(),
                }),
            };
            req.target = Some(proto::Target {
                target: Some(target),
            });
        }
        let engine_req = convert::dump_request(&req, pid)?;
        let leave_running = defaults::leave_running(&engine_req, self.engine.config());
        let resp = self.engine.dump(engine_req).await?;
        let path = match &dir {
            None => resp.path.clone(),
            Some(dir) => {
                let name = resp.path.file_name().unwrap_or_default();
                identity::share_with_group(dir, name, caller.gid)?;
                dir.path.join(name)
            }
        };
        let record = convert::dumped_record(
            &resp,
            Recorded {
                id: new_id(),
                jid: job.as_ref().map(|j| j.jid.clone()),
                path: path.display().to_string(),
                created_at: now(),
                owner_uid: caller.uid,
            },
        );
        self.store.insert_checkpoint(&record)?;
        if let (Some(job), false) = (job, leave_running) {
            // CRIU killed the tree; let the watcher record it so `ps` is right at once.
            self.wait_halted(&job.jid).await;
        }
        tracing::info!(pid, path = %path.display(), "checkpoint written");
        Ok(convert::dump_reply(&record, &resp))
    }

    /// The live runc job running container `c`, if any (same id and state root).
    fn job_of_container(&self, c: &proto::RuncContainer) -> Option<JobRecord> {
        let jobs = self.store.list_jobs().ok()?;
        jobs.into_iter().find(|j| {
            j.state != JobState::Halted
                && j.container
                    .as_ref()
                    .is_some_and(|r| r.containerd.is_none() && r.id == c.id && r.root == c.root)
        })
    }

    /// Waits (bounded) until a job is halted.
    pub(super) async fn wait_halted(&self, jid: &str) {
        let deadline = tokio::time::Instant::now() + HALT_WAIT;
        while tokio::time::Instant::now() < deadline {
            match self.store.get_job(jid) {
                Ok(Some(j)) if j.state != JobState::Halted => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `restore`: a job (from its latest checkpoint or a path) or a path (a new job:
    /// a process tree, or a runc or containerd container, `containers.rs`).
    pub async fn restore(
        self: &Arc<Self>,
        caller: &Caller,
        req: proto::RestoreRequest,
    ) -> Result<proto::RestoreResponse> {
        if req.containerd.is_some() || req.runc.is_some() {
            caller.require_root("restore a container", "a rootful runtime is root power")?;
        }
        if req.containerd.is_some() {
            return self.restore_containerd_as_job(caller, &req).await;
        }
        if req.runc.is_some() {
            return self.restore_runc_as_job(caller, &req).await;
        }
        let given_path = req.path.as_deref().filter(|p| !p.is_empty());
        // A job this daemon has never seen, restored from a checkpoint's path (a move
        // from another host): it is re-created under its own id from the checkpoint.
        let mut adopt = None;
        let job = match req.jid.as_deref().filter(|j| !j.is_empty()) {
            Some(jid) => match self.owned_job(caller, jid, "restore") {
                Ok(job) => {
                    refuse_containerd_job(&job, "restore")?;
                    Some(job)
                }
                Err(DaemonError::NoSuchJob(_)) if given_path.is_some() => {
                    adopt = Some(jid.to_string());
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        if let Some(job) = &job {
            let alive = procfs::probe(job.pid);
            if job.state != JobState::Halted
                && alive.is_some()
                && alive == job.start_time_ticks.or(alive)
            {
                return Err(DaemonError::JobRunning {
                    jid: job.jid.clone(),
                    pid: job.pid,
                    what: format!(
                        "kill it first (`cedana job kill {}`), or dump it without --leave-running, which stops it",
                        job.jid
                    ),
                });
            }
        }
        let path = match (given_path, &job) {
            (Some(p), _) => PathBuf::from(p),
            (None, Some(job)) => self
                .store
                .latest_checkpoint(&job.jid)?
                .map(|c| PathBuf::from(c.path))
                .ok_or_else(|| DaemonError::NoCheckpoint(job.jid.clone()))?,
            (None, None) => {
                return Err(DaemonError::InvalidArgument(
                    "restore needs a job id or a checkpoint --path".into(),
                ))
            }
        };
        if let Some(job) = job.as_ref().filter(|j| j.container.is_some()) {
            caller.require_root("restore a container", "a rootful runtime is root power")?;
            if job.kind == JobKind::Containerd {
                return self.restore_containerd_job(job, &req, path).await;
            }
            return self.restore_runc_job(job, &req, path).await;
        }
        // A non-root caller: only its own checkpoint, read through a descriptor opened
        // as the caller; its pid file written as the caller.
        let guard = self.guard_restore(caller, &path)?;
        let mut engine_req = convert::restore_request(&req, path.clone());
        let mut pid_file = None;
        if let Some(g) = &guard {
            engine_req.path = identity::fd_path(&g.fd);
            if let Some(p) = engine_req.pid_file.take() {
                let file = identity::create_file(caller, &p, "the pid file")?;
                pid_file = Some((file, p));
            }
        }
        let resp = self.engine.restore(engine_req).await?;
        if let Some((mut file, name)) = pid_file {
            use std::io::Write;
            writeln!(file, "{}", resp.pid).map_err(|source| DaemonError::Io {
                context: format!(
                    "restored PID {} but cannot write {}",
                    resp.pid,
                    name.display()
                ),
                source,
            })?;
        }
        let pid = resp.pid;
        let jid = match job {
            Some(job) => {
                let generation = self.bump_generation(&job.jid);
                self.store
                    .set_process(&job.jid, pid, procfs::start_ticks(pid))?;
                self.spawn_reaper(&job.jid, pid, generation);
                job.jid
            }
            None => {
                let jid = self.fresh_jid(adopt)?;
                let root = resp.metadata.process.tree.first();
                let command = root
                    .filter(|p| !p.cmdline.is_empty())
                    .map(|p| command_line(&p.cmdline[0], &p.cmdline[1..]))
                    .unwrap_or_else(|| resp.metadata.name.clone());
                let generation = self.bump_generation(&jid);
                self.insert(
                    caller,
                    &jid,
                    pid,
                    JobKind::Restored,
                    command,
                    recorded_log_path(&resp.metadata),
                    None,
                )?;
                self.spawn_reaper(&jid, pid, generation);
                jid
            }
        };
        tracing::info!(jid, pid, path = %path.display(), "restored");
        Ok(convert::restore_reply(&resp, jid, &path))
    }

    /// Restores a runc job into its own container id and bundle: a stopped container of
    /// that id is deleted first (a live one refused); its output goes to a new relay
    /// into the job log. The restored init is not our child, so it is polled.
    async fn restore_runc_job(
        self: &Arc<Self>,
        job: &JobRecord,
        req: &proto::RestoreRequest,
        path: PathBuf,
    ) -> Result<proto::RestoreResponse> {
        let c = job.container.clone().unwrap_or_default();
        let container = proto::RuncContainer {
            id: c.id.clone(),
            root: c.root.clone(),
        };
        match self.runc_states(&container).await {
            Ok(states) => {
                let state = states.into_iter().next().unwrap_or_default();
                if state.status != ContainerStatus::Stopped {
                    return Err(DaemonError::JobRunning {
                        jid: job.jid.clone(),
                        pid: state.pid,
                        what: format!(
                            "its container {} is {}; dump it first (which stops it) or kill it",
                            c.id, state.status
                        ),
                    });
                }
                self.delete_container(&container).await?;
            }
            Err(DaemonError::Engine(e))
                if matches!(
                    e.plugin_error::<RuncError>(),
                    Some(RuncError::NoSuchContainer { .. })
                ) => {}
            Err(e) => return Err(e),
        }
        let stdio = if job.log_path.is_empty() {
            // Adopted without a log: the container's output is dropped.
            let null = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map_err(|source| DaemonError::Io {
                    context: "cannot open /dev/null".into(),
                    source,
                })?;
            RuncStdio(Arc::new(null.into()))
        } else {
            run::log_relay(Path::new(&job.log_path))?
        };
        let mut runc_req = req.clone();
        runc_req.runc = Some(proto::RuncRestore {
            container: Some(container),
            bundle: c.bundle.clone(),
            detach: true,
        });
        let mut engine_req = convert::restore_request(&runc_req, path.clone());
        if let Some(r) = engine_req.target_mut::<RuncRestore>() {
            r.stdio = Some(stdio);
        }
        let resp = self.engine.restore(engine_req).await?;
        let pid = resp.pid;
        let generation = self.bump_generation(&job.jid);
        let ticks = procfs::start_ticks(pid);
        self.store.set_process(&job.jid, pid, ticks)?;
        self.spawn_poller(&job.jid, pid, ticks, generation);
        tracing::info!(jid = job.jid, pid, container = c.id, path = %path.display(), "container job restored");
        Ok(convert::restore_reply(&resp, job.jid.clone(), &path))
    }

    /// `runtime delete --force` of a container.
    pub(super) async fn delete_container(&self, c: &proto::RuncContainer) -> Result<()> {
        let target = convert::runc_target(c);
        let binary = self.engine.config().runc.binary_path.clone();
        let id = c.id.clone();
        tokio::task::spawn_blocking(move || Runtime::new(&target, &binary)?.delete(&id, true))
            .await
            .map_err(|e| DaemonError::InvalidArgument(format!("runtime delete task failed: {e}")))?
            .map_err(EngineError::from)?;
        Ok(())
    }

    /// Removes a checkpoint's files and record.
    pub fn delete_checkpoint(&self, caller: &Caller, id: &str) -> Result<()> {
        let ck = self
            .store
            .get_checkpoint(id)?
            .ok_or_else(|| DaemonError::NoSuchCheckpoint(id.to_string()))?;
        caller.require_owner(ck.owner_uid, "delete", &format!("checkpoint {id}"))?;
        let original = Path::new(&ck.path);
        // A non-root caller's checkpoint is removed through its directory opened as the
        // caller, who may write there: a directory swapped for a link leads nowhere else.
        let parent = match (caller.is_root(), original.parent()) {
            (false, Some(dir)) if dir.exists() => Some(identity::open_writable_dir(
                caller,
                dir,
                "remove checkpoints from",
            )?),
            _ => None,
        };
        let through = parent
            .as_ref()
            .map(|d| identity::fd_path(&d.fd).join(original.file_name().unwrap_or_default()));
        // The checkpoint's own store removes it (a directory, an archive, or objects).
        let at = match through {
            Some(p) => Location::local(p),
            None => Location::from_path(original).map_err(|e| e.into_engine("path"))?,
        };
        let store = self
            .engine
            .stores()
            .resolve(&at)
            .map_err(EngineError::from)?;
        store.delete(&at).map_err(|e| match e {
            StoreError::Image(ImageError::Io { source, .. }) => DaemonError::Io {
                context: format!("cannot remove checkpoint {}", original.display()),
                source,
            },
            e => EngineError::from(e).into(),
        })?;
        self.store.delete_checkpoint(id)?;
        Ok(())
    }
}
