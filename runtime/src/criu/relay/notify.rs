//! Notifications across the relay. In RPC mode CRIU sends each action ("post-dump",
//! "setup-namespaces", "post-restore", ...) to the runtime and waits for its answer; in
//! CLI mode it runs `--action-script` instead. The relay passes itself as that script:
//! each run connects to the relay's private socket, the relay forwards the action to the
//! runtime as the NOTIFY message CRIU would have sent and hands back the answer.

use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::{RelayError, NOTIFY_ENV};
use crate::criu::packet;
use crate::criu::rpc::{self, CriuReqType};

/// The variable CRIU sets for its action scripts: the action's name.
pub const ACTION_ENV: &str = "CRTOOLS_SCRIPT_ACTION";
/// The variable CRIU sets once the tree's root has a host PID.
pub const INIT_PID_ENV: &str = "CRTOOLS_INIT_PID";

/// Actions whose notification carries the root PID (as CRIU's own RPC sends them).
const WITH_PID: &[&str] = &["setup-namespaces", "post-restore"];

/// The relay's end: a listening socket in a private (0700) directory.
pub struct Bridge {
    listener: UnixListener,
    path: PathBuf,
}

impl Bridge {
    /// Listens at `dir/notify.sock`.
    pub fn bind(dir: &Path) -> Result<Bridge, RelayError> {
        let path = dir.join("notify.sock");
        let listener = UnixListener::bind(&path)
            .map_err(|e| RelayError::io(format!("listen on {}", path.display()), e))?;
        Ok(Bridge { listener, path })
    }

    /// The socket path CRIU's action scripts get in [`NOTIFY_ENV`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening descriptor, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.listener.as_fd()
    }

    /// Takes one action script's connection: forwards its action to the runtime on
    /// `rpc` and answers the script with the runtime's verdict.
    pub fn serve_one(&self, rpc_fd: BorrowedFd<'_>) -> Result<(), RelayError> {
        self.answer_one(|action, pid| forward(rpc_fd, action, pid))
    }

    /// Takes one action script's connection and answers it with `decide`'s verdict on
    /// its action (and the root PID, where CRIU gives one).
    pub fn answer_one(
        &self,
        decide: impl FnOnce(&str, Option<i32>) -> Result<(), RelayError>,
    ) -> Result<(), RelayError> {
        let (mut conn, _) = self
            .listener
            .accept()
            .map_err(|e| RelayError::io("accept an action script", e))?;
        let mut text = String::new();
        conn.read_to_string(&mut text)
            .map_err(|e| RelayError::io("read an action script's request", e))?;
        let mut lines = text.lines();
        let action = lines.next().unwrap_or_default().to_string();
        let pid = lines.next().and_then(|p| p.trim().parse::<i32>().ok());
        let verdict = decide(&action, pid);
        let answer = match &verdict {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("fail: {e}\n"),
        };
        // The script may be gone already; the verdict still decides.
        let _ = conn.write_all(answer.as_bytes());
        verdict
    }
}

/// Sends `action` to the runtime as CRIU's NOTIFY and waits for its acknowledgement.
fn forward(rpc_fd: BorrowedFd<'_>, action: &str, pid: Option<i32>) -> Result<(), RelayError> {
    if action.is_empty() {
        return Err(RelayError::Protocol(
            "an action script sent no action".into(),
        ));
    }
    let note = rpc::CriuResp {
        r#type: CriuReqType::Notify as i32,
        success: true,
        notify: Some(rpc::CriuNotify {
            script: Some(action.to_string()),
            pid: if WITH_PID.contains(&action) {
                pid
            } else {
                None
            },
        }),
        ..Default::default()
    };
    packet::send(rpc_fd, &note).map_err(|e| RelayError::packet("notify the runtime", e))?;
    let mut buf = vec![0u8; super::RECV_BUF];
    let n = packet::recv(rpc_fd, &mut buf, false)
        .map_err(|e| RelayError::packet("read the runtime's answer", e))?
        .ok_or_else(|| RelayError::Protocol(format!("the runtime hung up during {action}")))?;
    let ack = <rpc::CriuReq as prost::Message>::decode(&buf[..n])
        .map_err(|e| RelayError::Protocol(format!("undecodable answer to {action}: {e}")))?;
    if ack.r#type != CriuReqType::Notify as i32 || ack.notify_success != Some(true) {
        return Err(RelayError::Protocol(format!(
            "the runtime reported a failure handling {action}"
        )));
    }
    Ok(())
}

/// The script's end (the relay binary run by CRIU with [`ACTION_ENV`] set): asks the
/// relay at [`NOTIFY_ENV`] and exits 0 when the runtime accepted the action.
pub fn run_action_script() -> i32 {
    let action = std::env::var(ACTION_ENV).unwrap_or_default();
    let Some(sock) = std::env::var_os(NOTIFY_ENV) else {
        // Not run by the relay's CRIU: nothing to forward to.
        eprintln!("cedana-criu-relay: {ACTION_ENV}={action} without {NOTIFY_ENV}; nothing to do");
        return 0;
    };
    let pid = std::env::var(INIT_PID_ENV).unwrap_or_default();
    let ask = || -> std::io::Result<String> {
        let mut s = UnixStream::connect(&sock)?;
        s.write_all(format!("{action}\n{pid}\n").as_bytes())?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    };
    match ask() {
        Ok(a) if a.trim() == "ok" => 0,
        Ok(a) => {
            eprintln!("cedana-criu-relay: {action}: {}", a.trim());
            1
        }
        Err(e) => {
            eprintln!("cedana-criu-relay: {action}: cannot reach the relay: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use prost::Message;
    use std::os::fd::AsFd;

    /// A script's request reaches "runc" as CRIU's NOTIFY (pid only where CRIU sends
    /// one), and runc's verdict comes back to the script.
    #[test]
    fn actions_are_forwarded_and_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = Bridge::bind(dir.path()).expect("bind");
        let (relay_end, runc_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let runc = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 4096];
            for accept in [true, true, false] {
                let n = packet::recv(runc_end.as_fd(), &mut buf, false)
                    .expect("recv")
                    .expect("message");
                let note = rpc::CriuResp::decode(&buf[..n]).expect("decode");
                assert_eq!(note.r#type(), CriuReqType::Notify);
                let n = note.notify.expect("notify");
                seen.push((n.script.unwrap_or_default(), n.pid));
                let ack = rpc::CriuReq {
                    notify_success: Some(accept),
                    ..rpc::CriuReq::new(CriuReqType::Notify)
                };
                packet::send(runc_end.as_fd(), &ack).expect("ack");
            }
            seen
        });
        let ask = |action: &str| {
            let path = bridge.path().to_path_buf();
            let msg = format!("{action}\n4242\n");
            let client = std::thread::spawn(move || {
                let mut s = UnixStream::connect(path).expect("connect");
                s.write_all(msg.as_bytes()).expect("write");
                s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                let mut a = String::new();
                s.read_to_string(&mut a).expect("read");
                a
            });
            let verdict = bridge.serve_one(relay_end.as_fd());
            (verdict, client.join().expect("client"))
        };
        let (v, a) = ask("post-dump");
        assert!(v.is_ok() && a == "ok\n", "{v:?} {a}");
        let (v, a) = ask("post-restore");
        assert!(v.is_ok() && a == "ok\n", "{v:?} {a}");
        let (v, a) = ask("setup-namespaces");
        assert!(v.is_err() && a.starts_with("fail:"), "runc refused: {a}");
        let seen = runc.join().expect("runc");
        assert_eq!(
            seen,
            [
                ("post-dump".to_string(), None),
                ("post-restore".to_string(), Some(4242)),
                ("setup-namespaces".to_string(), Some(4242)),
            ]
        );
    }
}
