//! Lazy restore (`RestoreRequest::lazy`): the tree is restored without its anonymous
//! memory, which `criu lazy-pages` then serves over userfaultfd (on demand, the rest in
//! the background). What it reads from (the images, CRIU's work dir holding its socket,
//! an unpacked or decoded copy) must outlive the restore: the handler records the running
//! lazy-pages in a [`PagesInFlight`], and the storage adapter, once the chain is done,
//! hands its temp dirs to a watcher thread that drops them when lazy-pages has exited.
//!
//! Checkpoint formats: a directory is served in place; an archive from the directory the
//! storage adapter unpacked it into; a streamed checkpoint (shards) is first decoded
//! into a private directory of image files beside it (zero pages as holes), because
//! lazy-pages reads pages at random offsets, which CRIU's stream cannot give.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::adapters::restore_storage::unpack_dir;
use crate::criu::{Criu, CriuOpts, LazyPages};
use crate::engine::Env;
use crate::error::EngineError;
use crate::streamer;

/// Something kept alive until the pages are all in (a temp dir, a fetched copy).
pub type Keep = Box<dyn Any + Send>;

/// The lazy-pages a restore left serving its tree, handed from the handler to the
/// storage adapter through the context's extensions.
#[derive(Clone, Default)]
pub struct PagesInFlight(Arc<Mutex<Option<InFlight>>>);

struct InFlight {
    pages: LazyPages,
    root: i32,
    keep: Vec<Keep>,
}

impl PagesInFlight {
    /// The handler's part: `pages` serves `root`'s tree, reading from what `keep` holds.
    pub fn serving(&self, pages: LazyPages, root: i32, keep: Vec<Keep>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(InFlight { pages, root, keep });
        }
    }

    /// The storage adapter's part, after the chain: with nothing in flight `keep` is
    /// dropped now; otherwise a watcher thread drops it once lazy-pages exits. If
    /// lazy-pages fails, pages it never delivered would read as zeros, so the restored
    /// root is killed rather than left running on wrong memory (the checkpoint is kept
    /// and can be restored again).
    pub fn release_after(&self, env: &Env, keep: Keep) {
        let taken = self.0.lock().ok().and_then(|mut s| s.take());
        let Some(InFlight {
            pages,
            root,
            keep: mut held,
        }) = taken
        else {
            return;
        };
        held.push(keep);
        let pid = pages.pid();
        let watcher = std::thread::Builder::new()
            .name("lazy-pages-wait".into())
            .spawn(move || {
                match pages.wait() {
                    Ok(()) => tracing::debug!(pid, root, "lazy restore: every page served"),
                    Err(e) => {
                        tracing::error!(root, error = %e, "lazy restore: the page server failed; killing the restored tree, whose memory is incomplete");
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(root),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                drop(held);
            });
        match watcher {
            Ok(h) => env.lazy_watchers.push(h),
            Err(e) => tracing::error!(error = %e, "cannot start the lazy-pages watcher"),
        }
    }
}

/// Watcher threads of lazy restores still serving pages.
#[derive(Debug, Default)]
pub struct LazyWatchers(Mutex<Vec<JoinHandle<()>>>);

impl LazyWatchers {
    fn push(&self, h: JoinHandle<()>) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|h| !h.is_finished());
            v.push(h);
        }
    }

    /// Blocks until every lazy restore's pages are in and its files are gone.
    pub fn wait_all(&self) {
        let all: Vec<_> = match self.0.lock() {
            Ok(mut v) => v.drain(..).collect(),
            Err(_) => return,
        };
        for h in all {
            let _ = h.join();
        }
    }
}

/// Restores lazily from `images_dir` (plain images, or a streamed checkpoint decoded
/// first); returns the root's PID, the serving lazy-pages, and the decoded copy if any.
pub fn restore(
    criu: &Criu,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
) -> Result<(i32, LazyPages, Option<Keep>), EngineError> {
    let decoded = if images_dir.join(streamer::INDEX_FILE).is_file() {
        let dir = unpack_dir(images_dir)?;
        let decoders = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        streamer::unpack::unpack_images(images_dir, dir.path(), decoders).map_err(|e| {
            EngineError::io(
                format!(
                    "decode the streamed checkpoint {} into image files for a lazy restore",
                    images_dir.display()
                ),
                e,
            )
        })?;
        Some(dir)
    } else {
        None
    };
    let images = decoded.as_ref().map_or(images_dir, |d| d.path());
    let (pid, pages) = criu.restore_lazy(images, work_dir, opts)?;
    Ok((pid, pages, decoded.map(|d| Box::new(d) as Keep)))
}
