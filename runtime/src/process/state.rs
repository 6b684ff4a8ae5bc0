//! What the engine learned about a process tree before dumping it. Serialized into the
//! checkpoint so restore (and `cedana checkpoint inspect`) can see it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// State of a process tree, gathered from /proc before a dump.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessState {
    /// Root of the tree.
    pub pid: i32,
    /// Every process of the tree, root first (threads excluded).
    pub tree: Vec<ProcessInfo>,
    /// Open file descriptors of every process of the tree.
    pub open_files: Vec<OpenFile>,
    /// Sockets held by the tree.
    pub sockets: Vec<SocketInfo>,
    /// Whether any process of the tree has a terminal open (fd 0/1/2 on a tty/pty).
    pub has_tty: bool,
    /// Whether any process of the tree holds an io_uring instance (CRIU cannot dump it).
    pub uses_io_uring: bool,
}

/// One process of the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// Short command name (/proc/PID/comm).
    pub comm: String,
    /// Full command line.
    pub cmdline: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Real user id.
    pub uid: u32,
    /// Thread ids (CRIU restores these too, so they must be free on restore).
    pub tids: Vec<i32>,
}

/// An open file descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenFile {
    /// Process holding it.
    pub pid: i32,
    /// Descriptor number.
    pub fd: i32,
    /// What /proc/PID/fd/N points at (a path, or e.g. `socket:[123]`, `anon_inode:[io_uring]`).
    pub target: String,
}

/// Kind of socket, as far as CRIU options are concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketKind {
    /// TCP in ESTABLISHED (or another connected) state: needs `tcp_established`.
    TcpConnected,
    /// TCP listening socket.
    TcpListen,
    /// Any other TCP state (e.g. closed).
    TcpOther,
    /// UDP socket.
    Udp,
    /// Unix socket; `peer_outside` tells whether its peer lives outside the tree.
    Unix,
    /// Anything else (netlink, packet, ...).
    #[default]
    Other,
}

/// A socket held by the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketInfo {
    /// Process holding it.
    pub pid: i32,
    /// Descriptor number.
    pub fd: i32,
    /// Socket inode.
    pub inode: u64,
    /// Kind.
    pub kind: SocketKind,
    /// Local address (`ip:port`, or the unix path), when known.
    pub local: String,
    /// Remote address, when connected.
    pub remote: String,
    /// For unix sockets: the peer is held by a process outside the tree.
    pub peer_outside: bool,
}
