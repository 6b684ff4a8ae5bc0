//! The job manager: runs, adopts, checkpoints and restores jobs by calling the engine,
//! and keeps the store in step. Each job's process is watched by a reaper (our child:
//! waitpid) or a poller (not our child: /proc every 500 ms); both carry the generation
//! of the incarnation they watch, so a stale one never overwrites a restored job.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cedana_runtime::engine::{Engine, ManageRequest, RunRequest};
use cedana_runtime::plugins::runc::runtime::Runtime;
use cedana_runtime::plugins::runc::state::ContainerStatus;
use cedana_runtime::plugins::runc::RuncRun;

use super::convert;
use super::error::DaemonError;
use super::identity::{self, Caller};
use super::procfs;
use super::store::{now, ContainerRef, JobKind, JobRecord, JobState, Store};
use crate::proto;

/// Result type of the manager.
pub type Result<T> = std::result::Result<T, DaemonError>;

/// The job manager.
pub struct JobManager {
    pub(super) engine: Engine,
    pub(super) store: Arc<Store>,
    generations: Mutex<HashMap<String, u64>>,
}

/// A new short random id for a job or checkpoint.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Checks a user-chosen job id (`ids.rs` holds the rules, shared with the CLI).
pub fn validate_jid(jid: &str) -> Result<()> {
    crate::ids::check_jid(jid).map_err(DaemonError::from)
}

/// Shell-like rendering of a command line.
pub(super) fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl JobManager {
    /// A manager over an engine and a store.
    pub fn new(engine: Engine, store: Arc<Store>) -> Arc<Self> {
        Arc::new(Self {
            engine,
            store,
            generations: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a new incarnation of a job; watchers of older ones stop updating it.
    pub(super) fn bump_generation(&self, jid: &str) -> u64 {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(jid.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// Whether `generation` is still the job's current incarnation.
    pub(super) fn is_current(&self, jid: &str, generation: u64) -> bool {
        let g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        g.get(jid).copied() == Some(generation)
    }

    /// A job, or NotFound.
    pub fn job(&self, jid: &str) -> Result<JobRecord> {
        self.store
            .get_job(jid)?
            .ok_or_else(|| DaemonError::NoSuchJob(jid.to_string()))
    }

    /// A job the caller may `verb` (its own, or any for root), or why not.
    pub fn owned_job(&self, caller: &Caller, jid: &str, verb: &str) -> Result<JobRecord> {
        let job = self.job(jid)?;
        caller.require_owner(job.owner_uid, verb, &format!("job {jid}"))?;
        Ok(job)
    }

    /// A job of the caller's whose process is still there (not halted), or why not.
    pub fn live_job(&self, caller: &Caller, jid: &str, verb: &str) -> Result<JobRecord> {
        let job = self.owned_job(caller, jid, verb)?;
        if job.state == JobState::Halted {
            return Err(DaemonError::JobNotRunning {
                jid: jid.to_string(),
                state: job.state,
            });
        }
        Ok(job)
    }

    /// A job as the API shows it.
    pub fn job_proto(&self, j: &JobRecord) -> Result<proto::Job> {
        Ok(convert::job(j, self.store.count_checkpoints(&j.jid)?))
    }

    pub(super) fn fresh_jid(&self, requested: Option<String>) -> Result<String> {
        let jid = requested.filter(|j| !j.is_empty()).unwrap_or_else(new_id);
        validate_jid(&jid)?;
        if self.store.get_job(&jid)?.is_some() {
            return Err(DaemonError::JobExists(jid));
        }
        Ok(jid)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert(
        &self,
        owner: &Caller,
        jid: &str,
        pid: i32,
        kind: JobKind,
        command: String,
        log: String,
        container: Option<ContainerRef>,
    ) -> Result<JobRecord> {
        let job = JobRecord {
            jid: jid.to_string(),
            pid,
            kind,
            state: JobState::Running,
            exit_code: None,
            command,
            log_path: log,
            start_time_ticks: procfs::start_ticks(pid),
            created_at: now(),
            updated_at: now(),
            container,
            owner_uid: owner.uid,
        };
        self.store.insert_job(&job)?;
        Ok(job)
    }

    /// `run`: start a program as a job; the daemon is its parent and reaps it. A
    /// non-root caller's job runs as the caller, its log and cwd opened as the caller.
    /// With `req.runc`, a container instead (root only; see [`JobManager::run_runc`]).
    pub async fn run(
        self: &Arc<Self>,
        caller: &Caller,
        mut req: proto::RunRequest,
    ) -> Result<JobRecord> {
        if req.runc.is_some() || req.containerd.is_some() {
            caller.require_root("run a container", "a rootful runtime is root power")?;
        }
        let jid = self.fresh_jid(req.jid.take())?;
        let (log_path, log_file) = self.open_log(caller, &jid, req.log_path.take())?;
        if let Some(r) = req.runc.take() {
            return self.run_runc(caller, jid, r, log_path).await;
        }
        if let Some(c) = req.containerd.take() {
            let args = match req.program.is_empty() {
                true => Vec::new(),
                false => std::iter::once(req.program).chain(req.args).collect(),
            };
            return self.run_containerd(caller, jid, c, args, log_path).await;
        }
        let cwd = req.cwd.map(PathBuf::from);
        if let (false, Some(dir)) = (caller.is_root(), &cwd) {
            identity::require_enterable(caller, dir)?;
        }
        let command = command_line(&req.program, &req.args);
        let resp = self
            .engine
            .run(RunRequest {
                program: req.program,
                args: req.args,
                cwd,
                env: req.env.into_iter().map(|e| (e.key, e.value)).collect(),
                log_path: log_path.clone(),
                log_file: log_file.map(Arc::new),
                user: (!caller.is_root()).then(|| caller.run_as()),
            })
            .await?;
        let generation = self.bump_generation(&jid);
        let job = self.insert(
            caller,
            &jid,
            resp.pid,
            JobKind::Process,
            command,
            log_path.display().to_string(),
            None,
        )?;
        self.spawn_reaper(&jid, resp.pid, generation);
        tracing::info!(jid, pid = resp.pid, "job started");
        Ok(job)
    }

    /// `run runc`: `runtime run --detach`, output to the job log through a relay. The
    /// container's init is not our child (runc forks it and exits), so it is polled.
    async fn run_runc(
        self: &Arc<Self>,
        caller: &Caller,
        jid: String,
        r: proto::RuncRun,
        log_path: PathBuf,
    ) -> Result<JobRecord> {
        let container = r.container.unwrap_or_default();
        let resp = self
            .engine
            .run_runc(RuncRun {
                target: convert::runc_target(&container),
                bundle: PathBuf::from(&r.bundle),
                log_path: log_path.clone(),
            })
            .await?;
        let pid = resp.state.pid;
        let generation = self.bump_generation(&jid);
        let job = self.insert(
            caller,
            &jid,
            pid,
            JobKind::Runc,
            format!("runc container {}", container.id),
            log_path.display().to_string(),
            Some(ContainerRef {
                id: container.id.clone(),
                root: container.root.clone(),
                bundle: r.bundle,
                containerd: None,
            }),
        )?;
        self.spawn_poller(&jid, pid, job.start_time_ticks, generation);
        tracing::info!(jid, pid, container = container.id, "container started");
        Ok(job)
    }

    /// The job log: the one asked for, else `jobs.log_dir/JID.log`; its dir is created.
    /// For a non-root caller it is also opened: a path it gave, as the caller; the
    /// daemon's own, fresh and handed to the caller (chown).
    pub(super) fn open_log(
        &self,
        caller: &Caller,
        jid: &str,
        requested: Option<String>,
    ) -> Result<(PathBuf, Option<OwnedFd>)> {
        let requested = requested.filter(|p| !p.is_empty()).map(PathBuf::from);
        if let (false, Some(p)) = (caller.is_root(), &requested) {
            let file = identity::open_append(caller, p, "the job log")?;
            return Ok((p.clone(), Some(file.into())));
        }
        let log_path = requested
            .unwrap_or_else(|| self.engine.config().jobs.log_dir.join(format!("{jid}.log")));
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
                context: format!("cannot create log directory {}", dir.display()),
                source,
            })?;
        }
        if caller.is_root() {
            return Ok((log_path, None));
        }
        Ok((log_path.clone(), Some(fresh_log_for(caller, &log_path)?)))
    }

    /// `manage`: adopt a running process (or, with `req.runc`, a container); it is not
    /// our child, so it is polled.
    pub async fn manage(
        self: &Arc<Self>,
        caller: &Caller,
        req: proto::ManageRequest,
    ) -> Result<JobRecord> {
        if req.runc.is_some() || req.containerd.is_some() {
            caller.require_root("manage a container", "a rootful runtime is root power")?;
        }
        let jid = self.fresh_jid(req.jid)?;
        if let Some(c) = req.runc {
            return self.manage_runc(caller, jid, c).await;
        }
        if let Some(c) = req.containerd {
            return self.manage_containerd(caller, jid, c).await;
        }
        let pid = req.pid;
        caller.require_process(pid, "manage")?;
        let info = self.engine.manage(ManageRequest { pid }).await?.info;
        let command = if info.cmdline.is_empty() {
            format!("[{}]", info.comm)
        } else {
            command_line(&info.cmdline[0], &info.cmdline[1..])
        };
        let generation = self.bump_generation(&jid);
        let job = self.insert(
            caller,
            &jid,
            pid,
            JobKind::Managed,
            command,
            String::new(),
            None,
        )?;
        self.spawn_poller(&jid, pid, job.start_time_ticks, generation);
        tracing::info!(jid, pid, "process adopted");
        Ok(job)
    }

    /// `manage runc`: adopt a running container; its init PID from `runtime state`.
    async fn manage_runc(
        self: &Arc<Self>,
        caller: &Caller,
        jid: String,
        c: proto::RuncContainer,
    ) -> Result<JobRecord> {
        let state = self.runc_states(&c).await?.pop().unwrap_or_default();
        if state.status != ContainerStatus::Running || state.pid <= 0 {
            return Err(DaemonError::Engine(
                cedana_runtime::plugins::runc::error::RuncError::NotRunning {
                    id: c.id.clone(),
                    status: state.status.to_string(),
                }
                .into(),
            ));
        }
        let generation = self.bump_generation(&jid);
        let job = self.insert(
            caller,
            &jid,
            state.pid,
            JobKind::Runc,
            format!("runc container {}", c.id),
            String::new(),
            Some(ContainerRef {
                id: c.id.clone(),
                root: c.root.clone(),
                bundle: state.bundle,
                containerd: None,
            }),
        )?;
        self.spawn_poller(&jid, state.pid, job.start_time_ticks, generation);
        tracing::info!(jid, pid = state.pid, container = c.id, "container adopted");
        Ok(job)
    }

    /// `runtime state ID`, or `runtime list` when the id is empty.
    pub async fn runc_states(
        &self,
        c: &proto::RuncContainer,
    ) -> Result<Vec<cedana_runtime::plugins::runc::runtime::ContainerState>> {
        let target = convert::runc_target(c);
        let binary = self.engine.config().runc.binary_path.clone();
        let id = c.id.clone();
        let states = tokio::task::spawn_blocking(move || {
            let rt = Runtime::new(&target, &binary)?;
            if id.is_empty() {
                rt.list()
            } else {
                rt.state(&id).map(|s| vec![s])
            }
        })
        .await
        .map_err(|e| DaemonError::InvalidArgument(format!("runtime query task failed: {e}")))?;
        Ok(states.map_err(cedana_runtime::error::EngineError::from)?)
    }

    /// `freeze`/`unfreeze` of a process or a job.
    pub fn freeze(
        &self,
        caller: &Caller,
        target: Option<proto::Target>,
        freeze: bool,
    ) -> Result<()> {
        let verb = if freeze { "freeze" } else { "unfreeze" };
        use proto::target::Target;
        let signal = |pid| {
            if freeze {
                self.engine.freeze(pid)
            } else {
                self.engine.unfreeze(pid)
            }
        };
        match target.and_then(|t| t.target) {
            Some(Target::Pid(pid)) => {
                caller.require_process(pid, verb)?;
                Ok(signal(pid)?)
            }
            Some(Target::Jid(jid)) => {
                let job = self.live_job(caller, &jid, verb)?;
                signal(job.pid)?;
                let state = if freeze {
                    JobState::Frozen
                } else {
                    JobState::Running
                };
                Ok(self.store.set_state(&jid, state, None)?)
            }
            Some(Target::Runc(_) | Target::Containerd(_)) => Err(DaemonError::InvalidArgument(
                "freeze a runc container with `runc pause` (or `cedana-runc pause`)".into(),
            )),
            None => Err(DaemonError::InvalidArgument(
                "needs a PID or a job id".into(),
            )),
        }
    }
}

/// A new log at a daemon-chosen path for a non-root caller's job: created by root
/// (the caller may not write the daemon's log dir), replacing an older file of that
/// name, then given to the caller, who must be able to read its job's output.
fn fresh_log_for(caller: &Caller, path: &Path) -> Result<OwnedFd> {
    let io_err = |source| DaemonError::Io {
        context: format!("cannot create log {}", path.display()),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err)?;
    std::os::unix::fs::fchown(&file, Some(caller.uid), Some(caller.gid)).map_err(io_err)?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert!(validate_jid("web-1.a_b").is_ok());
        assert!(validate_jid("").is_err());
        assert!(validate_jid("../x").is_err());
        assert!(validate_jid(".hidden").is_err());
        assert_eq!(new_id().len(), 8);
    }

    #[test]
    fn command_lines_quote_spaces() {
        assert_eq!(
            command_line("sh", &["-c".into(), "echo hi".into()]),
            "sh -c 'echo hi'"
        );
    }
}
