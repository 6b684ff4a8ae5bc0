//! The agent's restore, streamed: the host sends the checkpoint's small files (stream
//! index, metadata.json) into a guest scratch dir, then the engine restores with CRIU
//! `--stream` while its streamer reads each shard chunk from the host as CRIU asks for
//! it ([`Fetch::Read`]), so no shard is ever whole in the guest. Every piece is checked
//! on arrival (the wire's sha256, then the chunk's own xxh64 or codec check); the host
//! verified the whole checkpoint before it started. A bad piece fails the read, CRIU's
//! restore fails with it and CRIU kills what it had restored: no half-made process.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::container;
use super::error::GuestError;
use super::files;
use super::serve::Served;
use super::transport::Stream;
use super::wire::{self, plain_name, Fetch, RestoreSpec, Restored};
use crate::engine::RestoreRequest;
use crate::streamer::{RemoteShards, ShardSource};

/// The host's shards, read over the agent's connection: one request and its answer at
/// a time. After a failed read the connection is out of step, so every later read fails.
struct HostShards {
    stream: Mutex<Box<dyn Stream>>,
    /// The first failed read, the cause to report when the restore fails.
    failed: Mutex<Option<GuestError>>,
}

impl ShardSource for HostShards {
    fn read_exact_at(&self, shard: u32, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = failed.as_ref() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        let len = buf.len() as u64;
        let read = wire::send_msg(&mut **s, &Fetch::Read { shard, offset, len })
            .and_then(|()| wire::recv_stream(&mut **s, &mut &mut buf[..], Some(len)));
        match read {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                *failed = Some(e);
                Err(err)
            }
        }
    }
}

/// Serves a restore; its reply (or error) is sent here, as the connection is shared
/// with the streamer's reads while CRIU runs.
pub(super) fn restore(sv: &Served, mut s: Box<dyn Stream>, spec: RestoreSpec) {
    let incoming = sv.work.join("in");
    // Removed with everything in it when this restore ends, however it ends.
    let dir = match receive(sv, s.as_mut(), &spec, &incoming) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "restore refused");
            let _ = wire::send_error(s.as_mut(), &e);
            return;
        }
    };
    let host = Arc::new(HostShards {
        stream: Mutex::new(s),
        failed: Mutex::new(None),
    });
    let restored = sv.rt.block_on(sv.engine.restore(RestoreRequest {
        path: dir.path().join(&spec.name),
        flags: spec.flags,
        remote_shards: Some(RemoteShards(Arc::clone(&host) as Arc<dyn ShardSource>)),
        ..Default::default()
    }));
    let result = match restored {
        Ok(resp) => resumed(sv, resp.pid, resp.duration_ms),
        // A bad read is the cause: CRIU only saw its pipe closed.
        Err(e) => {
            reap_dead_children();
            Err(host
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(GuestError::Engine(e)))
        }
    };
    let mut s = host.stream.lock().unwrap_or_else(|p| p.into_inner());
    let sent = match &result {
        Ok(r) => wire::send_msg(&mut **s, &Fetch::Restored(r.clone())),
        Err(e) => {
            tracing::warn!(error = %e, "restore failed");
            wire::send_error(&mut **s, e)
        }
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot tell the host how the restore ended");
    }
}

/// The restored tree, dumped while stopped (see `Hold`), runs again; its root is reaped
/// when it exits.
fn resumed(sv: &Served, pid: i32, duration_ms: u64) -> Result<Restored, GuestError> {
    sv.engine.unfreeze(pid)?;
    // The restored root is our child (CRIU's rst_sibling): reap it when it exits.
    std::thread::spawn(move || {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    });
    Ok(Restored { pid, duration_ms })
}

/// Reaps the tasks a failed restore left dead: CRIU kills what it had restored, and the
/// restored root is the agent's child (`rst_sibling`), so it stays a zombie holding its
/// PID, which the next restore of the same tree needs, until the agent reaps it.
fn reap_dead_children() {
    let me = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name may hold spaces and parentheses: the fields follow the last ')'.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if state == Some("Z") && ppid == Some(me.as_str()) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Checks the request and receives the checkpoint's small files into a new directory
/// `NAME` under a scratch dir in `incoming`.
fn receive(
    sv: &Served,
    s: &mut dyn Stream,
    spec: &RestoreSpec,
    incoming: &Path,
) -> Result<tempfile::TempDir, GuestError> {
    if !plain_name(&spec.name) {
        return Err(GuestError::Invalid(format!(
            "bad checkpoint name {:?}",
            spec.name
        )));
    }
    if let Some(id) = &spec.container {
        // Its processes come back rooted in its rootfs: that must be there already.
        container::find(&sv.kata_root, id)?;
    }
    fs::create_dir_all(incoming).map_err(|e| GuestError::io(incoming, e))?;
    let dir = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(incoming)
        .map_err(|e| GuestError::io(incoming, e))?;
    let ck = dir.path().join(&spec.name);
    fs::create_dir(&ck).map_err(|e| GuestError::io(&ck, e))?;
    files::receive(s, &ck)?;
    Ok(dir)
}
