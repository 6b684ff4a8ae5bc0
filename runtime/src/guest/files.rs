//! Checkpoint files over the connection, both ways: a dump's files from the agent to the
//! host, a restore's small files from the host to the agent. Each is [`Part::File`] and
//! its checked stream; [`Part::Done`] ends them.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::GuestError;
use super::transport::Stream;
use super::wire::{self, plain_name, Part};

/// Sends the files `names` of `dir`, then [`Part::Done`].
pub fn send(s: &mut dyn Stream, dir: &Path, names: &[&str]) -> Result<(), GuestError> {
    for rel in names {
        let path = dir.join(rel);
        let f = File::open(&path).map_err(|e| GuestError::io(&path, e))?;
        wire::send_msg(
            s,
            &Part::File {
                rel: rel.to_string(),
            },
        )?;
        wire::send_stream(s, &mut BufReader::new(f))?;
    }
    wire::send_msg(s, &Part::Done)
}

/// Receives [`Part::File`]s into `dir` until [`Part::Done`]; returns the bytes received.
pub fn receive(s: &mut dyn Stream, dir: &Path) -> Result<u64, GuestError> {
    let mut total = 0;
    loop {
        let rel = match wire::recv_msg::<Part, _>(s)? {
            Part::Done => return Ok(total),
            Part::File { rel } => rel,
        };
        if !plain_name(&rel) {
            return Err(GuestError::Protocol(format!(
                "the peer sent a checkpoint file named {rel:?}"
            )));
        }
        let path = dir.join(&rel);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| GuestError::io(&path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        total += wire::recv_stream(s, &mut w, None)?;
        let file = w
            .into_inner()
            .map_err(|e| GuestError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| GuestError::io(&path, e))?;
    }
}
