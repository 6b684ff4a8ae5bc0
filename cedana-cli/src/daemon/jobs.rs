//! The job manager: runs, adopts, checkpoints and restores jobs by calling the engine,
//! and keeps the store in step. Each job's process is watched by a reaper (our child:
//! waitpid) or a poller (not our child: /proc every 500 ms); both carry the generation
//! of the incarnation they watch, so a stale one never overwrites a restored job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cedana_runtime::engine::{Engine, ManageRequest, RunRequest};

use super::convert;
use super::error::DaemonError;
use super::procfs;
use super::store::{now, JobRecord, Store, FROZEN, HALTED, RUNNING};
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
        };
        self.store.insert_job(&job)?;
        Ok(job)
    }

    /// `run`: start a program as a job; the daemon is its parent and reaps it.
    pub async fn run(self: &Arc<Self>, req: proto::RunRequest) -> Result<JobRecord> {
        let jid = self.fresh_jid(req.jid)?;
        let log_path = match req.log_path.filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => self.engine.config().jobs.log_dir.join(format!("{jid}.log")),
        };
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
                context: format!("cannot create log directory {}", dir.display()),
                source,
            })?;
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
        )?;
        self.spawn_reaper(&jid, resp.pid, generation);
        tracing::info!(jid, pid = resp.pid, "job started");
        Ok(job)
    }

    /// `manage`: adopt a running process; it is not our child, so it is polled.
    pub async fn manage(self: &Arc<Self>, pid: i32, jid: Option<String>) -> Result<JobRecord> {
        let jid = self.fresh_jid(jid)?;
        let info = self.engine.manage(ManageRequest { pid }).await?.info;
        let command = if info.cmdline.is_empty() {
            format!("[{}]", info.comm)
        } else {
            command_line(&info.cmdline[0], &info.cmdline[1..])
        };
        let generation = self.bump_generation(&jid);
        let job = self.insert(&jid, pid, "managed", command, String::new())?;
        self.spawn_poller(&jid, pid, job.start_time_ticks, generation);
        tracing::info!(jid, pid, "process adopted");
        Ok(job)
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
                let job = self.job(&jid)?;
                if job.state == HALTED {
                    return Err(DaemonError::JobNotRunning {
                        jid,
                        state: job.state,
                    });
                }
                signal(job.pid)?;
                let state = if freeze { FROZEN } else { RUNNING };
                Ok(self.store.set_state(&jid, state, None)?)
            }
            Some(Target::Runc(_)) => Err(DaemonError::InvalidArgument(
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
