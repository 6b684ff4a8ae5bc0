//! The agent's dump, streamed: the tree is held stopped, the engine dumps it with CRIU
//! `--stream` into one shard whose bytes go out over the connection while CRIU writes
//! them (each piece checksummed by the wire), then the stream index and metadata.json.
//! No image, shard or archive is ever whole in the guest, whose root (and scratch) is
//! RAM. The tree is killed once the host says it committed the checkpoint, and runs on
//! after any failure.
//!
//! The shard is lz4 by default: under emulation (TCG) zstd in the guest costs several
//! times more CPU per byte than lz4 (see README, kata), and the host stores what it gets.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::container;
use super::error::GuestError;
use super::files;
use super::serve::{Hold, Served};
use super::transport::Stream;
use super::wire::{self, Ack, DumpReady, DumpSpec, Part, StreamSender, Target};
use crate::engine::{DumpRequest, DumpResponse};
use crate::error::EngineError;
use crate::image::compression::Compression;
use crate::image::metadata::METADATA_FILE;
use crate::store::{ObjectWriter, StoreError};
use crate::streamer::ShardSink;

/// Pieces of shard (up to 4 MiB each) queued between CRIU's streamer and the connection:
/// enough to keep both busy, little enough for a small guest.
const QUEUE: usize = 2;
/// How often the sender checks whether the dump ended while no piece came.
const POLL: Duration = Duration::from_millis(100);

/// What the streamer hands the connection.
enum Piece {
    /// A shard file starts.
    Begin(String),
    /// Its next bytes.
    Data(Vec<u8>),
    /// It is complete.
    End,
}

/// A shard written into the connection (through the sender thread).
struct WireFile {
    tx: SyncSender<Piece>,
    size: u64,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the connection to the host is gone",
    )
}

impl Write for WireFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Piece::Data(buf.to_vec()))
            .map_err(|_| gone())?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for WireFile {
    fn finish(self: Box<Self>) -> Result<u64, StoreError> {
        self.tx.send(Piece::End).map_err(|_| StoreError::Io {
            location: "the host".into(),
            context: "finish a streamed shard".into(),
            source: gone(),
        })?;
        Ok(self.size)
    }
}

/// The sink the engine's streamer writes shards into: the connection.
fn wire_sink(tx: SyncSender<Piece>) -> ShardSink {
    ShardSink(Arc::new(move |name: &str| {
        let tx = tx.clone();
        tx.send(Piece::Begin(name.to_string()))
            .map_err(|_| StoreError::Io {
                location: "the host".into(),
                context: format!("start streaming {name}"),
                source: gone(),
            })?;
        Ok(Box::new(WireFile { tx, size: 0 }) as Box<dyn ObjectWriter>)
    }))
}

/// The shard codec a dump asked for.
fn codec(asked: Option<&str>) -> Result<Compression, GuestError> {
    match asked {
        None | Some("lz4") => Ok(Compression::Lz4),
        Some("zstd") => Ok(Compression::Zstd),
        Some(other) => Err(GuestError::Invalid(format!(
            "--compression {other}: a kata dump streams its images as lz4 (default) or zstd"
        ))),
    }
}

pub(super) fn dump(sv: &Served, s: &mut dyn Stream, spec: DumpSpec) -> Result<(), GuestError> {
    let pid = match &spec.target {
        Target::Pid(p) => *p,
        Target::Container(id) => {
            let c = container::find(&sv.kata_root, id)?;
            container::tree_root(&c, &container::processes())?
        }
    };
    let compression = codec(spec.compression.as_deref())?;
    let out = sv.work.join("out");
    fs::create_dir_all(&out).map_err(|e| GuestError::io(&out, e))?;
    let leave_running = spec.leave_running.unwrap_or(false);
    // The tree stays stopped from before CRIU until the host has committed the
    // checkpoint: killed then (it never runs after its capture), resumed on any failure
    // (a failed dump leaves it running, as on the host).
    let mut hold = Hold::stop(&sv.engine, pid)?;
    let (tx, rx) = sync_channel(QUEUE);
    let req = DumpRequest {
        pid,
        dir: Some(out),
        name: spec.name,
        compression: Some(compression),
        // One shard: one stream on the connection, in the order CRIU writes.
        streams: Some(1),
        leave_running: Some(true),
        flags: spec.flags,
        shard_sink: Some(wire_sink(tx)),
        ..Default::default()
    };
    let (engine, rt) = (Arc::clone(&sv.engine), sv.rt.clone());
    let dumper = std::thread::spawn(move || rt.block_on(engine.dump(req)));
    let sent = send_pieces(s, rx, &dumper);
    let resp = dumper
        .join()
        .map_err(|_| GuestError::Invalid("the dump thread panicked".into()))?;
    // The connection's failure is the cause: CRIU only saw its pipe closed.
    sent?;
    let resp = resp?;
    // Only the index and metadata.json are here; removed however this ends.
    let _remove = RemoveDirOnDrop(resp.path.clone());
    send_local_files(s, &resp)?;
    wire::send_msg(
        s,
        &DumpReady {
            name: resp.name,
            size: 0,
            pid,
            duration_ms: resp.duration_ms,
            metadata: resp.metadata,
        },
    )?;
    match wire::recv_msg::<Ack, _>(s)? {
        Ack {
            committed: true, ..
        } => {
            hold.finish(leave_running);
            Ok(())
        }
        Ack { detail, .. } => {
            tracing::warn!(%detail, "the host refused the checkpoint; the tree runs on");
            Ok(())
        }
    }
}

/// Sends the shard pieces as they come until the dump ends; on a broken connection it
/// stops taking them (dropping `rx` fails the streamer, so CRIU stops and the tree runs on).
fn send_pieces(
    s: &mut dyn Stream,
    rx: Receiver<Piece>,
    dumper: &JoinHandle<Result<DumpResponse, EngineError>>,
) -> Result<(), GuestError> {
    let mut open: Option<StreamSender> = None;
    loop {
        let piece = match rx.recv_timeout(POLL) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) if dumper.is_finished() => match rx.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(()),
            },
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        match piece {
            Piece::Begin(rel) => {
                if open.is_some() {
                    return Err(GuestError::Protocol(
                        "the streamer opened a second shard while one was open".into(),
                    ));
                }
                wire::send_msg(s, &Part::File { rel })?;
                open = Some(StreamSender::default());
            }
            Piece::Data(data) => match open.as_mut() {
                Some(w) => w.send(s, &data)?,
                None => return Err(GuestError::Protocol("shard data before its start".into())),
            },
            Piece::End => {
                if let Some(w) = open.take() {
                    w.finish(s)?;
                }
            }
        }
    }
}

/// Sends the files the dump left in its directory (the stream index, metadata.json),
/// then the end of the files.
fn send_local_files(s: &mut dyn Stream, resp: &DumpResponse) -> Result<(), GuestError> {
    let mut names: Vec<&str> = resp
        .metadata
        .files
        .keys()
        .map(String::as_str)
        .filter(|rel| resp.path.join(rel).is_file())
        .collect();
    // metadata.json last: the host has every file it names when it reads it.
    names.push(METADATA_FILE);
    files::send(s, &resp.path, &names)
}

/// Removes a directory and what it holds when dropped.
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lz4_and_zstd_shards() {
        assert_eq!(codec(None).ok(), Some(Compression::Lz4));
        assert_eq!(codec(Some("zstd")).ok(), Some(Compression::Zstd));
        let e = codec(Some("gzip")).unwrap_err().to_string();
        assert!(e.contains("lz4 (default) or zstd"), "{e}");
    }
}
