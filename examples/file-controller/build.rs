//! Generates Rust types for `examples/custom/files.proto`, the custom type this controller
//! serves, and saves its descriptor set so the controller can register the type at start.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let custom = manifest.join("../custom");
    let protos = manifest.join("../../proto");
    println!(
        "cargo:rerun-if-changed={}",
        custom.join("files.proto").display()
    );
    let mut compiler = protox::Compiler::new([&custom, &protos])?;
    // Only the custom file: its imports (rube/api.proto) are the apiserver's own.
    compiler.include_imports(false);
    compiler.open_file("files.proto")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // From the compiler itself: prost_types would drop the (rube.kind) option.
    std::fs::write(
        out.join("files_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let mut config = prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "rube")
        .extern_path(".rube", "::rubeapi::rube");
    config.compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
