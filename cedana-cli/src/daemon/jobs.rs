//! The job manager: runs, adopts, checkpoints and restores jobs by calling the engine,
//! and keeps the store in step. Each job's process is watched by a reaper (our child:
//! waitpid) or a poller (not our child: /proc every 500 ms); both carry the generation
//! of the incarnation they watch, so a stale one never overwrites a restored job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cedana_runtime::engine::{Engine, ManageRequest, RunRequest};
use cedana_runtime::plugins::runc::runtime::Runtime;
use cedana_runtime::plugins::runc::RuncRun;

use super::convert;
use super::error::DaemonError;
use super::procfs;
use super::store::{now, ContainerRef, JobRecord, Store, FROZEN, HALTED, RUNNING};
use crate::proto;

/// Longest accepted job id (it names the log file).
const MAX_JID_LEN: usize = 64;

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

/// Checks a user-chosen job id: it names a log file, so keep it to a safe alphabet.
pub fn validate_jid(jid: &str) -> Result<()> {
    let ok = !jid.is_empty()
        && jid.len() <= MAX_JID_LEN
        && !jid.starts_with('.')
        && jid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DaemonError::InvalidArgument(format!(
            "invalid job id {jid:?}: use 1 to {MAX_JID_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
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

    /// A job whose process is still there (not halted), or why not.
    pub fn live_job(&self, jid: &str) -> Result<JobRecord> {
        let job = self.job(jid)?;
        if job.state == HALTED {
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

    pub(super) fn insert(
        &self,
        jid: &str,
        pid: i32,
        kind: &str,
        command: String,
        log: String,
        container: Option<ContainerRef>,
    ) -> Result<JobRecord> {
        let job = JobRecord {
            jid: jid.to_string(),
            pid,
            kind: kind.to_string(),
            state: RUNNING.to_string(),
            exit_code: None,
            command,
            log_path: log,
            start_time_ticks: procfs::start_ticks(pid),
            created_at: now(),
            updated_at: now(),
            container,
        };
        self.store.insert_job(&job)?;
        Ok(job)
    }

    /// `run`: start a program as a job; the daemon is its parent and reaps it. With
    /// `req.runc`, a container instead (see [`JobManager::run_runc`]).
    pub async fn run(self: &Arc<Self>, mut req: proto::RunRequest) -> Result<JobRecord> {
        let jid = self.fresh_jid(req.jid.take())?;
        let log_path = self.log_path(&jid, req.log_path.take())?;
        if let Some(r) = req.runc.take() {
            return self.run_runc(jid, r, log_path).await;
        }
        let command = command_line(&req.program, &req.args);
        let resp = self
            .engine
            .run(RunRequest {
                program: req.program,
                args: req.args,
                cwd: req.cwd.map(PathBuf::from),
                env: req.env.into_iter().map(|e| (e.key, e.value)).collect(),
                log_path: log_path.clone(),
            })
            .await?;
        let generation = self.bump_generation(&jid);
        let job = self.insert(
            &jid,
            resp.pid,
            "process",
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
            &jid,
            pid,
            "runc",
            format!("runc container {}", container.id),
            log_path.display().to_string(),
            Some(ContainerRef {
                id: container.id.clone(),
                root: container.root.clone(),
                bundle: r.bundle,
            }),
        )?;
        self.spawn_poller(&jid, pid, job.start_time_ticks, generation);
        tracing::info!(jid, pid, container = container.id, "container started");
        Ok(job)
    }

    /// The job log: the one asked for, else `jobs.log_dir/JID.log`; its dir is created.
    fn log_path(&self, jid: &str, requested: Option<String>) -> Result<PathBuf> {
        let log_path = match requested.filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => self.engine.config().jobs.log_dir.join(format!("{jid}.log")),
        };
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
                context: format!("cannot create log directory {}", dir.display()),
                source,
            })?;
        }
        Ok(log_path)
    }

    /// `manage`: adopt a running process (or, with `req.runc`, a container); it is not
    /// our child, so it is polled.
    pub async fn manage(self: &Arc<Self>, req: proto::ManageRequest) -> Result<JobRecord> {
        let jid = self.fresh_jid(req.jid)?;
        if let Some(c) = req.runc {
            return self.manage_runc(jid, c).await;
        }
        let pid = req.pid;
        let info = self.engine.manage(ManageRequest { pid }).await?.info;
        let command = if info.cmdline.is_empty() {
            format!("[{}]", info.comm)
        } else {
            command_line(&info.cmdline[0], &info.cmdline[1..])
        };
        let generation = self.bump_generation(&jid);
        let job = self.insert(&jid, pid, "managed", command, String::new(), None)?;
        self.spawn_poller(&jid, pid, job.start_time_ticks, generation);
        tracing::info!(jid, pid, "process adopted");
        Ok(job)
    }

    /// `manage runc`: adopt a running container; its init PID from `runtime state`.
    async fn manage_runc(
        self: &Arc<Self>,
        jid: String,
        c: proto::RuncContainer,
    ) -> Result<JobRecord> {
        let state = self.runc_states(&c).await?.pop().unwrap_or_default();
        if state.status != "running" || state.pid <= 0 {
            return Err(DaemonError::Engine(
                cedana_runtime::plugins::runc::error::RuncError::NotRunning {
                    id: c.id.clone(),
                    status: state.status,
                }
                .into(),
            ));
        }
        let generation = self.bump_generation(&jid);
        let job = self.insert(
            &jid,
            state.pid,
            "runc",
            format!("runc container {}", c.id),
            String::new(),
            Some(ContainerRef {
                id: c.id.clone(),
                root: c.root.clone(),
                bundle: state.bundle,
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
    pub fn freeze(&self, target: Option<proto::Target>, freeze: bool) -> Result<()> {
        use proto::target::Target;
        let signal = |pid| {
            if freeze {
                self.engine.freeze(pid)
            } else {
                self.engine.unfreeze(pid)
            }
        };
        match target.and_then(|t| t.target) {
            Some(Target::Pid(pid)) => Ok(signal(pid)?),
            Some(Target::Jid(jid)) => {
                let job = self.live_job(&jid)?;
                signal(job.pid)?;
                let state = if freeze { FROZEN } else { RUNNING };
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
