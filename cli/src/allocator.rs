//! The process's memory allocator, chosen once, before the first
//! allocation. A master (`skiff master`, `skiff server`) allocates through
//! mimalloc: on a 3-master `skiff-bench store` run the leader spent about a
//! fifth of its CPU in glibc's malloc and free (fastbin consolidation,
//! arena locks), and with mimalloc the masters use 12% less CPU per write
//! (BENCHMARKS.md, eighteenth session). Everything else (the agent,
//! `skiff ctl`, a pod's pause process) keeps glibc's malloc, which the
//! agent holds to one arena and trims after bursts ([`crate::agent`]),
//! and which keeps its RSS lowest. The agent half of `skiff server` shares
//! its process, and so mimalloc, with the master.
//!
//! mimalloc is told to give freed memory back at once
//! ([`MIMALLOC_OPTIONS`], defaults that `MIMALLOC_*` variables still
//! override): with its own defaults an idle master held 24.5 MiB of
//! anonymous memory against glibc's 4.5; with these, 5.5.
//!
//! `SKIFF_ALLOCATOR=system` or `=mimalloc` overrides the choice for any
//! subcommand: heaptrack and valgrind see only what goes through glibc's
//! malloc, so a master's heap is profiled with `SKIFF_ALLOCATOR=system`.
//! Any other value is refused at start ([`check_environment`]).
//!
//! The choice is made in an `.init_array` function, which glibc calls with
//! `argc`, `argv` and the environment before `main` (the standard library
//! reads its own arguments so), and which the linker places before the
//! standard library's and mimalloc's own by its priority number; no Rust
//! code has allocated by then. It never changes afterwards, so that every
//! block is freed by the allocator that gave it. Where that is not
//! available (not glibc), every process uses the system allocator.

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
///   rather than about a second later, so that an idle master's RSS is
///   what it holds.
const MIMALLOC_OPTIONS: [(libmimalloc_sys::mi_option_t, std::ffi::c_long); 2] = [(4, 0), (15, 0)];

/// The variable that overrides the choice.
pub const ENV: &str = "SKIFF_ALLOCATOR";

/// Whether a process started with `subcommand` as its first argument, and
/// with `SKIFF_ALLOCATOR` set to `override_value` (if set), allocates
/// through mimalloc. A value other than `system` or `mimalloc` leaves the
/// choice to the subcommand here; [`check_environment`] refuses it.
pub fn uses_mimalloc(subcommand: &[u8], override_value: Option<&[u8]>) -> bool {
    match override_value {
        Some(b"system") => false,
        Some(b"mimalloc") => true,
        _ => MIMALLOC_SUBCOMMANDS.contains(&subcommand),
    }
}

/// An unknown `SKIFF_ALLOCATOR` value.
#[derive(Debug, thiserror::Error)]
#[error("{ENV}={0:?}: unknown allocator; use system or mimalloc, or leave it unset (mimalloc for master and server, system for the rest)")]
pub struct UnknownAllocator(String);

/// Refuses a `SKIFF_ALLOCATOR` that names no allocator; called at the
/// start of `main`, since the choice itself is made before anything can
/// report.
pub fn check_environment() -> Result<(), UnknownAllocator> {
    match std::env::var_os(ENV) {
        Some(v) if v != "system" && v != "mimalloc" => {
            Err(UnknownAllocator(v.to_string_lossy().into_owned()))
        }
        _ => Ok(()),
    }
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
/// linked): glibc calls it before `main` with the process's arguments and
/// environment, and the linker puts it before the standard library's own
/// entries by its lower priority number. Picks mimalloc for a master
/// (or as `SKIFF_ALLOCATOR` says). Reads `argv[1]` and the environment in
/// place and allocates nothing.
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
    envp: *const *const std::ffi::c_char,
) {
    // SAFETY: the caller's guarantee: `argc` arguments in `argv` and a
    // NULL-terminated `envp`, each a NUL-terminated string (glibc's,
    // living as long as the process).
    let (first, override_value) = unsafe {
        let first: &[u8] = if argc >= 2 && !argv.is_null() && !(*argv.add(1)).is_null() {
            std::ffi::CStr::from_ptr(*argv.add(1)).to_bytes()
        } else {
            b""
        };
        let mut override_value = None;
        let mut var = envp;
        while !var.is_null() && !(*var).is_null() {
            let entry = std::ffi::CStr::from_ptr(*var).to_bytes();
            if let Some(value) = entry
                .strip_prefix(ENV.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
            {
                override_value = Some(value);
            }
            var = var.add(1);
        }
        (first, override_value)
    };
    if uses_mimalloc(first, override_value) {
        for (option, value) in MIMALLOC_OPTIONS {
            // SAFETY: sets the default of one of mimalloc's options (its
            // `MIMALLOC_*` variable still wins); nothing has allocated
            // through mimalloc yet.
            unsafe { libmimalloc_sys::mi_option_set_default(option, value) };
        }
        MIMALLOC.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_use_mimalloc_and_other_subcommands_the_system_allocator() {
        assert!(uses_mimalloc(b"master", None));
        assert!(uses_mimalloc(b"server", None));
        for other in [&b"agent"[..], b"ctl", b"token", b"", b"--help", b"masters"] {
            assert!(
                !uses_mimalloc(other, None),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn skiff_allocator_overrides_the_subcommand_and_an_unknown_value_does_not() {
        assert!(!uses_mimalloc(b"master", Some(b"system")));
        assert!(uses_mimalloc(b"agent", Some(b"mimalloc")));
        assert!(uses_mimalloc(b"master", Some(b"jemalloc")));
        assert!(!uses_mimalloc(b"agent", Some(b"")));
        let message = UnknownAllocator("jemalloc".into()).to_string();
        assert!(
            message.starts_with("SKIFF_ALLOCATOR=\"jemalloc\": unknown allocator"),
            "{message}"
        );
    }
}
