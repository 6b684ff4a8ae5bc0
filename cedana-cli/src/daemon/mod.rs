//! The daemon: a gRPC server on a unix socket in front of the job manager and the store.

pub mod attach;
pub mod checkpoints;
pub mod containers;
pub mod convert;
pub mod error;
pub mod identity;
pub mod job_fields;
pub mod jobs;
pub mod kata;
pub mod lifecycle;
pub mod procfs;
pub mod request_log;
pub mod restore_guard;
pub mod server;
pub mod service;
pub mod store;
pub mod watch;

#[cfg(test)]
mod tests;
