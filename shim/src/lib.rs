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

/// glibc malloc arenas the shim may use. One per container runs beside every container,
/// so its resident memory is multiplied by the node's container count; its few threads
/// (the runtime's, stdio copies) allocate little, and one arena per thread cost more
/// resident pages than the contention it avoids.
const MALLOC_ARENAS: libc::c_int = 1;

/// The binary's entry: a single-threaded tokio runtime (the shim's work is waiting on
/// ttrpc, the runtime binary and child exits; blocking work goes to `spawn_blocking` or
/// the stdio copy threads), then [`run`]. Returns the exit code.
pub fn main() -> i32 {
    // SAFETY: called first thing in main, before any other thread exists or allocates.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run());
    0
}

/// Runs the shim (bootstrap `start` / `delete`, or the task service daemon).
pub async fn run() {
    let config = containerd_shim::Config {
        // The shim reaps its children itself (reaper.rs): one owner for every exit.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<CedanaShim>(RUNTIME_NAME, Some(config)).await;
}
