//! The daemon's server: claims the socket (refusing to start twice), binds it so only
//! root (or `socket_group`) can connect, checks each caller's SO_PEERCRED and hands it
//! to the handlers, and serves the gRPC service until SIGINT/SIGTERM or the Stop RPC.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use cedana_config::Config;
use cedana_runtime::engine::Engine;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Group, User};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use super::identity::Caller;
use super::jobs::JobManager;
use super::service::Service;
use super::store::Store;
use crate::proto::daemon_server::DaemonServer;

/// Socket mode without a group: root only.
const MODE_ROOT_ONLY: u32 = 0o600;
/// Socket mode with `socket_group`: root and the group.
const MODE_GROUP: u32 = 0o660;

/// Runs the daemon until SIGINT, SIGTERM or the Stop RPC.
// tonic's interceptor signature fixes the error type to `Status`.
#[allow(clippy::result_large_err)]
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let gid = match &config.socket_group {
        Some(name) => Some(
            Group::from_name(name)
                .with_context(|| format!("cannot look up socket_group {name:?}"))?
                .with_context(|| {
                    format!("socket_group {name:?} does not exist; create it (groupadd {name}) or unset socket_group")
                })?
                .gid,
        ),
        None => None,
    };
    let socket = config.address.clone();
    claim_socket(&socket)?;
    let listener = bind(&socket, gid)?;

    let store = Store::open(&config.db_path)
        .with_context(|| format!("cannot open the database {}", config.db_path.display()))?;
    let engine = Engine::new(config);
    for done in engine.recover_after_crash() {
        tracing::info!("{done}");
    }
    let jobs = JobManager::new(engine, Arc::new(store));
    jobs.recover()
        .context("cannot reconcile jobs with the host")?;

    tracing::info!(socket = %socket.display(), "cedana daemon listening");
    let svc = DaemonServer::with_interceptor(Service::new(jobs), move |req| authorize(req, gid));
    let served = tonic::transport::Server::builder()
        .layer(super::request_log::LogFailuresLayer)
        .add_service(svc)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal())
        .await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("cedana daemon stopped");
    served.context("the gRPC server failed")
}

/// Creates the socket's directory; refuses if a daemon answers on the socket, removes a
/// stale socket nobody answers on.
fn claim_socket(socket: &Path) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", socket.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another address",
            socket.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => bail!(
            "a cedana daemon is already running on {} (stop it first, or pass another --address)",
            socket.display()
        ),
        Err(_) => {
            tracing::info!(socket = %socket.display(), "removing stale socket");
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()))
        }
    }
}

/// Binds with umask 077, then opens the mode up to 0660 + group, or leaves 0600.
fn bind(socket: &Path, gid: Option<Gid>) -> anyhow::Result<UnixListener> {
    let old = umask(Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(socket);
    umask(old);
    let listener = bound.with_context(|| format!("cannot bind {}", socket.display()))?;
    let mode = match gid {
        Some(gid) => {
            nix::unistd::chown(socket, None, Some(gid))
                .with_context(|| format!("cannot chown {} to group {gid}", socket.display()))?;
            MODE_GROUP
        }
        None => MODE_ROOT_ONLY,
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", socket.display()))?;
    Ok(listener)
}

/// Allows root and members of the socket group, and records who called (a [`Caller`]
/// extension) so every handler acts with the caller's identity; refuses everyone else.
// tonic's interceptor signature fixes the error type to `Status`.
#[allow(clippy::result_large_err)]
fn authorize(mut req: Request<()>, gid: Option<Gid>) -> Result<Request<()>, Status> {
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred);
    let Some(cred) = cred else {
        return Err(Status::permission_denied(
            "cannot identify the caller (no peer credentials)",
        ));
    };
    if cred.uid() == 0 || gid.is_some_and(|g| in_group(cred.uid(), cred.gid(), g)) {
        req.extensions_mut().insert(Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        });
        return Ok(req);
    }
    Err(Status::permission_denied(format!(
        "uid {} may not use the cedana daemon: it only accepts root{}",
        cred.uid(),
        if gid.is_some() {
            " and members of socket_group"
        } else {
            ""
        }
    )))
}

/// Whether a user (primary group `primary`) belongs to `group`.
fn in_group(uid: u32, primary: u32, group: Gid) -> bool {
    if primary == group.as_raw() {
        return true;
    }
    let name = match User::from_uid(uid.into()) {
        Ok(Some(u)) => u.name,
        _ => return false,
    };
    matches!(Group::from_gid(group), Ok(Some(g)) if g.mem.contains(&name))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = super::lifecycle::stop_requested() => {}
    }
    tracing::info!("shutting down");
}
