//! The host side of kata checkpoints: ask the agent, receive a checkpoint's files into a
//! staging directory as the guest streams them (each chunk and each file checked as they
//! arrive), verify it as a checkpoint (every file's sha256), rename it into place, and
//! only then tell the agent it is committed. A restore verifies the checkpoint first,
//! then serves the guest its shards piece by piece (`shards.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use super::error::GuestError;
use super::files;
use super::shards::Shards;
use super::transport::{connect, Endpoint, Stream};
use super::wire::{
    self, plain_name, Ack, AgentInfo, DumpReady, DumpSpec, Fetch, Listing, Request, RestoreSpec,
    Restored,
};
use crate::engine::CriuFlags;
use crate::image::atomic;
use crate::image::integrity;
use crate::image::metadata::{Metadata, METADATA_FILE};
use crate::streamer::StreamIndex;

/// A checkpoint received from a guest and committed on the host.
#[derive(Debug, Clone)]
pub struct Received {
    /// The archive on the host.
    pub path: PathBuf,
    /// What the agent said about it.
    pub ready: DumpReady,
}

/// Asks the agent for its health and version.
pub fn info(ep: &Endpoint) -> Result<AgentInfo, GuestError> {
    let mut c = connect(ep)?;
    wire::send_msg(&mut c.stream, &Request::Info)?;
    wire::recv_msg(&mut c.stream)
}

/// Asks the agent what runs in the guest.
pub fn list(ep: &Endpoint) -> Result<Listing, GuestError> {
    let mut c = connect(ep)?;
    wire::send_msg(&mut c.stream, &Request::List)?;
    wire::recv_msg(&mut c.stream)
}

/// Checkpoints `spec` in the guest into the directory `dir/NAME` on the host: the files
/// arrive into a staging directory beside it as the guest's CRIU writes them, are
/// verified as a checkpoint (metadata.json's sha256 of every file), and renamed into
/// place; only then is the agent told, and its tree killed.
pub fn dump(ep: &Endpoint, spec: DumpSpec, dir: &Path) -> Result<Received, GuestError> {
    fs::create_dir_all(dir).map_err(|e| GuestError::io(dir, e))?;
    let mut c = connect(ep)?;
    wire::send_msg(&mut c.stream, &Request::Dump(spec))?;
    // Removed with everything in it unless committed.
    let staging = tempfile::Builder::new()
        .prefix(&atomic::scratch_prefix("kata-dump"))
        .suffix(atomic::PARTIAL_SUFFIX)
        .tempdir_in(dir)
        .map_err(|e| GuestError::io(dir, e))?;
    let received = files::receive(c.stream.as_mut(), staging.path()).and_then(|size| {
        let mut ready: DumpReady = wire::recv_msg(&mut c.stream)?;
        ready.size = size;
        if !plain_name(&ready.name) {
            return Err(GuestError::Protocol(format!(
                "the agent named its checkpoint {:?}",
                ready.name
            )));
        }
        let out = dir.join(&ready.name);
        commit(staging, &out)?;
        Ok(Received { path: out, ready })
    });
    let ack = match &received {
        Ok(_) => Ack {
            committed: true,
            detail: String::new(),
        },
        Err(e) => Ack {
            committed: false,
            detail: e.to_string(),
        },
    };
    // The agent's tree lives on unless told the host has its checkpoint; a lost ack
    // errs that way.
    let acked = wire::send_msg(&mut c.stream, &ack);
    let received = received?;
    if let Err(e) = acked {
        tracing::warn!(error = %e, "the agent did not get the commit ack; its tree runs on");
    }
    Ok(received)
}

/// Verifies the received checkpoint and renames it to `out`, never replacing anything.
fn commit(staging: tempfile::TempDir, out: &Path) -> Result<(), GuestError> {
    verify(staging.path())?;
    let kept = staging.keep();
    if let Err(e) = atomic::rename_noreplace(&kept, out) {
        let _ = fs::remove_dir_all(&kept);
        return Err(e.into());
    }
    Ok(())
}

/// Verifies a kata checkpoint directory the way restore does: every file metadata.json
/// names is there with its size and sha256, and nothing else is.
pub fn verify(dir: &Path) -> Result<Metadata, GuestError> {
    let md = integrity::read_metadata(dir)?;
    integrity::verify_dir(dir, &md)?;
    Ok(md)
}

/// Restores the checkpoint directory `path` in the guest: verified here first, so a
/// damaged checkpoint never reaches the guest; then its index and metadata.json are
/// sent, and the guest reads the shards from here as CRIU asks for them.
pub fn restore(
    ep: &Endpoint,
    path: &Path,
    container: Option<String>,
    flags: CriuFlags,
) -> Result<Restored, GuestError> {
    let not_kata = |why: String| {
        GuestError::Invalid(format!(
            "{}: {why}; a kata restore takes the directory `cedana dump kata` wrote",
            path.display()
        ))
    };
    if !path.is_dir() {
        return Err(not_kata("not a checkpoint directory".into()));
    }
    let md = verify(path)?;
    let index = StreamIndex::load(path)
        .map_err(|e| not_kata(format!("not a streamed checkpoint ({e})")))?;
    let shards = Shards::open(path, &index)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Everything but the shards, metadata.json last.
    let mut small: Vec<&str> = md
        .files
        .keys()
        .map(String::as_str)
        .filter(|rel| !index.shards.iter().any(|s| s == rel))
        .collect();
    small.push(METADATA_FILE);
    let mut c = connect(ep)?;
    wire::send_msg(
        &mut c.stream,
        &Request::Restore(RestoreSpec {
            name,
            container,
            flags,
        }),
    )?;
    let sent = files::send(c.stream.as_mut(), path, &small);
    let served = sent.and_then(|()| shards.serve(c.stream.as_mut()));
    match served {
        Ok(r) => Ok(r),
        // The agent's error says more than our broken pipe, when it sent one.
        Err(e @ GuestError::Link { .. }) => Err(agent_error(c.stream.as_mut()).unwrap_or(e)),
        Err(e) => Err(e),
    }
}

/// The error the agent sent before the connection broke, if it sent one.
fn agent_error(s: &mut dyn Stream) -> Option<GuestError> {
    loop {
        match wire::recv_msg::<Fetch, _>(s) {
            Ok(_) => continue,
            Err(e @ GuestError::Remote { .. }) => return Some(e),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_or_foreign_checkpoint_is_refused_before_any_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ep = Endpoint::Hybrid {
            socket: dir.path().join("absent.sock"),
            port: 1,
        };
        let archive = dir.path().join("x.tar.zst");
        fs::write(&archive, b"an archive").expect("write");
        let err = restore(&ep, &archive, None, CriuFlags::default()).unwrap_err();
        assert!(err.to_string().contains("cedana dump kata"), "{err}");
        let ck = dir.path().join("ck");
        fs::create_dir(&ck).expect("mkdir");
        fs::write(ck.join("metadata.json"), b"{not json").expect("write");
        let err = restore(&ep, &ck, None, CriuFlags::default()).unwrap_err();
        assert!(matches!(err, GuestError::Image(_)), "{err}");
        let err = restore(&ep, &dir.path().join("absent"), None, CriuFlags::default()).unwrap_err();
        assert!(matches!(err, GuestError::Invalid(_)), "{err}");
    }
}
