//! The stream relay: what a container runtime runs as its CRIU (`runc --criu
//! cedana-criu-relay`) so that a container's images can stream.
//!
//! runc drives CRIU over RPC (`criu swrk <fd>`), where upstream CRIU refuses `--stream`.
//! The relay takes runc's place in CRIU's eyes and runc's CRIU in runc's: it reads runc's
//! request, runs CRIU's command line with the same options plus `--stream` (CRIU then
//! talks to our streamer through the socket in the images directory), forwards CRIU's
//! notifications to runc (see `notify.rs`) and answers with the response CRIU's service
//! would have sent. Everything else (version and feature checks, or any request when
//! [`STREAM_ENV`] is not set) goes to the real `criu swrk` unchanged, by exec.
//!
//! Not carried: `orphan_pts_master` (CRIU hands the new pty master over RPC only, so
//! containers with a terminal cannot stream; the engine refuses them before runc runs).

pub mod notify;
pub mod translate;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use prost::Message;

use super::packet::{self, PacketError};
use super::rpc::{self, CriuReqType};
use translate::Places;

/// Set (to anything) by the engine: stream dump and restore requests.
pub const STREAM_ENV: &str = "CEDANA_CRIU_RELAY_STREAM";
/// The real CRIU binary (default: `criu` on PATH).
pub const BINARY_ENV: &str = "CEDANA_CRIU_RELAY_BINARY";
/// Set by the relay for CRIU's action scripts: the relay's notification socket.
pub const NOTIFY_ENV: &str = "CEDANA_CRIU_RELAY_NOTIFY";
/// The relay's binary name, looked up beside the running binary, then on PATH.
pub const BINARY_NAME: &str = "cedana-criu-relay";

/// Largest request accepted from the runtime.
const RECV_BUF: usize = 256 * 1024;

/// Why the relay could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The request asks for something CRIU's command line cannot do or we do not translate.
    #[error("cannot stream this request: {0}; checkpoint without --streams")]
    Unsupported(String),
    /// The runtime's side of the conversation did not make sense.
    #[error("swrk protocol: {0}")]
    Protocol(String),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the relay was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl RelayError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RelayError::Io {
            context: context.into(),
            source,
        }
    }

    fn packet(context: &str, e: PacketError) -> Self {
        match e {
            PacketError::HungUp => RelayError::Protocol(format!("{context}: the runtime hung up")),
            PacketError::Garbled(d) => RelayError::Protocol(format!("{context}: {d}")),
            PacketError::Io(source) => RelayError::io(context, source),
        }
    }
}

/// Where the relay binary is: beside `current_exe` (installed together), else on PATH.
pub fn locate() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(BINARY_NAME)))
        .filter(|p| p.is_file());
    beside.or_else(|| crate::host::find_executable(Path::new(BINARY_NAME)))
}

/// Serves one `criu swrk <fd>` session on `fd`; returns the process exit code.
pub fn serve_swrk(fd: RawFd) -> i32 {
    // SAFETY: the runtime passes this descriptor on our command line for us to own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    match serve(sock) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cedana-criu-relay: {e}");
            1
        }
    }
}

fn real_criu() -> PathBuf {
    std::env::var_os(BINARY_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("criu"))
}

fn serve(sock: OwnedFd) -> Result<i32, RelayError> {
    let mut buf = vec![0u8; RECV_BUF];
    let n = packet::recv(sock.as_fd(), &mut buf, true)
        .map_err(|e| RelayError::packet("read the request", e))?
        .ok_or_else(|| RelayError::Protocol("the runtime sent no request".into()))?;
    let req = rpc::CriuReq::decode(&buf[..n])
        .map_err(|e| RelayError::Protocol(format!("undecodable request: {e}")))?;
    let ty = req.r#type();
    let streams = std::env::var_os(STREAM_ENV).is_some();
    if !streams || !matches!(ty, CriuReqType::Dump | CriuReqType::Restore) {
        return Err(exec_real(sock));
    }
    // Taken off the socket only now: the real CRIU would have needed it queued.
    packet::recv(sock.as_fd(), &mut buf, false)
        .map_err(|e| RelayError::packet("read the request", e))?;
    let opts = req.opts.clone().unwrap_or_default();
    let scratch = tempfile::Builder::new()
        .prefix("cedana-criu-relay-")
        .tempdir()
        .map_err(|e| RelayError::io("create the relay's private dir", e))?;
    let outcome = translate::check_known_fields(&buf[..n])
        .and_then(|()| run_streamed(sock.as_fd(), ty, &opts, scratch.path()));
    let resp = match outcome {
        Ok(r) => r,
        Err(e) => {
            // Where the caller looks: CRIU's log (its "Error" lines are reported).
            note_in_log(&opts, sock.as_fd(), ty, &e);
            failure(ty, e.to_string())
        }
    };
    let code = i32::from(!resp.success);
    packet::send(sock.as_fd(), &resp).map_err(|e| RelayError::packet("answer the runtime", e))?;
    Ok(code)
}

/// Replaces this process by the real `criu swrk` on the same socket (the request is
/// still queued); returns only on failure.
fn exec_real(sock: OwnedFd) -> RelayError {
    let fd = sock.as_raw_fd();
    // The descriptor number stays what the runtime named; it must survive exec.
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return RelayError::io("keep the swrk socket open", std::io::Error::last_os_error());
    }
    let binary = real_criu();
    let err = Command::new(&binary).arg("swrk").arg(fd.to_string()).exec();
    RelayError::io(format!("exec {}", binary.display()), err)
}

/// The runtime's process (the socket's peer), whose descriptors the request names.
fn peer_pid(sock: BorrowedFd<'_>) -> Result<i32, RelayError> {
    getsockopt(&sock, PeerCredentials)
        .map(|c| c.pid())
        .map_err(|e| RelayError::io("SO_PEERCRED on the swrk socket", e.into()))
}

/// A directory named by a descriptor of the runtime (as CRIU's service resolves it).
fn peer_dir(peer: i32, fd: i32) -> Result<PathBuf, RelayError> {
    let link = format!("/proc/{peer}/fd/{fd}");
    let path = std::fs::read_link(&link)
        .map_err(|e| RelayError::io(format!("resolve the runtime's descriptor {link}"), e))?;
    if !path.is_dir() {
        return Err(RelayError::Protocol(format!(
            "descriptor {fd} of the runtime is {}, not a directory",
            path.display()
        )));
    }
    Ok(path)
}

fn places(
    sock: BorrowedFd<'_>,
    opts: &rpc::CriuOpts,
    scratch: &Path,
    notify: bool,
) -> Result<Places, RelayError> {
    let peer = peer_pid(sock)?;
    let images_dir = match (opts.images_dir_fd, &opts.images_dir) {
        (fd, _) if fd >= 0 => peer_dir(peer, fd)?,
        (_, Some(dir)) => PathBuf::from(dir),
        _ => {
            return Err(RelayError::Protocol(
                "no images directory in the request".into(),
            ))
        }
    };
    let work_dir = match opts.work_dir_fd {
        Some(fd) => peer_dir(peer, fd)?,
        None => images_dir.clone(),
    };
    let action_script = if notify {
        Some(std::env::current_exe().map_err(|e| RelayError::io("find the relay binary", e))?)
    } else {
        None
    };
    Ok(Places {
        images_dir,
        work_dir,
        pid_file: scratch.join("restore.pid"),
        action_script,
    })
}

/// Runs CRIU's command line for the request, relaying its notifications; returns the
/// response CRIU's service would have sent.
fn run_streamed(
    sock: BorrowedFd<'_>,
    ty: CriuReqType,
    opts: &rpc::CriuOpts,
    scratch: &Path,
) -> Result<rpc::CriuResp, RelayError> {
    let notify = opts.notify_scripts == Some(true);
    let at = places(sock, opts, scratch, notify)?;
    let args = translate::cli_args(ty, opts, &at)?;
    let bridge = notify.then(|| notify::Bridge::bind(scratch)).transpose()?;
    let binary = real_criu();
    let mut cmd = Command::new(&binary);
    cmd.args(&args);
    if let Some(b) = &bridge {
        cmd.env(NOTIFY_ENV, b.path());
    }
    // CRIU must not hold the runtime's socket: runc waits for it to close.
    // SAFETY: fcntl on a descriptor we hold.
    if unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(RelayError::io(
            "close the swrk socket on exec",
            std::io::Error::last_os_error(),
        ));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RelayError::io(format!("start {}", binary.display()), e))?;
    let relayed = match &bridge {
        Some(b) => relay_until_exit(b, sock, child.id()),
        None => Ok(()),
    };
    let status = child
        .wait()
        .map_err(|e| RelayError::io("wait for criu", e))?;
    relayed?;
    if !status.success() {
        return Ok(failure(
            ty,
            format!(
                "criu {} --stream failed ({status}); see {}",
                if ty == CriuReqType::Dump {
                    "dump"
                } else {
                    "restore"
                },
                at.work_dir.join(translate::log_name(opts, ty)).display()
            ),
        ));
    }
    let mut resp = rpc::CriuResp {
        r#type: ty as i32,
        success: true,
        ..Default::default()
    };
    if ty == CriuReqType::Restore {
        let text = std::fs::read_to_string(&at.pid_file)
            .map_err(|e| RelayError::io("read the restored PID", e))?;
        let pid = text
            .trim()
            .parse()
            .map_err(|_| RelayError::Protocol(format!("bad pid file content {text:?}")))?;
        resp.restore = Some(rpc::CriuRestoreResp { pid });
    } else {
        resp.dump = Some(rpc::CriuDumpResp {
            restored: Some(false),
        });
    }
    Ok(resp)
}

/// Serves CRIU's action scripts until CRIU (`pid`) exits.
fn relay_until_exit(
    bridge: &notify::Bridge,
    sock: BorrowedFd<'_>,
    pid: u32,
) -> Result<(), RelayError> {
    let pidfd = crate::process::pidfd::open(pid as i32)
        .map_err(|e| RelayError::io("pidfd_open for criu", e))?;
    loop {
        let mut fds = [
            PollFd::new(bridge.fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RelayError::io("poll", e.into())),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        if ready(0) {
            bridge.serve_one(sock)?;
        } else if ready(1) {
            return Ok(());
        }
    }
}

fn failure(ty: CriuReqType, msg: String) -> rpc::CriuResp {
    rpc::CriuResp {
        r#type: ty as i32,
        success: false,
        cr_errmsg: Some(msg),
        ..Default::default()
    }
}

/// Appends the relay's error to CRIU's log, where runc's error message points.
fn note_in_log(opts: &rpc::CriuOpts, sock: BorrowedFd<'_>, ty: CriuReqType, e: &RelayError) {
    let Ok(at) = places(sock, opts, Path::new("/"), false) else {
        return;
    };
    let log = at.work_dir.join(translate::log_name(opts, ty));
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&log) {
        let _ = writeln!(f, "Error (cedana-criu-relay): {e}");
    }
}

/// The environment that makes the relay (the runtime's `--criu`) stream, with CRIU at `real_criu`.
pub fn runtime_env(real_criu: &Path) -> Vec<(OsString, OsString)> {
    vec![
        (STREAM_ENV.into(), "1".into()),
        (BINARY_ENV.into(), real_criu.as_os_str().to_owned()),
    ]
}
