//! The gRPC client over the daemon's unix socket, with clear messages when the daemon
//! is not running, refuses us, or does not answer.

use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::proto::daemon_client::DaemonClient;

/// A connected client.
pub type Client = DaemonClient<Channel>;

/// How long connecting (socket + HTTP/2 handshake) may take: a daemon that is stopped
/// (SIGSTOP) or wedged still accepts connections into the backlog, so without a bound
/// the CLI would wait forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a quick request (list, get, health, version, stop) may take; dumps and
/// restores can legitimately run for minutes and are not bounded.
pub const QUICK_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Failures of the client that are not the daemon's own answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket cannot be connected to (missing, refused, no permission).
    #[error("{0}")]
    Unreachable(String),
    /// The daemon accepted the connection but did not answer in time.
    #[error(
        "the cedana daemon at {socket} did not answer within {secs} s ({what}); it may be \
         stopped (SIGSTOP), hung or overloaded: check its log, or restart it"
    )]
    Timeout {
        /// The daemon socket.
        socket: PathBuf,
        /// The bound that expired, in seconds.
        secs: u64,
        /// What was waited for.
        what: &'static str,
    },
}

/// Why a daemon could not be reached, in words a user can act on.
pub fn unreachable_message(socket: &Path, err: &std::io::Error) -> String {
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => format!(
            "cedana daemon is not running (no socket at {}); start it with 'cedana daemon start' \
             (as root) or use --no-server where supported",
            socket.display()
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied on the daemon socket {}: the daemon only accepts root (or members \
             of its socket_group); run as root or ask for membership of that group",
            socket.display()
        ),
        _ => format!(
            "cannot connect to the daemon at {}: {err}",
            socket.display()
        ),
    }
}

/// Connects to the daemon at `socket`, within `CONNECT_TIMEOUT`.
pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let timeout = || ClientError::Timeout {
        socket: socket.to_path_buf(),
        secs: CONNECT_TIMEOUT.as_secs(),
        what: "connecting",
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect_unbounded(socket))
        .await
        .map_err(|_| timeout())?
}

async fn connect_unbounded(socket: &Path) -> anyhow::Result<Client> {
    // Probe first so a missing or refused socket gets its own message.
    if let Err(e) = UnixStream::connect(socket).await {
        return Err(ClientError::Unreachable(unreachable_message(socket, &e)).into());
    }
    let channel = unix_channel(socket)
        .await
        .with_context(|| format!("cannot connect to the daemon at {}", socket.display()))?;
    Ok(DaemonClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// A gRPC channel over the unix socket `socket` (the daemon's, or containerd's for the
/// CRI), its handshake bounded by `CONNECT_TIMEOUT`.
pub async fn unix_channel(socket: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = socket.to_path_buf();
    Ok(Endpoint::try_from("http://[::]:50051")
        .context("invalid endpoint")?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await?)
}

/// Awaits a quick request within `QUICK_REQUEST_TIMEOUT`; the daemon's refusal becomes
/// its message, silence a `ClientError::Timeout`.
pub async fn quick<T>(
    socket: &Path,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(QUICK_REQUEST_TIMEOUT, call).await {
        Ok(answer) => Ok(answer.map_err(status_error)?.into_inner()),
        Err(_) => Err(ClientError::Timeout {
            socket: socket.to_path_buf(),
            secs: QUICK_REQUEST_TIMEOUT.as_secs(),
            what: "waiting for its answer",
        }
        .into()),
    }
}

/// Turns an RPC failure into an error whose text is the daemon's message unchanged.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    if status.message().is_empty() {
        anyhow!("daemon returned {:?}", status.code())
    } else {
        anyhow!("{}", status.message())
    }
}
