//! How the `skiff` binary is linked: as a position-dependent executable
//! (`-no-pie`, as Go links by default on linux/amd64). A PIE makes the
//! loader read 0.9 MB of relocations at every start and write 0.7 MB of
//! read-only data (vtables, string tables) into private pages of every
//! process; at a fixed address both stay clean pages of the file, read
//! when used. What it gives up: the address of skiff's own code is not
//! randomised (the libraries', the stack's, the heap's and every other
//! mapping's still are). BENCHMARKS.md, 2026-12-02 (ninth session): binary
//! 24.96 -> 24.02 MB, the idle agent's RSS 16.98 -> 15.98-16.08 MiB, the
//! idle master's 20.75 -> 19.94-20.05 MiB.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
