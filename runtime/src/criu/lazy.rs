//! Lazy restore: `criu lazy-pages` serves the memory pages of a directory of plain
//! images over userfaultfd while `criu restore --lazy-pages` brings the tree back without
//! them. The restored tree runs at once; each page it touches is fetched on demand and the
//! rest is pushed in the background, after which lazy-pages exits by itself.
//!
//! Both CRIUs share one work dir: lazy-pages listens on `lazy-pages.socket` there and the
//! restorer connects to it. CRIU streams only whole images, so the images must be files
//! (`-D`), never the `--stream` socket; the engine decodes streamed checkpoints first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::error::{failure_tail, LOG_TAIL_LINES};
use super::{Criu, CriuError, CriuOpts};

/// lazy-pages' listening socket, in the shared work dir (named by CRIU).
pub const LAZY_SOCKET: &str = "lazy-pages.socket";
/// lazy-pages' log, in the shared work dir.
pub const LAZY_LOG: &str = "lazy-pages.log";
/// How long lazy-pages may take to open its socket; it does little more than bind.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How often the socket and the child are looked at meanwhile.
const POLL: Duration = Duration::from_millis(2);

/// A running `criu lazy-pages`, serving a restored tree's pages; our child.
#[derive(Debug)]
pub struct LazyPages {
    child: Child,
    log: PathBuf,
}

impl LazyPages {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until every page has been handed over (lazy-pages then exits by itself);
    /// any other end is an error quoting its log.
    pub fn wait(mut self) -> Result<(), CriuError> {
        let status = self
            .child
            .wait()
            .map_err(|e| CriuError::io("wait for criu lazy-pages", e))?;
        if status.success() {
            return Ok(());
        }
        Err(self.failed(describe(status), None))
    }

    /// Ends it after a failed restore (nothing is left to serve) and says how it ended.
    fn stop(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => describe(status),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "was stopped after the restore failed".into()
            }
        }
    }

    fn failed(&self, why: String, restore: Option<CriuError>) -> CriuError {
        CriuError::LazyPages {
            why: format!("criu lazy-pages (pid {}) {why}", self.child.id()),
            log_tail: failure_tail(&self.log, LOG_TAIL_LINES),
            restore: restore.map(Box::new),
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

impl Criu {
    /// Starts `criu lazy-pages` on `images` with `work` as its work dir, and returns once
    /// its socket is there (or fails with its log's tail when it ends first).
    pub fn start_lazy_pages(&self, images: &Path, work: &Path) -> Result<LazyPages, CriuError> {
        let child = Command::new(self.binary())
            .arg("lazy-pages")
            .arg("-D")
            .arg(images)
            .arg("-W")
            .arg(work)
            .args(["-o", LAZY_LOG, "-v4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| CriuError::Spawn {
                binary: self.binary().to_path_buf(),
                source,
            })?;
        let mut lp = LazyPages {
            child,
            log: work.join(LAZY_LOG),
        };
        let socket = work.join(LAZY_SOCKET);
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = lp.child.try_wait() {
                return Err(lp.failed(
                    format!("{} before opening its socket", describe(status)),
                    None,
                ));
            }
            if socket.exists() {
                return Ok(lp);
            }
            if t.elapsed() > SOCKET_WAIT {
                let why = format!(
                    "opened no socket {} within {} s",
                    socket.display(),
                    SOCKET_WAIT.as_secs()
                );
                lp.stop();
                return Err(lp.failed(why, None));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `criu restore --lazy-pages` from the plain images in `images` (CLI mode, as a
    /// sibling: the restored root is our child), its pages served by a lazy-pages started
    /// here. Returns the root's PID and the still-running lazy-pages to wait for. On a
    /// failure lazy-pages is ended, and the error says how it ended and quotes its log.
    pub fn restore_lazy(
        &self,
        images: &Path,
        work: &Path,
        opts: &CriuOpts,
    ) -> Result<(i32, LazyPages), CriuError> {
        let mut lp = self.start_lazy_pages(images, work)?;
        let mut args = vec![
            "-D".to_string(),
            images.display().to_string(),
            "--lazy-pages".into(),
        ];
        args.extend(Self::logging(work, "restore.log"));
        match self.restore_detached(work, args, opts) {
            Ok(pid) => Ok((pid, lp)),
            Err(e) => {
                let why = lp.stop();
                Err(lp.failed(why, Some(e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_server_that_ends_before_its_socket_is_reported_with_its_log() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(
            work.path().join(LAZY_LOG),
            "(00.000001) Error (criu/uffd.c:1): uffd: stand-in failure\n",
        )
        .unwrap();
        // `false` stands in for CRIU: it ends at once, with status 1.
        let e = Criu::new("/bin/false")
            .start_lazy_pages(work.path(), work.path())
            .unwrap_err();
        let msg = e.to_string();
        for needle in [
            "criu lazy-pages",
            "exited with status 1 before opening its socket",
            "stand-in failure",
            "the checkpoint is unchanged",
        ] {
            assert!(msg.contains(needle), "{needle:?} in {msg}");
        }
    }
}
