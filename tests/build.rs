//! Compiles tusd's hook service (crates/tusk-hooks/proto/hook.proto) into the server side,
//! for the gRPC hook server the tests run.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../crates/tusk-hooks/proto";
    println!("cargo:rerun-if-changed={proto}/hook.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&[format!("{proto}/hook.proto")], &[proto.to_string()])?;
    Ok(())
}
