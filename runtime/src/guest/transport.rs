//! The host's one way to reach a guest agent: the host always starts the connection,
//! over hybrid vsock (a unix socket of the VMM: Cloud Hypervisor, Firecracker,
//! vhost-device-vsock; `CONNECT <port>\n` answered by `OK <n>\n`), real vsock to a guest
//! CID, or TCP (debugging). Everything after the handshake is the same byte stream.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{
    connect as sock_connect, socket, AddressFamily, SockFlag, SockType, VsockAddr,
};

use super::error::GuestError;

/// How long the hybrid-vsock handshake may take: the VMM answers at once when the guest
/// listens; a silent socket means nothing will answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest handshake reply line we read (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY: usize = 64;

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A VMM's hybrid-vsock unix socket, and the guest port.
    Hybrid {
        /// The unix socket.
        socket: PathBuf,
        /// The guest's vsock port.
        port: u32,
    },
    /// AF_VSOCK to a guest CID.
    Vsock {
        /// The guest's context id.
        cid: u32,
        /// The guest's vsock port.
        port: u32,
    },
    /// TCP, for debugging (`HOST:PORT`).
    Tcp(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hybrid { socket, port } => write!(f, "hvsock://{}:{port}", socket.display()),
            Self::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A byte stream to the agent.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// An open connection to the agent.
pub struct Conn {
    /// The stream, past any handshake.
    pub stream: Box<dyn Stream>,
    /// Where it goes, for messages.
    pub endpoint: Endpoint,
}

/// Connects to the agent at `ep`.
pub fn connect(ep: &Endpoint) -> Result<Conn, GuestError> {
    let fail = |source| GuestError::Connect {
        endpoint: ep.to_string(),
        source,
    };
    let stream: Box<dyn Stream> = match ep {
        Endpoint::Hybrid { socket, port } => {
            let s = UnixStream::connect(socket).map_err(fail)?;
            Box::new(hybrid_handshake(s, socket, *port)?)
        }
        Endpoint::Vsock { cid, port } => Box::new(vsock_connect(*cid, *port).map_err(fail)?),
        Endpoint::Tcp(addr) => Box::new(TcpStream::connect(addr).map_err(fail)?),
    };
    Ok(Conn {
        stream,
        endpoint: ep.clone(),
    })
}

/// `CONNECT <port>\n`, expecting `OK <n>\n`; anything else (or silence) means nothing
/// listens on that port in the guest.
fn hybrid_handshake(
    mut s: UnixStream,
    socket: &std::path::Path,
    port: u32,
) -> Result<UnixStream, GuestError> {
    let link = |e| GuestError::link("connecting", e);
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(link)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(link)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // One byte at a time: what follows the newline is already the agent's stream.
    while line.len() < MAX_REPLY {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A timeout or a reset is the same answer as a closed connection: no agent.
            Err(_) => break,
        }
    }
    let reply = String::from_utf8_lossy(&line).into_owned();
    if !reply.starts_with("OK ") {
        return Err(GuestError::NoAgentOnPort {
            socket: socket.to_path_buf(),
            port,
            reply,
        });
    }
    s.set_read_timeout(None).map_err(link)?;
    Ok(s)
}

/// AF_VSOCK stream to `cid:port`; a socket fd reads and writes like a file.
fn vsock_connect(cid: u32, port: u32) -> io::Result<File> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    sock_connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(cid, port),
    )?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A fake VMM socket answering the handshake with `reply`, then echoing.
    fn fake_vmm(reply: &'static str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vm.sock");
        let l = UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 32];
                let _ = s.read(&mut b);
                let _ = s.write_all(reply.as_bytes());
                let _ = s.write_all(b"after");
            }
        });
        (dir, path)
    }

    #[test]
    fn ok_reply_leaves_the_stream_right_after_the_line() {
        let (_d, path) = fake_vmm("OK 1027\n");
        let mut c = connect(&Endpoint::Hybrid {
            socket: path,
            port: 1027,
        })
        .expect("connect");
        let mut rest = String::new();
        c.stream.read_to_string(&mut rest).expect("read");
        assert_eq!(rest, "after");
    }

    #[test]
    fn a_closed_or_other_reply_is_no_agent_on_port() {
        let (_d, path) = fake_vmm("");
        let err = connect(&Endpoint::Hybrid {
            socket: path,
            port: 9,
        })
        .err()
        .expect("refused");
        assert!(
            matches!(err, GuestError::NoAgentOnPort { port: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_missing_socket_is_a_connect_error_naming_it() {
        let err = connect(&Endpoint::Hybrid {
            socket: "/nonexistent/vm.sock".into(),
            port: 1,
        })
        .err()
        .expect("refused");
        assert!(err.to_string().contains("/nonexistent/vm.sock"), "{err}");
    }
}
