//! cedana-runtime: the checkpoint/restore engine shared by the `cedana` CLI and daemon,
//! the containerd shim and the `cedana-runc` wrapper.
//!
//! Every operation is a typed request passed through an ordered [`chain`] of adapters
//! around a final handler (see docs/ARCHITECTURE.md). The engine never knows who called it.

pub mod adapters;
pub mod chain;
pub mod criu;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod guest;
pub mod host;
pub mod image;
pub mod oci;
pub mod plugins;
pub mod process;
pub mod request;
pub mod runc_wrapper;
pub mod store;
pub mod streamer;
#[cfg(test)]
mod test_util;
