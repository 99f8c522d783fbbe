//! One attach session: a client joined to a container's own process, as
//! `kubectl attach` and `kubectl run -i` join it (the kubelet's
//! `AttachContainer`). A container started with `stdin` or `tty` has its
//! own stdio ([`crate::runtime::container_io`]): the session receives its
//! output from the moment it attaches (stdout and stderr apart, or the
//! terminal's one stream), writes the client's input to its stdin and
//! passes terminal resizes on. Any other container has only its log, which
//! the session follows from its end (stdout and stderr mixed, as logged).
//!
//! The client's end of stdin detaches it, as containerd's CRI plugin does;
//! with `stdinOnce` it closes the container's stdin instead, for good, and
//! the session goes on until the output ends, so `kubectl run -i` sees
//! what the process prints after reading its input. A client that goes
//! away while it held a `stdinOnce` stdin closes it too. The session ends
//! with exit code 0 once the container's output ends or the client has
//! detached (kubectl reads the container's own exit code from the pod);
//! the container itself is never touched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_proto::api::exec_input::Input;
use skiff_proto::api::exec_output::Output;
use skiff_proto::api::{ExecInput, ExecOutput, ExecStart};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::runtime::container_io::{Attachable, OutputChunk, OutputStream};
use crate::runtime::exec::ExecRuntime;

/// Output messages buffered for a slow client before the pump waits.
const OUTPUT_MESSAGES: usize = 16;
/// Largest chunk of a followed log per message.
const CHUNK: usize = 32 << 10;
/// How often a followed log is read for what was appended.
const LOG_POLL: Duration = Duration::from_millis(100);
/// How often a followed container is asked whether it still runs.
const RUNNING_CHECK: Duration = Duration::from_secs(1);

/// Reads the session's first message, which must say where to attach.
pub async fn read_start<S>(input: &mut S) -> Result<ExecStart, Status>
where
    S: Stream<Item = Result<ExecInput, Status>> + Unpin,
{
    match input.next().await {
        Some(Ok(ExecInput {
            input: Some(Input::Start(start)),
        })) => {
            if start.name.is_empty() {
                return Err(Status::invalid_argument("attach needs a pod name"));
            }
            if !start.stdin && !start.stdout && !start.stderr {
                return Err(Status::invalid_argument(
                    "attach needs at least one of stdin, stdout and stderr",
                ));
            }
            Ok(start)
        }
        Some(Ok(_)) => Err(Status::invalid_argument(
            "an attach session must begin with where to attach (ExecStart)",
        )),
        Some(Err(status)) => Err(status),
        None => Err(Status::invalid_argument(
            "the attach session ended before it began",
        )),
    }
}

/// An attach about to start.
pub struct AttachSession<R> {
    pub runtime: Arc<R>,
    pub container_id: String,
    /// The log of the container's current run, followed when it has no
    /// stdio of its own.
    pub log_path: PathBuf,
    pub shutdown: CancellationToken,
}

/// Where the session's output comes from.
enum Source<R> {
    /// The container's own stdio.
    Stdio(broadcast::Receiver<OutputChunk>),
    /// Its log, followed.
    Log(Box<LogFollower<R>>),
    /// Its output has ended already.
    Ended,
}

impl<R: ExecRuntime> Source<R> {
    async fn next(&mut self) -> Option<OutputChunk> {
        match self {
            Source::Stdio(rx) => loop {
                match rx.recv().await {
                    Ok(chunk) => return Some(chunk),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "an attached client fell behind the container's output; chunks were dropped"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Source::Log(follower) => follower.next().await,
            Source::Ended => None,
        }
    }
}

/// Follows a container's log from where it ended when the session began,
/// until the container stops running.
struct LogFollower<R> {
    runtime: Arc<R>,
    container_id: String,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
    /// What the followed bytes are sent as.
    stream: OutputStream,
    checked: Instant,
    stopped: bool,
}

impl<R: ExecRuntime> LogFollower<R> {
    async fn from_end(
        runtime: Arc<R>,
        container_id: String,
        path: PathBuf,
        stream: OutputStream,
    ) -> LogFollower<R> {
        let offset = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        LogFollower {
            runtime,
            container_id,
            path,
            file: None,
            offset,
            stream,
            checked: Instant::now(),
            stopped: false,
        }
    }

    /// What was appended since the last read, if anything.
    async fn read_appended(&mut self) -> Option<OutputChunk> {
        let len = tokio::fs::metadata(&self.path).await.ok()?.len();
        if len < self.offset {
            // Rotated: copied away and truncated under us.
            self.offset = 0;
        }
        if len == self.offset {
            return None;
        }
        if self.file.is_none() {
            self.file = tokio::fs::File::open(&self.path).await.ok();
        }
        let file = self.file.as_mut()?;
        file.seek(std::io::SeekFrom::Start(self.offset))
            .await
            .ok()?;
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.truncate(n);
        self.offset += n as u64;
        Some(OutputChunk {
            stream: self.stream,
            data: buf.into(),
        })
    }

    async fn next(&mut self) -> Option<OutputChunk> {
        loop {
            if let Some(chunk) = self.read_appended().await {
                return Some(chunk);
            }
            if self.stopped {
                return None;
            }
            if self.checked.elapsed() >= RUNNING_CHECK {
                self.checked = Instant::now();
                match self.runtime.container_running(&self.container_id).await {
                    // Read what it wrote last, then end.
                    Ok(false) => {
                        self.stopped = true;
                        continue;
                    }
                    Ok(true) => {}
                    Err(e) => {
                        tracing::debug!(container = %self.container_id, error = %e, "asking whether an attached container runs")
                    }
                }
            }
            tokio::time::sleep(LOG_POLL).await;
        }
    }
}

/// How the client's input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputEnd {
    /// The client's stdin ended.
    StdinEnded,
    /// Its stream broke: it went away.
    ClientGone,
    /// It sends nothing more (it had no stdin), and still reads.
    Quiet,
}

/// How the session ended.
#[derive(Debug)]
enum Ending {
    OutputEnded,
    Detached,
    ClientGone,
    Shutdown,
}

impl<R: ExecRuntime> AttachSession<R> {
    /// Joins the container; the output stream.
    pub async fn start<S>(
        self,
        start: &ExecStart,
        input: S,
    ) -> ReceiverStream<Result<ExecOutput, Status>>
    where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        let attachable = self.runtime.attachable(&self.container_id);
        let source = match &attachable {
            Some(own) => match own.subscribe() {
                Some(rx) => Source::Stdio(rx),
                None => Source::Ended,
            },
            None => {
                // A log holds both outputs; they go as whichever was asked.
                let stream = if start.stdout || !start.stderr {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                };
                Source::Log(Box::new(
                    LogFollower::from_end(
                        self.runtime.clone(),
                        self.container_id.clone(),
                        self.log_path.clone(),
                        stream,
                    )
                    .await,
                ))
            }
        };
        let (tx, rx) = mpsc::channel(OUTPUT_MESSAGES);
        tokio::spawn(self.run(start.clone(), attachable, source, input, tx));
        ReceiverStream::new(rx)
    }

    async fn run<S>(
        self,
        start: ExecStart,
        attachable: Option<Arc<Attachable>>,
        source: Source<R>,
        input: S,
        tx: mpsc::Sender<Result<ExecOutput, Status>>,
    ) where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        let stdin_once = attachable.as_ref().is_some_and(|a| a.stdin_once);
        let mut pump = tokio::spawn(pump(source, start.stdout, start.stderr, tx.clone()));
        let mut feeder = tokio::spawn(feed(
            self.runtime.clone(),
            self.container_id.clone(),
            attachable,
            start.stdin,
            input,
        ));
        let mut feeding = true;
        let ending = loop {
            tokio::select! {
                _ = &mut pump => break Ending::OutputEnded,
                fed = &mut feeder, if feeding => {
                    feeding = false;
                    match fed {
                        Ok(InputEnd::StdinEnded) if stdin_once => {
                            self.close_stdin().await;
                        }
                        Ok(InputEnd::StdinEnded) => break Ending::Detached,
                        Ok(InputEnd::Quiet) => {}
                        Ok(InputEnd::ClientGone) | Err(_) => break Ending::ClientGone,
                    }
                }
                _ = tx.closed() => break Ending::ClientGone,
                _ = self.shutdown.cancelled() => break Ending::Shutdown,
            }
        };
        feeder.abort();
        pump.abort();
        let last = match ending {
            Ending::OutputEnded => {
                tracing::info!(container = %self.container_id, "attach session ended with the container's output");
                Ok(0)
            }
            Ending::Detached => {
                tracing::info!(container = %self.container_id, "attached client detached");
                Ok(0)
            }
            Ending::ClientGone => {
                if start.stdin && stdin_once {
                    self.close_stdin().await;
                }
                tracing::info!(container = %self.container_id, "attached client went away");
                return;
            }
            Ending::Shutdown => Err(Status::unavailable(
                "the agent is shutting down; the container runs on, attach again later",
            )),
        };
        let message = last.map(|code| ExecOutput {
            output: Some(Output::ExitCode(code)),
        });
        let _ = tx.send(message).await;
    }

    /// `stdinOnce`: the container's stdin ends for good.
    async fn close_stdin(&self) {
        match self.runtime.container_close_stdin(&self.container_id).await {
            Ok(()) => {
                tracing::info!(container = %self.container_id, "stdinOnce: the container's stdin closed")
            }
            Err(e) => {
                tracing::warn!(container = %self.container_id, error = %e, "closing the container's stdin")
            }
        }
    }
}

/// Sends the output the client asked for until it ends or the client
/// stops reading.
async fn pump<R: ExecRuntime>(
    mut source: Source<R>,
    stdout: bool,
    stderr: bool,
    tx: mpsc::Sender<Result<ExecOutput, Status>>,
) {
    while let Some(chunk) = source.next().await {
        let output = match chunk.stream {
            OutputStream::Stdout if stdout => Output::Stdout(chunk.data.to_vec()),
            OutputStream::Stderr if stderr => Output::Stderr(chunk.data.to_vec()),
            _ => continue,
        };
        let message = ExecOutput {
            output: Some(output),
        };
        if tx.send(Ok(message)).await.is_err() {
            return;
        }
    }
}

/// Writes the client's input to the container's stdin (when the client
/// asked for stdin and the container has one) and passes resizes to its
/// terminal; says how the input ended.
async fn feed<R, S>(
    runtime: Arc<R>,
    container_id: String,
    attachable: Option<Arc<Attachable>>,
    use_stdin: bool,
    mut input: S,
) -> InputEnd
where
    R: ExecRuntime,
    S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
{
    let tty = attachable.as_ref().is_some_and(|a| a.tty);
    loop {
        let message = match input.next().await {
            Some(Ok(m)) => m,
            Some(Err(_)) => return InputEnd::ClientGone,
            None if use_stdin => return InputEnd::StdinEnded,
            None => return InputEnd::Quiet,
        };
        match message.input {
            Some(Input::Stdin(data)) if use_stdin => {
                if let Some(own) = &attachable {
                    if let Err(e) = own.write_stdin(&data).await {
                        tracing::debug!(container = %container_id, error = %e, "attached input has nowhere to go");
                    }
                }
            }
            Some(Input::Resize(size)) if tty => {
                if let Err(e) = runtime
                    .container_resize(&container_id, size.width, size.height)
                    .await
                {
                    tracing::debug!(container = %container_id, error = %e, "resizing the container's terminal");
                }
            }
            Some(Input::CloseStdin(_)) if use_stdin => return InputEnd::StdinEnded,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::runtime::container_io::{StdinWriter, StdioMode};
    use crate::runtime::containers::ContainerRecord;
    use crate::runtime::exec::{ExecIo, ExecSpec};

    /// A fake runtime with one container, with its own stdio or not.
    #[derive(Default)]
    struct FakeContainer {
        own: Option<Arc<Attachable>>,
        running: Mutex<bool>,
        calls: Mutex<Vec<String>>,
    }

    impl FakeContainer {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn not_exec() -> crate::runtime::Error {
        crate::runtime::Error::Io {
            context: "this fake only attaches".into(),
            source: std::io::Error::other("unsupported"),
        }
    }

    impl ExecRuntime for FakeContainer {
        async fn containers(&self) -> crate::runtime::Result<Vec<ContainerRecord>> {
            Ok(Vec::new())
        }
        async fn exec_start(
            &self,
            _c: &str,
            _e: &str,
            _s: &ExecSpec,
            _d: &Path,
        ) -> crate::runtime::Result<ExecIo> {
            Err(not_exec())
        }
        async fn exec_wait(&self, _c: &str, _e: &str) -> crate::runtime::Result<u32> {
            Err(not_exec())
        }
        async fn exec_resize(
            &self,
            _c: &str,
            _e: &str,
            _w: u32,
            _h: u32,
        ) -> crate::runtime::Result<()> {
            Err(not_exec())
        }
        async fn exec_close_stdin(&self, _c: &str, _e: &str) -> crate::runtime::Result<()> {
            Err(not_exec())
        }
        async fn exec_kill(&self, _c: &str, _e: &str) -> crate::runtime::Result<()> {
            Err(not_exec())
        }
        async fn exec_remove(&self, _c: &str, _e: &str, _d: &Path) {}
        fn attachable(&self, _c: &str) -> Option<Arc<Attachable>> {
            self.own.clone()
        }
        async fn container_resize(&self, _c: &str, w: u32, h: u32) -> crate::runtime::Result<()> {
            self.calls.lock().unwrap().push(format!("resize {w}x{h}"));
            Ok(())
        }
        async fn container_close_stdin(&self, _c: &str) -> crate::runtime::Result<()> {
            if let Some(own) = &self.own {
                if own.close_stdin().await {
                    self.calls.lock().unwrap().push("close stdin".into());
                }
            }
            Ok(())
        }
        async fn container_running(&self, _c: &str) -> crate::runtime::Result<bool> {
            Ok(*self.running.lock().unwrap())
        }
    }

    /// A container with its own stdio: the fake, the process's end of
    /// stdin, and what its output is sent on.
    fn with_stdio(
        mode: StdioMode,
    ) -> (
        Arc<FakeContainer>,
        tokio::io::DuplexStream,
        broadcast::Sender<OutputChunk>,
    ) {
        let (agent_end, process_end) = tokio::io::duplex(1024);
        let stdin: StdinWriter = Box::new(agent_end);
        let (own, output) = Attachable::new(mode, Some(stdin), None);
        let fake = FakeContainer {
            own: Some(own),
            running: Mutex::new(true),
            ..Default::default()
        };
        (Arc::new(fake), process_end, output)
    }

    fn session(runtime: &Arc<FakeContainer>, log: PathBuf) -> AttachSession<FakeContainer> {
        AttachSession {
            runtime: runtime.clone(),
            container_id: "c1".into(),
            log_path: log,
            shutdown: CancellationToken::new(),
        }
    }

    fn start(stdin: bool) -> ExecStart {
        ExecStart {
            namespace: "default".into(),
            name: "web".into(),
            stdin,
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    fn input(i: Input) -> Result<ExecInput, Status> {
        Ok(ExecInput { input: Some(i) })
    }

    fn chunk(stream: OutputStream, data: &'static [u8]) -> OutputChunk {
        OutputChunk {
            stream,
            data: Bytes::from_static(data),
        }
    }

    async fn next_message(
        output: &mut ReceiverStream<Result<ExecOutput, Status>>,
    ) -> Option<Output> {
        tokio::time::timeout(Duration::from_secs(5), output.next())
            .await
            .expect("a message in time")
            .map(|m| m.expect("no error").output.expect("an output"))
    }

    #[tokio::test]
    async fn stdin_once_input_reaches_the_process_and_the_output_is_seen_to_its_end() {
        let mode = StdioMode {
            stdin: true,
            stdin_once: true,
            tty: false,
        };
        let (fake, mut process_stdin, container_output) = with_stdio(mode);
        let (in_tx, in_rx) = mpsc::channel(8);
        let mut output = session(&fake, PathBuf::from("/nonexistent"))
            .start(&start(true), ReceiverStream::new(in_rx))
            .await;
        in_tx
            .send(input(Input::Stdin(b"hello\n".to_vec())))
            .await
            .unwrap();
        let mut got = [0u8; 6];
        process_stdin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello\n");
        in_tx.send(input(Input::CloseStdin(true))).await.unwrap();
        // stdinOnce: stdin is closed, the session goes on for the output.
        let mut rest = Vec::new();
        assert_eq!(process_stdin.read_to_end(&mut rest).await.unwrap(), 0);
        container_output
            .send(chunk(OutputStream::Stdout, b"got hello\n"))
            .unwrap();
        container_output
            .send(chunk(OutputStream::Stderr, b"warning\n"))
            .unwrap();
        assert_eq!(
            next_message(&mut output).await,
            Some(Output::Stdout(b"got hello\n".to_vec()))
        );
        assert_eq!(
            next_message(&mut output).await,
            Some(Output::Stderr(b"warning\n".to_vec()))
        );
        // The process exits: its output ends, and so does the session.
        fake.own.as_ref().unwrap().end_output();
        drop(container_output);
        assert_eq!(next_message(&mut output).await, Some(Output::ExitCode(0)));
        assert_eq!(next_message(&mut output).await, None);
        assert_eq!(fake.calls(), ["close stdin"]);
    }

    #[tokio::test]
    async fn without_stdin_once_the_end_of_stdin_detaches_and_leaves_stdin_open() {
        let mode = StdioMode {
            stdin: true,
            tty: true,
            ..Default::default()
        };
        let (fake, _process_stdin, _container_output) = with_stdio(mode);
        let (in_tx, in_rx) = mpsc::channel(8);
        let mut output = session(&fake, PathBuf::from("/nonexistent"))
            .start(&start(true), ReceiverStream::new(in_rx))
            .await;
        in_tx
            .send(input(Input::Resize(skiff_proto::api::TerminalSize {
                width: 100,
                height: 30,
            })))
            .await
            .unwrap();
        in_tx.send(input(Input::CloseStdin(true))).await.unwrap();
        assert_eq!(next_message(&mut output).await, Some(Output::ExitCode(0)));
        assert_eq!(fake.calls(), ["resize 100x30"]);
        assert!(fake.own.as_ref().unwrap().has_stdin().await);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_closes_a_stdin_once_stdin_it_held() {
        let mode = StdioMode {
            stdin: true,
            stdin_once: true,
            tty: false,
        };
        let (fake, _process_stdin, _container_output) = with_stdio(mode);
        let (in_tx, in_rx) = mpsc::channel(8);
        let output = session(&fake, PathBuf::from("/nonexistent"))
            .start(&start(true), ReceiverStream::new(in_rx))
            .await;
        drop(output);
        for _ in 0..100 {
            if !fake.calls().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fake.calls(), ["close stdin"]);
        drop(in_tx);
    }

    #[tokio::test]
    async fn a_container_without_its_own_stdio_is_followed_in_its_log_until_it_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("0.log");
        std::fs::write(&log, "before the attach\n").unwrap();
        let fake = Arc::new(FakeContainer {
            running: Mutex::new(true),
            ..Default::default()
        });
        let (_in_tx, in_rx) = mpsc::channel(8);
        let mut output = session(&fake, log.clone())
            .start(&start(false), ReceiverStream::new(in_rx))
            .await;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            f.write_all(b"after\n").unwrap();
        }
        assert_eq!(
            next_message(&mut output).await,
            Some(Output::Stdout(b"after\n".to_vec()))
        );
        *fake.running.lock().unwrap() = false;
        assert_eq!(next_message(&mut output).await, Some(Output::ExitCode(0)));
    }

    #[tokio::test]
    async fn attach_must_begin_with_where_and_ask_for_a_stream() {
        let (tx, rx) = mpsc::channel(2);
        tx.send(input(Input::Start(ExecStart {
            name: "web".into(),
            ..Default::default()
        })))
        .await
        .unwrap();
        let e = read_start(&mut ReceiverStream::new(rx)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let (tx, rx) = mpsc::channel(2);
        tx.send(input(Input::Stdin(b"x".to_vec()))).await.unwrap();
        assert!(read_start(&mut ReceiverStream::new(rx)).await.is_err());
        let (tx, rx) = mpsc::channel(2);
        tx.send(input(Input::Start(start(true)))).await.unwrap();
        assert!(read_start(&mut ReceiverStream::new(rx)).await.is_ok());
    }
}
