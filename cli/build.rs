//! How the `skiff` binary is linked.
//!
//! - As a position-dependent executable (`-no-pie`, as Go links by default
//!   on linux/amd64). A PIE makes the loader read 0.9 MB of relocations at
//!   every start and write 0.7 MB of read-only data (vtables, string
//!   tables) into private pages of every process; at a fixed address both
//!   stay clean pages of the file, read when used. What it gives up: the
//!   address of skiff's own code is not randomised (the libraries', the
//!   stack's, the heap's and every other mapping's still are).
//!   BENCHMARKS.md, 2026-12-02 (ninth session): binary 24.96 -> 24.02 MB,
//!   the idle agent's RSS 16.98 -> 15.98-16.08 MiB, the idle master's
//!   20.75 -> 19.94-20.05 MiB.
//! - With the functions that a running agent and master execute next to
//!   each other, agent first (`link-order.txt`, written by
//!   `scripts/profile-link-order`, resolved to this build's symbol names by
//!   `scripts/linker`). The kernel maps a binary's pages 64 KiB around each
//!   page a process touches; with those functions spread over 17 MB of
//!   code, an idle agent had 10.5 MiB of it resident to run 3 MiB.
//!   Release builds linked by lld through `scripts/linker`: x86_64's
//!   (rustc's default linker is lld from 1.90), aarch64's from
//!   `scripts/build-aarch64`.
//! - Stripped by the linker (`--strip-all`) rather than by the release
//!   profile's `strip`, which is hashed into every crate's symbols. With
//!   `SKIFF_LINK_SYMBOLS=keep` the same code is linked with its symbol table
//!   (`--strip-debug`), for profiling.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=SKIFF_LINK_SYMBOLS");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    // Builds with debug info (dev, `profiling`) keep everything and are laid
    // out as they come.
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release")
        && std::env::var("DEBUG").is_ok_and(|d| d == "false");
    if release {
        let keep = std::env::var("SKIFF_LINK_SYMBOLS").is_ok_and(|v| v == "keep");
        let strip = if keep { "--strip-debug" } else { "--strip-all" };
        println!("cargo:rustc-link-arg-bins=-Wl,{strip}");
        // Only through scripts/linker (.cargo/config.toml for x86_64,
        // scripts/build-aarch64's wrapper of it), which resolves the list and
        // passes it on only to lld.
        let ours = std::env::var("RUSTC_LINKER")
            .is_ok_and(|l| l.ends_with("scripts/linker") || l.ends_with("target/aarch64-linker"));
        if ours {
            let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={dir}/link-order.txt");
            // Names of functions that this build no longer has are skipped.
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}
