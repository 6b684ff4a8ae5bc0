//! Lazy restore: `criu lazy-pages` serves the memory pages of a directory of plain
//! images over userfaultfd while `criu restore --lazy-pages` brings the tree back without
//! them. The restored tree runs at once; each page it touches is fetched on demand and the
//! rest is pushed in the background, after which lazy-pages exits by itself.
//!
//! Both CRIUs share one work dir: lazy-pages listens on `lazy-pages.socket` there and the
//! restorer connects to it. CRIU streams only whole images, so the images must be files
//! (`-D`), never the `--stream` socket. lazy-pages reads the pages from the images, or,
//! given a [`PageSource`], asks a page server of ours for them (`--page-server
//! --ps-socket`, over a socketpair; see `page_server.rs`), which for a streamed
//! checkpoint serves them from its shards, so its memory need not be decoded first.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{failure_tail, LOG_TAIL_LINES};
use super::page_server::{self, PageSource, Served};
use super::{pass_fd, Criu, CriuError, CriuOpts};

/// lazy-pages' listening socket, in the shared work dir (named by CRIU).
pub const LAZY_SOCKET: &str = "lazy-pages.socket";
/// lazy-pages' log, in the shared work dir.
pub const LAZY_LOG: &str = "lazy-pages.log";
/// How long lazy-pages may take to open its socket; it does little more than bind.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How often the socket and the child are looked at meanwhile.
const POLL: Duration = Duration::from_millis(2);
/// The descriptor lazy-pages finds our page server's socket at.
const PS_FD: i32 = 3;

/// A running `criu lazy-pages`, serving a restored tree's pages; our child.
#[derive(Debug)]
pub struct LazyPages {
    child: Child,
    log: PathBuf,
    /// Our page server's thread, when lazy-pages asks us for the pages.
    server: Option<JoinHandle<std::io::Result<Served>>>,
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
        let server = self.server_ended();
        match server {
            Ok(()) if status.success() => Ok(()),
            Ok(()) => Err(self.failed(describe(status), None)),
            Err(e) => Err(self.failed(format!("{}; our page server: {e}", describe(status)), None)),
        }
    }

    /// Ends it after a failed restore (nothing is left to serve) and says how it ended.
    fn stop(&mut self) -> String {
        let why = match self.child.try_wait() {
            Ok(Some(status)) => describe(status),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "was stopped after the restore failed".into()
            }
        };
        match self.server_ended() {
            Ok(()) => why,
            Err(e) => format!("{why}; our page server: {e}"),
        }
    }

    /// Joins our page server, once lazy-pages (its only client) is gone; its error, if any.
    fn server_ended(&mut self) -> Result<(), String> {
        let Some(t) = self.server.take() else {
            return Ok(());
        };
        match t.join() {
            Ok(Ok(served)) => {
                tracing::debug!(
                    requests = served.requests,
                    pages = served.pages,
                    "page server done"
                );
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("its thread panicked".into()),
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
    /// Starts `criu lazy-pages` on `images` with `work` as its work dir (asking `source`
    /// for the pages, when given, through a page server on a thread of ours), and returns
    /// once its socket is there (or fails with its log's tail when it ends first).
    pub fn start_lazy_pages(
        &self,
        images: &Path,
        work: &Path,
        source: Option<Box<dyn PageSource>>,
    ) -> Result<LazyPages, CriuError> {
        let mut cmd = Command::new(self.binary());
        cmd.arg("lazy-pages")
            .arg("-D")
            .arg(images)
            .arg("-W")
            .arg(work)
            .args(["-o", LAZY_LOG, "-v4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pair = match source {
            Some(src) => {
                let (ours, theirs) = UnixStream::pair()
                    .map_err(|e| CriuError::io("socketpair for the page server", e))?;
                cmd.args(["--page-server", "--ps-socket", &PS_FD.to_string()]);
                pass_fd(&mut cmd, theirs.as_raw_fd(), PS_FD);
                Some((ours, theirs, src))
            }
            None => None,
        };
        let child = cmd.spawn().map_err(|source| CriuError::Spawn {
            binary: self.binary().to_path_buf(),
            source,
        })?;
        // lazy-pages holds the only other end now: when it goes, the server reads EOF.
        let server = match pair {
            Some((ours, theirs, mut src)) => {
                drop(theirs);
                let t = std::thread::Builder::new()
                    .name("page-server".into())
                    .spawn(move || page_server::serve(ours, src.as_mut()));
                match t {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let mut child = child;
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(CriuError::io("start the page server thread", e));
                    }
                }
            }
            None => None,
        };
        let mut lp = LazyPages {
            child,
            log: work.join(LAZY_LOG),
            server,
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
    /// here (from `source`, when given, else from the images). Returns the root's PID and
    /// the still-running lazy-pages to wait for. On a failure lazy-pages is ended, and
    /// the error says how it ended and quotes its log.
    pub fn restore_lazy(
        &self,
        images: &Path,
        work: &Path,
        opts: &CriuOpts,
        source: Option<Box<dyn PageSource>>,
    ) -> Result<(i32, LazyPages), CriuError> {
        let mut lp = self.start_lazy_pages(images, work, source)?;
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
            .start_lazy_pages(work.path(), work.path(), None)
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
