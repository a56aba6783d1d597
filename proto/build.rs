//! Compiles `tern.proto` with protox (pure Rust, so no `protoc` is needed on the machine).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tern.proto");
    let fds = protox::compile(["tern.proto"], ["."])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
