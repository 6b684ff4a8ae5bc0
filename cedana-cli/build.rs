//! Generates the gRPC code of the daemon API from proto/cedana.proto with a vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/cedana.proto");
    tonic_build::configure().compile_protos(&["proto/cedana.proto"], &["proto"])?;
    Ok(())
}
