//! Generates the gRPC client for the few etcd calls `skiff-bench store
//! --vs-etcd` makes (`proto/etcd.proto`), as `proto/build.rs` generates
//! skiff's own: prost messages and a tonic client. The bench only calls
//! etcd, so no server code is generated.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/etcd.proto"], &["proto"])?;
    Ok(())
}
