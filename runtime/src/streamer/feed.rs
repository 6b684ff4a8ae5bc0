//! Feeding one image into the pipe CRIU reads, without copying the bytes into the pipe:
//! zero chunks are spliced from one never-written buffer, decoded chunks from the
//! decoder's own buffer (vmsplice), which is handed back for reuse only once the pipe can
//! no longer hold any of it. Plain writes are the fallback (an image file, or a kernel
//! that refuses vmsplice).
//!
//! Why: CRIU drains the pipe holding the pipe's lock, faulting in its fresh memory as it
//! copies. Copying each chunk in under that same lock made the two sides take turns and
//! spin on the lock; splicing takes the lock for a moment per chunk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;

/// Bytes of zeros spliced at a time.
const ZERO_BYTES: usize = 1 << 20;
/// How often [`PipeFeed`]'s drop looks whether CRIU has read the last spliced bytes.
const DRAIN_POLL: Duration = Duration::from_micros(200);

/// Zeros for zero chunks: never written and never freed, so their pages can be spliced
/// into a pipe (references, no copy) with nothing to wait for before reuse. Allocated
/// zeroed, they are the kernel's shared zero page until something writes them.
fn zeros() -> &'static [u8] {
    static ZEROS: OnceLock<&'static [u8]> = OnceLock::new();
    ZEROS.get_or_init(|| Box::leak(vec![0u8; ZERO_BYTES].into_boxed_slice()))
}

/// What the image goes into.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// A pipe holding at most this many bytes.
    Pipe(u64),
    /// A regular file: zeros become a hole.
    File,
    /// Anything else: plain writes.
    Other,
}

/// A decoded buffer written into the target, and whose lane gets it back.
struct Sent {
    /// Stream offset just past its bytes.
    end: u64,
    lane: usize,
    buf: Vec<u8>,
    /// Its pages are referenced by the pipe (else it was copied and is free at once).
    spliced: bool,
}

/// One image's way into CRIU's pipe (or a file), tracking which spliced buffers the pipe
/// may still reference. Dropping it waits until CRIU has read them (or is gone).
pub(super) struct PipeFeed {
    out: File,
    target: Target,
    /// vmsplice still worth trying.
    splice: bool,
    written: u64,
    sent: VecDeque<Sent>,
}

impl PipeFeed {
    /// Feeds `out`: a pipe (as CRIU hands over), an image file, or anything writable.
    pub(super) fn new(out: File) -> Self {
        // SAFETY: F_GETPIPE_SZ on a descriptor we own; it fails for anything but a pipe.
        let pipe = unsafe { libc::fcntl(out.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let target = if pipe > 0 {
            Target::Pipe(pipe as u64)
        } else if out.metadata().is_ok_and(|m| m.is_file()) {
            Target::File
        } else {
            Target::Other
        };
        PipeFeed {
            out,
            target,
            splice: matches!(target, Target::Pipe(_)),
            written: 0,
            sent: VecDeque::new(),
        }
    }

    /// More than the buffers of `chunk` bytes (and one shorter last one) the pipe may
    /// still hold at once: what a decoder lane needs beyond its window so that its
    /// buffers are never all waiting in the pipe while the writer waits on the lane.
    pub(super) fn in_flight(&self, chunk: u64) -> usize {
        match self.target {
            Target::Pipe(capacity) if self.splice => capacity.div_ceil(chunk.max(1)) as usize + 2,
            _ => 0,
        }
    }

    /// Puts `len` zero bytes into the target.
    pub(super) fn zeros(&mut self, mut len: u64) -> io::Result<()> {
        if self.target == Target::File {
            self.out.seek(io::SeekFrom::Current(len as i64))?;
            self.written += len;
            return Ok(());
        }
        let zeros = zeros();
        while len > 0 {
            let n = len.min(ZERO_BYTES as u64) as usize;
            let done = if self.splice {
                self.vmsplice(&zeros[..n])?
            } else {
                0
            };
            if done == 0 {
                self.out.write_all(&zeros[..n])?;
            }
            let done = if done == 0 { n } else { done };
            len -= done as u64;
            self.written += done as u64;
        }
        Ok(())
    }

    /// Puts `buf` (decoded by `lane`) into the target; [`reusable`](Self::reusable) hands
    /// it back once nothing can read it any more.
    pub(super) fn data(&mut self, buf: Vec<u8>, lane: usize) -> io::Result<()> {
        let mut off = 0;
        while self.splice && off < buf.len() {
            match self.vmsplice(&buf[off..])? {
                0 => break,
                n => off += n,
            }
        }
        if off < buf.len() {
            self.out.write_all(&buf[off..])?;
        }
        self.written += buf.len() as u64;
        self.sent.push_back(Sent {
            end: self.written,
            lane,
            buf,
            spliced: off > 0,
        });
        Ok(())
    }

    /// A buffer the target no longer references, and the lane it came from.
    pub(super) fn reusable(&mut self) -> Option<(usize, Vec<u8>)> {
        let front = self.sent.front()?;
        // A pipe holds at most `capacity` bytes, the newest ones: once that many were
        // put in after a buffer, none of its bytes can still be there.
        let free = match self.target {
            Target::Pipe(capacity) => !front.spliced || self.written - front.end >= capacity,
            _ => true,
        };
        free.then(|| self.sent.pop_front())
            .flatten()
            .map(|s| (s.lane, s.buf))
    }

    /// vmsplice of (a prefix of) `data`: the bytes taken, or 0 once the kernel refuses
    /// vmsplice here (then plain writes from now on).
    fn vmsplice(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            let iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            // SAFETY: one iovec over `data`, which the caller keeps unwritten and alive
            // until the pipe no longer references it (`reusable`, and `Drop`).
            let r = unsafe { libc::vmsplice(self.out.as_raw_fd(), &iov, 1, 0) };
            if r > 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EBADF) => {
                    self.splice = false;
                    return Ok(0);
                }
                _ => return Err(e),
            }
        }
    }

    /// Whether the pipe still holds bytes and someone may read them.
    fn still_read(&self) -> io::Result<bool> {
        let fd = self.out.as_raw_fd();
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if unread == 0 {
            return Ok(false);
        }
        let mut p = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one pollfd, no wait; POLLERR on a pipe's write end: no reader left.
        if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(p.revents & libc::POLLERR == 0)
    }
}

impl Drop for PipeFeed {
    fn drop(&mut self) {
        if !self.sent.iter().any(|s| s.spliced) {
            return;
        }
        // Freed, a buffer's pages could be handed out again and written while the pipe
        // still references them: CRIU would read those bytes instead.
        loop {
            match self.still_read() {
                Ok(true) => std::thread::sleep(DRAIN_POLL),
                Ok(false) => return,
                Err(_) => break,
            }
        }
        // Cannot tell: keep them (a few MiB) rather than risk it.
        for s in self.sent.drain(..).filter(|s| s.spliced) {
            std::mem::forget(s.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes `i` of chunk `k`: distinct per chunk, so a byte from another chunk shows.
    fn pattern(k: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i / 4096 + k * 7 + i % 251) as u8)
            .collect()
    }

    #[test]
    fn a_spliced_buffer_comes_back_only_once_the_reader_has_it() {
        const CHUNK: usize = 96 << 10;
        const CHUNKS: usize = 40;
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // Several chunks fit in the pipe at once, as with CRIU's widened pipes.
        super::super::socket::widen_pipe(&w);
        let mut feed = PipeFeed::new(File::from(w));
        assert!(matches!(feed.target, Target::Pipe(c) if c as usize > 4 * CHUNK));
        // A slow reader: the pipe stays full, so buffers wait there.
        let reader = std::thread::spawn(move || {
            let mut r = File::from(r);
            let mut got = Vec::new();
            let mut piece = vec![0u8; 7000];
            loop {
                let n = r.read(&mut piece).expect("read");
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&piece[..n]);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|k| pattern(k, CHUNK)).collect();
        let mut expected = Vec::new();
        let mut reused = 0;
        for (k, data) in chunks.into_iter().enumerate() {
            expected.extend_from_slice(&data);
            feed.data(data, k % 2).expect("data");
            if k % 5 == 0 {
                feed.zeros(5000).expect("zeros");
                expected.extend(std::iter::repeat_n(0, 5000));
            }
            // Reuse scribbles over the buffer at once, as a decoder would.
            while let Some((lane, mut buf)) = feed.reusable() {
                assert!(lane < 2);
                buf.fill(0xEE);
                reused += 1;
            }
        }
        assert!(feed.splice, "vmsplice into a pipe works here");
        assert!(reused > 0 && reused < CHUNKS, "{reused} buffers reused");
        drop(feed);
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the reader saw other bytes than were fed");
    }

    #[test]
    fn into_a_file_zeros_are_a_hole_and_buffers_come_back_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("img");
        let mut feed = PipeFeed::new(File::create(&path).expect("create"));
        assert!(feed.target == Target::File);
        feed.data(b"head".to_vec(), 0).expect("data");
        assert_eq!(
            feed.reusable().map(|(lane, b)| (lane, b.len())),
            Some((0, 4))
        );
        feed.zeros(1 << 20).expect("zeros");
        feed.data(b"tail".to_vec(), 1).expect("data");
        drop(feed);
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 4 + (1 << 20) + 4);
        assert_eq!(&bytes[..4], b"head");
        assert!(bytes[4..4 + (1 << 20)].iter().all(|&b| b == 0));
        assert_eq!(&bytes[bytes.len() - 4..], b"tail");
    }
}
