//! A streamed dump that kills the tree, under the commit protocol: CRIU in CLI mode runs
//! `cedana-criu-relay` as its `--action-script`, which reports each action on a private
//! socket. At `post-dump` (every image written, the tree still seized) the capture is
//! sealed, the caller commits the checkpoint, and only its verdict lets CRIU kill the
//! tree; a failed commit, or a caller that died, makes CRIU let the tree run on.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{capture_config, capture_failed, io, Capture, CaptureStats, ShardPlan, StreamError};
use crate::criu::relay::{self, notify::Bridge, RelayError};
use crate::criu::{Criu, CriuOpts, StreamArgs};

/// The commit step: called once at `post-dump` with the sealed capture's figures; `false`
/// makes CRIU let the tree run on.
pub type Commit<'a> = &'a (dyn Fn(&CaptureStats) -> bool + Sync);

/// Dumps `pid` streaming into `images_dir` (or `plan`'s sink), committing at `post-dump` through `commit`.
/// CRIU's log and the action socket go in `work_dir`.
pub fn dump_committed(
    criu: &Criu,
    pid: i32,
    images_dir: &Path,
    work_dir: &Path,
    opts: &CriuOpts,
    plan: ShardPlan,
    commit: Commit<'_>,
) -> Result<CaptureStats, StreamError> {
    let script = relay::locate().ok_or_else(|| StreamError::Io {
        context: format!(
            "a streamed dump that stops the process needs {} (CRIU's action script) beside \
             this binary or on PATH; install it (make install), or dump with --leave-running \
             or without --streams",
            relay::BINARY_NAME
        ),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let bridge = Bridge::bind(work_dir).map_err(relay_io("listen for CRIU's action script"))?;
    let capture = Capture::start(capture_config(images_dir, plan))
        .map_err(io::<StreamError>("listen for CRIU"))?;
    let capture = Mutex::new(Some(capture));
    let sealed: Mutex<Option<std::io::Result<CaptureStats>>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    let args = StreamArgs {
        pid,
        images_dir,
        work_dir,
        opts,
        action_script: Some((&script, bridge.path())),
    };
    // Wakes the action-script server the moment CRIU is done (a timed poll kept every
    // dump waiting up to its period after CRIU exited).
    let (wake, woken) = UnixStream::pair().map_err(io::<StreamError>("create a socket pair"))?;
    let dumped = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let mut fds = [
                    PollFd::new(bridge.fd(), PollFlags::POLLIN),
                    PollFd::new(woken.as_fd(), PollFlags::POLLIN),
                ];
                if !matches!(poll(&mut fds, PollTimeout::NONE), Ok(n) if n > 0) {
                    continue;
                }
                let action = fds[0].revents().unwrap_or(PollFlags::empty());
                if !action.intersects(PollFlags::POLLIN | PollFlags::POLLERR) {
                    continue;
                }
                let answered = bridge.answer_one(|action, _| {
                    if action != "post-dump" {
                        return Ok(());
                    }
                    let taken = capture.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let stats = match taken {
                        Some(c) => c.seal(),
                        None => Err(std::io::Error::other("post-dump arrived twice")),
                    };
                    let verdict = match &stats {
                        Ok(st) if commit(st) => Ok(()),
                        Ok(_) => Err(RelayError::Protocol("the commit failed".into())),
                        Err(e) => Err(RelayError::Protocol(format!("sealing the capture: {e}"))),
                    };
                    *sealed.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
                    verdict
                });
                if let Err(e) = answered {
                    tracing::debug!(error = %e, "action script answered with a failure");
                }
            }
        });
        let r = criu.dump_streamed(&args);
        done.store(true, Ordering::SeqCst);
        let _ = (&wake).write_all(&[1]);
        r
    });
    // Post-dump never came (CRIU failed before it): drop what was captured. If the
    // capture itself failed (a full disk), that is why CRIU did: report it instead.
    if let Some(c) = capture.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let cause = c.abort();
        if let Some(cause) = cause {
            return Err(capture_failed(images_dir, cause));
        }
        dumped?;
        return Err(StreamError::Io {
            context: "CRIU finished without its post-dump action".into(),
            source: std::io::Error::other("no post-dump"),
        });
    }
    let stats = sealed.into_inner().unwrap_or_else(|p| p.into_inner());
    match (dumped, stats) {
        // Sealing failed (the shards' last bytes or the index did not fit): CRIU let the
        // tree run on and only says its action script failed.
        (_, Some(Err(e))) => Err(capture_failed(images_dir, e)),
        (Err(e), _) => Err(e.into()),
        (Ok(_), Some(Ok(stats))) => Ok(stats),
        (Ok(_), None) => Err(StreamError::Io {
            context: "capture images".into(),
            source: std::io::Error::other("the capture was never sealed"),
        }),
    }
}

fn relay_io(context: &str) -> impl FnOnce(RelayError) -> StreamError + '_ {
    move |e| StreamError::Io {
        context: context.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}
