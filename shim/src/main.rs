//! containerd-shim-cedana-v2: see the library (lib.rs) for what it does.

#[tokio::main]
async fn main() {
    containerd_shim_cedana_v2::run().await;
}
