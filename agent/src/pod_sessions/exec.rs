//! One exec session: the process started through [`ExecRuntime`], the
//! client's input (stdin, terminal resizes, end of stdin) written to it, its
//! stdout and stderr sent back, and its exit code as the last message.
//!
//! A client that goes away (its stream breaks or it stops reading) ends
//! the process with SIGKILL, and so does the agent shutting down; either
//! way the process is deleted from containerd and its FIFOs removed, so a
//! session leaves nothing behind in the container or on the node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::exec_input::Input;
use skiff_proto::api::exec_output::Output;
use skiff_proto::api::{ExecInput, ExecOutput, ExecStart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::runtime::exec::{ExecReader, ExecRuntime, ExecSpec};

/// Output messages buffered for a slow client before the pumps wait.
const OUTPUT_MESSAGES: usize = 16;
/// Largest chunk of output per message.
const CHUNK: usize = 32 << 10;
/// How long the last output may take to arrive after the process is gone.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a killed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Reads the session's first message, which must say what to run.
pub async fn read_start<S>(input: &mut S) -> Result<ExecStart, Status>
where
    S: Stream<Item = Result<ExecInput, Status>> + Unpin,
{
    match input.next().await {
        Some(Ok(ExecInput {
            input: Some(Input::Start(start)),
        })) => {
            if start.command.is_empty() || start.command[0].is_empty() {
                return Err(Status::invalid_argument(
                    "exec needs a command to run (after --)",
                ));
            }
            if start.name.is_empty() {
                return Err(Status::invalid_argument("exec needs a pod name"));
            }
            Ok(start)
        }
        Some(Ok(_)) => Err(Status::invalid_argument(
            "an exec session must begin with what to run (ExecStart)",
        )),
        Some(Err(status)) => Err(status),
        None => Err(Status::invalid_argument(
            "the exec session ended before it began",
        )),
    }
}

/// An exec about to start.
pub struct ExecSession<R> {
    pub runtime: Arc<R>,
    pub container_id: String,
    pub exec_id: String,
    pub fifo_dir: PathBuf,
    pub shutdown: CancellationToken,
}

/// How the process ended, or why the session stopped waiting for it.
enum Ending {
    Exited(u32),
    WaitFailed(crate::runtime::Error),
    ClientGone,
    Shutdown,
}

impl<R: ExecRuntime> ExecSession<R> {
    /// Starts the process and the session around it; the output stream.
    /// A process that cannot start (a command that does not exist) is an
    /// error here, before any output.
    pub async fn start<S>(
        self,
        start: &ExecStart,
        input: S,
    ) -> Result<ReceiverStream<Result<ExecOutput, Status>>, Status>
    where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        let spec = ExecSpec {
            args: start.command.clone(),
            tty: start.tty,
            stdin: start.stdin,
            stdout: start.stdout,
            stderr: start.stderr,
        };
        let io = self
            .runtime
            .exec_start(&self.container_id, &self.exec_id, &spec, &self.fifo_dir)
            .await
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "error executing command {:?} in container: {e}",
                    start.command
                ))
            })?;
        let (tx, rx) = mpsc::channel(OUTPUT_MESSAGES);
        tokio::spawn(self.run(io, input, tx));
        Ok(ReceiverStream::new(rx))
    }

    async fn run<S>(
        self,
        io: crate::runtime::exec::ExecIo,
        input: S,
        tx: mpsc::Sender<Result<ExecOutput, Status>>,
    ) where
        S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
    {
        let crate::runtime::exec::ExecIo {
            stdin,
            stdout,
            stderr,
            holders,
        } = io;
        let mut pumps = Vec::new();
        if let Some(out) = stdout {
            pumps.push(tokio::spawn(pump(out, tx.clone(), Output::Stdout)));
        }
        if let Some(err) = stderr {
            pumps.push(tokio::spawn(pump(err, tx.clone(), Output::Stderr)));
        }
        let (gone_tx, gone_rx) = oneshot::channel();
        let feeder = tokio::spawn(feed(
            self.runtime.clone(),
            self.container_id.clone(),
            self.exec_id.clone(),
            stdin,
            input,
            gone_tx,
        ));
        let ending = tokio::select! {
            waited = self.runtime.exec_wait(&self.container_id, &self.exec_id) => match waited {
                Ok(code) => Ending::Exited(code),
                Err(e) => Ending::WaitFailed(e),
            },
            _ = tx.closed() => Ending::ClientGone,
            Ok(()) = gone_rx => Ending::ClientGone,
            _ = self.shutdown.cancelled() => Ending::Shutdown,
        };
        feeder.abort();
        if !matches!(ending, Ending::Exited(_)) {
            if let Err(e) = self
                .runtime
                .exec_kill(&self.container_id, &self.exec_id)
                .await
            {
                tracing::warn!(exec_id = %self.exec_id, error = %e, "killing exec process");
            }
            let _ = tokio::time::timeout(
                KILL_WAIT,
                self.runtime.exec_wait(&self.container_id, &self.exec_id),
            )
            .await;
        }
        // Deleting the process waits for the shim's copies; then the
        // readers see end of file once the holders are gone.
        self.runtime
            .exec_remove(&self.container_id, &self.exec_id, &self.fifo_dir)
            .await;
        drop(holders);
        for pump in pumps {
            let abort = pump.abort_handle();
            if tokio::time::timeout(DRAIN, pump).await.is_err() {
                abort.abort();
            }
        }
        let last = match ending {
            Ending::Exited(code) => {
                tracing::info!(exec_id = %self.exec_id, code, "exec session ended");
                Ok(ExecOutput {
                    output: Some(Output::ExitCode(i32::try_from(code).unwrap_or(i32::MAX))),
                })
            }
            Ending::WaitFailed(e) => Err(Status::unavailable(format!(
                "waiting for the exec'd process: {e}"
            ))),
            Ending::ClientGone => {
                tracing::info!(exec_id = %self.exec_id, "exec client went away; process killed");
                return;
            }
            Ending::Shutdown => Err(Status::unavailable(
                "the agent is shutting down; the exec'd process was killed",
            )),
        };
        let _ = tx.send(last).await;
    }
}

/// Sends what `reader` yields as `wrap`ped output until end of file or
/// until the client stops reading.
async fn pump(
    mut reader: ExecReader,
    tx: mpsc::Sender<Result<ExecOutput, Status>>,
    wrap: fn(Vec<u8>) -> Output,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let message = ExecOutput {
                    output: Some(wrap(buf[..n].to_vec())),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Writes the client's input to the process; says on `gone` when the
/// client's stream broke.
async fn feed<R, S>(
    runtime: Arc<R>,
    container_id: String,
    exec_id: String,
    mut stdin: Option<crate::runtime::exec::ExecWriter>,
    mut input: S,
    gone: oneshot::Sender<()>,
) where
    R: ExecRuntime,
    S: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
{
    loop {
        let message = match input.next().await {
            Some(Ok(m)) => m,
            Some(Err(_)) => {
                let _ = gone.send(());
                return;
            }
            // The client sends nothing more; it still reads the output.
            None => {
                close_stdin(&*runtime, &container_id, &exec_id, &mut stdin).await;
                return;
            }
        };
        match message.input {
            Some(Input::Stdin(data)) => {
                if let Some(writer) = stdin.as_mut() {
                    if writer.write_all(&data).await.is_err() {
                        // The process closed its stdin; later input has
                        // nowhere to go.
                        stdin = None;
                    }
                }
            }
            Some(Input::Resize(size)) => {
                if let Err(e) = runtime
                    .exec_resize(&container_id, &exec_id, size.width, size.height)
                    .await
                {
                    tracing::debug!(exec_id = %exec_id, error = %e, "resizing exec terminal");
                }
            }
            Some(Input::CloseStdin(_)) => {
                close_stdin(&*runtime, &container_id, &exec_id, &mut stdin).await
            }
            Some(Input::Start(_)) | None => {}
        }
    }
}

async fn close_stdin<R: ExecRuntime>(
    runtime: &R,
    container_id: &str,
    exec_id: &str,
    stdin: &mut Option<crate::runtime::exec::ExecWriter>,
) {
    if let Some(mut writer) = stdin.take() {
        let _ = writer.flush().await;
        drop(writer);
        if let Err(e) = runtime.exec_close_stdin(container_id, exec_id).await {
            tracing::debug!(exec_id, error = %e, "closing exec stdin");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::container_io::Attachable;
    use crate::runtime::containers::ContainerRecord;
    use crate::runtime::exec::{ExecIo, FifoHolders};

    /// A fake runtime whose one process echoes stdin to stdout and exits
    /// with the code the test sends, or when killed (137); removing it
    /// closes its output, as deleting a process does.
    #[derive(Default)]
    struct EchoRuntime {
        calls: Mutex<Vec<String>>,
        exit: Mutex<Option<oneshot::Receiver<u32>>>,
        killed: tokio::sync::Notify,
        removed: Arc<tokio::sync::Notify>,
        fail_start: bool,
    }

    impl EchoRuntime {
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ExecRuntime for EchoRuntime {
        async fn containers(&self) -> crate::runtime::Result<Vec<ContainerRecord>> {
            Ok(Vec::new())
        }
        async fn exec_start(
            &self,
            _container_id: &str,
            exec_id: &str,
            spec: &ExecSpec,
            _fifo_dir: &Path,
        ) -> crate::runtime::Result<ExecIo> {
            self.record(format!("start {exec_id} {:?}", spec.args));
            if self.fail_start {
                return Err(crate::runtime::Error::Io {
                    context: "exec: \"nope\": executable file not found in $PATH".into(),
                    source: std::io::Error::other("unknown"),
                });
            }
            let (process_in, agent_in) = tokio::io::duplex(1024);
            let (mut r, mut w) = tokio::io::split(process_in);
            let removed = self.removed.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy(&mut r, &mut w) => {}
                    _ = removed.notified() => {}
                }
            });
            let (out_reader, out_writer) = tokio::io::split(agent_in);
            Ok(ExecIo {
                stdin: Some(Box::new(out_writer)),
                stdout: Some(Box::new(out_reader)),
                stderr: None,
                holders: FifoHolders::default(),
            })
        }
        async fn exec_wait(&self, _c: &str, _e: &str) -> crate::runtime::Result<u32> {
            let exit = self.exit.lock().unwrap().take();
            match exit {
                Some(rx) => tokio::select! {
                    code = rx => Ok(code.unwrap_or(1)),
                    _ = self.killed.notified() => Ok(137),
                },
                None => Ok(137),
            }
        }
        async fn exec_resize(
            &self,
            _c: &str,
            _e: &str,
            w: u32,
            h: u32,
        ) -> crate::runtime::Result<()> {
            self.record(format!("resize {w}x{h}"));
            Ok(())
        }
        async fn exec_close_stdin(&self, _c: &str, _e: &str) -> crate::runtime::Result<()> {
            self.record("close stdin".into());
            Ok(())
        }
        async fn exec_kill(&self, _c: &str, _e: &str) -> crate::runtime::Result<()> {
            self.record("kill".into());
            self.killed.notify_one();
            Ok(())
        }
        async fn exec_remove(&self, _c: &str, exec_id: &str, _d: &Path) {
            self.record(format!("remove {exec_id}"));
            self.removed.notify_one();
        }
        fn attachable(&self, _c: &str) -> Option<Arc<Attachable>> {
            None
        }
        async fn container_resize(&self, _c: &str, _w: u32, _h: u32) -> crate::runtime::Result<()> {
            Ok(())
        }
        async fn container_close_stdin(&self, _c: &str) -> crate::runtime::Result<()> {
            Ok(())
        }
        async fn container_running(&self, _c: &str) -> crate::runtime::Result<bool> {
            Ok(true)
        }
    }

    fn session(runtime: &Arc<EchoRuntime>) -> ExecSession<EchoRuntime> {
        ExecSession {
            runtime: runtime.clone(),
            container_id: "c1".into(),
            exec_id: "exec-1".into(),
            fifo_dir: PathBuf::from("/nonexistent"),
            shutdown: CancellationToken::new(),
        }
    }

    fn start() -> ExecStart {
        ExecStart {
            namespace: "default".into(),
            name: "web".into(),
            command: vec!["cat".into()],
            stdin: true,
            stdout: true,
            ..Default::default()
        }
    }

    fn input(i: Input) -> Result<ExecInput, Status> {
        Ok(ExecInput { input: Some(i) })
    }

    #[tokio::test]
    async fn stdin_reaches_the_process_and_the_exit_code_comes_last() {
        let runtime = Arc::new(EchoRuntime::default());
        let (exit_tx, exit_rx) = oneshot::channel();
        *runtime.exit.lock().unwrap() = Some(exit_rx);
        let (in_tx, in_rx) = mpsc::channel(8);
        let mut output = session(&runtime)
            .start(&start(), ReceiverStream::new(in_rx))
            .await
            .unwrap();
        in_tx
            .send(input(Input::Stdin(b"hello".to_vec())))
            .await
            .unwrap();
        in_tx
            .send(input(Input::Resize(skiff_proto::api::TerminalSize {
                width: 80,
                height: 24,
            })))
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), output.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.output, Some(Output::Stdout(b"hello".to_vec())));
        in_tx.send(input(Input::CloseStdin(true))).await.unwrap();
        exit_tx.send(3).unwrap();
        let mut rest = Vec::new();
        while let Some(m) = tokio::time::timeout(Duration::from_secs(10), output.next())
            .await
            .unwrap()
        {
            rest.push(m.unwrap());
        }
        assert_eq!(rest.last().unwrap().output, Some(Output::ExitCode(3)));
        let calls = runtime.calls();
        assert!(calls.contains(&"resize 80x24".to_owned()), "{calls:?}");
        assert!(calls.contains(&"close stdin".to_owned()), "{calls:?}");
        assert_eq!(calls.last().unwrap(), "remove exec-1");
        assert!(!calls.contains(&"kill".to_owned()), "{calls:?}");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_kills_and_removes_the_process() {
        let runtime = Arc::new(EchoRuntime::default());
        let (_exit_tx, exit_rx) = oneshot::channel();
        *runtime.exit.lock().unwrap() = Some(exit_rx);
        let (in_tx, in_rx) = mpsc::channel(8);
        let output = session(&runtime)
            .start(&start(), ReceiverStream::new(in_rx))
            .await
            .unwrap();
        drop(output);
        drop(in_tx);
        for _ in 0..100 {
            if runtime.calls().last().map(String::as_str) == Some("remove exec-1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let calls = runtime.calls();
        assert!(calls.contains(&"kill".to_owned()), "{calls:?}");
        assert_eq!(calls.last().unwrap(), "remove exec-1");
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_an_error_naming_it() {
        let runtime = Arc::new(EchoRuntime {
            fail_start: true,
            ..Default::default()
        });
        let (_in_tx, in_rx) = mpsc::channel(8);
        let e = session(&runtime)
            .start(&start(), ReceiverStream::new(in_rx))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("executable file not found"),
            "{}",
            e.message()
        );
    }

    #[tokio::test]
    async fn a_session_must_begin_with_a_command() {
        let (tx, rx) = mpsc::channel(2);
        tx.send(input(Input::Stdin(b"x".to_vec()))).await.unwrap();
        let e = read_start(&mut ReceiverStream::new(rx)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let (tx, rx) = mpsc::channel(2);
        tx.send(input(Input::Start(ExecStart {
            name: "web".into(),
            ..Default::default()
        })))
        .await
        .unwrap();
        let e = read_start(&mut ReceiverStream::new(rx)).await.unwrap_err();
        assert!(e.message().contains("command"), "{}", e.message());
    }
}
