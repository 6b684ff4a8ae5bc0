//! The `criu swrk` transport: one child per request over a SOCK_SEQPACKET socketpair,
//! NOTIFY messages acknowledged, descriptors held open until the answer arrives, and the
//! child always reaped.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
use prost::Message;

use super::error::{self, CriuError, LOG_TAIL_LINES};
use super::packet::{self, PacketError};
use super::rpc::{self, CriuReqType};
use super::{pass_fd, Criu, PostDump, LOG_LEVEL, RECV_BUF, SWRK_FD};

impl Criu {
    /// One request without a log file; a failure carries CRIU's errmsg only.
    pub(super) fn simple_call(
        &self,
        op: &'static str,
        req: rpc::CriuReq,
    ) -> Result<rpc::CriuResp, CriuError> {
        let resp = self.call(&req, None)?;
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
    pub(super) fn logged_call(
        &self,
        op: &'static str,
        req: rpc::CriuReq,
        log_path: &Path,
        post_dump: Option<PostDump<'_>>,
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
        let resp = self.call(&req, post_dump)?;
        match resp {
            Ok(resp) if resp.success => Ok(resp),
            Ok(resp) => Err(failed(resp.cr_errno, resp.cr_errmsg)),
            // CRIU died or hung up without answering: its log says why.
            Err(NoResponse::Exited(why)) => Err(failed(None, Some(why))),
            Err(e @ NoResponse::Garbled(_)) => Err(e.into_protocol(op)),
        }
    }

    /// Start `criu swrk`, send `req`, answer notifications (`post-dump` with the hook's
    /// verdict), return the final response. The child is always reaped before this returns.
    pub(super) fn call(
        &self,
        req: &rpc::CriuReq,
        post_dump: Option<PostDump<'_>>,
    ) -> Result<Result<rpc::CriuResp, NoResponse>, CriuError> {
        let mut swrk = Swrk::start(&self.binary)?;
        let resp = swrk.exchange(req, post_dump);
        let (status, stderr) = swrk.finish()?;
        let resp = match resp {
            Ok(Some(resp)) => Ok(resp),
            // Whether CRIU died before or after reading the request is a race; both mean
            // it exited without answering.
            Ok(None) | Err(Exchange::HungUp) => Err(NoResponse::Exited(format!(
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
pub(super) enum NoResponse {
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
    /// CRIU closed its end before taking the request: it exited; its log says why.
    HungUp,
}

impl From<PacketError> for Exchange {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::HungUp => Exchange::HungUp,
            PacketError::Garbled(d) => Exchange::Garbled(format!("criu swrk: {d}")),
            PacketError::Io(e) => Exchange::Io(CriuError::io("talk to criu swrk", e)),
        }
    }
}

/// Descriptors for a dump/restore request, held open until the response arrives.
pub(super) struct RequestDirs {
    pub(super) images: OwnedFd,
    pub(super) work: Option<OwnedFd>,
    log_file: &'static str,
    pub(super) log_path: PathBuf,
}

impl RequestDirs {
    pub(super) fn open(
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

    pub(super) fn fill(&self, opts: &mut rpc::CriuOpts) {
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

        let mut cmd = Command::new(binary);
        cmd.arg("swrk")
            .arg(SWRK_FD.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_for_child));
        pass_fd(&mut cmd, theirs.as_raw_fd(), SWRK_FD);
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
    fn exchange(
        &mut self,
        req: &rpc::CriuReq,
        post_dump: Option<PostDump<'_>>,
    ) -> Result<Option<rpc::CriuResp>, Exchange> {
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
                let verdict = match (script.as_str(), post_dump) {
                    ("post-dump", Some(hook)) => (hook.0)(),
                    _ => true,
                };
                let ack = rpc::CriuReq {
                    notify_success: Some(verdict),
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
        packet::send(self.sock().as_fd(), req).map_err(Exchange::from)
    }

    fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, Exchange> {
        packet::recv(self.sock().as_fd(), buf, false).map_err(Exchange::from)
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
