//! Watching jobs' processes: reapers for our children, pollers for the rest, the
//! reconciliation a restarted daemon does, and kill/delete, which wait on the watchers.

use std::sync::Arc;
use std::time::Duration;

use cedana_runtime::plugins::runc::state::ContainerStatus;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getpgid, Pid};

use super::error::DaemonError;
use super::identity::Caller;
use super::jobs::{JobManager, Result};
use super::procfs;
use super::store::{JobRecord, JobState, Store};

/// How often a poller looks at a process that is not our child.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long `kill` waits for the halt after SIGKILL (a poller sees it within
/// `POLL_INTERVAL`; the rest is slack for a loaded host).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Exit code as a shell reports it: the status, or 128 + the signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Marks halted, at startup, every running/frozen job whose process is gone or was
/// replaced (start time differs); returns the jobs still alive, to be polled.
/// `probe(pid)` gives the start ticks of a live process.
pub fn reconcile(
    store: &Store,
    probe: impl Fn(i32) -> Option<u64>,
) -> rusqlite::Result<Vec<JobRecord>> {
    let mut alive = Vec::new();
    for job in store.list_jobs()? {
        if job.state == JobState::Halted {
            continue;
        }
        match probe(job.pid) {
            Some(ticks) if job.start_time_ticks.map_or(true, |t| t == ticks) => alive.push(job),
            _ => store.set_state(&job.jid, JobState::Halted, job.exit_code)?,
        }
    }
    Ok(alive)
}

impl JobManager {
    /// Reconciles the store with the host and starts pollers for surviving jobs.
    pub fn recover(self: &Arc<Self>) -> Result<()> {
        for job in reconcile(&self.store, procfs::probe)? {
            let generation = self.bump_generation(&job.jid);
            tracing::info!(
                jid = job.jid,
                pid = job.pid,
                "job survived the daemon restart; polling it"
            );
            self.spawn_poller(&job.jid, job.pid, job.start_time_ticks, generation);
        }
        Ok(())
    }

    fn halted(&self, jid: &str, generation: u64, code: Option<i32>) {
        if !self.is_current(jid, generation) {
            return;
        }
        if let Err(e) = self.store.set_state(jid, JobState::Halted, code) {
            tracing::error!(jid, "cannot record job exit: {e}");
        }
        tracing::info!(jid, exit_code = ?code, "job halted");
    }

    /// Waits for our child `pid` and records its exit; falls back to polling if it is
    /// not our child after all.
    pub(super) fn spawn_reaper(self: &Arc<Self>, jid: &str, pid: i32, generation: u64) {
        let (me, jid) = (Arc::clone(self), jid.to_string());
        tokio::spawn(async move {
            let waited = tokio::task::spawn_blocking(move || loop {
                match waitpid(Pid::from_raw(pid), None) {
                    Err(Errno::EINTR) => continue,
                    Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                        return Ok(exit_code(status))
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            })
            .await;
            match waited {
                Ok(Ok(code)) => me.halted(&jid, generation, code),
                Ok(Err(e)) => {
                    tracing::warn!(
                        jid,
                        pid,
                        "cannot wait for the job ({e}); polling it instead"
                    );
                    let ticks = procfs::start_ticks(pid);
                    me.spawn_poller(&jid, pid, ticks, generation);
                }
                Err(e) => tracing::error!(jid, "reaper task failed: {e}"),
            }
        });
    }

    /// Polls a process that is not our child until it is gone (exit code unknown).
    pub(super) fn spawn_poller(
        self: &Arc<Self>,
        jid: &str,
        pid: i32,
        ticks: Option<u64>,
        generation: u64,
    ) {
        let (me, jid) = (Arc::clone(self), jid.to_string());
        tokio::spawn(async move {
            loop {
                if !me.is_current(&jid, generation) {
                    return;
                }
                match procfs::probe(pid) {
                    Some(now) if ticks.map_or(true, |t| t == now) => {}
                    _ => return me.halted(&jid, generation, None),
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        });
    }

    /// Sends a signal to a job's process (its whole group when it leads one). With a
    /// grace period, SIGKILL follows if the job has not halted by then, as `docker stop`
    /// and `runc kill` users do: a shell as a container's PID 1 ignores SIGTERM.
    pub async fn kill(
        &self,
        caller: &Caller,
        jid: &str,
        signal: i32,
        grace: Option<Duration>,
    ) -> Result<crate::proto::KillResponse> {
        let job = self.live_job(caller, jid, "kill")?;
        let sig = Signal::try_from(signal)
            .map_err(|_| DaemonError::InvalidArgument(format!("unknown signal number {signal}")))?;
        signal_job(&job, sig)?;
        if job.state == JobState::Frozen {
            // A stopped process only acts on the signal once continued.
            signal_job(&job, Signal::SIGCONT)?;
            self.store.set_state(jid, JobState::Running, None)?;
        }
        let mut answer = crate::proto::KillResponse::default();
        let Some(grace) = grace else {
            return Ok(answer);
        };
        answer.halted = self.halted_within(jid, grace).await;
        if !answer.halted && sig != Signal::SIGKILL {
            tracing::info!(
                jid,
                pid = job.pid,
                "job still running after {grace:?}; sending SIGKILL"
            );
            signal_job(&job, Signal::SIGKILL)?;
            answer.escalated = true;
            answer.halted = self.halted_within(jid, KILL_WAIT).await;
        }
        Ok(answer)
    }

    /// Waits up to `limit` for the job to be recorded halted (or forgotten).
    async fn halted_within(&self, jid: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.store.get_job(jid) {
                Ok(Some(j)) if j.state != JobState::Halted => {}
                _ => return true,
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Forgets a job; a live one only with `force`, which kills it first.
    pub async fn delete(&self, caller: &Caller, jid: &str, force: bool) -> Result<()> {
        let job = self.owned_job(caller, jid, "delete")?;
        if job.state != JobState::Halted && procfs::probe(job.pid).is_some() {
            if !force {
                return Err(DaemonError::JobRunning {
                    jid: jid.to_string(),
                    pid: job.pid,
                    what: format!("kill it first (`cedana job kill {jid}`) or pass --force"),
                });
            }
            signal_job(&job, Signal::SIGKILL)?;
            self.wait_halted(jid).await;
        }
        if let Some(at) = job.container.as_ref().and_then(|c| c.containerd.as_ref()) {
            let c = job.container.clone().unwrap_or_default();
            self.remove_stopped_containerd(jid, &c.id, at).await;
        } else if let Some(c) = &job.container {
            // A stopped container is of no use but to be deleted; a live one (the job
            // was already halted, so it runs something else) is left alone.
            let container = crate::proto::RuncContainer {
                id: c.id.clone(),
                root: c.root.clone(),
            };
            if let Ok(states) = self.runc_states(&container).await {
                if states.iter().all(|s| s.status == ContainerStatus::Stopped) {
                    if let Err(e) = self.delete_container(&container).await {
                        tracing::warn!(jid, container = c.id, "cannot delete the container: {e}");
                    }
                }
            }
        }
        self.bump_generation(jid);
        self.store.delete_job(jid)?;
        Ok(())
    }
}

fn signal_job(job: &JobRecord, sig: Signal) -> Result<()> {
    let pid = Pid::from_raw(job.pid);
    let sent = match getpgid(Some(pid)) {
        Ok(pgid) if pgid == pid => killpg(pid, sig),
        _ => kill(pid, sig),
    };
    match sent {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(DaemonError::Io {
            context: format!("cannot send {sig} to PID {}", job.pid),
            source: e.into(),
        }),
    }
}
