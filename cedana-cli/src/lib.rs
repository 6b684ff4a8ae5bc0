//! The `cedana` binary's library: the clap CLI, the commands it dispatches to, the gRPC
//! client, and the daemon (gRPC server, job manager, SQLite store). `main.rs` only parses
//! and dispatches, so every piece here can be tested without the binary.

pub mod cli;
pub mod client;
pub mod commands;
pub mod daemon;
pub mod ids;
pub mod k8s;
pub mod output;
pub mod progress;

/// Generated gRPC types and stubs of `proto/cedana.proto` (package `cedana.v1`).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("cedana.v1");
}
