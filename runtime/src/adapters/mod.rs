//! Adapters: the middleware of the engine's chains, one module per concern.
//!
//! Each function here returns an [`Adapter`](crate::chain::Adapter) named after what it
//! does; the order they run in is stated once, in `engine::dump::chain` and
//! `engine::restore::chain`.

pub mod commit;
pub mod criu_check;
pub mod defaults;
pub mod files;
pub mod network;
pub mod pid_wait;
pub mod process_state;
pub mod restore_storage;
mod shard_fault;
pub mod shell_job;
mod staging;
pub mod storage;
pub mod validation;

/// Applies a caller's explicit choice over a detected one.
pub(crate) fn choose(forced: Option<bool>, detected: bool) -> bool {
    forced.unwrap_or(detected)
}
