//! What capture and serve share on CRIU's side: the socket CRIU connects to, accepted in a
//! loop that can be cancelled, and the pipes' buffer size.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Pipe buffer we ask for (the default 64 KiB costs a syscall per 64 KiB).
const PIPE_BYTES: i32 = 1 << 20;
/// How often the accept loop checks whether it was cancelled (a connection wakes it at once).
const ACCEPT_POLL_MS: u8 = 5;

/// Binds the socket CRIU will connect to, non-blocking so [`accept`] can be cancelled.
pub(super) fn listen(socket: &Path) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(socket)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Waits for CRIU's connection (blocking from then on); `None` once `stop` is raised
/// first.
pub(super) fn accept(listener: &UnixListener, stop: &AtomicBool) -> io::Result<Option<UnixStream>> {
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(Some(s));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                // Waits in poll, not a sleep: CRIU's connect wakes it, where a sleep
                // added up to the poll interval to every dump and restore.
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ACCEPT_POLL_MS)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks for a larger buffer on a pipe from CRIU; failing only means smaller transfers.
pub(super) fn widen_pipe(pipe: &impl AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a descriptor the caller owns; no memory involved.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}
