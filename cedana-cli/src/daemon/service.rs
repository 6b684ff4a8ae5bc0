//! The gRPC service: each RPC is a thin call into the job manager or the engine, made
//! with the caller's identity (`identity.rs`), with errors mapped to status codes in one
//! place (`error.rs`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::attach::AttachStream;
use super::convert;
use super::error::DaemonError;
use super::identity::Caller;
use super::jobs::JobManager;
use super::kata;
use crate::ids;
use crate::proto::daemon_server::Daemon;
use crate::proto::{self, Empty};

/// The daemon's RPC implementation.
pub struct Service {
    jobs: Arc<JobManager>,
}

impl Service {
    /// A service over a job manager.
    pub fn new(jobs: Arc<JobManager>) -> Self {
        Self { jobs }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// Checks a job id the request may carry (unset or empty: none); every id is checked
/// before it is looked up, so no refusal echoes an over-long one.
fn opt_jid(jid: Option<&str>) -> Result<(), DaemonError> {
    match jid.filter(|j| !j.is_empty()) {
        Some(j) => Ok(ids::check_jid(j)?),
        None => Ok(()),
    }
}

fn jid(jid: &str) -> Result<(), DaemonError> {
    Ok(ids::check_jid(jid)?)
}

fn checkpoint_id(id: &str) -> Result<(), DaemonError> {
    Ok(ids::check_checkpoint_id(id)?)
}

/// The ids and the checkpoint name of a dump request.
fn dump_ids(req: &proto::DumpRequest) -> Result<(), DaemonError> {
    if let Some(proto::target::Target::Jid(j)) = req.target.as_ref().and_then(|t| t.target.as_ref())
    {
        jid(j)?;
    }
    match req.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => Ok(ids::check_name(n)?),
        None => Ok(()),
    }
}

// tonic's service trait fixes the error type to `Status`.
#[allow(clippy::result_large_err)]
fn ok<T>(v: T) -> Rpc<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl Daemon for Service {
    async fn run(&self, req: Request<proto::RunRequest>) -> Rpc<proto::Job> {
        let caller = Caller::of(&req)?;
        opt_jid(req.get_ref().jid.as_deref())?;
        let job = self.jobs.run(&caller, req.into_inner()).await?;
        ok(self.jobs.job_proto(&job)?)
    }

    async fn manage(&self, req: Request<proto::ManageRequest>) -> Rpc<proto::Job> {
        let caller = Caller::of(&req)?;
        opt_jid(req.get_ref().jid.as_deref())?;
        let job = self.jobs.manage(&caller, req.into_inner()).await?;
        ok(self.jobs.job_proto(&job)?)
    }

    async fn dump(&self, req: Request<proto::DumpRequest>) -> Rpc<proto::DumpResponse> {
        let caller = Caller::of(&req)?;
        dump_ids(req.get_ref())?;
        ok(self.jobs.dump(&caller, req.into_inner()).await?)
    }

    async fn restore(&self, req: Request<proto::RestoreRequest>) -> Rpc<proto::RestoreResponse> {
        let caller = Caller::of(&req)?;
        opt_jid(req.get_ref().jid.as_deref())?;
        ok(self.jobs.restore(&caller, req.into_inner()).await?)
    }

    async fn freeze(&self, req: Request<proto::Target>) -> Rpc<Empty> {
        let caller = Caller::of(&req)?;
        self.jobs.freeze(&caller, Some(req.into_inner()), true)?;
        ok(Empty {})
    }

    async fn unfreeze(&self, req: Request<proto::Target>) -> Rpc<Empty> {
        let caller = Caller::of(&req)?;
        self.jobs.freeze(&caller, Some(req.into_inner()), false)?;
        ok(Empty {})
    }

    async fn list_jobs(&self, req: Request<Empty>) -> Rpc<proto::JobList> {
        let caller = Caller::of(&req)?;
        // On this worker, not the blocking pool: one query on the store's reader
        // connection, well under a millisecond (see `Store::read`), while the pool may
        // have to start a thread for it, which under load waited up to ~0.3 s.
        let listed = self
            .jobs
            .store
            .list_jobs_counted()
            .map_err(DaemonError::from)?;
        let jobs = listed
            .iter()
            .filter(|(j, _)| caller.sees(j.owner_uid))
            .map(|(j, n)| convert::job(j, *n))
            .collect();
        ok(proto::JobList { jobs })
    }

    async fn get_job(&self, req: Request<proto::JobRef>) -> Rpc<proto::Job> {
        let caller = Caller::of(&req)?;
        jid(&req.get_ref().jid)?;
        let job = self.jobs.owned_job(&caller, &req.into_inner().jid, "see")?;
        ok(self.jobs.job_proto(&job)?)
    }

    async fn kill_job(&self, req: Request<proto::KillRequest>) -> Rpc<proto::KillResponse> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        jid(&req.jid)?;
        let grace = req
            .timeout_s
            .map(|s| std::time::Duration::from_secs(s.into()));
        ok(self.jobs.kill(&caller, &req.jid, req.signal, grace).await?)
    }

    async fn delete_job(&self, req: Request<proto::DeleteJobRequest>) -> Rpc<Empty> {
        let caller = Caller::of(&req)?;
        let req = req.into_inner();
        jid(&req.jid)?;
        self.jobs.delete(&caller, &req.jid, req.force).await?;
        ok(Empty {})
    }

    type AttachStream = AttachStream;

    async fn attach(&self, req: Request<proto::JobRef>) -> Rpc<Self::AttachStream> {
        let caller = Caller::of(&req)?;
        jid(&req.get_ref().jid)?;
        ok(self.jobs.attach(&caller, &req.into_inner().jid)?)
    }

    async fn list_checkpoints(
        &self,
        req: Request<proto::ListCheckpointsRequest>,
    ) -> Rpc<proto::CheckpointList> {
        let caller = Caller::of(&req)?;
        let jid = req.into_inner().jid.filter(|j| !j.is_empty());
        opt_jid(jid.as_deref())?;
        if let Some(jid) = &jid {
            self.jobs.owned_job(&caller, jid, "see")?;
        }
        let list = self
            .jobs
            .store
            .list_checkpoints(jid.as_deref())
            .map_err(DaemonError::from)?;
        ok(proto::CheckpointList {
            checkpoints: list
                .iter()
                .filter(|c| caller.sees(c.owner_uid))
                .map(convert::checkpoint)
                .collect(),
        })
    }

    async fn get_checkpoint(&self, req: Request<proto::CheckpointRef>) -> Rpc<proto::Checkpoint> {
        let caller = Caller::of(&req)?;
        let id = req.into_inner().id;
        checkpoint_id(&id)?;
        let ck = self
            .jobs
            .store
            .get_checkpoint(&id)
            .map_err(DaemonError::from)?
            .ok_or(DaemonError::NoSuchCheckpoint(id.clone()))?;
        caller.require_owner(ck.owner_uid, "see", &format!("checkpoint {id}"))?;
        ok(convert::checkpoint(&ck))
    }

    async fn delete_checkpoint(&self, req: Request<proto::CheckpointRef>) -> Rpc<Empty> {
        let caller = Caller::of(&req)?;
        checkpoint_id(&req.get_ref().id)?;
        self.jobs.delete_checkpoint(&caller, &req.into_inner().id)?;
        ok(Empty {})
    }

    async fn query_runc(
        &self,
        req: Request<proto::RuncContainer>,
    ) -> Rpc<proto::RuncContainerList> {
        Caller::of(&req)?.require_root("query runc containers", "the runtime's state is root's")?;
        let states = self.jobs.runc_states(&req.into_inner()).await?;
        ok(proto::RuncContainerList {
            containers: states.iter().map(convert::container_state).collect(),
        })
    }

    async fn dump_kata(
        &self,
        req: Request<proto::KataDumpRequest>,
    ) -> Rpc<proto::KataDumpResponse> {
        kata::require_root(&Caller::of(&req)?)?;
        let req = req.into_inner();
        if let Some(n) = req.name.as_deref().filter(|n| !n.is_empty()) {
            ids::check_name(n).map_err(DaemonError::from)?;
        }
        let mut resp = kata::dump(self.jobs.engine.config(), req).await?;
        resp.id = kata::record(&self.jobs.store, &resp)?;
        tracing::info!(path = %resp.path, id = %resp.id, "kata checkpoint received");
        ok(resp)
    }

    async fn restore_kata(
        &self,
        req: Request<proto::KataRestoreRequest>,
    ) -> Rpc<proto::KataRestoreResponse> {
        kata::require_root(&Caller::of(&req)?)?;
        ok(kata::restore(self.jobs.engine.config(), req.into_inner()).await?)
    }

    async fn query_kata(
        &self,
        req: Request<proto::KataQueryRequest>,
    ) -> Rpc<proto::KataQueryResponse> {
        kata::require_root(&Caller::of(&req)?)?;
        ok(kata::query(self.jobs.engine.config(), req.into_inner()).await?)
    }

    async fn health(&self, _req: Request<Empty>) -> Rpc<proto::HealthReport> {
        let engine = self.jobs.engine.clone();
        let checks = tokio::task::spawn_blocking(move || engine.check())
            .await
            .map_err(|e| Status::internal(format!("health check task failed: {e}")))?;
        ok(proto::HealthReport {
            checks: checks.iter().map(convert::health_check).collect(),
        })
    }

    async fn version(&self, _req: Request<Empty>) -> Rpc<proto::VersionInfo> {
        ok(super::lifecycle::version(&self.jobs.engine).await)
    }

    async fn stop(&self, req: Request<Empty>) -> Rpc<Empty> {
        // Stopping the daemon ends every other user's service too.
        Caller::of(&req)?.require_root("stop the daemon", "it serves every user")?;
        super::lifecycle::request_stop();
        ok(Empty {})
    }
}
