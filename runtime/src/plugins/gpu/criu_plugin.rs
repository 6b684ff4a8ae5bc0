//! CRIU's own GPU plugin, `cuda_plugin.so`. Where it is installed, CRIU loads it on every
//! dump and restore beside cedana's GPU steps: it skips the tasks cedana has already
//! checkpointed, but it names itself in the images (`inventory.img`), and CRIU then
//! refuses to restore them without it ("Missing required plugin"). So a GPU checkpoint
//! records it, and a restore checks for it before anything is restored.

use std::path::PathBuf;

/// The name CRIU's CUDA plugin registers (and the images record).
pub const CUDA_PLUGIN: &str = "cuda_plugin";

/// The directory CRIU loads plugins from: `CRIU_LIBS_DIR`, else CRIU's built-in
/// `/usr/lib/criu` (`criu --help`: `--libdir`).
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("CRIU_LIBS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/criu"))
}

/// Plugin `name`'s library, where CRIU will load it from, if it is installed.
pub fn installed(name: &str) -> Option<PathBuf> {
    Some(plugin_dir().join(format!("{name}.so"))).filter(|p| p.is_file())
}
