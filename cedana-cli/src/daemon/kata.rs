//! kata requests, for the daemon and `--no-server` alike: find the guest agent (the flags,
//! or the container's VM through containerd), then run the blocking host client off the
//! async workers. Only root may drive a guest: the agent runs as root in the VM and acts
//! on any process there, and the VM's socket is root's, so a `socket_group` member
//! going through the daemon would gain root over every guest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cedana_config::Config;
use cedana_runtime::error::EngineError;
use cedana_runtime::guest::transport::Endpoint;
use cedana_runtime::guest::wire::{DumpReady, DumpSpec, Target};
use cedana_runtime::guest::{client, locate, GuestError};
use cedana_runtime::image::compression;
use cedana_runtime::plugins::containerd::ContainerdTarget;
use cedana_runtime::store::Location;

use super::convert::criu_flags;
use super::error::DaemonError;
use super::identity::Caller;
use super::jobs::{new_id, Result};
use super::store::{now, CheckpointRecord, Store};
use crate::proto;

/// Why only root may drive a guest, for the refusal.
const ROOT_ONLY: &str = "the guest agent acts as root inside the VM, on any of its processes";

/// Refuses a caller other than root.
pub fn require_root(caller: &Caller) -> Result<()> {
    caller.require_root("drive a kata guest", ROOT_ONLY)
}

/// The agent's address: exactly one of the socket, CID or TCP given, else the VM of the
/// container `id` found through containerd.
pub async fn endpoint(vm: &proto::KataVm, id: Option<&str>, config: &Config) -> Result<Endpoint> {
    let port = vm.port;
    match (&vm.vm_socket, vm.cid, &vm.tcp) {
        (Some(s), None, None) => Ok(Endpoint::Hybrid {
            socket: PathBuf::from(s),
            port,
        }),
        (None, Some(cid), None) => Ok(Endpoint::Vsock { cid, port }),
        (None, None, Some(t)) => Ok(Endpoint::Tcp(t.clone())),
        (None, None, None) => {
            let Some(id) = id else {
                return Err(DaemonError::InvalidArgument(format!(
                    "say where the guest agent is: a container id (its VM is found through \
                     containerd), or --vm-socket PATH (hybrid vsock), --cid N (vsock) or \
                     --tcp HOST:PORT, with --port N for vsock (default {})",
                    cedana_runtime::guest::DEFAULT_PORT
                )));
            };
            let c = vm.containerd.clone().unwrap_or_default();
            let target = ContainerdTarget::new(id, c.address, c.namespace);
            let found = locate::locate(&target, &config.kata.vm_root, port).await?;
            tracing::info!(
                container = id,
                sandbox = %found.sandbox,
                hypervisor = found.hypervisor,
                endpoint = %found.endpoint,
                "found the kata container's VM through containerd"
            );
            Ok(found.endpoint)
        }
        _ => Err(DaemonError::InvalidArgument(
            "give only one of --vm-socket, --cid and --tcp".into(),
        )),
    }
}

/// Runs the blocking client call `f` off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, GuestError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Io {
            context: "the kata client task failed".into(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(DaemonError::from)
}

/// A kata checkpoint's local path: its bytes stream over the guest connection into a
/// file of this host, so an object store URL is refused by name, not made a directory.
pub fn local_only(p: &Path) -> Result<PathBuf> {
    let at = Location::from_path(p).map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
    match at.as_local() {
        Some(local) => Ok(local.to_path_buf()),
        None => Err(DaemonError::InvalidArgument(format!(
            "{at}: kata checkpoints go to a local directory only; dump to a local --dir and \
             copy it (or dump a process, job or container to {}:// directly)",
            at.scheme()
        ))),
    }
}

/// `dump kata`: checkpoint in the guest, received and verified into `dir` on this host.
pub async fn dump(config: &Config, req: proto::KataDumpRequest) -> Result<proto::KataDumpResponse> {
    let vm = req.vm.unwrap_or_default();
    let target = match (&req.id, req.pid) {
        (_, Some(p)) => Target::Pid(p),
        (Some(id), None) => Target::Container(id.clone()),
        (None, None) => {
            return Err(DaemonError::InvalidArgument(
                "name a container id or --pid".into(),
            ))
        }
    };
    // A PID names a process in the guest, not a container containerd knows.
    let id = if req.pid.is_some() {
        None
    } else {
        req.id.as_deref()
    };
    let ep = endpoint(&vm, id, config).await?;
    let f = criu_flags(req.flags);
    let spec = DumpSpec {
        target,
        name: req.name,
        compression: req.compression,
        leave_running: req.leave_running,
        flags: f,
    };
    let dir = local_only(Path::new(
        req.dir
            .as_deref()
            .unwrap_or(&config.checkpoint.dir.display().to_string()),
    ))?;
    let started = Instant::now();
    let got = blocking(move || client::dump(&ep, spec, &dir)).await?;
    Ok(proto::KataDumpResponse {
        path: got.path.display().to_string(),
        // Its fields are plain data, so serializing cannot fail.
        ready_json: serde_json::to_string(&got.ready).unwrap_or_default(),
        duration_ms: started.elapsed().as_millis() as u64,
        id: String::new(),
    })
}

/// Records a checkpoint the daemon received from a guest (root's, of no job), so
/// `cedana checkpoints` lists it like any other; returns its id.
pub fn record(store: &Store, resp: &proto::KataDumpResponse) -> Result<String> {
    let ready: DumpReady = serde_json::from_str(&resp.ready_json).map_err(|e| {
        DaemonError::InvalidArgument(format!("the agent's announcement is not valid: {e}"))
    })?;
    let path = Path::new(&resp.path);
    let compression = compression::detect(path).map_err(EngineError::from)?;
    let record = CheckpointRecord {
        id: new_id(),
        jid: None,
        name: ready.name.clone(),
        path: resp.path.clone(),
        compression: compression.as_str().into(),
        size_bytes: ready.size,
        created_at: now(),
        // Plain data: serializing cannot fail.
        metadata_json: serde_json::to_string(&ready.metadata).unwrap_or_default(),
        owner_uid: 0,
    };
    store.insert_checkpoint(&record)?;
    Ok(record.id)
}

/// `restore kata`: the checkpoint verified here, then streamed into the guest.
pub async fn restore(
    config: &Config,
    req: proto::KataRestoreRequest,
) -> Result<proto::KataRestoreResponse> {
    let vm = req.vm.unwrap_or_default();
    let ep = endpoint(&vm, req.id.as_deref(), config).await?;
    let path = local_only(Path::new(&req.path))?;
    let f = criu_flags(req.flags);
    let id = req.id;
    let r = blocking(move || client::restore(&ep, &path, id, f)).await?;
    Ok(proto::KataRestoreResponse {
        guest_pid: r.pid,
        duration_ms: r.duration_ms,
    })
}

/// `query kata`: the guest's listing, or its health with `check`, as JSON.
pub async fn query(
    config: &Config,
    req: proto::KataQueryRequest,
) -> Result<proto::KataQueryResponse> {
    let vm = req.vm.unwrap_or_default();
    let ep = endpoint(&vm, None, config).await?;
    let json = if req.check {
        serde_json::to_string(&blocking(move || client::info(&ep)).await?)
    } else {
        serde_json::to_string(&blocking(move || client::list(&ep)).await?)
    };
    Ok(proto::KataQueryResponse {
        json: json.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_flags_pick_the_transport_and_none_without_an_id_is_refused() {
        let config = Config::default();
        let vm = |s: Option<&str>, cid: Option<u32>, tcp: Option<&str>| proto::KataVm {
            vm_socket: s.map(Into::into),
            cid,
            port: 1027,
            tcp: tcp.map(Into::into),
            containerd: None,
        };
        let ep = endpoint(&vm(Some("/x.sock"), None, None), Some("c"), &config)
            .await
            .expect("hybrid");
        assert_eq!(
            ep,
            Endpoint::Hybrid {
                socket: "/x.sock".into(),
                port: 1027
            }
        );
        let ep = endpoint(&vm(None, Some(3), None), None, &config).await;
        assert_eq!(ep.expect("vsock"), Endpoint::Vsock { cid: 3, port: 1027 });
        let err = endpoint(&vm(None, None, None), None, &config)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("say where the guest agent is"),
            "{err}"
        );
        let err = endpoint(&vm(Some("/x"), Some(3), None), None, &config)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("only one of"), "{err}");
    }

    #[test]
    fn only_root_may_drive_a_guest() {
        let member = Caller {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        let err = require_root(&member).unwrap_err();
        assert!(
            err.to_string()
                .contains("uid 1000 may not drive a kata guest"),
            "{err}"
        );
        require_root(&Caller::ROOT).expect("root may");
    }
}
