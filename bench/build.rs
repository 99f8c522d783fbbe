//! Generates the gRPC client for the few etcd calls `skiff-bench store
//! --vs-etcd` makes (`proto/etcd.proto`), as `proto/build.rs` generates
//! skiff's own: prost messages and a tonic client. The bench only calls
//! etcd, so no server code is generated. Release builds are stripped by the
//! linker, as `skiff` is (the release profile's `strip` is "none": see
//! `cli/build.rs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("PROFILE").is_ok_and(|p| p == "release")
        && std::env::var("DEBUG").is_ok_and(|d| d == "false")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/etcd.proto"], &["proto"])?;
    Ok(())
}
