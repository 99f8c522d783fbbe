//! Pod network namespaces. Each pod gets one, shared by its containers: a
//! thread of the agent unshares a new network namespace, brings its
//! loopback up over netlink, and bind-mounts `/proc/thread-self/ns/net`
//! onto a file under the data dir so the namespace outlives the thread
//! (what `ip netns add` does). Containers join it by that path.
//!
//! Probes reach a pod's ports from inside its namespace: a short-lived
//! thread enters the namespace with `setns` and opens the connection there.
//! Only ever threads the agent spawns for this, which exit afterwards, so
//! no tokio worker changes namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Errors making or using a pod network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {step}: {message}")]
    Step {
        path: String,
        step: &'static str,
        message: String,
    },
}

fn step(path: &Path, step: &'static str) -> impl FnOnce(String) -> NetnsError {
    let path = path.display().to_string();
    move |message| NetnsError::Step {
        path,
        step,
        message,
    }
}

/// Creates the namespace file at `path` unless it is already a namespace.
pub async fn ensure(path: PathBuf) -> Result<(), NetnsError> {
    if is_netns(&path) {
        return Ok(());
    }
    let target = path.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || {
            let _ = tx.send(create(&target));
        })
        .map_err(|e| step(&path, "spawning thread")(e.to_string()))?;
    rx.await
        .map_err(|_| step(&path, "create thread")("ended without an answer".into()))?
}

fn create(path: &Path) -> Result<(), NetnsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| step(path, "creating directory")(e.to_string()))?;
    }
    std::fs::File::create(path).map_err(|e| step(path, "creating file")(e.to_string()))?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| step(path, "unshare")(e.to_string()))?;
    let up = bring_loopback_up();
    mount(
        Some(Path::new("/proc/thread-self/ns/net")),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(path);
        step(path, "bind mount")(e.to_string())
    })?;
    up.map_err(step(path, "bringing lo up"))
}

/// Sets `lo` up in the calling thread's network namespace.
fn bring_loopback_up() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        // Loopback is always index 1 in a fresh namespace.
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| e.to_string())
    })
}

/// Whether `path` is a mounted network namespace.
pub fn is_netns(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // mountinfo shows absolute paths with symlinks resolved.
    let wanted = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()) && l.contains("nsfs"))
}

/// Unmounts and removes the namespace file; missing is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    if is_netns(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|e| step(path, "unmount")(e.to_string()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(step(path, "removing file")(e.to_string())),
    }
}

/// Runs `f` on a fresh thread inside the namespace at `path`.
pub async fn run_in<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-probe".into())
        .spawn(move || {
            let result = std::fs::File::open(&path)
                .map_err(|e| format!("opening {}: {e}", path.display()))
                .and_then(|ns| {
                    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))
                })
                .and_then(|_| f());
            let _ = tx.send(result);
        })
        .map_err(|e| e.to_string())?;
    rx.await
        .map_err(|_| "probe thread ended without an answer".to_string())?
}

/// Opens a TCP connection to `port` on the pod's loopback.
pub async fn tcp_check(netns: PathBuf, port: u16, timeout: Duration) -> Result<(), String> {
    run_in(netns, move || {
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)
            .map(|_| ())
            .map_err(|e| format!("tcp connect to port {port}: {e}"))
    })
    .await
}

/// An HTTP GET to the pod's loopback; returns the status code.
pub async fn http_get(
    netns: PathBuf,
    port: u16,
    path: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
) -> Result<u16, String> {
    run_in(netns, move || {
        let mut stream =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)
                .map_err(|e| format!("http connect to port {port}: {e}"))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let path = if path.is_empty() { "/".to_string() } else { path };
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: skiff-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (n, v) in headers {
            request.push_str(&format!("{n}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).map_err(|e| format!("http write: {e}"))?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).map_err(|e| format!("http read: {e}"))?;
        parse_status(&head[..n]).ok_or_else(|| "not an HTTP response".to_string())
    })
    .await
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines_parse() {
        assert_eq!(super::parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(super::parse_status(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(super::parse_status(b"SSH-2.0"), None);
    }
}
