//! The own stdio of containers started with `stdin: true` or `tty: true`,
//! what `kubectl attach` and `kubectl run -i` connect to. Other containers'
//! stdout and stderr go straight from the runc shim into their log file
//! ([`super::containers`]); these get named pipes (FIFOs) instead, under
//! `<data-dir>/container-io/<container-id>/`: `stdin` (with `stdin: true`),
//! `stdout`, and `stderr` (not with a terminal, which carries both). The
//! agent copies what comes out into the container's log file, as the shim
//! would have, and to every attached session (a broadcast: a session that
//! reads too slowly loses output rather than stalling the container);
//! sessions write the container's stdin through the one write end the
//! agent holds ([`Attachable`]).
//!
//! An agent restart leaves the container alone: the runc shim holds both
//! ends of each output FIFO and a write end of the stdin FIFO of its own
//! (containerd's `openStdin`, closed only by `CloseIO`), so while the agent
//! is away the process reads no end of file and its output waits in the
//! pipe (64 KiB, then its writes block). A restarted agent finds the
//! directory (`io.json` names the log file and the terminal), opens the
//! FIFOs again and copies on ([`ContainerIo::recover`]). Output a container
//! wrote and exited with while the agent was away goes with the shim's
//! pipes.
//!
//! `stdinOnce`: the first attached session that used stdin ends it for
//! good ([`Attachable::close_stdin`]): the agent's write end is closed, the
//! `stdin` FIFO removed (so a restarted agent knows), and containerd's
//! `CloseIO` has the shim close its end; the process reads end of file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::broadcast;

use super::{io, Error, Result};

/// The file in a container's directory saying how it was started.
const IO_FILE: &str = "io.json";
/// Output chunks kept for attached sessions that fall behind (at most
/// 8 MiB of 32 KiB chunks); a session further behind loses output.
const BROADCAST_CHUNKS: usize = 256;
/// Largest chunk read from an output FIFO.
const CHUNK: usize = 32 << 10;

/// How a container's own stdio is set up, from its spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StdioMode {
    /// `stdin: true`: a stdin kept open for attached sessions.
    pub stdin: bool,
    /// `stdinOnce: true`: stdin closed after the first session using it.
    pub stdin_once: bool,
    /// `tty: true`: the process's stdio is a terminal.
    pub tty: bool,
}

impl StdioMode {
    /// Whether the container gets FIFOs (and can be attached to for
    /// input or a terminal); otherwise the shim writes its log.
    pub fn attachable(&self) -> bool {
        self.stdin || self.tty
    }
}

/// What `io.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IoRecord {
    log: PathBuf,
    mode: StdioMode,
}

/// The agent's write end of a container's stdin.
pub type StdinWriter = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A piece of a container's output, as attached sessions receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub data: Bytes,
}

/// A running container's own stdio, shared by the sessions attached to it.
pub struct Attachable {
    /// The process's stdio is a terminal.
    pub tty: bool,
    /// stdin ends with the first session that used it.
    pub stdin_once: bool,
    /// The agent's write end of stdin; `None` once closed (or never open).
    stdin: tokio::sync::Mutex<Option<StdinWriter>>,
    /// The stdin FIFO, removed when stdin is closed for good.
    stdin_fifo: Option<PathBuf>,
    /// Where sessions subscribe to the output; `None` once it has ended.
    output: Mutex<Option<broadcast::Sender<OutputChunk>>>,
}

impl std::fmt::Debug for Attachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachable")
            .field("tty", &self.tty)
            .field("stdin_once", &self.stdin_once)
            .field("stdin_fifo", &self.stdin_fifo)
            .finish_non_exhaustive()
    }
}

impl Attachable {
    /// A container's stdio: `stdin` its write end if open, `stdin_fifo`
    /// the FIFO to remove when it is closed for good. The sender is what
    /// the output is sent on; the output ends once [`Attachable::end_output`]
    /// is called and every clone of it is dropped.
    pub fn new(
        mode: StdioMode,
        stdin: Option<StdinWriter>,
        stdin_fifo: Option<PathBuf>,
    ) -> (Arc<Attachable>, broadcast::Sender<OutputChunk>) {
        let (output, _) = broadcast::channel(BROADCAST_CHUNKS);
        let attachable = Arc::new(Attachable {
            tty: mode.tty,
            stdin_once: mode.stdin_once,
            stdin: tokio::sync::Mutex::new(stdin),
            stdin_fifo,
            output: Mutex::new(Some(output.clone())),
        });
        (attachable, output)
    }

    /// The output from now on, or `None` if it has ended.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<OutputChunk>> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// No more output: sessions see the end once what was sent is read.
    pub fn end_output(&self) {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether stdin is open for writing.
    pub async fn has_stdin(&self) -> bool {
        self.stdin.lock().await.is_some()
    }

    /// Writes `data` to the container's stdin; an error if it is closed.
    pub async fn write_stdin(&self, data: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        let Some(writer) = stdin.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the container's stdin is closed",
            ));
        };
        let written = async {
            writer.write_all(data).await?;
            writer.flush().await
        }
        .await;
        if written.is_err() {
            *stdin = None;
        }
        written
    }

    /// Closes the agent's end of stdin for good and removes its FIFO;
    /// whether it was open (then the shim's end is the caller's to close).
    pub async fn close_stdin(&self) -> bool {
        let Some(mut writer) = self.stdin.lock().await.take() else {
            return false;
        };
        let _ = writer.flush().await;
        drop(writer);
        if let Some(fifo) = &self.stdin_fifo {
            match std::fs::remove_file(fifo) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(fifo = %fifo.display(), error = %e, "removing stdin FIFO"),
            }
        }
        true
    }
}

/// The FIFOs of a container about to be created, with the agent's ends
/// open: the output readers, a held write end of each (so nothing reads a
/// false end of file before the shim has opened its own), and stdin.
#[derive(Debug)]
pub struct PreparedIo {
    id: String,
    record: IoRecord,
    stdin_path: Option<PathBuf>,
    stdout_path: PathBuf,
    stderr_path: Option<PathBuf>,
    stdin: Option<pipe::Sender>,
    readers: Vec<(OutputStream, pipe::Receiver)>,
    holders: Vec<pipe::Sender>,
}

impl PreparedIo {
    /// The task's `stdin`, `stdout` and `stderr` as containerd takes them.
    pub fn task_paths(&self) -> (String, String, String) {
        let text = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        (
            text(&self.stdin_path),
            self.stdout_path.display().to_string(),
            text(&self.stderr_path),
        )
    }
}

/// Every attachable container of this agent, by containerd ID.
#[derive(Debug)]
pub struct ContainerIo {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Attachable>>>,
}

fn make_fifo(path: &Path) -> Result<()> {
    nix::unistd::mkfifo(
        path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .map_err(|e| Error::Io {
        context: format!("creating FIFO {}", path.display()),
        source: std::io::Error::from(e),
    })
}

fn open_reader(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(io(format!("opening FIFO {}", path.display())))
}

/// stdin, opened read-write: the open never blocks, and nothing the agent
/// writes is lost for want of a reader.
fn open_stdin(path: &Path) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(io(format!("opening FIFO {}", path.display())))
}

impl ContainerIo {
    /// Keeps containers' FIFOs under `dir`.
    pub fn new(dir: PathBuf) -> ContainerIo {
        ContainerIo {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Attachable>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Container `id`'s stdio, if it was started with its own.
    pub fn get(&self, id: &str) -> Option<Arc<Attachable>> {
        self.lock().get(id).cloned()
    }

    /// Makes the FIFOs of container `id` (whose output goes to `log`) and
    /// opens the agent's ends; an earlier run's are removed first.
    pub fn prepare(&self, id: &str, mode: StdioMode, log: &Path) -> Result<PreparedIo> {
        self.forget(id);
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let record = IoRecord {
            log: log.to_path_buf(),
            mode,
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        let file = dir.join(IO_FILE);
        std::fs::write(&file, json).map_err(io(format!("writing {}", file.display())))?;
        let mut prepared = PreparedIo {
            id: id.to_owned(),
            record,
            stdin_path: None,
            stdout_path: dir.join("stdout"),
            stderr_path: None,
            stdin: None,
            readers: Vec::new(),
            holders: Vec::new(),
        };
        let mut outputs = vec![(OutputStream::Stdout, prepared.stdout_path.clone())];
        if !mode.tty {
            let path = dir.join("stderr");
            prepared.stderr_path = Some(path.clone());
            outputs.push((OutputStream::Stderr, path));
        }
        for (stream, path) in outputs {
            make_fifo(&path)?;
            prepared.readers.push((stream, open_reader(&path)?));
            // A reader exists now, so this non-blocking open succeeds.
            let holder = pipe::OpenOptions::new()
                .open_sender(&path)
                .map_err(io(format!("opening FIFO {}", path.display())))?;
            prepared.holders.push(holder);
        }
        if mode.stdin {
            let path = dir.join("stdin");
            make_fifo(&path)?;
            prepared.stdin = Some(open_stdin(&path)?);
            prepared.stdin_path = Some(path);
        }
        Ok(prepared)
    }

    /// The task was created (the shim has its FIFO ends open): the held
    /// write ends go, and copying starts.
    pub fn started(&self, prepared: PreparedIo) {
        let PreparedIo {
            id,
            record,
            stdin_path,
            stdin,
            readers,
            holders,
            ..
        } = prepared;
        drop(holders);
        self.begin(&id, &record, stdin, stdin_path, readers);
    }

    /// Registers the container and copies its output to its log and its
    /// sessions until the output ends.
    fn begin(
        &self,
        id: &str,
        record: &IoRecord,
        stdin: Option<pipe::Sender>,
        stdin_fifo: Option<PathBuf>,
        readers: Vec<(OutputStream, pipe::Receiver)>,
    ) {
        let stdin = stdin.map(|s| Box::new(s) as StdinWriter);
        let (attachable, output) = Attachable::new(record.mode, stdin, stdin_fifo);
        self.lock().insert(id.to_owned(), attachable.clone());
        let log = record.log.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut copies = tokio::task::JoinSet::new();
            for (stream, reader) in readers {
                copies.spawn(copy_output(reader, stream, log.clone(), output.clone()));
            }
            drop(output);
            while copies.join_next().await.is_some() {}
            attachable.end_output();
            tracing::debug!(container = %id, "container output ended");
        });
    }

    /// Forgets container `id` (removed, or about to start again): its
    /// stdin write end is closed and its FIFOs removed. Copying goes on
    /// until the shim closes its ends.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
        let dir = self.container_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "removing container FIFOs")
            }
        }
    }

    /// After an agent restart: the FIFOs of the `running` containers are
    /// opened again and copied on; those of any other container removed.
    pub fn recover(&self, running: &HashSet<String>) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "reading container FIFOs");
                return;
            }
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !running.contains(&id) {
                self.forget(&id);
                continue;
            }
            match self.reopen(&id) {
                Ok(()) => tracing::info!(container = %id, "reopened the container's own stdio"),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot reopen the container's stdio; attach will show its log only")
                }
            }
        }
    }

    fn reopen(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id);
        let file = dir.join(IO_FILE);
        let text = std::fs::read(&file).map_err(io(format!("reading {}", file.display())))?;
        let record: IoRecord = serde_json::from_slice(&text).map_err(|e| Error::Io {
            context: format!("reading {}", file.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let mut readers = vec![(OutputStream::Stdout, open_reader(&dir.join("stdout"))?)];
        if !record.mode.tty {
            readers.push((OutputStream::Stderr, open_reader(&dir.join("stderr"))?));
        }
        let stdin_path = dir.join("stdin");
        // No FIFO: never open, or closed for good before the restart.
        let (stdin, stdin_fifo) = if record.mode.stdin && stdin_path.exists() {
            (Some(open_stdin(&stdin_path)?), Some(stdin_path))
        } else {
            (None, None)
        };
        self.begin(id, &record, stdin, stdin_fifo, readers);
        Ok(())
    }
}

/// Copies one output FIFO into the log (appending, as the shim does, so
/// the size-capped rotation's copytruncate works) and onto the broadcast,
/// until the shim closes its end.
async fn copy_output(
    mut reader: pipe::Receiver,
    stream: OutputStream,
    log: PathBuf,
    output: broadcast::Sender<OutputChunk>,
) {
    let mut file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(log = %log.display(), error = %e, "opening the container log; output goes to attached sessions only");
            None
        }
    };
    let mut warned = false;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(log = %log.display(), error = %e, "reading container output");
                return;
            }
        };
        if let Some(f) = file.as_mut() {
            let written = async {
                f.write_all(&buf[..n]).await?;
                f.flush().await
            }
            .await;
            match written {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(log = %log.display(), error = %e, "writing the container log");
                }
                Err(_) => {}
            }
        }
        // No session attached is no error.
        let _ = output.send(OutputChunk {
            stream,
            data: Bytes::copy_from_slice(&buf[..n]),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn next(rx: &mut broadcast::Receiver<OutputChunk>) -> OutputChunk {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("output in time")
            .expect("output")
    }

    /// The shim's side of the FIFOs: write ends of the outputs, and a
    /// reader and a held write end of stdin, as containerd's shim opens
    /// them.
    struct Shim {
        stdout: pipe::Sender,
        stderr: pipe::Sender,
        stdin: pipe::Receiver,
        _stdin_held: pipe::Sender,
    }

    fn shim(dir: &Path) -> Shim {
        let stdin = pipe::OpenOptions::new()
            .open_receiver(dir.join("stdin"))
            .unwrap();
        Shim {
            stdout: pipe::OpenOptions::new()
                .open_sender(dir.join("stdout"))
                .unwrap(),
            stderr: pipe::OpenOptions::new()
                .open_sender(dir.join("stderr"))
                .unwrap(),
            stdin,
            _stdin_held: pipe::OpenOptions::new()
                .open_sender(dir.join("stdin"))
                .unwrap(),
        }
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_to_attached_sessions_and_stdin_to_the_process() {
        let tmp = tempfile::tempdir().unwrap();
        let io = ContainerIo::new(tmp.path().join("io"));
        let log = tmp.path().join("0.log");
        let mode = StdioMode {
            stdin: true,
            stdin_once: true,
            tty: false,
        };
        let prepared = io.prepare("c1", mode, &log).unwrap();
        let (stdin, stdout, stderr) = prepared.task_paths();
        assert!(stdin.ends_with("io/c1/stdin"), "{stdin}");
        assert!(stdout.ends_with("io/c1/stdout"), "{stdout}");
        assert!(stderr.ends_with("io/c1/stderr"), "{stderr}");
        let mut shim = shim(&tmp.path().join("io/c1"));
        io.started(prepared);
        let attached = io.get("c1").expect("registered");
        assert!(attached.stdin_once && !attached.tty);
        let mut rx = attached.subscribe().unwrap();

        shim.stdout.write_all(b"out\n").await.unwrap();
        assert_eq!(
            next(&mut rx).await,
            OutputChunk {
                stream: OutputStream::Stdout,
                data: Bytes::from_static(b"out\n")
            }
        );
        shim.stderr.write_all(b"err\n").await.unwrap();
        assert_eq!(next(&mut rx).await.stream, OutputStream::Stderr);

        attached.write_stdin(b"typed\n").await.unwrap();
        let mut got = [0u8; 6];
        shim.stdin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"typed\n");

        assert!(attached.close_stdin().await);
        assert!(!attached.close_stdin().await, "closed once");
        assert!(!tmp.path().join("io/c1/stdin").exists());
        assert!(attached.write_stdin(b"late").await.is_err());

        // The shim closes its ends when the process exits: the output ends.
        drop(shim);
        let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert!(matches!(end, Err(broadcast::error::RecvError::Closed)));
        assert!(attached.subscribe().is_none());
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.contains("out\n") && logged.contains("err\n"),
            "{logged}"
        );

        io.forget("c1");
        assert!(io.get("c1").is_none());
        assert!(!tmp.path().join("io/c1").exists());
    }

    #[tokio::test]
    async fn a_terminal_has_one_output_and_no_stdin_without_stdin() {
        let tmp = tempfile::tempdir().unwrap();
        let io = ContainerIo::new(tmp.path().join("io"));
        let mode = StdioMode {
            tty: true,
            ..Default::default()
        };
        let prepared = io.prepare("t", mode, &tmp.path().join("t.log")).unwrap();
        let (stdin, stdout, stderr) = prepared.task_paths();
        assert_eq!(stdin, "");
        assert!(stdout.ends_with("stdout"));
        assert_eq!(stderr, "");
        io.started(prepared);
        let attached = io.get("t").unwrap();
        assert!(attached.tty);
        assert!(!attached.has_stdin().await);
    }

    #[tokio::test]
    async fn a_restarted_agent_reopens_running_containers_and_drops_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("io");
        let log = tmp.path().join("0.log");
        let mode = StdioMode {
            stdin: true,
            ..Default::default()
        };
        // The first agent runs on a runtime of its own; dropping it closes
        // every end that agent had open, as its exit would.
        let (prepared_tx, prepared_rx) = std::sync::mpsc::channel();
        let (shim_tx, shim_rx) = std::sync::mpsc::channel::<()>();
        let (first_dir, first_log) = (dir.clone(), log.clone());
        let first = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let io = ContainerIo::new(first_dir);
                let kept = io.prepare("kept", mode, &first_log).unwrap();
                prepared_tx.send(()).unwrap();
                // The shim opens its ends while the task is created.
                shim_rx.recv().unwrap();
                io.started(kept);
                let gone = io.prepare("gone", mode, &first_log).unwrap();
                io.started(gone);
            });
        });
        prepared_rx.recv().unwrap();
        let shim = shim(&dir.join("kept"));
        shim_tx.send(()).unwrap();
        first.join().unwrap();

        let second = ContainerIo::new(dir.clone());
        second.recover(&HashSet::from(["kept".to_owned()]));
        assert!(!dir.join("gone").exists());
        let attached = second.get("kept").expect("reopened");
        let mut rx = attached.subscribe().unwrap();
        let Shim {
            mut stdout,
            mut stdin,
            ..
        } = shim;
        stdout.write_all(b"after restart\n").await.unwrap();
        assert_eq!(
            next(&mut rx).await.data,
            Bytes::from_static(b"after restart\n")
        );
        attached.write_stdin(b"x").await.unwrap();
        let mut got = [0u8; 1];
        stdin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
    }
}
