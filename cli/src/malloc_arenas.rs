//! How many malloc arenas a process may use. glibc gives each thread that
//! allocates its own arena (up to 8 per core), and memory freed in one
//! stays there: an agent that parsed manifests, imported images and made
//! TLS connections on a few threads at start keeps megabytes of free
//! arena space for good. The agent allocates little and rarely, so it
//! uses one arena; the master, which serves many clients at once, keeps
//! glibc's default.

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
