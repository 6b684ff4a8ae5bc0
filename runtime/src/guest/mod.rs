//! Kata: checkpoint/restore inside a VM. `cedana-guest-agent` runs the engine in the
//! guest and listens on AF_VSOCK; the host (`cedana dump|restore|query kata`) always
//! starts the connection (hybrid vsock, real vsock or TCP: `transport.rs`), and the
//! checkpoint crosses as a stream of checksummed chunks (`wire.rs`), never as one message.
//!
//! Guest side: `agent.rs` (listeners, one thread per connection), `serve.rs` (the
//! operations), `container.rs` (kata-agent's container layout), `health.rs` (what the
//! guest kernel and userland need). Host side: `client.rs`, `locate.rs` (a containerd
//! container id to its VM's socket).

pub mod agent;
pub mod client;
pub mod container;
mod dump;
pub mod error;
pub mod files;
pub mod health;
pub mod locate;
pub mod messages;
mod restore;
mod serve;
pub mod shards;
pub mod transport;
pub mod wire;

pub use error::GuestError;

/// The agent's default vsock port: clear of kata-agent's 1024 (agent), 1025 and 1026
/// (debug console, log), so both agents can live in one guest.
pub const DEFAULT_PORT: u32 = 1027;
