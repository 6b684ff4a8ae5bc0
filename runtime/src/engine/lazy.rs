//! Lazy restore (`RestoreRequest::lazy`): the tree is restored without its anonymous
//! memory, which `criu lazy-pages` then serves over userfaultfd (on demand, the rest in
//! the background). What it reads from (the images, CRIU's work dir holding its socket,
//! an unpacked or decoded copy) must outlive the restore: the handler records the running
//! lazy-pages in a [`PagesInFlight`], and the storage adapter, once the chain is done,
//! hands its temp dirs to a watcher thread that drops them when lazy-pages has exited.
//!
//! Checkpoint formats: a directory is served in place; an archive from the directory the
//! storage adapter unpacked it into; a streamed checkpoint (shards) by our page server,
//! straight from its shards (`streamer/lazy_pages.rs`): lazy-pages reads pages at random
//! offsets, which CRIU's stream cannot give, and decoding all of the memory first would
//! cost what a full restore costs.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::adapters::restore_storage::unpack_dir;
use crate::criu::page_server::PageSource;
use crate::criu::{Criu, CriuOpts, LazyPages};
use crate::engine::Env;
use crate::error::EngineError;
use crate::streamer;

/// How long a killed restored root is given to exit.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
                let r = match pages.wait() {
                    Ok(()) => {
                        tracing::debug!(pid, root, "lazy restore: every page served");
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(root, error = %e, "lazy restore: the page server failed; killing the restored tree, whose memory is incomplete");
                        // Gone before this is reported: a caller told the restore
                        // failed finds nothing of the tree still answering.
                        if !crate::process::pidfd::kill_and_wait(root, KILL_WAIT) {
                            tracing::warn!(root, "the restored root did not exit after SIGKILL");
                        }
                        Err(format!(
                            "the restored process {root} was killed, as its memory would be incomplete: {e}"
                        ))
                    }
                };
                drop(held);
                r
            });
        match watcher {
            Ok(h) => env.lazy_watchers.push(h),
            Err(e) => tracing::error!(error = %e, "cannot start the lazy-pages watcher"),
        }
    }
}

/// Watcher threads of lazy restores still serving pages; each ends with why its tree
/// was killed, if it was.
#[derive(Debug, Default)]
pub struct LazyWatchers(Mutex<Vec<JoinHandle<Result<(), String>>>>);

impl LazyWatchers {
    fn push(&self, h: JoinHandle<Result<(), String>>) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|h| !h.is_finished());
            v.push(h);
        }
    }

    /// Blocks until every lazy restore's pages are in and its files are gone; the
    /// failures, one line each.
    pub fn wait_all(&self) -> Vec<String> {
        let all: Vec<_> = match self.0.lock() {
            Ok(mut v) => v.drain(..).collect(),
            Err(_) => return Vec::new(),
        };
        all.into_iter()
            .filter_map(|h| match h.join() {
                Ok(r) => r.err(),
                Err(_) => Some("a lazy-pages watcher panicked".into()),
            })
            .collect()
    }
}

/// Restores lazily from `images_dir`: plain images are served by lazy-pages itself; a
/// streamed checkpoint has its images but the tasks' memory written into a private dir
/// and that memory served from its shards by our page server (decoded whole first only
/// when its pages reach into a parent checkpoint). Returns the root's PID, the serving
/// lazy-pages, and the private dir if any.
pub fn restore(
    criu: &Criu,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
) -> Result<(i32, LazyPages, Option<Keep>), EngineError> {
    if !images_dir.join(streamer::INDEX_FILE).is_file() {
        let (pid, pages) = criu.restore_lazy(images_dir, work_dir, opts, None)?;
        return Ok((pid, pages, None));
    }
    let dir = unpack_dir(images_dir)?;
    let decoders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let source = streamer::lazy_pages::prepare(images_dir, dir.path(), decoders).map_err(|e| {
        EngineError::io(
            format!(
                "prepare the streamed checkpoint {} for a lazy restore",
                images_dir.display()
            ),
            e,
        )
    })?;
    let source = match source {
        Some(s) => Some(Box::new(s) as Box<dyn PageSource>),
        None => {
            tracing::info!("lazy restore: pages in a parent checkpoint; lazy-pages serves them from decoded images");
            None
        }
    };
    let (pid, pages) = criu.restore_lazy(dir.path(), work_dir, opts, source)?;
    Ok((pid, pages, Some(Box::new(dir) as Keep)))
}
