//! Pod network namespaces, the kernel side of a pod's network. Each pod
//! gets one, shared by its containers: a thread of the agent unshares a new
//! network namespace, brings its loopback up over netlink, and bind-mounts
//! `/proc/thread-self/ns/net` onto a file under the data dir so the
//! namespace outlives the thread (what `ip netns add` does). Containers
//! join it by that path, and the pod network ([`super::netlink`]) wires
//! `eth0` inside it.
//!
//! Probes, lifecycle hooks and port-forwards reach a pod's ports from
//! inside its namespace ([`run_in`]; the TCP and HTTP sides are
//! `pods/tcp_socket.rs` and `pods/http_get.rs`): a short-lived thread enters the namespace with
//! `setns` and opens the connection there.
//! Only ever threads the agent spawns for this, which exit afterwards, so
//! no tokio worker changes namespace.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Errors making, removing or entering a pod network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: spawning the {thread_name} thread: {source}; the agent may be at its thread or memory limit")]
    Spawn {
        path: PathBuf,
        thread_name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: the {thread_name} thread ended without an answer")]
    ThreadLost {
        path: PathBuf,
        thread_name: &'static str,
    },
    #[error("network namespace {path}: creating directory: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: creating file: {source}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: unshare: {source}; the agent needs CAP_SYS_ADMIN")]
    Unshare {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("network namespace {path}: bind mount: {source}; the agent needs CAP_SYS_ADMIN")]
    BindMount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("network namespace {path}: bringing lo up: {source}")]
    Loopback {
        path: PathBuf,
        #[source]
        source: LoopbackError,
    },
    #[error("network namespace {path}: unmount: {source}; a process may still hold it (see /proc/*/mountinfo)")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("network namespace {path}: removing file: {source}")]
    RemoveFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: opening: {source}; was the pod removed meanwhile?")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: setns: {source}; the agent needs CAP_SYS_ADMIN")]
    Enter {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Why `lo` could not be set up in a fresh namespace.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("starting a netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("setting lo up: {0}")]
    Up(#[source] rtnetlink::Error),
}

/// Why a connection to a pod's port made from inside its namespace (a
/// port-forward's), failed.
#[derive(Debug, thiserror::Error)]
pub enum PortCheckError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("tcp connect to port {port}: {source}")]
    TcpConnect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
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
        .map_err(|source| NetnsError::Spawn {
            path: path.clone(),
            thread_name: "netns-create",
            source,
        })?;
    rx.await.map_err(|_| NetnsError::ThreadLost {
        path,
        thread_name: "netns-create",
    })?
}

fn create(path: &Path) -> Result<(), NetnsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| NetnsError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::File::create(path).map_err(|source| NetnsError::CreateFile {
        path: path.to_path_buf(),
        source,
    })?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
        path: path.to_path_buf(),
        source,
    })?;
    let up = bring_loopback_up();
    mount(
        Some(Path::new("/proc/thread-self/ns/net")),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| {
        let _ = std::fs::remove_file(path);
        NetnsError::BindMount {
            path: path.to_path_buf(),
            source,
        }
    })?;
    up.map_err(|source| NetnsError::Loopback {
        path: path.to_path_buf(),
        source,
    })
}

/// Sets `lo` up in the calling thread's network namespace.
fn bring_loopback_up() -> Result<(), LoopbackError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoopbackError::Runtime)?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(LoopbackError::Socket)?;
        tokio::spawn(connection);
        // Loopback is always index 1 in a fresh namespace.
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(LoopbackError::Up)
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
        umount2(path, MntFlags::MNT_DETACH).map_err(|source| NetnsError::Unmount {
            path: path.to_path_buf(),
            source,
        })?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::RemoveFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<(), NetnsError> {
    let ns = std::fs::File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a fresh thread inside the namespace at `path`. Entering the
/// namespace can fail before `f` runs, so `f`'s error type must take a
/// [`NetnsError`].
pub async fn run_in<T, E>(
    path: PathBuf,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<NetnsError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let target = path.clone();
    std::thread::Builder::new()
        .name("netns-probe".into())
        .spawn(move || {
            let result = match enter(&target) {
                Ok(()) => f(),
                Err(e) => Err(E::from(e)),
            };
            let _ = tx.send(result);
        })
        .map_err(|source| NetnsError::Spawn {
            path: path.clone(),
            thread_name: "netns-probe",
            source,
        })?;
    rx.await.map_err(|_| NetnsError::ThreadLost {
        path,
        thread_name: "netns-probe",
    })?
}
