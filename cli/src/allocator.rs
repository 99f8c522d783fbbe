//! The process's memory allocator, chosen from the subcommand once, before
//! the first allocation. A master (`skiff master`, `skiff server`)
//! allocates through mimalloc: on a 3-master `skiff-bench store` run the
//! leader spent about a fifth of its CPU in glibc's malloc and free
//! (fastbin consolidation, arena locks), and with mimalloc the masters use
//! less CPU per write (BENCHMARKS.md). Everything else (the agent,
//! `skiff ctl`, a pod's pause process) keeps glibc's malloc, which the
//! agent holds to one arena and trims after bursts ([`crate::agent`]),
//! and which keeps its RSS lowest.
//!
//! mimalloc is told to give freed memory back at once
//! ([`MIMALLOC_OPTIONS`]): with its defaults an idle master held 24.5 MiB
//! of anonymous memory against glibc's 4.5; with these, 5.5, and the
//! CPU per write is still 13% below glibc's.
//!
//! The choice is made in an `.init_array` function, which glibc runs with
//! `argc` and `argv` before `main` and before any Rust code allocates (as
//! the standard library reads its own arguments), and it never changes
//! afterwards, so that every block is freed by the allocator that gave
//! it. Where that is not available (not glibc), every process uses the
//! system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// Whether this process allocates through mimalloc; set (at most once)
/// before the first allocation.
static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// The subcommands whose processes allocate through mimalloc: the ones
/// that run a master.
const MIMALLOC_SUBCOMMANDS: [&[u8]; 2] = [b"master", b"server"];

/// mimalloc's options for a master, as (option, value): numbered as in
/// the `mi_option_e` enum of the mimalloc v3 that `libmimalloc-sys` builds
/// (its Rust bindings name only some of them).
/// - `arena_eager_commit` (4) = 0: commit arena memory as it is used, not
///   the whole arena at once on an overcommitting kernel;
/// - `purge_delay` (15) = 0: give free pages back to the kernel at once
///   rather than 10 ms later, so that an idle master's RSS is what it
///   holds.
const MIMALLOC_OPTIONS: [(libmimalloc_sys::mi_option_t, std::ffi::c_long); 2] = [(4, 0), (15, 0)];

/// Whether a process started with `subcommand` as its first argument
/// allocates through mimalloc.
pub fn uses_mimalloc(subcommand: &[u8]) -> bool {
    MIMALLOC_SUBCOMMANDS.contains(&subcommand)
}

/// Which allocator this process uses: "mimalloc" or "system".
pub fn name() -> &'static str {
    if MIMALLOC.load(Ordering::Relaxed) {
        "mimalloc"
    } else {
        "system"
    }
}

/// The global allocator of the `skiff` binary: mimalloc or the system's,
/// as chosen before `main`.
pub struct RoleAllocator;

// SAFETY: each method hands the call to one allocator, the same one for
// the life of the process (the flag is set before the first allocation and
// never again), so every block is reallocated and freed by the allocator
// that gave it; both uphold `GlobalAlloc`'s contract themselves.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for RoleAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        unsafe {
            if MIMALLOC.load(Ordering::Relaxed) {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        unsafe {
            if MIMALLOC.load(Ordering::Relaxed) {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees, passed on; `ptr` came from the
        // same allocator (see above).
        unsafe {
            if MIMALLOC.load(Ordering::Relaxed) {
                MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on; `ptr` came from the
        // same allocator (see above).
        unsafe {
            if MIMALLOC.load(Ordering::Relaxed) {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// The binary's `.init_array` entry (in `main.rs`, which is always
/// linked): glibc runs it before `main`, and before the standard library's
/// own entries by its lower priority number, with the process's
/// arguments. Picks mimalloc for a master. Reads `argv[1]` in place and
/// allocates nothing.
///
/// # Safety
///
/// `argv` holds `argc` pointers to NUL-terminated strings, as glibc gives
/// an `.init_array` function; call it only from there, before anything
/// has allocated.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub unsafe extern "C" fn choose_from_arguments(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
    _envp: *const *const std::ffi::c_char,
) {
    if argc < 2 || argv.is_null() {
        return;
    }
    // SAFETY: the caller's guarantee: `argc` arguments in `argv`, each a
    // NUL-terminated string (glibc's, living as long as the process).
    let first = unsafe {
        let arg = *argv.add(1);
        if arg.is_null() {
            return;
        }
        std::ffi::CStr::from_ptr(arg)
    };
    if uses_mimalloc(first.to_bytes()) {
        for (option, value) in MIMALLOC_OPTIONS {
            // SAFETY: sets one of mimalloc's option values; nothing has
            // allocated through mimalloc yet.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
        MIMALLOC.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_use_mimalloc_and_other_subcommands_the_system_allocator() {
        assert!(uses_mimalloc(b"master"));
        assert!(uses_mimalloc(b"server"));
        for other in [&b"agent"[..], b"ctl", b"token", b"", b"--help", b"masters"] {
            assert!(!uses_mimalloc(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
