//! Container stdio. containerd hands the shim FIFO paths (or none); the shim gives the
//! container pipes, copies between the pipes and the FIFOs on threads, and keeps the
//! write end of the stdin pipe so `CloseIO` can give the container EOF. With a terminal,
//! the runtime sends the pty master over a console socket; the shim copies stdin into it
//! and its output to the stdout FIFO, and resizes it.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::error::{Result, ShimError};
use crate::runtime::ChildStdio;

/// The stdio paths of a process, as containerd gave them.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    /// stdin FIFO ("" for none).
    pub stdin: String,
    /// stdout FIFO or `file://` URI ("" for none).
    pub stdout: String,
    /// stderr FIFO or `file://` URI ("" for none).
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
}

/// The shim's side of a process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    stdin: Arc<Mutex<Option<File>>>,
    console: Option<Arc<OwnedFd>>,
    copies: Vec<JoinHandle<()>>,
}

fn open_fifo_or_file(path: &str, write: bool) -> Result<File> {
    if let Some(f) = path.strip_prefix("file://") {
        if let Some(parent) = Path::new(f).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        return OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .map_err(ShimError::io(format!("open log file {f}")));
    }
    if path.contains("://") {
        return Err(ShimError::InvalidArgument(format!(
            "unsupported stdio URI {path}: only FIFOs and file:// are supported"
        )));
    }
    // O_RDWR on a FIFO never blocks and never sees EOF or EPIPE because the other side
    // comes late or goes away.
    let _ = write;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(ShimError::io(format!("open stdio fifo {path}")))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ShimError::io("pipe")(std::io::Error::from(e)))
}

/// Copies `from` into `to` until EOF (EIO on a pty master counts as EOF); a failing
/// writer does not stop the draining, so the process never blocks on a full pipe.
fn copy(mut from: File, mut to: Option<File>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(w) = to.as_mut() {
            if w.write_all(&buf[..n]).is_err() {
                to = None;
            }
        }
    }
}

impl ProcessIo {
    /// Pipes for a process without a terminal: returns the container's ends and the
    /// shim's side (copy threads started).
    pub fn pipes(paths: &StdioPaths) -> Result<(ChildStdio, ProcessIo)> {
        let mut child = ChildStdio::default();
        let mut io = ProcessIo::default();
        if !paths.stdin.is_empty() {
            let fifo = open_fifo_or_file(&paths.stdin, false)?;
            let (r, w) = pipe()?;
            child.stdin = Some(r);
            let writer = Arc::new(Mutex::new(Some(File::from(w))));
            io.stdin = writer.clone();
            // Not joined: it ends when the client closes stdin (CloseIO) or the shim exits.
            std::thread::spawn(move || copy_stdin(fifo, writer));
        }
        for (path, slot) in [
            (&paths.stdout, &mut child.stdout),
            (&paths.stderr, &mut child.stderr),
        ] {
            if path.is_empty() {
                continue;
            }
            let out = open_fifo_or_file(path, true)?;
            let (r, w) = pipe()?;
            *slot = Some(w);
            io.copies
                .push(std::thread::spawn(move || copy(File::from(r), Some(out))));
        }
        Ok((child, io))
    }

    /// Starts copying for a terminal whose master the runtime sent to `socket`.
    pub fn console(socket: &ConsoleSocket, paths: &StdioPaths) -> Result<ProcessIo> {
        let master = Arc::new(socket.receive_master()?);
        let mut io = ProcessIo {
            console: Some(master.clone()),
            ..Default::default()
        };
        if !paths.stdin.is_empty() {
            let fifo = open_fifo_or_file(&paths.stdin, false)?;
            let m = File::from(
                master
                    .try_clone()
                    .map_err(ShimError::io("dup pty master"))?,
            );
            let writer = Arc::new(Mutex::new(Some(m)));
            io.stdin = writer.clone();
            std::thread::spawn(move || copy_stdin(fifo, writer));
        }
        let out = if paths.stdout.is_empty() {
            None
        } else {
            Some(open_fifo_or_file(&paths.stdout, true)?)
        };
        let m = File::from(
            master
                .try_clone()
                .map_err(ShimError::io("dup pty master"))?,
        );
        io.copies.push(std::thread::spawn(move || copy(m, out)));
        Ok(io)
    }

    /// Gives the process EOF on stdin.
    pub fn close_stdin(&self) {
        if let Ok(mut w) = self.stdin.lock() {
            w.take();
        }
    }

    /// Resizes the terminal (no-op without one).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(m) = &self.console else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize we own; the fd is open.
        let rc = unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(ShimError::io("resize pty")(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Waits (on a blocking thread) until the output copies are done.
    pub async fn wait_output(&mut self) {
        let copies = std::mem::take(&mut self.copies);
        let _ = tokio::task::spawn_blocking(move || {
            for c in copies {
                let _ = c.join();
            }
        })
        .await;
    }
}

fn copy_stdin(mut fifo: File, writer: Arc<Mutex<Option<File>>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match fifo.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut w = writer.lock().expect("stdin writer");
        let ok = w.as_mut().is_some_and(|f| f.write_all(&buf[..n]).is_ok());
        if !ok {
            w.take();
            break;
        }
    }
}

/// A unix socket the runtime connects to (`--console-socket`) to send the pty master.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ConsoleSocket {
    /// A fresh socket in a private temp dir.
    pub fn new() -> Result<ConsoleSocket> {
        let dir = tempfile::Builder::new()
            .prefix("cedana-shim-pty")
            .tempdir()
            .map_err(ShimError::io("console socket dir"))?;
        let path = dir.path().join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(ShimError::io("bind console socket"))?;
        // The runtime has connected and sent the fd by the time it returns: never block.
        listener
            .set_nonblocking(true)
            .map_err(ShimError::io("console socket"))?;
        Ok(ConsoleSocket {
            listener,
            path,
            _dir: dir,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn receive_master(&self) -> Result<OwnedFd> {
        let (stream, _) = self.listener.accept().map_err(ShimError::io(
            "the runtime did not send a terminal on the console socket",
        ))?;
        stream
            .set_nonblocking(false)
            .map_err(ShimError::io("console socket"))?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| ShimError::io("receive pty master")(e.into()))?;
        for c in msg
            .cmsgs()
            .map_err(|e| ShimError::io("receive pty master")(e.into()))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just gave us this fd; we own it now.
                    return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) });
                }
            }
        }
        Err(ShimError::Other(
            "the runtime sent no fd on the console socket".into(),
        ))
    }
}
