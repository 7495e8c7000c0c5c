//! Compiles the protos in `../proto` with protox (pure Rust, no protoc needed), generates the prost
//! types and tonic stubs, and saves the descriptor set that the type registry is built from.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "rube/api.proto",
    "rube/node.proto",
    "rube/auth.proto",
    "rube/rbac.proto",
    "rube/join.proto",
    "runink/herd.proto",
    "runink/slice.proto",
    "runink/pipeline.proto",
    "api/systemd.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    // Encoded straight from the compiler: going through prost_types would drop the custom
    // `(rube.kind)` options, which prost keeps nowhere.
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("rube_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` on every message, with type URLs in Rube's `rube/` domain.
    config.enable_type_names().type_name_domain(["."], "rube");
    tonic_prost_build::configure().compile_fds_with_config(fds, config)?;
    Ok(())
}
