//! The CRIU driver: RPC over `criu swrk` for dump/restore/version/feature checks.
//!
//! Every request starts a fresh `criu swrk <fd>` child connected through one end of a
//! `socketpair(AF_UNIX, SOCK_SEQPACKET)`. Each message is exactly one datagram carrying a
//! protobuf-encoded `criu_req` / `criu_resp` (no length prefix). File descriptor numbers in
//! a request (`images_dir_fd`, `work_dir_fd`, `inherit_fd`) name descriptors of *this*
//! process: CRIU finds us through `SO_PEERCRED` and opens `/proc/<our pid>/fd/<n>`, so the
//! descriptors are kept open until the response has arrived.
//!
//! All calls are blocking; async callers wrap them in `spawn_blocking`.

pub mod cli;
pub mod error;
pub mod options;
pub mod rpc;

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use prost::Message;

pub use cli::StreamArgs;
pub use error::{log_tail, CriuError, LOG_TAIL_LINES, NOT_FOUND_HINT};
pub use options::CriuOpts;

use rpc::CriuReqType;

/// The oldest CRIU the engine works with.
pub const MIN_VERSION: (u32, u32, u32) = (3, 16, 0);

/// The descriptor number the swrk socket gets in the CRIU child.
const SWRK_FD: i32 = 3;

/// Receive buffer for one response datagram.
const RECV_BUF: usize = 64 * 1024;

/// Log verbosity for dump/restore (4 = debug, what CRIU bug reports ask for).
const LOG_LEVEL: i32 = 4;

/// A CRIU installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criu {
    binary: PathBuf,
}

/// CRIU's version, as reported over RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuVersion {
    pub major: u32,
    pub minor: u32,
    pub sublevel: u32,
    /// The git commit CRIU was built from, for development builds.
    pub gitid: Option<String>,
}

impl CriuVersion {
    /// `major * 10000 + minor * 100 + sublevel` (4.1.1 -> 40101), CRIU's own convention.
    pub fn as_number(&self) -> u32 {
        version_number((self.major, self.minor, self.sublevel))
    }
}

impl fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.sublevel)
    }
}

fn version_number((major, minor, sublevel): (u32, u32, u32)) -> u32 {
    major * 10000 + minor * 100 + sublevel
}

/// The result of `criu check` (plus `criu check --all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `criu check` passed: the basic dump/restore features are there.
    pub ok: bool,
    /// What `criu check` printed (stdout, then stderr).
    pub output: String,
    /// Missing optional features reported by `criu check --all`
    /// (e.g. "Dirty tracking is OFF. Memory snapshot will not work.").
    pub warnings: Vec<String>,
}

/// Optional features as answered by CRIU's FEATURE_CHECK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CriuFeatures {
    /// Memory change tracking (soft-dirty bits) for incremental dumps.
    pub mem_track: bool,
    /// Lazy (post-copy) page restore via userfaultfd.
    pub lazy_pages: bool,
    /// Storing pidfds across pre-dumps (pid reuse detection).
    pub pidfd_store: bool,
}

/// What to dump.
#[derive(Debug, Clone, Copy)]
pub struct DumpArgs<'a> {
    /// Root of the process tree.
    pub pid: i32,
    /// Where the images are written (must exist).
    pub images_dir: &'a Path,
    /// Where CRIU writes its log (and other non-image files); defaults to `images_dir`.
    pub work_dir: Option<&'a Path>,
    pub opts: &'a CriuOpts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOutcome {
    /// CRIU's dump log.
    pub log_path: PathBuf,
}

/// What to restore.
#[derive(Debug, Clone, Copy)]
pub struct RestoreArgs<'a> {
    pub images_dir: &'a Path,
    /// Where CRIU writes its log; defaults to `images_dir`.
    pub work_dir: Option<&'a Path>,
    pub opts: &'a CriuOpts,
    /// Restore the root task as a sibling of CRIU, i.e. as a *child of the calling process*
    /// (which must then reap it). Without it the tree is reparented to init/a subreaper when
    /// `criu swrk` exits.
    pub rst_sibling: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Pid of the restored root task (the pid it had when dumped).
    pub pid: i32,
    /// CRIU's restore log.
    pub log_path: PathBuf,
}

impl Criu {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Criu {
            binary: binary.into(),
        }
    }

    /// Find the CRIU binary: a path with a `/` must be an executable file; a bare name is
    /// looked up in `PATH` (only there: "not on PATH" must mean what it says).
    pub fn locate(configured: &Path) -> Result<Criu, CriuError> {
        locate_in(configured, std::env::var_os("PATH"))
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// CRIU's version, via an RPC VERSION request.
    pub fn version(&self) -> Result<CriuVersion, CriuError> {
        let resp = self.simple_call("version", rpc::CriuReq::new(CriuReqType::Version))?;
        let v = resp
            .version
            .ok_or_else(|| CriuError::protocol("VERSION response without a version"))?;
        let num = |n: i32| u32::try_from(n).unwrap_or(0);
        Ok(CriuVersion {
            major: num(v.major_number),
            minor: num(v.minor_number),
            sublevel: num(v.sublevel.unwrap_or(0)),
            gitid: v.gitid.filter(|g| !g.is_empty()),
        })
    }

    /// Fail with [`CriuError::TooOld`] if CRIU is older than `min` (major, minor, sublevel).
    pub fn require(&self, min: (u32, u32, u32)) -> Result<CriuVersion, CriuError> {
        let v = self.version()?;
        if v.as_number() < version_number(min) {
            return Err(CriuError::TooOld {
                found: v.to_string(),
                need: format!("{}.{}.{}", min.0, min.1, min.2),
            });
        }
        Ok(v)
    }

    /// Run `criu check` (and `criu check --all` for the warnings).
    pub fn check(&self) -> Result<CheckReport, CriuError> {
        let basic = self.run_cli(&["check"])?;
        let all = self.run_cli(&["check", "--all"])?;
        let warnings = if all.status.success() {
            Vec::new()
        } else {
            check_warnings(&all.text)
        };
        Ok(CheckReport {
            ok: basic.status.success(),
            output: basic.text,
            warnings,
        })
    }

    /// Which optional features CRIU and the kernel support, via RPC FEATURE_CHECK.
    pub fn feature_check(&self) -> Result<CriuFeatures, CriuError> {
        let req = rpc::CriuReq {
            features: Some(rpc::CriuFeatures {
                mem_track: Some(true),
                lazy_pages: Some(true),
                pidfd_store: Some(true),
            }),
            ..rpc::CriuReq::new(CriuReqType::FeatureCheck)
        };
        let resp = self.simple_call("feature check", req)?;
        let f = resp
            .features
            .ok_or_else(|| CriuError::protocol("FEATURE_CHECK response without features"))?;
        Ok(CriuFeatures {
            mem_track: f.mem_track.unwrap_or(false),
            lazy_pages: f.lazy_pages.unwrap_or(false),
            pidfd_store: f.pidfd_store.unwrap_or(false),
        })
    }

    /// Dump the tree rooted at `args.pid` into `args.images_dir`.
    pub fn dump(&self, args: &DumpArgs) -> Result<DumpOutcome, CriuError> {
        let dirs = RequestDirs::open(args.images_dir, args.work_dir, "dump.log")?;
        let mut opts = args.opts.to_rpc(dirs.images.as_raw_fd());
        opts.pid = Some(args.pid);
        dirs.fill(&mut opts);
        let req = rpc::CriuReq {
            opts: Some(opts),
            ..rpc::CriuReq::new(CriuReqType::Dump)
        };
        tracing::debug!(pid = args.pid, images = %args.images_dir.display(), "criu dump");
        let resp = self.logged_call("dump", req, &dirs.log_path)?;
        drop(dirs.images);
        drop(dirs.work);
        if resp.r#type != CriuReqType::Dump as i32 {
            return Err(CriuError::protocol(format!(
                "expected a DUMP response, got type {}",
                resp.r#type
            )));
        }
        Ok(DumpOutcome {
            log_path: dirs.log_path,
        })
    }

    /// Restore the tree dumped in `args.images_dir`.
    pub fn restore(&self, args: &RestoreArgs) -> Result<RestoreOutcome, CriuError> {
        let dirs = RequestDirs::open(args.images_dir, args.work_dir, "restore.log")?;
        let mut opts = args.opts.to_rpc(dirs.images.as_raw_fd());
        // Dump-only; meaningless on restore.
        opts.leave_running = None;
        if args.rst_sibling {
            opts.rst_sibling = Some(true);
        }
        dirs.fill(&mut opts);
        let req = rpc::CriuReq {
            opts: Some(opts),
            ..rpc::CriuReq::new(CriuReqType::Restore)
        };
        tracing::debug!(images = %args.images_dir.display(), rst_sibling = args.rst_sibling, "criu restore");
        let resp = self.logged_call("restore", req, &dirs.log_path)?;
        drop(dirs.images);
        drop(dirs.work);
        let pid = match (CriuReqType::try_from(resp.r#type), resp.restore) {
            (Ok(CriuReqType::Restore), Some(r)) => r.pid,
            (_, r) => {
                return Err(CriuError::protocol(format!(
                    "expected a RESTORE response with a pid, got type {} ({})",
                    resp.r#type,
                    if r.is_some() { "with pid" } else { "no pid" }
                )))
            }
        };
        Ok(RestoreOutcome {
            pid,
            log_path: dirs.log_path,
        })
    }

    /// One request without a log file; a failure carries CRIU's errmsg only.
    fn simple_call(&self, op: &'static str, req: rpc::CriuReq) -> Result<rpc::CriuResp, CriuError> {
        let resp = self.call(&req)?;
        let resp = resp.map_err(|e| e.into_protocol(op))?;
        if !resp.success {
            return Err(CriuError::Failed {
                op,
                cr_errno: resp.cr_errno,
                errmsg: resp.cr_errmsg,
                log_path: PathBuf::new(),
                log_tail: Vec::new(),
            });
        }
        Ok(resp)
    }

    /// One request whose failure is explained by CRIU's log at `log_path`.
    fn logged_call(
        &self,
        op: &'static str,
        req: rpc::CriuReq,
        log_path: &Path,
    ) -> Result<rpc::CriuResp, CriuError> {
        let failed = |cr_errno, errmsg: Option<String>| CriuError::Failed {
            op,
            cr_errno,
            errmsg: match errmsg {
                // CRIU reports its first error, often a harmless one; use the log's first real one.
                Some(m) if !error::is_harmless_msg(&m) && !m.trim().is_empty() => Some(m),
                other => error::first_error(log_path).or(other),
            },
            log_path: log_path.to_path_buf(),
            log_tail: error::failure_tail(log_path, LOG_TAIL_LINES),
        };
        let resp = self.call(&req)?;
        match resp {
            Ok(resp) if resp.success => Ok(resp),
            Ok(resp) => Err(failed(resp.cr_errno, resp.cr_errmsg)),
            // CRIU died or hung up without answering: its log says why.
            Err(NoResponse::Exited(why)) => Err(failed(None, Some(why))),
            Err(e @ NoResponse::Garbled(_)) => Err(e.into_protocol(op)),
        }
    }

    /// Start `criu swrk`, send `req`, answer notifications, return the final response.
    /// The child is always reaped before this returns.
    fn call(&self, req: &rpc::CriuReq) -> Result<Result<rpc::CriuResp, NoResponse>, CriuError> {
        let mut swrk = Swrk::start(&self.binary)?;
        let resp = swrk.exchange(req);
        let (status, stderr) = swrk.finish()?;
        let resp = match resp {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(NoResponse::Exited(format!(
                "criu swrk exited ({status}) without a response{}",
                stderr_suffix(&stderr)
            ))),
            Err(Exchange::Io(e)) => return Err(e),
            Err(Exchange::Garbled(detail)) => Err(NoResponse::Garbled(format!(
                "{detail} (criu {status}){}",
                stderr_suffix(&stderr)
            ))),
        };
        if let Ok(r) = &resp {
            if !r.success {
                tracing::debug!(errno = ?r.cr_errno, errmsg = ?r.cr_errmsg, %status, "criu request failed");
            }
        }
        Ok(resp)
    }

    fn run_cli(&self, args: &[&str]) -> Result<CliOutput, CriuError> {
        let out = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| CriuError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&err);
        }
        Ok(CliOutput {
            status: out.status,
            text,
        })
    }
}

struct CliOutput {
    status: ExitStatus,
    text: String,
}

/// Warnings from `criu check --all` output: its "Warn"/"Error" lines, without the
/// `(file.c:line): ` prefix. When there are none, the non-empty lines themselves.
fn check_warnings(text: &str) -> Vec<String> {
    // CRIU's stdout and stderr are not line-synchronised ("Version: 4.1.1Warn  (..."),
    // so split at the markers too.
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(idx) = ["Warn  (", "Warn (", "Error ("]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
        {
            let piece = &rest[idx..];
            let end = piece[1..]
                .find("Warn  (")
                .or_else(|| piece[1..].find("Error ("))
                .map(|e| e + 1)
                .unwrap_or(piece.len());
            let msg = &piece[..end];
            let msg = match msg.find("): ") {
                Some(p) => &msg[p + 3..],
                None => msg,
            };
            let msg = msg.trim();
            if !msg.is_empty() {
                out.push(msg.to_string());
            }
            rest = &piece[end..];
        }
    }
    if out.is_empty() {
        out = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
    }
    out
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        let tail: Vec<&str> = s.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(": {}", tail.join(" | "))
    }
}

/// No usable response from CRIU.
enum NoResponse {
    /// The socket closed first (CRIU exited).
    Exited(String),
    /// Something arrived that is not a `criu_resp`.
    Garbled(String),
}

impl NoResponse {
    fn into_protocol(self, op: &str) -> CriuError {
        match self {
            NoResponse::Exited(d) | NoResponse::Garbled(d) => {
                CriuError::protocol(format!("{op}: {d}"))
            }
        }
    }
}

enum Exchange {
    Io(CriuError),
    Garbled(String),
}

/// Descriptors for a dump/restore request, held open until the response arrives.
struct RequestDirs {
    images: OwnedFd,
    work: Option<OwnedFd>,
    log_file: &'static str,
    log_path: PathBuf,
}

impl RequestDirs {
    fn open(
        images_dir: &Path,
        work_dir: Option<&Path>,
        log_file: &'static str,
    ) -> Result<Self, CriuError> {
        let images = open_dir(images_dir, "images")?;
        let work = work_dir.map(|w| open_dir(w, "work")).transpose()?;
        let log_path = work_dir.unwrap_or(images_dir).join(log_file);
        Ok(RequestDirs {
            images,
            work,
            log_file,
            log_path,
        })
    }

    fn fill(&self, opts: &mut rpc::CriuOpts) {
        opts.work_dir_fd = self.work.as_ref().map(|w| w.as_raw_fd());
        opts.log_file = Some(self.log_file.to_string());
        opts.log_level = Some(LOG_LEVEL);
    }
}

fn open_dir(dir: &Path, what: &str) -> Result<OwnedFd, CriuError> {
    let ctx = || format!("open {what} dir {}", dir.display());
    let f = File::open(dir).map_err(|e| CriuError::io(ctx(), e))?;
    let meta = f.metadata().map_err(|e| CriuError::io(ctx(), e))?;
    if !meta.is_dir() {
        return Err(CriuError::io(
            ctx(),
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    Ok(OwnedFd::from(f))
}

/// A running `criu swrk` child and our end of its socket.
struct Swrk {
    sock: Option<OwnedFd>,
    child: Option<Child>,
    stderr: Option<File>,
}

impl Swrk {
    fn start(binary: &Path) -> Result<Swrk, CriuError> {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| CriuError::io("socketpair for criu swrk", e.into()))?;
        let stderr = tempfile::tempfile().map_err(|e| CriuError::io("criu stderr file", e))?;
        let stderr_for_child = stderr
            .try_clone()
            .map_err(|e| CriuError::io("criu stderr file", e))?;

        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(binary);
        cmd.arg("swrk")
            .arg(SWRK_FD.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_for_child));
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_raw == SWRK_FD {
                    // dup2 onto itself keeps CLOEXEC; clear it by hand.
                    if libc::fcntl(SWRK_FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_raw, SWRK_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| CriuError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
        drop(theirs);
        tracing::trace!(pid = child.id(), "started criu swrk");
        Ok(Swrk {
            sock: Some(ours),
            child: Some(child),
            stderr: Some(stderr),
        })
    }

    /// Send `req`; read responses, acknowledging NOTIFY ones, until the final one.
    /// `Ok(None)`: the socket closed before a response.
    fn exchange(&mut self, req: &rpc::CriuReq) -> Result<Option<rpc::CriuResp>, Exchange> {
        self.send(req)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let Some(n) = self.recv(&mut buf)? else {
                return Ok(None);
            };
            let resp = rpc::CriuResp::decode(&buf[..n])
                .map_err(|e| Exchange::Garbled(format!("undecodable criu_resp: {e}")))?;
            if resp.r#type == CriuReqType::Notify as i32 {
                let script = resp
                    .notify
                    .as_ref()
                    .and_then(|n| n.script.clone())
                    .unwrap_or_default();
                tracing::debug!(%script, "criu notify");
                let ack = rpc::CriuReq {
                    notify_success: Some(true),
                    ..rpc::CriuReq::new(CriuReqType::Notify)
                };
                self.send(&ack)?;
                continue;
            }
            return Ok(Some(resp));
        }
    }

    fn sock(&self) -> &OwnedFd {
        self.sock
            .as_ref()
            .expect("swrk socket is open until finish")
    }

    fn send(&self, req: &rpc::CriuReq) -> Result<(), Exchange> {
        let bytes = req.encode_to_vec();
        loop {
            match socket::send(self.sock().as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(Exchange::Garbled(format!(
                        "short send to criu: {n} of {} bytes",
                        bytes.len()
                    )))
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => {
                    return Err(Exchange::Garbled(
                        "criu swrk hung up before the request".into(),
                    ))
                }
                Err(e) => return Err(Exchange::Io(CriuError::io("send to criu swrk", e.into()))),
            }
        }
    }

    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, Exchange> {
        let fd = self.sock().as_fd().as_raw_fd();
        loop {
            match socket::recv(fd, buf, MsgFlags::MSG_TRUNC) {
                Ok(0) => return Ok(None),
                Ok(n) if n > buf.len() => {
                    return Err(Exchange::Garbled(format!(
                        "criu response of {n} bytes exceeds the {} byte buffer",
                        buf.len()
                    )))
                }
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Ok(None),
                Err(e) => {
                    return Err(Exchange::Io(CriuError::io(
                        "receive from criu swrk",
                        e.into(),
                    )))
                }
            }
        }
    }

    /// Close our end and reap the child; returns its exit status and what it wrote to stderr.
    fn finish(mut self) -> Result<(ExitStatus, String), CriuError> {
        let status = self
            .reap()
            .map_err(|e| CriuError::io("wait for criu swrk", e))?;
        let mut text = String::new();
        if let Some(mut f) = self.stderr.take() {
            use std::io::Seek;
            let mut bytes = Vec::new();
            if f.rewind().is_ok() && f.read_to_end(&mut bytes).is_ok() {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        Ok((status, text))
    }

    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        // Closing our end makes a CRIU that still waits for a request exit.
        self.sock.take();
        match self.child.take() {
            Some(mut child) => loop {
                match child.wait() {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => return r,
                }
            },
            None => Err(std::io::Error::other("criu swrk already reaped")),
        }
    }
}

impl Drop for Swrk {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.reap();
        }
    }
}

fn locate_in(configured: &Path, path_var: Option<OsString>) -> Result<Criu, CriuError> {
    crate::host::find_executable_in(configured, path_var.as_deref())
        .map(Criu::new)
        .ok_or_else(|| CriuError::NotFound {
            binary: configured.to_path_buf(),
            hint: NOT_FOUND_HINT.to_string(),
        })
}

#[cfg(test)]
mod tests;
