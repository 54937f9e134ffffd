//! Generates the gRPC server code from proto/ (the contract) with protox,
//! a protobuf compiler in Rust: no system `protoc` is needed. The encoded
//! descriptor set is also written for the reflection service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto";
    let file = "aetherfs/hub/v1/hub.proto";
    println!("cargo:rerun-if-changed={root}/{file}");
    let fds = protox::compile([file], [root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("hub_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Bytes fields as `bytes::Bytes`: pack pieces are slices of what the store returned.
    tonic_prost_build::configure().build_client(false).build_transport(false).bytes(".").compile_fds(fds)?;
    Ok(())
}
