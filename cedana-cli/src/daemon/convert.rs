//! Conversions between the gRPC messages, the engine's request types and store records.
//! Both the daemon and `--no-server` go through these, so a flag means the same either way.

use std::path::PathBuf;

use cedana_runtime::engine::{CriuFlags, DumpRequest, RestoreRequest};
use cedana_runtime::image::metadata::CheckpointKind;
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

/// Proto dump request -> engine dump request for `pid`.
pub fn dump_request(req: &proto::DumpRequest, pid: i32) -> DumpRequest {
    DumpRequest {
        pid,
        dir: req.dir.as_ref().map(PathBuf::from),
        name: req.name.clone(),
        compression: req.compression.clone(),
        leave_running: req.leave_running,
        flags: criu_flags(req.flags.clone()),
        kind: CheckpointKind::Process,
        ..Default::default()
    }
}

/// Proto restore request -> engine restore request from `path`.
pub fn restore_request(req: &proto::RestoreRequest, path: PathBuf) -> RestoreRequest {
    RestoreRequest {
        path,
        flags: criu_flags(req.flags.clone()),
        pid_file: req.pid_file.as_ref().map(PathBuf::from),
        ..Default::default()
    }
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
