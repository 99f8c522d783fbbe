//! How many malloc arenas a process may use. glibc gives each thread that
//! allocates its own arena (up to 8 per core), and memory freed in one
//! stays there: an agent that parsed manifests, imported images and made
//! TLS connections on a few threads at start keeps megabytes of free
//! arena space for good. The agent allocates little and rarely, so it
//! uses one arena; the master, which serves many clients at once, one per
//! core. (A master's Rust code allocates through mimalloc,
//! [`crate::allocator`], so there these settings reach only what C code
//! allocates; they govern a master's whole heap under
//! `SKIFF_ALLOCATOR=system`.)
//!
//! glibc also raises its mmap threshold each time a large block is freed,
//! so that after a burst (a snapshot, a large list, a batch of writes)
//! later large blocks come from the heap and stay there when freed. The
//! master fixes the thresholds instead ([`fixed_thresholds`]): blocks of
//! 256 KiB and more are mapped and unmapped, and heap tops above 1 MiB are
//! given back; the agent, lower still ([`for_agent`]), and it gives back
//! what a burst leaves free inside its heap as well ([`trim`]).

/// Limits the process to `arenas` malloc arenas; true if the allocator
/// took it. Call before any thread is started. Not glibc: nothing to do.
#[allow(unsafe_code)]
pub fn limit(arenas: i32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tunable of glibc's allocator; it is
        // called before the runtime starts any thread.
        unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = arenas;
        false
    }
}

/// Fixes glibc's mmap threshold at 256 KiB and its trim threshold at 1 MiB
/// (turning off their growth after bursts); true if the allocator took
/// both. Call before any thread is started. Not glibc: nothing to do.
#[allow(unsafe_code)]
pub fn fixed_thresholds() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets tunables of glibc's allocator; it is
        // called before the runtime starts any thread.
        unsafe {
            nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 * 1024) == 1
                && nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 1024 * 1024) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// An agent's allocator settings: one arena, and thresholds fixed lower
/// than the master's (blocks of 128 KiB and more mapped, heap tops above
/// 256 KiB given back). Without them, the 1 MiB buffers of the images
/// imported at start raised glibc's thresholds to about 1 and 2 MiB and
/// an idle agent kept a 4.5 MiB heap; with them, 0.8 MiB
/// (`skiff-bench footprint`).
#[allow(unsafe_code)]
pub fn for_agent() {
    limit(1);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: as in `fixed_thresholds`: tunables of glibc's
        // allocator, set before the runtime starts any thread.
        unsafe {
            nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
            nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 256 * 1024);
        }
    }
}

/// Gives the free memory inside the heap back to the kernel (glibc's
/// `malloc_trim(0)`; not glibc: nothing to do). The trim threshold only
/// returns free space at the heap's top; after a burst (an agent's lists
/// of a thousand Services and the rules built from them) most of what was
/// freed is below live blocks, and stays in the process's RSS until
/// this.
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free pages of glibc's heap and
        // may be called from any thread at any time.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}

/// A master's settings for glibc's allocator: an arena per core, fixed
/// thresholds. A master's Rust code allocates through mimalloc
/// ([`crate::allocator`]); these reach what C code allocates (libnftables,
/// which the agent half of `skiff server` loads).
pub fn for_master() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    limit(i32::try_from(cores).unwrap_or(i32::MAX));
    fixed_thresholds();
}
