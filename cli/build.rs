//! How the `skiff` binary is linked: as a position-dependent executable
//! (`-no-pie`, Go's default on Linux and so k3s's). A PIE makes the loader
//! read 0.9 MB of relocations at every start and write 0.7 MB of read-only
//! data (vtables, string tables) into private pages of every process; at a
//! fixed address both stay clean pages of the file, read when used. What
//! it gives up: the address of skiff's own code is not randomised (the
//! libraries', the stack's, the heap's and every mapping's still are).
//! BENCHMARKS.md, 2026-12-02 (ninth session): the idle agent's RSS
//! 15.4-15.8 -> 14.7 MiB.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
