//! Errors of the kata guest agent and its host client: each says what happened and what
//! to do about it.

use std::io;
use std::path::PathBuf;

use crate::error::{EngineError, ErrorKind};
use crate::image::error::ImageError;
use crate::plugins::containerd::error::ContainerdError;

/// What can go wrong between the host and the guest agent, or inside the agent.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Nothing accepted the connection (VM down, socket path wrong, agent not started).
    #[error("cannot reach the guest agent at {endpoint}: {source} (is the VM running, the socket/CID right, and cedana-guest-agent started in the guest?)")]
    Connect {
        /// Where we tried.
        endpoint: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The hybrid-vsock socket answered, but not with `OK`: no listener on that port.
    #[error("the VM's vsock socket {socket} did not accept CONNECT {port} (reply: {reply:?}): nothing listens on vsock port {port} in the guest; is cedana-guest-agent running there, and on which --port?")]
    NoAgentOnPort {
        /// The hybrid-vsock unix socket.
        socket: PathBuf,
        /// The vsock port asked for.
        port: u32,
        /// What came back instead of `OK <n>` (empty: the connection was closed).
        reply: String,
    },
    /// Reading or writing the connection failed.
    #[error("connection to the guest agent broke while {what}: {source}")]
    Link {
        /// What we were doing.
        what: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// The peer closed the stream before its end marker.
    #[error("the checkpoint stream was truncated: it ended after {received} bytes, before its end marker (the agent died or the connection was cut); nothing was kept")]
    Truncated {
        /// Bytes received.
        received: u64,
    },
    /// A chunk did not match the sha256 sent with it.
    #[error("the checkpoint stream is corrupted: the chunk at byte {offset} does not match its sha256; nothing was kept")]
    CorruptChunk {
        /// Offset of the chunk in the stream.
        offset: u64,
    },
    /// The whole stream did not match the digest or size announced.
    #[error("the checkpoint stream is corrupted: {detail}; nothing was kept")]
    CorruptStream {
        /// What did not match.
        detail: String,
    },
    /// The peer broke the protocol (wrong frame, oversized frame, bad JSON).
    #[error("guest agent protocol error: {0} (are host and guest agent the same cedana version?)")]
    Protocol(String),
    /// The agent refused or failed the operation; its message is kept as it said it.
    #[error("guest agent: {message}")]
    Remote {
        /// Broad class, as the agent classified it.
        kind: RemoteKind,
        /// The agent's message.
        message: String,
    },
    /// No container of that id in the guest.
    #[error("no kata container {id:?} in this guest: {root}/{id}/ with config.json and rootfs/ not found (`cedana query kata` lists the containers)")]
    UnknownContainer {
        /// The id asked for.
        id: String,
        /// Where containers are looked up.
        root: PathBuf,
    },
    /// The container exists but none of its processes could be found.
    #[error("kata container {id:?} has no running process (none has {rootfs} as its root)")]
    ContainerNotRunning {
        /// The container.
        id: String,
        /// Its root filesystem.
        rootfs: PathBuf,
    },
    /// The container's processes form more than one tree.
    #[error("kata container {id:?} holds {roots} separate process trees (PIDs {pids}); dump one by --pid")]
    SeveralTrees {
        /// The container.
        id: String,
        /// How many roots.
        roots: usize,
        /// Their PIDs.
        pids: String,
    },
    /// containerd could not tell which container, or is unreachable.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// The containerd container does not run under kata.
    #[error("containerd container {id:?} runs under {runtime:?}, not kata (io.containerd.kata*.v2): it is not in a VM; use `cedana dump containerd {id}`")]
    NotKata {
        /// The container.
        id: String,
        /// Its runtime.
        runtime: String,
    },
    /// No VM socket where kata lays it out for the sandbox.
    #[error("no VM socket for kata sandbox {sandbox:?} (tried {tried}): is the sandbox running, and is kata.vm_root right? Or give --vm-socket PATH / --cid N")]
    NoVmSocket {
        /// The sandbox.
        sandbox: String,
        /// The paths tried.
        tried: String,
    },
    /// A request was invalid.
    #[error("{0}")]
    Invalid(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The checkpoint itself is bad.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The class of an error the agent reports, so the host can map it (NotFound, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteKind {
    /// What was asked for does not exist.
    NotFound,
    /// The request is wrong.
    InvalidArgument,
    /// The guest cannot do it now.
    FailedPrecondition,
    /// The data is damaged.
    DataLoss,
    /// Anything else.
    Internal,
}

impl GuestError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A broken connection while doing `what`; an early EOF is reported as such.
    pub fn link(what: &'static str, source: io::Error) -> Self {
        Self::Link { what, source }
    }

    /// The class reported to the host.
    pub fn remote_kind(&self) -> RemoteKind {
        match self {
            Self::UnknownContainer { .. } | Self::ContainerNotRunning { .. } => {
                RemoteKind::NotFound
            }
            Self::Invalid(_) | Self::SeveralTrees { .. } => RemoteKind::InvalidArgument,
            Self::Truncated { .. } | Self::CorruptChunk { .. } | Self::CorruptStream { .. } => {
                RemoteKind::DataLoss
            }
            Self::Remote { kind, .. } => *kind,
            Self::Image(e) => remote_of(e.kind()),
            Self::Engine(e) => remote_of(e.kind()),
            _ => RemoteKind::Internal,
        }
    }

    /// The broad class, as the engine's transports map errors.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::NoAgentOnPort { .. } | Self::NoVmSocket { .. } => {
                ErrorKind::FailedPrecondition
            }
            Self::NotKata { .. } => ErrorKind::InvalidArgument,
            Self::Containerd(e) => e.kind(),
            Self::Image(e) => e.kind(),
            Self::Engine(e) => e.kind(),
            other => match other.remote_kind() {
                RemoteKind::NotFound => ErrorKind::NotFound,
                RemoteKind::InvalidArgument => ErrorKind::InvalidArgument,
                RemoteKind::FailedPrecondition => ErrorKind::FailedPrecondition,
                RemoteKind::DataLoss => ErrorKind::DataLoss,
                RemoteKind::Internal => ErrorKind::Internal,
            },
        }
    }
}

fn remote_of(k: ErrorKind) -> RemoteKind {
    match k {
        ErrorKind::NotFound => RemoteKind::NotFound,
        ErrorKind::InvalidArgument | ErrorKind::AlreadyExists => RemoteKind::InvalidArgument,
        ErrorKind::FailedPrecondition | ErrorKind::PermissionDenied => {
            RemoteKind::FailedPrecondition
        }
        ErrorKind::DataLoss => RemoteKind::DataLoss,
        ErrorKind::Internal => RemoteKind::Internal,
    }
}
