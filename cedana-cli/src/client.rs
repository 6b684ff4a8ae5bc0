//! The gRPC client over the daemon's unix socket, with clear messages when the daemon
//! is not running or refuses us.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::proto::daemon_client::DaemonClient;

/// A connected client.
pub type Client = DaemonClient<Channel>;

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

/// Connects to the daemon at `socket`.
pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
    // Probe first so a missing or refused socket gets its own message.
    if let Err(e) = UnixStream::connect(socket).await {
        return Err(anyhow!(unreachable_message(socket, &e)));
    }
    let path: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .context("invalid endpoint")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .with_context(|| format!("cannot connect to the daemon at {}", socket.display()))?;
    Ok(DaemonClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// Turns an RPC failure into an error whose text is the daemon's message unchanged.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    if status.message().is_empty() {
        anyhow!("daemon returned {:?}", status.code())
    } else {
        anyhow!("{}", status.message())
    }
}
