//! containerd-shim-cedana-v2: a containerd shim (task API v2, ttrpc) that runs containers
//! through a runc-compatible binary. With `cedana-runc` on PATH (or named by the runtime
//! options' `BinaryName`), `checkpoint` and `restore` go through the cedana engine, which
//! detects and records the CRIU options a container needs; the shim holds no checkpoint
//! logic of its own.

mod bundle;
pub mod container;
pub mod error;
mod events;
pub mod io;
pub mod options;
pub mod process;
pub mod reaper;
pub mod restore_from;
pub mod runtime;
pub mod service;
pub mod startup;
pub mod stats;
mod task;

pub use startup::{CedanaShim, RUNTIME_NAME};

/// Runs the shim (bootstrap `start` / `delete`, or the task service daemon).
pub async fn run() {
    let config = containerd_shim::Config {
        // The shim reaps its children itself (reaper.rs): one owner for every exit.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<CedanaShim>(RUNTIME_NAME, Some(config)).await;
}
