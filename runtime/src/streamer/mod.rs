//! Streaming checkpoints: CRIU runs in CLI mode with `--stream` (upstream CRIU refuses
//! streaming over RPC) and talks to our streamer instead of writing image files. Image
//! data is cut into chunks spread over N shards, each compressed on its own thread and
//! written straight into the checkpoint directory; restore decompresses in parallel
//! and feeds CRIU through pipes. See `protocol.rs` for the wire format.

pub mod capture;
mod capture_pipeline;
pub mod child;
mod decode;
mod feed;
mod hollow;
pub mod index;
pub mod lazy_pages;
pub mod protocol;
pub mod sealed;
pub mod serve;
mod shard;
mod socket;
pub mod source;
pub mod unpack;

pub use capture::{Capture, CaptureConfig, CaptureStats, ShardSink};
pub use index::{Codec, StreamIndex, INDEX_FILE};
pub use serve::Serve;
pub use source::{RemoteShards, ShardSource};

/// Uncompressed chunk size: big enough for good compression, small enough that N
/// shards x a few queued chunks stay far under 128 MiB.
pub const CHUNK_BYTES: usize = 4 << 20;
/// zstd level for shards: the level of the `tar | zstd -3` pipeline we compare against.
pub const ZSTD_LEVEL: i32 = 3;

use std::path::{Path, PathBuf};

use crate::criu::{Criu, CriuError, CriuOpts, StreamArgs};

/// Errors of a streamed dump or restore.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// CRIU failed (its log tail is inside).
    #[error(transparent)]
    Criu(#[from] CriuError),
    /// The shards did not fit on the checkpoint's filesystem.
    #[error(
        "no space left on {}: the streamed checkpoint's shards did not fit; nothing was kept \
         and the process keeps running; free space there, or dump with --dir on a filesystem \
         with room for the process's memory (compressed)",
        dir.display()
    )]
    NoSpace {
        /// The checkpoint directory (the caller's `--dir`).
        dir: PathBuf,
    },
    /// The streamer failed.
    #[error("image streamer: {context}: {source}")]
    Io {
        /// What the streamer was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StreamError {
    /// Names `dir`, the checkpoint directory the caller chose, as the one that is full
    /// (the streamer only knows its staging directory inside it).
    pub fn located(self, dir: &Path) -> Self {
        match self {
            StreamError::NoSpace { .. } => StreamError::NoSpace {
                dir: dir.to_path_buf(),
            },
            e => e,
        }
    }
}

/// The error for a capture that failed writing into `dir`: a full disk (or quota) is
/// said as such, since CRIU only sees its pipe closed and says "Broken pipe".
pub(crate) fn capture_failed(dir: &Path, source: std::io::Error) -> StreamError {
    match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => StreamError::NoSpace {
            dir: dir.to_path_buf(),
        },
        _ => StreamError::Io {
            context: "capture images".into(),
            source,
        },
    }
}

fn io<E: From<StreamError>>(context: &str) -> impl FnOnce(std::io::Error) -> E + '_ {
    move |source| {
        StreamError::Io {
            context: context.to_string(),
            source,
        }
        .into()
    }
}

/// How a dump's shards are stored: `shards` of them (at least one), `codec`, at our level
/// and chunk size; into files in the capture's dir, or into `sink` (an object store).
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// Number of shards.
    pub shards: usize,
    /// Chunk codec.
    pub codec: Codec,
    /// Where shards go instead of local files.
    pub sink: Option<ShardSink>,
}

impl ShardPlan {
    /// Shards as files in the capture's directory.
    pub fn local(shards: usize, codec: Codec) -> Self {
        Self {
            shards,
            codec,
            sink: None,
        }
    }
}

/// The capture of a dump into `dir` as `plan` says.
fn capture_config(dir: &Path, plan: ShardPlan) -> CaptureConfig {
    CaptureConfig {
        dir: dir.to_path_buf(),
        shards: plan.shards.max(1),
        codec: plan.codec,
        level: ZSTD_LEVEL,
        chunk_bytes: CHUNK_BYTES,
        sink: plan.sink,
    }
}

/// Runs `producer`, which makes CRIU stream a dump into `dir`, with a capture listening
/// there: the index lands in `dir`, the shards too unless `plan` has a sink. A failed
/// producer discards the capture.
pub fn capture<T, E: From<StreamError>>(
    dir: &Path,
    plan: ShardPlan,
    producer: impl FnOnce() -> Result<T, E>,
) -> Result<(T, CaptureStats), E> {
    let capture = Capture::start(capture_config(dir, plan)).map_err(io("listen for CRIU"))?;
    match producer() {
        Ok(v) => {
            let stats = capture.finish().map_err(|e| capture_failed(dir, e))?;
            Ok((v, stats))
        }
        // CRIU failing because the capture did (it saw its pipe closed): the capture's
        // failure is the one to report.
        Err(e) => match capture.abort() {
            Some(cause) => Err(capture_failed(dir, cause).into()),
            None => Err(e),
        },
    }
}

/// Runs `consumer`, which makes CRIU restore from a stream whose socket is in
/// `socket_dir`, while the checkpoint in `images_dir` is decoded in parallel and served.
/// The checkpoint itself is left untouched.
pub fn serve<T, E: From<StreamError>>(
    images_dir: &Path,
    socket_dir: &Path,
    consumer: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let serve = start_serving(images_dir, socket_dir)?;
    let restored = consumer();
    let served = serve.finish();
    let v = restored?;
    served.map_err(io("serve images"))?;
    Ok(v)
}

/// Starts serving the streamed checkpoint in `images_dir` on a socket in `socket_dir`,
/// decoding on every core; [`Serve::finish`] once CRIU is done.
pub fn start_serving<E: From<StreamError>>(
    images_dir: &Path,
    socket_dir: &Path,
) -> Result<Serve, E> {
    let index = StreamIndex::load(images_dir).map_err(io("read the stream index"))?;
    let decoders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    Serve::start(socket_dir, images_dir, index, decoders).map_err(io("listen for CRIU"))
}

/// Dumps `pid` with CRIU streaming into compressed shards as `plan` says (in
/// `images_dir`, or its sink).
pub fn dump(
    criu: &Criu,
    pid: i32,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
    plan: ShardPlan,
) -> Result<CaptureStats, StreamError> {
    let args = StreamArgs {
        pid,
        images_dir,
        work_dir,
        opts,
        action_script: None,
    };
    capture(images_dir, plan, || {
        criu.dump_streamed(&args).map_err(StreamError::from)
    })
    .map(|(_, stats)| stats)
}

/// Restores a streamed checkpoint from `images_dir` (its shards from `remote` when the
/// directory holds only the index); returns the restored root PID.
pub fn restore(
    criu: &Criu,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
    remote: Option<&RemoteShards>,
) -> Result<i32, StreamError> {
    let run = || {
        criu.restore_streamed(&StreamArgs {
            pid: 0,
            images_dir: work_dir,
            work_dir,
            opts,
            action_script: None,
        })
        .map_err(StreamError::from)
    };
    // The socket goes in the work dir, which CRIU takes as its images dir.
    let Some(remote) = remote else {
        return serve(images_dir, work_dir, run);
    };
    let index =
        StreamIndex::load(images_dir).map_err(io::<StreamError>("read the stream index"))?;
    let decoders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let serve = Serve::from_source(work_dir, std::sync::Arc::clone(&remote.0), index, decoders)
        .map_err(io::<StreamError>("listen for CRIU"))?;
    let restored = run();
    let served = serve.finish();
    let pid = restored?;
    served.map_err(io::<StreamError>("serve images"))?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_with_the_callers_dir() {
        let staging = Path::new("/ck/.ck-1.partial");
        let full = capture_failed(staging, std::io::Error::from_raw_os_error(libc::ENOSPC));
        let msg = full.located(Path::new("/ck")).to_string();
        assert!(msg.starts_with("no space left on /ck:"), "{msg}");
        assert!(msg.contains("--dir"), "says what to do: {msg}");
        let other = capture_failed(staging, std::io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(
            other.located(Path::new("/ck")),
            StreamError::Io { .. }
        ));
    }
}
