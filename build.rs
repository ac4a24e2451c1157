//! Compiles `proto/` into the gRPC code of the cluster (`src/cluster/rpc.rs`
//! includes it). protox parses the files, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/pushgate/cluster/v1/cluster.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(files)?;
    Ok(())
}
