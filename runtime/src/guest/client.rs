//! The host side of kata checkpoints: ask the agent, receive a checkpoint into a
//! staging file (each chunk and the whole checked as they arrive), verify it as a
//! checkpoint (manifest, metadata, every file's sha256), rename it into place, and only
//! then tell the agent it is committed; restore sends a checkpoint verified first.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::GuestError;
use super::transport::{connect, Endpoint};
use super::wire::{
    self, Ack, AgentInfo, DumpReady, DumpSpec, Listing, Request, RestoreSpec, Restored,
};
use crate::engine::CriuFlags;
use crate::image::archive;
use crate::image::atomic;
use crate::image::integrity;
use crate::image::metadata::Metadata;

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

/// Checkpoints `spec` in the guest into `dir` on the host.
pub fn dump(ep: &Endpoint, spec: DumpSpec, dir: &Path) -> Result<Received, GuestError> {
    fs::create_dir_all(dir).map_err(|e| GuestError::io(dir, e))?;
    let mut c = connect(ep)?;
    wire::send_msg(&mut c.stream, &Request::Dump(spec))?;
    let ready: DumpReady = wire::recv_msg(&mut c.stream)?;
    let file_name = &ready.file_name;
    if file_name.is_empty() || file_name.contains('/') || file_name.starts_with('.') {
        return Err(GuestError::Protocol(format!(
            "the agent named its checkpoint {file_name:?}"
        )));
    }
    let out = dir.join(file_name);
    let received = receive(&mut c.stream, &out, ready.size);
    let ack = match &received {
        Ok(()) => Ack {
            committed: true,
            detail: String::new(),
        },
        Err(e) => Ack {
            committed: false,
            detail: e.to_string(),
        },
    };
    // The agent keeps its copy unless told the host has one; a lost ack errs that way.
    let acked = wire::send_msg(&mut c.stream, &ack);
    received?;
    if let Err(e) = acked {
        tracing::warn!(error = %e, "the agent did not get the commit ack; it keeps its copy");
    }
    Ok(Received { path: out, ready })
}

/// Receives `size` bytes into a staging file beside `out`, verifies the checkpoint and
/// renames it to `out` without replacing anything; on failure nothing is left.
fn receive(s: &mut impl std::io::Read, out: &Path, size: u64) -> Result<(), GuestError> {
    let staging = atomic::staging_path_for(out);
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staging)
            .map_err(|e| GuestError::io(&staging, e))?;
        let mut w = BufWriter::new(file);
        wire::recv_stream(s, &mut w, size)?;
        let file = w
            .into_inner()
            .map_err(|e| GuestError::io(&staging, e.into_error()))?;
        file.sync_all().map_err(|e| GuestError::io(&staging, e))?;
        verify(&staging)?;
        atomic::rename_noreplace(&staging, out)?;
        atomic::sync_parent(out);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&staging);
    }
    result
}

/// Verifies a checkpoint archive the way restore does (manifest first, every file's
/// size and sha256 against metadata.json), unpacking into a scratch dir beside it.
pub fn verify(archive_path: &Path) -> Result<Metadata, GuestError> {
    let parent = archive_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".cedana-verify-")
        .tempdir_in(parent)
        .map_err(|e| GuestError::io(parent, e))?;
    let unpacked = archive::unpack_checkpoint(archive_path, scratch.path())?;
    let md = integrity::read_metadata(scratch.path())?;
    if let Some(m) = &unpacked.manifest {
        m.check_metadata(archive_path, &md)?;
    }
    integrity::verify_digests(&md, &unpacked.digests)?;
    Ok(md)
}

/// Restores the checkpoint archive at `path` in the guest; it is verified here first,
/// so a damaged checkpoint never reaches the guest.
pub fn restore(
    ep: &Endpoint,
    path: &Path,
    container: Option<String>,
    flags: CriuFlags,
) -> Result<Restored, GuestError> {
    if !path.is_file() {
        return Err(GuestError::Invalid(format!(
            "{}: not a checkpoint archive (a kata restore takes the file `cedana dump kata` wrote)",
            path.display()
        )));
    }
    verify(path)?;
    let file = File::open(path).map_err(|e| GuestError::io(path, e))?;
    let size = file.metadata().map_err(|e| GuestError::io(path, e))?.len();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut c = connect(ep)?;
    wire::send_msg(
        &mut c.stream,
        &Request::Restore(RestoreSpec {
            file_name,
            size,
            container,
            flags,
        }),
    )?;
    let sent = wire::send_stream(&mut c.stream, &mut BufReader::new(file));
    // The agent's error says more than our broken pipe, when it sent one.
    let reply = wire::recv_msg::<Restored, _>(&mut c.stream);
    match (sent, reply) {
        (_, Ok(r)) => Ok(r),
        (Ok(_), Err(e)) => Err(e),
        (Err(_), Err(e @ GuestError::Remote { .. })) => Err(e),
        (Err(e), Err(_)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_archive_is_refused_before_any_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.tar.zst");
        fs::write(&p, b"not an archive at all").expect("write");
        let ep = Endpoint::Hybrid {
            socket: dir.path().join("absent.sock"),
            port: 1,
        };
        let err = restore(&ep, &p, None, CriuFlags::default()).unwrap_err();
        assert!(matches!(err, GuestError::Image(_)), "{err}");
        let err = restore(&ep, &dir.path().join("absent"), None, CriuFlags::default()).unwrap_err();
        assert!(matches!(err, GuestError::Invalid(_)), "{err}");
    }
}
