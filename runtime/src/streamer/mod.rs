//! Streaming checkpoints: CRIU runs in CLI mode with `--stream` (upstream CRIU refuses
//! streaming over RPC) and talks to our streamer instead of writing image files. Image
//! data is cut into chunks spread over N shards, each compressed on its own thread and
//! written straight into the checkpoint directory; restore decompresses in parallel
//! and feeds CRIU through pipes. See `protocol.rs` for the wire format.

pub mod capture;
pub mod index;
pub mod protocol;
pub mod serve;

pub use capture::{Capture, CaptureConfig, CaptureStats};
pub use index::{Codec, StreamIndex, INDEX_FILE};
pub use serve::Serve;

/// Uncompressed chunk size: big enough for good compression, small enough that N
/// shards x a few queued chunks stay far under 128 MiB.
pub const CHUNK_BYTES: usize = 4 << 20;
/// zstd level for shards: the level of the `tar | zstd -3` pipeline we compare against.
pub const ZSTD_LEVEL: i32 = 3;

use std::path::Path;

use crate::criu::{Criu, CriuError, CriuOpts, StreamArgs};

/// Errors of a streamed dump or restore.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// CRIU failed (its log tail is inside).
    #[error(transparent)]
    Criu(#[from] CriuError),
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

fn io(context: &str) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
    move |source| StreamError::Io {
        context: context.to_string(),
        source,
    }
}

/// Dumps `pid` with CRIU streaming into `shards` compressed shards in `images_dir`.
pub fn dump(
    criu: &Criu,
    pid: i32,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
    shards: usize,
    codec: Codec,
) -> Result<CaptureStats, StreamError> {
    let capture = Capture::start(CaptureConfig {
        dir: images_dir.to_path_buf(),
        shards: shards.max(1),
        codec,
        level: ZSTD_LEVEL,
        chunk_bytes: CHUNK_BYTES,
    })
    .map_err(io("listen for CRIU"))?;
    match criu.dump_streamed(&StreamArgs {
        pid,
        images_dir,
        work_dir,
        opts,
    }) {
        Ok(_) => capture.finish().map_err(io("capture images")),
        Err(e) => {
            capture.abort();
            Err(e.into())
        }
    }
}

/// Restores a streamed checkpoint from `images_dir`; returns the restored root PID.
pub fn restore(
    criu: &Criu,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
) -> Result<i32, StreamError> {
    let index = StreamIndex::load(images_dir).map_err(io("read the stream index"))?;
    let decoders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // The socket goes in the work dir: the checkpoint itself stays untouched.
    let serve =
        Serve::start(work_dir, images_dir, index, decoders).map_err(io("listen for CRIU"))?;
    let restored = criu.restore_streamed(&StreamArgs {
        pid: 0,
        images_dir: work_dir,
        work_dir,
        opts,
    });
    let served = serve.finish();
    let pid = restored?;
    served.map_err(io("serve images"))?;
    Ok(pid)
}
