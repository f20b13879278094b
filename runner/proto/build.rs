//! Compiles the FileDescriptorSet that `proto/generate.py` extracted from the
//! pinned apache-beam package.  We build from descriptors rather than .proto
//! text so the field numbers are exactly those the Python SDK was built with.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read the manifest dir when the script runs, not when it was compiled:
    // a cached build script may come from a checkout at another path.
    let path = format!(
        "{}/../../proto/beam_model.binpb",
        std::env::var("CARGO_MANIFEST_DIR")?
    );
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(path)?;
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    // SAFETY-free: protoc is only needed by prost-build for .proto text; set it anyway
    // so the build never depends on a system protoc.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    // ferrobeam's own service (savepoints), from .proto text we wrote.
    let ours = format!(
        "{}/../../proto/ferrobeam",
        std::env::var("CARGO_MANIFEST_DIR")?
    );
    println!("cargo:rerun-if-changed={ours}/job_control.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[format!("{ours}/job_control.proto")], &[ours])?;
    Ok(())
}
