//! The contexts a dump and a restore travel in through their chains: the request, and
//! what adapters have worked out so far.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{DumpRequest, DumpResponse, Extensions, RestoreRequest};
use crate::adapters::commit::Committer;
use crate::criu::options::CriuOpts;
use crate::engine::Env;
use crate::image::compression::Compression;
use crate::image::metadata::Metadata;
use crate::process::state::ProcessState;
use crate::streamer::Codec;

/// A dump request on its way through the chain, with what adapters have worked out.
#[derive(Debug)]
pub struct DumpCtx {
    /// Config and host clients.
    pub env: Arc<Env>,
    /// The request as the caller sent it.
    pub req: DumpRequest,
    /// Directory the checkpoint goes into (filled by the defaults adapter).
    pub dir: PathBuf,
    /// Checkpoint name (filled by the defaults adapter).
    pub name: String,
    /// Packing (filled by the defaults adapter).
    pub compression: Compression,
    /// Shards and codec when the images are streamed (filled by the defaults adapter).
    pub stream: Option<(usize, Codec)>,
    /// Why this route cannot stream (a container on a terminal, ...), set by the route's
    /// resolvers before the defaults adapter: a dump without `--streams` then falls back
    /// to the archive and records this reason.
    pub no_stream: Option<String>,
    /// Where CRIU writes its images (filled by the storage adapter).
    pub images_dir: PathBuf,
    /// Where CRIU writes its log and stats, outside the checkpoint (storage adapter);
    /// `None`: beside the images.
    pub work_dir: Option<PathBuf>,
    /// Commits the checkpoint; a handler that kills the tree commits before it dies
    /// (filled by the storage adapter).
    pub committer: Option<Arc<Committer>>,
    /// The process tree (filled by the process-state adapter).
    pub state: ProcessState,
    /// CRIU options chosen so far.
    pub opts: CriuOpts,
    /// Metadata being assembled.
    pub metadata: Metadata,
    /// When the operation started.
    pub started: Instant,
    /// What the route's adapters hand to each other (a plugin's resolved container, ...).
    pub ext: Extensions,
}

impl DumpCtx {
    /// A fresh context for a request.
    pub fn new(env: Arc<Env>, req: DumpRequest) -> Self {
        Self {
            env,
            req,
            dir: PathBuf::new(),
            name: String::new(),
            compression: Compression::Zstd,
            stream: None,
            no_stream: None,
            images_dir: PathBuf::new(),
            work_dir: None,
            committer: None,
            state: ProcessState::default(),
            opts: CriuOpts::default(),
            metadata: Metadata::default(),
            started: Instant::now(),
            ext: Extensions::new(),
        }
    }
}

impl DumpCtx {
    /// What a dump handler returns: CRIU's images in `images_dir` with their metadata;
    /// the storage adapter turns them into the final checkpoint and fills in sizes.
    pub fn images_written(self, metadata: Metadata) -> DumpResponse {
        DumpResponse {
            path: self.images_dir,
            name: self.name,
            compression: self.compression,
            size_bytes: 0,
            duration_ms: 0,
            metadata,
            profile: Vec::new(),
        }
    }
}

/// A restore request on its way through the chain.
#[derive(Debug)]
pub struct RestoreCtx {
    /// Config and host clients.
    pub env: Arc<Env>,
    /// The request as the caller sent it.
    pub req: RestoreRequest,
    /// Verified CRIU images to restore from (filled by the storage adapter).
    pub images_dir: PathBuf,
    /// CRIU's work directory (logs), outside the checkpoint.
    pub work_dir: PathBuf,
    /// The checkpoint's metadata (filled by the storage adapter).
    pub metadata: Metadata,
    /// CRIU options for the restore (recorded ones, then the caller's overrides).
    pub opts: CriuOpts,
    /// When the operation started.
    pub started: Instant,
    /// What the route's adapters hand to each other.
    pub ext: Extensions,
}

impl RestoreCtx {
    /// A fresh context for a request.
    pub fn new(env: Arc<Env>, req: RestoreRequest) -> Self {
        Self {
            env,
            req,
            images_dir: PathBuf::new(),
            work_dir: PathBuf::new(),
            metadata: Metadata::default(),
            opts: CriuOpts::default(),
            started: Instant::now(),
            ext: Extensions::new(),
        }
    }
}
