//! containerd-shim-cedana-v2: see the library (lib.rs) for what it does.

fn main() {
    std::process::exit(containerd_shim_cedana_v2::main());
}
