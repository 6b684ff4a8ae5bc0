//! Process handles (`pidfd_open`): a process to signal or wait for that cannot be
//! confused with a later one reusing its PID.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A handle on the live process `pid` (not necessarily our child).
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments; the result is checked.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by pidfd_open, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// SIGKILLs `pid` and waits, at most `timeout`, until it has exited (its descriptors,
/// listening sockets included, closed); true once it is gone, or was already.
pub fn kill_and_wait(pid: i32, timeout: Duration) -> bool {
    let Ok(fd) = open(pid) else {
        return true;
    };
    // SAFETY: pidfd_send_signal with a null siginfo; the descriptor is ours.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent < 0 {
        return false;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            _ if left.is_zero() => return false,
            Ok(_) => return false,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_process_is_gone_when_it_returns() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert!(kill_and_wait(pid, Duration::from_secs(10)));
        // Exited (a zombie until reaped): killed by SIGKILL.
        let status = child.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // Gone already: nothing to wait for.
        assert!(kill_and_wait(pid, Duration::from_secs(1)));
    }
}
