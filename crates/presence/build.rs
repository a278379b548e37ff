//! Compiles `proto/presence.proto` with protox (no `protoc` needed) and writes the encoded file
//! descriptor set next to the generated code for gRPC server reflection.
use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = proto_dir.join("presence.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_dir])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("presence_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().codec_path("crate::codec::SmallCodec").compile_fds(fds)?;
    Ok(())
}
