//! Compiles tusd's hook service (proto/hook.proto) into its gRPC client; needs `protoc`
//! (Debian: protobuf-compiler), as etcd-client's build already does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hook.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/hook.proto"], &["proto"])?;
    Ok(())
}
