//! A private `containerd` for the runtime tests: one child process per
//! handle, with its config, root, state, sockets and log all in one temp
//! dir, so it never touches (or is touched by) a system containerd. The CRI
//! plugin is disabled and the debug and metrics listeners are off.
//!
//! Dropping the handle force-deletes the tasks it still runs (through its
//! own API, with `ctr`), stops it by the PID this harness started (SIGTERM,
//! SIGKILL after 5 s), kills any shim of its own that outlived that (one
//! whose task was still being made when the agent went away, so `ctr` never
//! listed it: found by this containerd's socket in the shim's arguments,
//! with the shim's descendants, such as a `runc init`), detaches whatever
//! is still mounted under its dir and removes the dir, also when a test
//! fails.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::mount::{umount2, MntFlags};

use crate::{descendants, file_tail, find_in_path, terminate};

/// How long [`PrivateContainerd::start`] waits for the socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long containerd gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Each `ctr` call made while cleaning up.
const CTR_TIMEOUT: Duration = Duration::from_secs(5);

/// A running private containerd and its temp dir.
pub struct PrivateContainerd {
    child: Child,
    socket: PathBuf,
    log_path: PathBuf,
    // Dropped after `Drop::drop` has stopped containerd and unmounted.
    dir: tempfile::TempDir,
}

impl PrivateContainerd {
    /// Writes the config, starts `containerd --config <dir>/config.toml` and
    /// waits (blocking, at most 20 s) until its socket accepts connections.
    pub fn start() -> anyhow::Result<PrivateContainerd> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-containerd-")
            .tempdir()
            .context("create containerd temp dir")?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let ttrpc = d.join("containerd.sock.ttrpc");
        // sun_path holds 108 bytes including the NUL.
        anyhow::ensure!(
            ttrpc.as_os_str().len() < 100,
            "socket path {} too long for a unix socket: set TMPDIR to a shorter dir",
            ttrpc.display()
        );
        let config = format!(
            r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
            root = toml_str(&d.join("root")),
            state = toml_str(&d.join("state")),
            grpc = toml_str(&socket),
            ttrpc = toml_str(&ttrpc),
            opt = toml_str(&d.join("opt")),
        );
        let config_path = d.join("config.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("write {}", config_path.display()))?;

        let log_path = d.join("containerd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd")?;
        // From here on, Drop stops it and cleans up if anything fails.
        let mut ctd = PrivateContainerd {
            child,
            socket,
            log_path,
            dir,
        };
        ctd.wait_ready().with_context(|| ctd.log_tail())?;
        Ok(ctd)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("containerd exited during startup: {status}");
            }
            if self.socket.exists() && UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "containerd socket {} not accepting connections after {START_TIMEOUT:?}",
                    self.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gRPC socket (`<dir>/containerd.sock`).
    pub fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// containerd's `root` (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// containerd's `state` (task bundles, rootfs mounts).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The temp dir holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The containerd process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path, 30)
    }

    /// `ctr --address <socket>` with no stdin, for the arguments to be
    /// added.
    pub fn ctr_command(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr --address <socket> <args>` and returns what it did.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.ctr_command().args(args).output().context("run ctr")
    }

    /// Imports an image archive (OCI layout or `docker save` tar) into
    /// `namespace` with `ctr images import`.
    pub fn import(&self, namespace: &str, archive: &Path) -> anyhow::Result<()> {
        let archive = archive.to_str().context("archive path is not UTF-8")?;
        let out = self.ctr(&["-n", namespace, "images", "import", archive])?;
        anyhow::ensure!(
            out.status.success(),
            "ctr images import {archive} into {namespace} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Best effort: force-deletes every task in every namespace, so their
    /// shims (which outlive containerd) exit and release their mounts.
    fn delete_tasks(&self) {
        if find_in_path("ctr").is_none() {
            return;
        }
        let Some(namespaces) = self.ctr_within(&["namespaces", "ls", "-q"]) else {
            return;
        };
        for ns in namespaces.split_whitespace() {
            let Some(listed) = self.ctr_within(&["-n", ns, "tasks", "ls", "-q"]) else {
                continue;
            };
            let tasks: Vec<&str> = listed.split_whitespace().collect();
            if tasks.is_empty() {
                continue;
            }
            let mut args = vec!["-n", ns, "tasks", "delete", "--force"];
            args.extend(tasks);
            let _ = self.ctr_within(&args);
        }
    }

    /// `ctr` with a time limit, for cleanup: its stdout if it succeeded.
    fn ctr_within(&self, args: &[&str]) -> Option<String> {
        let mut cmd = self.ctr_command();
        cmd.args(args);
        output_within(&mut cmd, CTR_TIMEOUT)
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.delete_tasks();
        }
        terminate(&mut self.child, STOP_GRACE);
        for shim in shims_of(Path::new("/proc"), &self.socket) {
            kill_with_descendants(Path::new("/proc"), shim);
        }
        unmount_all_under(self.dir.path());
        // `self.dir` is removed when the fields drop, right after this.
    }
}

/// The shim processes serving the containerd whose socket is `socket`:
/// each is started with `-address <socket>`, and this harness gives every
/// containerd a socket of its own, so no other containerd's shim matches.
fn shims_of(proc_root: &Path, socket: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let socket = socket.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = args.first().is_some_and(|a| {
                let name = a.rsplit(|b| *b == b'/').next().unwrap_or(a);
                name.starts_with(b"containerd-shim")
            });
            is_shim
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == socket)
        })
        .collect()
}

/// SIGKILLs `pid`'s descendants, deepest first, then `pid`: a shim whose
/// containerd is gone has nobody left to stop its container. Each process
/// is stopped (SIGSTOP) as it is found, so that none forks or reaps while
/// the tree is read (a stopped parent's exited child stays a zombie and
/// keeps its PID, which therefore cannot pass to another process), and the
/// tree is read again until no new descendant shows. PID 1 and below, and
/// this process, are never signalled.
fn kill_with_descendants(proc_root: &Path, pid: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let ours = std::process::id();
    let signallable = |p: u32| p > 1 && p != ours;
    let signal = |p: u32, signal: Signal| {
        if let Ok(p) = i32::try_from(p) {
            let _ = kill(Pid::from_raw(p), signal);
        }
    };
    if !signallable(pid) {
        return;
    }
    signal(pid, Signal::SIGSTOP);
    let mut order = vec![pid];
    loop {
        let new: Vec<u32> = descendants(proc_root, pid)
            .into_iter()
            .filter(|p| signallable(*p) && !order.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            signal(p, Signal::SIGSTOP);
            order.push(p);
        }
    }
    for victim in order.iter().rev() {
        signal(*victim, Signal::SIGKILL);
    }
}

/// A path as a TOML basic string.
fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Runs `cmd` with stdout captured, killing it (by the PID it was started
/// with) after `timeout`. `Some(stdout)` if it exited successfully. Only
/// for short outputs: nothing reads the pipe until the command exits.
fn output_within(cmd: &mut Command, timeout: Duration) -> Option<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return status.success().then_some(out);
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Lazily unmounts (MNT_DETACH) every mount point at or under `dir`,
/// deepest first, as listed in /proc/self/mountinfo. Best effort.
pub fn unmount_all_under(dir: &Path) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    // Mounts can be stacked on one point: a few passes take them all.
    for _ in 0..5 {
        let mut points: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|p| p.starts_with(&dir))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort();
        points.dedup();
        // Stable: deepest first.
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in &points {
            let _ = umount2(p.as_path(), MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points of this process's mount namespace.
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..=i + 3]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape_mountinfo("/a\\040b"), OsString::from("/a b"));
        assert_eq!(unescape_mountinfo("/plain"), OsString::from("/plain"));
        assert_eq!(unescape_mountinfo("/end\\04"), OsString::from("/end\\04"));
    }

    /// A fake `/proc` entry: `pid` with these arguments.
    fn process(root: &Path, pid: i32, args: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmdline = args.join("\0");
        cmdline.push('\0');
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    }

    #[test]
    fn only_the_shims_of_this_containerds_socket_are_found() {
        let root = tempfile::tempdir().unwrap();
        let ours = "/tmp/skiff-containerd-a/containerd.sock";
        let shim = "/usr/bin/containerd-shim-runc-v2";
        process(
            root.path(),
            10,
            &[shim, "-namespace", "x", "-address", ours],
        );
        process(
            root.path(),
            11,
            &[shim, "-address", "/tmp/other/containerd.sock"],
        );
        // Not a shim, though it names the socket.
        process(root.path(), 12, &["/usr/bin/ctr", "-address", ours]);
        // The socket as a prefix of another path is not it.
        process(root.path(), 13, &[shim, "-address", &format!("{ours}.2")]);
        std::fs::create_dir_all(root.path().join("self")).unwrap();
        assert_eq!(shims_of(root.path(), Path::new(ours)), [10]);
    }

    #[test]
    fn a_process_and_its_descendants_are_killed() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let children = |pid: u32| descendants(Path::new("/proc"), pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while children(pid).len() < 2 {
            assert!(Instant::now() < deadline, "the two sleeps never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let sleeps = children(pid);
        kill_with_descendants(Path::new("/proc"), pid);
        let status = child.wait().unwrap();
        assert!(!status.success(), "the shell was killed");
        for sleep in sleeps {
            // Reparented and reaped, or a zombie: either way gone. A
            // process killed while stopped takes a moment to wake and
            // exit, so it is given a few seconds (a sleep spared would
            // still be there after 60).
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let state =
                    std::fs::read_to_string(format!("/proc/{sleep}/stat")).unwrap_or_default();
                let gone = state
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_none_or(|s| s == "Z");
                if gone {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sleep {sleep} was not killed: {state}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
