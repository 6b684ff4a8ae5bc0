//! Conversions between the gRPC messages, the engine's request types and store records.
//! Both the daemon and `--no-server` go through these, so a flag means the same either way.

use std::path::PathBuf;

use cedana_runtime::engine::{CriuFlags, DumpRequest, RestoreRequest, Target};
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

/// Proto dump request -> engine dump request for `pid` (for a container target, the
/// plugin finds the PID).
pub fn dump_request(req: &proto::DumpRequest, pid: i32) -> DumpRequest {
    if let Some(proto::target::Target::Containerd(c)) =
        req.target.as_ref().and_then(|t| t.target.as_ref())
    {
        return DumpRequest {
            target: Some(Box::new(containerd_target(c))),
            ..process_dump_request(req, 0)
        };
    }
    if let Some(proto::target::Target::Runc(c)) =
        req.target.as_ref().and_then(|t| t.target.as_ref())
    {
        return DumpRequest {
            target: Some(Box::new(RuncDump {
                target: runc_target(c),
                ..Default::default()
            })),
            ..process_dump_request(req, 0)
        };
    }
    process_dump_request(req, pid)
}

fn process_dump_request(req: &proto::DumpRequest, pid: i32) -> DumpRequest {
    DumpRequest {
        pid,
        dir: req.dir.as_ref().map(PathBuf::from),
        name: req.name.clone(),
        compression: req.compression.clone(),
        leave_running: req.leave_running,
        flags: criu_flags(req.flags.clone()),
        streams: req.streams,
        ..Default::default()
    }
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
        target: restore_target(req),
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

/// Store record -> proto job.
pub fn job(j: &JobRecord, checkpoints: u32) -> proto::Job {
    proto::Job {
        jid: j.jid.clone(),
        pid: j.pid,
        kind: j.kind.clone(),
        state: j.state.clone(),
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
        status: c.status.clone(),
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

/// CRIU's statistics in a checkpoint's metadata, as JSON for the API.
pub fn criu_stats_json(m: &cedana_runtime::image::metadata::Metadata) -> Option<String> {
    m.criu_stats
        .as_ref()
        .and_then(|s| serde_json::to_string(s).ok())
}
