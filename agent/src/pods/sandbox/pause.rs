//! A pod's pause process: PID 1 of the PID namespace its containers share
//! when the pod asks for `shareProcessNamespace`, as the pause container
//! of a Kubernetes pod sandbox is. A PID namespace, unlike a network
//! namespace, cannot be kept by a bind mount alone: the first process to
//! enter it becomes its init, and when that init ends the kernel kills
//! everything left in it and lets nothing new in. So each such pod gets a
//! process of its own, which does nothing but reap the orphans reparented
//! to it and end on SIGTERM or SIGINT (as Kubernetes' `pause` does); its
//! containers join its namespace by `/proc/<pid>/ns/pid`, as containerd's
//! CRI plugin joins a sandbox's.
//!
//! skiff runs no sandbox image, so the pause process is this binary
//! again, `/proc/self/exe` started with `argv[0]` [`PAUSE_NAME`]: the
//! `skiff` binary's `main` hands such a start to [`main_if_pause`] before
//! anything else. The agent starts a short-lived starter (`skiff-pause
//! --start UID PID_FILE NETNS`), which joins the pod's network namespace,
//! unshares a PID namespace for its children and starts the pause process
//! there (`skiff-pause UID`, PID 1 in it, its environment empty and in a
//! process group of its own). The pause process takes a mount namespace
//! of its own whose root is an empty read-only tmpfs, so that the pod's
//! containers, which can see it, find neither the node's files nor its
//! mount table through `/proc/1`, and it pins none of the node's mounts;
//! it says `ready` once it is set up (or why it is not), and only then
//! does the starter write its PID to the pid file under the data dir and
//! exit, leaving it to be reparented. Like the containers' runc shims, it
//! is nobody's child to the agent and outlives it: a restarted agent finds
//! it by the pid file and checks it is the pause process of that pod by
//! its command line, so the pod's containers keep their namespace.
//! [`stop`] kills it with SIGKILL, which ends its namespace and anything
//! left in it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, getpid, pivot_root, Pid};

/// `argv[0]` of the pause process and its starter; what `ps` in a pod's
/// containers shows as PID 1.
pub const PAUSE_NAME: &str = "skiff-pause";

/// The starter's first argument.
const START_FLAG: &str = "--start";

/// The binary the agent runs: the agent's own, even when the file it was
/// started from has been replaced since.
const SELF_EXE: &str = "/proc/self/exe";

/// Where processes are looked up.
const PROC: &str = "/proc";

/// What the pause process says once it is set up.
const READY: &str = "ready";

/// How long the starter may take.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the pause process mounts its empty root before it pivots into it:
/// a directory every Linux node has (the mount is in its own mount
/// namespace, and the node's `/proc` is let go of with the old root).
const EMPTY_ROOT_AT: &str = "/proc";

/// Errors making sure of, or stopping, a pod's pause process, as the
/// agent sees them. The messages end up in the pod's status, which names
/// the pod already.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("pause process: creating {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pause process: cannot run {SELF_EXE} as {PAUSE_NAME}: {source}")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    #[error("pause process: did not start within {after:?}")]
    Timeout { after: Duration },
    #[error("pause process: did not start: {message}")]
    Start { message: String },
    #[error("pause process: started, but no pause process of the pod runs by the PID in {pid_file}; was it killed at once?")]
    Vanished { pid_file: PathBuf },
    #[error("pause process {pid}: SIGKILL: {source}")]
    Kill {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("pause process: removing {pid_file}: {source}")]
    RemoveFile {
        pid_file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the starter could not start a pause process; printed on its
/// stderr, which the agent reads.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("opening network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("joining network namespace {path}: {source}")]
    JoinNetns {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unshare of a PID namespace: {0}; the agent needs CAP_SYS_ADMIN")]
    UnsharePid(#[source] Errno),
    #[error("running {SELF_EXE}: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{0}")]
    Setup(String),
    #[error("it ended before it was set up")]
    Ended,
    #[error("writing its PID to {path}: {source}")]
    WritePid {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the pause process could not set itself up; the line it says
/// instead of `ready`.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("unshare of a mount namespace: {0}")]
    UnshareMounts(#[source] Errno),
    #[error("making its mounts private: {0}")]
    PrivateMounts(#[source] Errno),
    #[error("mounting its empty root on {EMPTY_ROOT_AT}: {0}")]
    MountRoot(#[source] Errno),
    #[error("changing directory: {0}")]
    Chdir(#[source] Errno),
    #[error("pivot_root into its empty root: {0}")]
    PivotRoot(#[source] Errno),
    #[error("detaching the node's root: {0}")]
    DetachOldRoot(#[source] Errno),
    #[error("blocking signals: {0}")]
    BlockSignals(#[source] Errno),
}

/// What this binary was started as, when it is a pause process or its
/// starter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Invocation {
    /// `skiff-pause --start UID PID_FILE NETNS`.
    Start {
        uid: String,
        pid_file: PathBuf,
        netns: PathBuf,
    },
    /// `skiff-pause UID`: the pause process of pod UID (the UID only
    /// names it, for [`running_pause`]).
    Hold,
}

impl Invocation {
    /// The invocation `args` (argv, `argv[0]` first) are, once `argv[0]`
    /// is [`PAUSE_NAME`]; `None` for anything else.
    fn parse(args: &[OsString]) -> Option<Invocation> {
        let text: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
        match text.as_slice() {
            [PAUSE_NAME, START_FLAG, uid, pid_file, netns] if !uid.is_empty() => {
                Some(Invocation::Start {
                    uid: (*uid).to_owned(),
                    pid_file: PathBuf::from(*pid_file),
                    netns: PathBuf::from(*netns),
                })
            }
            [PAUSE_NAME, uid] if !uid.is_empty() && !uid.starts_with('-') => Some(Invocation::Hold),
            _ => None,
        }
    }
}

/// Runs the pause process or its starter when `args` (this process's
/// argv) say this binary was started as one, and returns its exit code;
/// `None` for any other start. Called first thing in `main`.
pub fn main_if_pause(args: &[OsString]) -> Option<ExitCode> {
    if args.first().map(OsString::as_os_str) != Some(OsStr::new(PAUSE_NAME)) {
        return None;
    }
    let code = match Invocation::parse(args) {
        Some(Invocation::Start {
            uid,
            pid_file,
            netns,
        }) => match start(&uid, &pid_file, &netns) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Some(Invocation::Hold) => hold(),
        None => {
            eprintln!(
                "{PAUSE_NAME}: a pod's pause process, which the skiff agent starts itself \
                 ({PAUSE_NAME} {START_FLAG} UID PID_FILE NETNS)"
            );
            ExitCode::from(2)
        }
    };
    Some(code)
}

/// The command line of pod `uid`'s pause process, as `/proc/PID/cmdline`
/// shows it.
fn hold_cmdline(uid: &str) -> Vec<u8> {
    format!("{PAUSE_NAME}\0{uid}\0").into_bytes()
}

/// The PID (in the agent's PID namespace) of pod `uid`'s pause process
/// by the PID in `pid_file`, when a process of that PID runs and is that
/// pause process (not one that ended, whose PID was given to another),
/// looked up under `proc_root`.
fn running_pause(proc_root: &Path, uid: &str, pid_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|pid| *pid > 0)?;
    let cmdline = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    (cmdline == hold_cmdline(uid)).then_some(pid)
}

/// The path of the PID namespace whose PID 1 is `pid`.
fn pid_namespace_of(pid: i32) -> PathBuf {
    Path::new(PROC).join(pid.to_string()).join("ns").join("pid")
}

/// Makes sure pod `uid` has a running pause process, its PID in
/// `pid_file`, started in the network namespace `netns` when there is
/// none; returns the path of its PID namespace, which the pod's
/// containers join.
pub async fn ensure(uid: &str, pid_file: &Path, netns: &Path) -> Result<PathBuf, PauseError> {
    if let Some(pid) = running_pause(Path::new(PROC), uid, pid_file) {
        return Ok(pid_namespace_of(pid));
    }
    if let Some(dir) = pid_file.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PauseError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let mut starter = tokio::process::Command::new(SELF_EXE);
    starter
        .arg0(PAUSE_NAME)
        .arg(START_FLAG)
        .arg(uid)
        .arg(pid_file)
        .arg(netns)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // `output` reads its stdout (empty) and stderr (why it failed) to the
    // end, which comes when it exits: the pause process has neither.
    let output = match tokio::time::timeout(START_TIMEOUT, starter.output()).await {
        Err(_) => {
            return Err(PauseError::Timeout {
                after: START_TIMEOUT,
            })
        }
        Ok(Err(source)) => return Err(PauseError::Spawn { source }),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let message = if said.is_empty() {
            format!("the starter ended with {}", output.status)
        } else {
            said
        };
        return Err(PauseError::Start { message });
    }
    let pid =
        running_pause(Path::new(PROC), uid, pid_file).ok_or_else(|| PauseError::Vanished {
            pid_file: pid_file.to_path_buf(),
        })?;
    tracing::info!(pod_uid = %uid, pid, "started the pod's pause process");
    Ok(pid_namespace_of(pid))
}

/// Kills pod `uid`'s pause process, if the PID in `pid_file` is it, which
/// ends its PID namespace and anything left in it, and removes
/// `pid_file`; none of either is fine.
pub fn stop(uid: &str, pid_file: &Path) -> Result<(), PauseError> {
    if let Some(pid) = running_pause(Path::new(PROC), uid, pid_file) {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => return Err(PauseError::Kill { pid, source }),
        }
    }
    match std::fs::remove_file(pid_file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PauseError::RemoveFile {
            pid_file: pid_file.to_path_buf(),
            source,
        }),
    }
}

/// The starter: joins `netns`, starts the pause process of pod `uid` in
/// a new PID namespace, waits until it is set up, writes its PID to
/// `pid_file` and returns, leaving it running.
fn start(uid: &str, pid_file: &Path, netns: &Path) -> Result<(), StartError> {
    let ns = std::fs::File::open(netns).map_err(|source| StartError::OpenNetns {
        path: netns.to_path_buf(),
        source,
    })?;
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| StartError::JoinNetns {
        path: netns.to_path_buf(),
        source,
    })?;
    // The starter stays where it is; the first process it starts is PID 1
    // of a new namespace.
    unshare(CloneFlags::CLONE_NEWPID).map_err(StartError::UnsharePid)?;
    let mut pause = std::process::Command::new(SELF_EXE)
        .arg0(PAUSE_NAME)
        .arg(uid)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(StartError::Spawn)?;
    let mut line = String::new();
    let read = match pause.stdout.take() {
        Some(out) => BufReader::new(out).read_line(&mut line).is_ok(),
        None => false,
    };
    let said = line.trim();
    let outcome = if read && said == READY {
        let text = format!("{}\n", pause.id());
        std::fs::write(pid_file, text).map_err(|source| StartError::WritePid {
            path: pid_file.to_path_buf(),
            source,
        })
    } else if said.is_empty() {
        Err(StartError::Ended)
    } else {
        Err(StartError::Setup(said.to_owned()))
    };
    if outcome.is_err() {
        let _ = pause.kill();
        let _ = pause.wait();
    }
    // Otherwise left running: reparented once the starter exits.
    outcome
}

/// The pause process: sets itself up, says so, then reaps orphans until
/// SIGTERM or SIGINT.
fn hold() -> ExitCode {
    if getpid() != Pid::from_raw(1) {
        eprintln!(
            "{PAUSE_NAME}: not PID 1 of a PID namespace of its own; the skiff agent starts it"
        );
        return ExitCode::from(2);
    }
    // Its name as `ps` shows it, instead of `exe` (it was started through
    // /proc/self/exe). Cosmetic: a failure changes nothing else.
    let _ = nix::sys::prctl::set_name(c"skiff-pause");
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    let set_up = isolate().and_then(|()| signals.thread_block().map_err(SetupError::BlockSignals));
    let line = match &set_up {
        Ok(()) => READY.to_owned(),
        Err(e) => e.to_string(),
    };
    let mut out = std::io::stdout();
    let said = writeln!(out, "{line}").and_then(|()| out.flush());
    // Without a starter to hear it, nobody would know of this process.
    if set_up.is_err() || said.is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_orphans(),
            Ok(_) => return ExitCode::SUCCESS,
            Err(_) => {}
        }
    }
}

/// A mount namespace of its own whose root is an empty read-only tmpfs,
/// the node's root detached from it (the `pivot_root(".", ".")` sequence
/// of pivot_root(2)).
fn isolate() -> Result<(), SetupError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(SetupError::UnshareMounts)?;
    // Nothing done here may reach the node's mounts.
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(SetupError::PrivateMounts)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        EMPTY_ROOT_AT,
        Some("tmpfs"),
        flags,
        Some("size=4k,mode=0555"),
    )
    .map_err(SetupError::MountRoot)?;
    chdir(EMPTY_ROOT_AT).map_err(SetupError::Chdir)?;
    pivot_root(".", ".").map_err(SetupError::PivotRoot)?;
    // The old root is stacked on the new one at "."; this detaches it.
    umount2(".", MntFlags::MNT_DETACH).map_err(SetupError::DetachOldRoot)?;
    chdir("/").map_err(SetupError::Chdir)
}

/// Reaps every child that has ended (the orphans of the pod's containers
/// are reparented to PID 1).
fn reap_orphans() {
    while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_a_start_as_skiff_pause_is_a_pause_process() {
        assert_eq!(
            Invocation::parse(&args(&[
                "skiff-pause",
                "--start",
                "uid1",
                "/data/pause/uid1",
                "/data/netns/uid1"
            ])),
            Some(Invocation::Start {
                uid: "uid1".into(),
                pid_file: "/data/pause/uid1".into(),
                netns: "/data/netns/uid1".into(),
            })
        );
        assert_eq!(
            Invocation::parse(&args(&["skiff-pause", "uid1"])),
            Some(Invocation::Hold)
        );
        for wrong in [
            &["skiff-pause"][..],
            &["skiff-pause", "--start", "uid1"],
            &["skiff-pause", "--start"],
            &["skiff-pause", ""],
            &["skiff-pause", "uid1", "extra"],
        ] {
            assert_eq!(Invocation::parse(&args(wrong)), None, "{wrong:?}");
        }
        // Any other start is the skiff binary's own.
        assert!(main_if_pause(&args(&["skiff", "agent"])).is_none());
        assert!(main_if_pause(&args(&["/usr/local/bin/skiff", "skiff-pause"])).is_none());
        assert!(main_if_pause(&[]).is_none());
    }

    #[test]
    fn a_pause_process_is_known_by_its_pid_file_and_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let process = |pid: &str, cmdline: &[u8]| {
            let at = proc_root.join(pid);
            std::fs::create_dir_all(&at).unwrap();
            std::fs::write(at.join("cmdline"), cmdline).unwrap();
        };
        process("300", b"skiff-pause\0uid1\0");
        // Another pod's, and the starter of this one's.
        process("301", b"skiff-pause\0uid2\0");
        process("302", b"skiff-pause\0--start\0uid1\0/p\0/n\0");
        // An ended process: a zombie has an empty command line.
        process("303", b"");
        let pid_file = dir.path().join("uid1");
        let with = |text: &str| {
            std::fs::write(&pid_file, text).unwrap();
            running_pause(&proc_root, "uid1", &pid_file)
        };
        assert_eq!(with("300\n"), Some(300));
        assert_eq!(with("301\n"), None, "another pod's pause process");
        assert_eq!(with("302\n"), None, "the starter");
        assert_eq!(with("303\n"), None, "ended");
        assert_eq!(with("304\n"), None, "no such process");
        assert_eq!(with(""), None, "half written");
        assert_eq!(with("-1\n"), None);
        std::fs::remove_file(&pid_file).unwrap();
        assert_eq!(running_pause(&proc_root, "uid1", &pid_file), None);
        assert_eq!(pid_namespace_of(300), Path::new("/proc/300/ns/pid"));
    }

    #[test]
    fn stopping_kills_only_the_pods_pause_process_and_removes_its_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("uid1");
        // This test's own PID: a process that is no pause process, which
        // must survive (or this test would not end well).
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        stop("uid1", &pid_file).unwrap();
        assert!(!pid_file.exists());
        // Nothing to stop is fine.
        stop("uid1", &pid_file).unwrap();
    }
}
