//! Conversions between the gRPC messages, the engine's request types and store records.
//! Both the daemon and `--no-server` go through these, so a flag means the same either way.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedana_runtime::chain::StepTiming;
use cedana_runtime::engine::{
    CriuFlags, DumpRequest, DumpResponse, RestoreRequest, RestoreResponse, Target,
};
use cedana_runtime::error::EngineError;
use cedana_runtime::image::compression::Compression;
use cedana_runtime::plugins::containerd::{ContainerdRestore, ContainerdTarget};
use cedana_runtime::plugins::runc::runtime::ContainerState;
use cedana_runtime::plugins::runc::{RuncDump, RuncRestore, RuncTarget};
use cedana_runtime::plugins::{Health, HealthCheck};

use super::store::{CheckpointRecord, JobRecord};
use crate::proto;

/// Proto CRIU flags -> engine flags.
pub fn criu_flags(f: Option<proto::CriuFlags>) -> CriuFlags {
    let f = f.unwrap_or_default();
    CriuFlags {
        tcp_established: f.tcp_established,
        tcp_close: f.tcp_close,
        file_locks: f.file_locks,
        shell_job: f.shell_job,
        link_remap: f.link_remap,
        external: f.external,
    }
}

/// Proto runc container -> engine target.
pub fn runc_target(c: &proto::RuncContainer) -> RuncTarget {
    RuncTarget::new(c.id.clone(), c.root.as_ref().map(PathBuf::from))
}

/// Proto containerd container -> engine target (defaults for address and namespace).
pub fn containerd_target(c: &proto::ContainerdContainer) -> ContainerdTarget {
    ContainerdTarget::new(c.id.clone(), c.address.clone(), c.namespace.clone())
}

/// Proto compression name -> engine compression (unset: the engine's default). An
/// unknown name is refused here, at the edge, listing the valid ones.
pub fn compression(name: Option<&str>) -> Result<Option<Compression>, EngineError> {
    name.map(|n| {
        Compression::from_str(n).map_err(|e| EngineError::InvalidRequest {
            field: "compression",
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// Proto dump request -> engine dump request. A PID target carries its PID; for a job
/// the caller resolves it and passes `job_pid`; for a container the plugin finds it.
pub fn dump_request(req: &proto::DumpRequest, job_pid: i32) -> Result<DumpRequest, EngineError> {
    use proto::target::Target;
    let target = req.target.as_ref().and_then(|t| t.target.as_ref());
    let pid = match target {
        Some(Target::Pid(pid)) => *pid,
        Some(Target::Jid(_)) | None => job_pid,
        Some(Target::Runc(_) | Target::Containerd(_)) => 0,
    };
    let process = DumpRequest {
        pid,
        dir: req.dir.as_ref().map(PathBuf::from),
        name: req.name.clone(),
        compression: compression(req.compression.as_deref())?,
        leave_running: req.leave_running,
        flags: criu_flags(req.flags.clone()),
        streams: req.streams,
        // The user-facing default: stream wherever the route can.
        streams_by_default: true,
        ..Default::default()
    };
    Ok(match target {
        Some(Target::Containerd(c)) => DumpRequest {
            target: Some(Box::new(containerd_target(c))),
            ..process
        },
        Some(Target::Runc(c)) => DumpRequest {
            target: Some(Box::new(RuncDump {
                target: runc_target(c),
                ..Default::default()
            })),
            ..process
        },
        _ => process,
    })
}

/// Proto restore request -> engine restore request from `path`.
pub fn restore_request(req: &proto::RestoreRequest, path: PathBuf) -> RestoreRequest {
    RestoreRequest {
        path,
        flags: criu_flags(req.flags.clone()),
        // For a container, the runtime writes the pid file itself.
        pid_file: req
            .pid_file
            .as_ref()
            .filter(|_| req.runc.is_none())
            .map(PathBuf::from),
        lazy: req.lazy,
        target: restore_target(req),
        remote_shards: None,
        gpu_map: req
            .gpu_map
            .iter()
            .map(|p| (p.from.clone(), p.to.clone()))
            .collect(),
    }
}

/// The container a restore request names, if any (containerd first, as the engine did).
fn restore_target(req: &proto::RestoreRequest) -> Option<Box<dyn Target>> {
    if let Some(r) = &req.containerd {
        return Some(Box::new(ContainerdRestore {
            target: r
                .container
                .as_ref()
                .map(containerd_target)
                .unwrap_or_else(|| ContainerdTarget::new("", None, None)),
            image: r.image.clone(),
            log_path: None,
        }));
    }
    let r = req.runc.as_ref()?;
    Some(Box::new(RuncRestore {
        target: r.container.as_ref().map(runc_target).unwrap_or_default(),
        bundle: PathBuf::from(&r.bundle),
        detach: r.detach,
        pid_file: req.pid_file.as_ref().map(PathBuf::from),
        ..Default::default()
    }))
}

/// What the daemon recorded about a checkpoint; `--no-server` records nothing.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The store's checkpoint id (empty: not recorded).
    pub id: String,
    /// The job it was taken of.
    pub jid: Option<String>,
    /// Where the caller finds it (a non-root caller's own path, not a descriptor's).
    pub path: String,
    /// When it was recorded.
    pub created_at: String,
    /// Who may see and use it.
    pub owner_uid: u32,
}

impl Recorded {
    /// A checkpoint no store recorded (`--no-server`): where and when the engine says.
    pub fn unrecorded(resp: &DumpResponse) -> Self {
        Recorded {
            path: resp.path.display().to_string(),
            created_at: resp.metadata.created_at.clone(),
            ..Default::default()
        }
    }
}

/// The record of the checkpoint a dump made: the engine's response with what recorded it.
pub fn dumped_record(resp: &DumpResponse, rec: Recorded) -> CheckpointRecord {
    CheckpointRecord {
        id: rec.id,
        jid: rec.jid,
        name: resp.name.clone(),
        path: rec.path,
        compression: resp.compression.as_str().into(),
        size_bytes: resp.size_bytes,
        created_at: rec.created_at,
        // Metadata has only string-keyed maps, so serializing it cannot fail.
        metadata_json: serde_json::to_string(&resp.metadata).unwrap_or_default(),
        owner_uid: rec.owner_uid,
    }
}

/// The one dump reply, daemon and `--no-server` alike.
pub fn dump_reply(record: &CheckpointRecord, resp: &DumpResponse) -> proto::DumpResponse {
    proto::DumpResponse {
        checkpoint: Some(checkpoint(record)),
        duration_ms: resp.duration_ms,
        profile: profile(&resp.profile),
    }
}

/// The chain's step timings -> proto.
fn profile(steps: &[StepTiming]) -> Vec<proto::StepTiming> {
    steps
        .iter()
        .map(|s| proto::StepTiming {
            name: s.name.clone(),
            total_ms: s.total_ms,
            own_ms: s.own_ms,
        })
        .collect()
}

/// The one restore reply: the engine's response, the job it became (empty: none, as
/// with `--no-server`) and the checkpoint it came from.
pub fn restore_reply(resp: &RestoreResponse, jid: String, path: &Path) -> proto::RestoreResponse {
    proto::RestoreResponse {
        pid: resp.pid,
        jid,
        duration_ms: resp.duration_ms,
        criu_stats_json: resp
            .metadata
            .criu_stats
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok()),
        path: path.display().to_string(),
        profile: profile(&resp.profile),
    }
}

/// Store record -> proto job.
pub fn job(j: &JobRecord, checkpoints: u32) -> proto::Job {
    proto::Job {
        jid: j.jid.clone(),
        pid: j.pid,
        kind: j.kind.as_str().into(),
        state: j.state.as_str().into(),
        exit_code: j.exit_code,
        command: j.command.clone(),
        log_path: j.log_path.clone(),
        created_at: j.created_at.clone(),
        updated_at: j.updated_at.clone(),
        checkpoints,
        container_id: j.container.as_ref().map(|c| c.id.clone()),
        runc_root: j.container.as_ref().and_then(|c| c.root.clone()),
        bundle: j.container.as_ref().map(|c| c.bundle.clone()),
    }
}

/// Runtime state -> proto.
pub fn container_state(c: &ContainerState) -> proto::RuncContainerState {
    proto::RuncContainerState {
        id: c.id.clone(),
        pid: c.pid,
        status: c.status.to_string(),
        bundle: c.bundle.clone(),
        created: c.created.clone(),
    }
}

/// Store record -> proto checkpoint.
pub fn checkpoint(c: &CheckpointRecord) -> proto::Checkpoint {
    proto::Checkpoint {
        id: c.id.clone(),
        jid: c.jid.clone(),
        name: c.name.clone(),
        path: c.path.clone(),
        compression: c.compression.clone(),
        size_bytes: c.size_bytes,
        created_at: c.created_at.clone(),
        metadata_json: c.metadata_json.clone(),
    }
}

/// Engine health check -> proto.
pub fn health_check(h: &HealthCheck) -> proto::HealthCheck {
    proto::HealthCheck {
        plugin: h.plugin.clone(),
        name: h.name.clone(),
        health: health_name(h.health).into(),
        detail: h.detail.clone(),
        fix: h.fix.clone(),
    }
}

/// `ok`, `warn` or `fail`.
pub fn health_name(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Warn => "warn",
        Health::Fail => "fail",
    }
}
