//! The end-to-end harness: real `skiff` processes started under a temp dir
//! on loopback ports, and helpers to wait for them, kill them and restart
//! them. Used by the tests in `e2e/tests/` and by `skiff-bench`.
//!
//! Processes are only ever signalled through the PIDs this harness started
//! (and the shims a private containerd of its own left behind, found by
//! that containerd's socket), and are killed when their handle is dropped,
//! also when a test fails.

pub mod agent;
pub mod bare_https;
pub mod busybox_image;
pub mod containerd;
pub mod cpu_load;
pub mod credentials;
pub mod hollow;
pub mod host_fixture;
pub mod kube_clients;
pub mod master;
pub mod pseudo_terminal;
pub mod registry;
pub mod server;
pub mod test_hosts;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Calls `probe` every 200 ms until it answers `Ok`, and returns that;
/// panics after `timeout` with what it last saw. For tests that wait on a
/// cluster from a blocking thread (kubectl, helm, the Python client).
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

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

/// `skiff`, run in test host `netns`'s network namespace or on this host.
/// nsenter enters the network namespace only and then execs skiff, so the
/// PID is skiff's.
pub(crate) fn skiff_command(netns: Option<&str>) -> std::process::Command {
    match netns {
        Some(netns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{netns}"))
                .arg("--")
                .arg(skiff_bin());
            c
        }
        None => std::process::Command::new(skiff_bin()),
    }
}

/// A started process's log, opened for appending (created if missing) so
/// that it runs on across restarts.
pub(crate) fn append_log(path: &Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Writes `yaml` to `<dir>/<name>.yaml` and applies it with `skiff ctl`.
pub fn apply_yaml(
    server: &str,
    dir: &std::path::Path,
    name: &str,
    yaml: &str,
) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    let out = ctl(server, &["apply", "-f", &path.display().to_string()]);
    anyhow::ensure!(
        out.status.success(),
        "apply {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs `skiff ctl --server <server> <args>` with that master's
/// admin.conf and returns what it did.
pub fn ctl(server: &str, args: &[&str]) -> std::process::Output {
    ctl_command(server)
        .args(args)
        .output()
        .expect("run skiff ctl")
}

/// `skiff ctl --server <server> --config <its admin.conf>`, to add to.
pub fn ctl_command(server: &str) -> std::process::Command {
    admin_command("ctl", server)
}

/// `skiff <command> --server <server> --config <its admin.conf>` for the
/// admin's client commands (`ctl`, `snapshot`, `cluster`, `token`), to add
/// to.
pub fn admin_command(command: &str, server: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(skiff_bin());
    cmd.arg(command).arg("--server").arg(server);
    if let Ok(conf) = credentials::admin_conf(server) {
        cmd.arg("--config").arg(conf);
    }
    cmd
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

/// A plain HTTP/1.1 GET on loopback (`/metrics`, `/healthz`, `/readyz`,
/// a page through `kubectl proxy`); returns the status code and the body
/// (de-chunked when it came chunked).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunked(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of an HTTP/1.1 chunked transfer encoding.
fn dechunked(mut rest: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut body = String::new();
    loop {
        let (line, after) = rest.split_once("\r\n").context("no chunk size line")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).context("chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("short chunk")?);
        let next = after.get(size..).and_then(|r| r.strip_prefix("\r\n"));
        rest = next.context("chunk not ended by CRLF")?;
    }
}

/// One unlabelled sample (`name value`) from the `/metrics` at `addr`.
pub fn metric_sample(addr: &str, name: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").ok()?;
    (status == 200).then_some(())?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Whether the tests that need root and outside tools (containerd, runc,
/// skopeo, ...) can run here: this process is root and every one of `tools`
/// is an executable on `PATH` (or, if it has a `/`, at that path).
///
/// If not: with `CI=true` this panics, naming what is missing, so CI cannot
/// silently skip; otherwise it says so on stderr and returns false, and the
/// test returns early.
pub fn e2e_prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("running as root".to_string());
    }
    for tool in tools {
        if find_in_path(tool).is_none() {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    nothing_missing(&missing)
}

/// The harness's rule for a test whose prerequisites (`missing`, each said
/// in a few words) are not all there: true when none is missing; otherwise,
/// with `CI=true` this panics naming them, so CI cannot silently skip, and
/// elsewhere it says so on stderr and returns false, and the test returns
/// early.
pub fn nothing_missing(missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let msg = format!("e2e prerequisites missing: {}", missing.join(", "));
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if ci {
        panic!("{msg} (CI is set, so this fails instead of skipping)");
    }
    eprintln!("skipping test: {msg}");
    false
}

/// Where `tool` is: itself if it contains a `/`, else the first executable
/// file of that name in a `PATH` directory.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    fn executable(p: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| executable(p))
}

/// Stops a child this harness started, by its PID: SIGTERM, then SIGKILL
/// if it has not exited after `grace`. Reaps it either way.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `pid`'s descendants: the children of each of its threads
/// (`/proc/<pid>/task/<tid>/children`), theirs, and so on.
pub fn descendants(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        let tasks = proc_root.join(parent.to_string()).join("task");
        let Ok(threads) = std::fs::read_dir(tasks) else {
            continue;
        };
        for thread in threads.flatten() {
            let children = std::fs::read_to_string(thread.path().join("children"));
            for child in children.unwrap_or_default().split_whitespace() {
                if let Ok(child) = child.parse::<u32>() {
                    if !found.contains(&child) {
                        found.push(child);
                        parents.push(child);
                    }
                }
            }
        }
    }
    found
}

/// The last `lines` lines of a log file, for failure messages.
pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        all[start..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_descendants() {
        let root = tempfile::tempdir().unwrap();
        let proc_file = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // 100 has two threads; 101 and 102 are its children, 103 is 101's.
        proc_file("100/task/100/children", "101 ");
        proc_file("100/task/107/children", "102");
        proc_file("101/task/101/children", "103");
        proc_file("102/task/102/children", "");
        let mut found = descendants(root.path(), 100);
        found.sort_unstable();
        assert_eq!(found, [101, 102, 103]);
        assert!(descendants(root.path(), 103).is_empty());
    }
}
