//! Placeholder for the containerd shim (issue: containerd shim). It exists so the
//! workspace layout matches docs/ARCHITECTURE.md; it refuses to run rather than pretend.

fn main() {
    eprintln!(
        "containerd-shim-cedana-v2 is not implemented yet; use io.containerd.runc.v2 for now"
    );
    std::process::exit(1);
}
