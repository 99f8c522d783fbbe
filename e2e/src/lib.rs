//! The end-to-end harness: real `skiff` processes started under a temp dir
//! on loopback ports, and helpers to wait for them, kill them and restart
//! them. Used by the tests in `e2e/tests/` and by `skiff-bench`.
//!
//! Processes are only ever signalled through the PIDs this harness started,
//! and are killed when their handle is dropped, also when a test fails.

pub mod hollow;
pub mod master;

use std::path::PathBuf;
use std::time::Duration;

/// The `skiff` binary under test: `$SKIFF_BIN`, or the one built next to
/// the running executable (target/<profile>/skiff).
pub fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // Test binaries live in target/<profile>/deps, tools in target/<profile>.
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("skiff");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "no skiff binary next to {}: run `cargo build -p skiff-cli` first or set SKIFF_BIN",
        exe.display()
    );
}

/// Runs `skiff ctl --server <server> <args>` and returns what it did.
pub fn ctl(server: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(skiff_bin())
        .arg("ctl")
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .expect("run skiff ctl")
}

/// A loopback port that was free a moment ago. Chosen below Linux's
/// ephemeral range (32768+), so that a master restarted on the same port
/// does not find it taken by some client connection's source port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread concurrent test processes apart; probe upwards from there.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let seed = 20_000 + (std::process::id() % 600) as u16 * 20;
        let _ = NEXT.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (port - 20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with
/// `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
