//! Interactive exec through containerd, as `ctr task exec` does it: the
//! process runs in the container's task with the container's own process
//! spec (environment, user, working directory, capabilities) and only its
//! arguments and terminal flag replaced, the way containerd's CRI plugin
//! runs `kubectl exec`. Its stdio are named pipes (FIFOs) in a directory of
//! the session; the runc shim opens their other ends.
//!
//! The FIFO ends are opened so that no open can block and no read sees a
//! false end of file: stdin is opened read-write (Linux never blocks that
//! open); stdout and stderr are opened read-only and non-blocking, with a
//! write end held by the agent ([`FifoHolders`]) until the process has
//! exited and containerd has deleted it (which waits for the shim's copies),
//! so the readers see end of file exactly when everything is read.
//!
//! The pod sessions see this only through the narrow [`ExecRuntime`] trait,
//! which also has what attach needs of a container's own process: its
//! stdio ([`super::container_io`]), terminal resizes, closing its stdin.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest,
    StartRequest as TaskStartRequest, WaitRequest,
};
use tokio::net::unix::pipe;

use super::container_io::Attachable;
use super::containers::{ContainerRecord, ContainerRuntime, Runtime};
use super::{call, io, Error, Result};

const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What to run and which streams it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub args: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    /// Ignored with a TTY, where stderr is the terminal too.
    pub stderr: bool,
}

pub type ExecReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
pub type ExecWriter = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Write ends of the output FIFOs the agent keeps open until the process
/// is deleted; dropping them lets the readers reach end of file.
#[derive(Default)]
pub struct FifoHolders(#[allow(dead_code)] Vec<pipe::Sender>);

impl std::fmt::Debug for FifoHolders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FifoHolders({})", self.0.len())
    }
}

/// The agent's ends of a started exec process's stdio.
#[derive(Default)]
pub struct ExecIo {
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    pub stderr: Option<ExecReader>,
    pub holders: FifoHolders,
}

/// What pod sessions need from the container runtime.
pub trait ExecRuntime: Send + Sync + 'static {
    /// Every container of this agent, with its labels and task state.
    fn containers(&self) -> impl std::future::Future<Output = Result<Vec<ContainerRecord>>> + Send;
    /// Creates and starts exec process `exec_id` in container
    /// `container_id`, its FIFOs in `fifo_dir` (created here).
    fn exec_start(
        &self,
        container_id: &str,
        exec_id: &str,
        spec: &ExecSpec,
        fifo_dir: &Path,
    ) -> impl std::future::Future<Output = Result<ExecIo>> + Send;
    /// Waits for the process to exit; its exit status.
    fn exec_wait(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> impl std::future::Future<Output = Result<u32>> + Send;
    /// Resizes the process's terminal.
    fn exec_resize(
        &self,
        container_id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Closes the process's stdin once what was written is read.
    fn exec_close_stdin(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Kills the process (SIGKILL).
    fn exec_kill(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Deletes the (exited or killed) process and its FIFO directory;
    /// never fails: what cannot be removed is logged.
    fn exec_remove(
        &self,
        container_id: &str,
        exec_id: &str,
        fifo_dir: &Path,
    ) -> impl std::future::Future<Output = ()> + Send;
    /// The own stdio of container `container_id`, if it was started with
    /// stdin or a terminal (attach to others follows their log).
    fn attachable(&self, container_id: &str) -> Option<Arc<Attachable>>;
    /// Resizes the terminal of the container's own process.
    fn container_resize(
        &self,
        container_id: &str,
        width: u32,
        height: u32,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Closes the container's stdin for good (`stdinOnce`): the agent's
    /// end, then the shim's, so the process reads end of file.
    fn container_close_stdin(
        &self,
        container_id: &str,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Whether the container's process still runs.
    fn container_running(
        &self,
        container_id: &str,
    ) -> impl std::future::Future<Output = Result<bool>> + Send;
}

/// The process spec of an exec: the container's own `process` with `args`
/// and `terminal` replaced ([`super::spec::exec_process`]).
pub fn exec_process(container_spec: &serde_json::Value, spec: &ExecSpec) -> serde_json::Value {
    super::spec::exec_process(container_spec, &spec.args, spec.tty)
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

/// Makes the output FIFO at `path` and opens its read end, holding a
/// write end in `holders`.
fn output_fifo(path: &Path, holders: &mut Vec<pipe::Sender>) -> Result<ExecReader> {
    make_fifo(path)?;
    let reader = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(io(format!("opening FIFO {}", path.display())))?;
    // A reader exists now, so this non-blocking open succeeds.
    let holder = pipe::OpenOptions::new()
        .open_sender(path)
        .map_err(io(format!("opening FIFO {}", path.display())))?;
    holders.push(holder);
    Ok(Box::new(reader))
}

impl Runtime {
    /// Creates the FIFOs and registers the process with containerd.
    async fn exec_create(
        &self,
        container_id: &str,
        exec_id: &str,
        spec: &ExecSpec,
        fifo_dir: &Path,
        io: &mut ExecIo,
    ) -> Result<()> {
        let c = self.containerd();
        let process = exec_process(&self.container_spec(container_id).await?, spec);
        tokio::fs::create_dir_all(fifo_dir)
            .await
            .map_err(super::io(format!("creating {}", fifo_dir.display())))?;
        let mut holders = Vec::new();
        let mut paths: HashMap<&str, String> = HashMap::new();
        if spec.stdin {
            let path = fifo_dir.join("stdin");
            make_fifo(&path)?;
            // Read-write: the open cannot block or fail for want of a
            // reader, and writes wait in the pipe until the shim reads.
            let writer = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&path)
                .map_err(super::io(format!("opening FIFO {}", path.display())))?;
            io.stdin = Some(Box::new(writer));
            paths.insert("stdin", path.display().to_string());
        }
        if spec.stdout || spec.tty {
            let path = fifo_dir.join("stdout");
            io.stdout = Some(output_fifo(&path, &mut holders)?);
            paths.insert("stdout", path.display().to_string());
        }
        if spec.stderr && !spec.tty {
            let path = fifo_dir.join("stderr");
            io.stderr = Some(output_fifo(&path, &mut holders)?);
            paths.insert("stderr", path.display().to_string());
        }
        io.holders = FifoHolders(holders);
        let path_of = |name: &str| paths.get(name).cloned().unwrap_or_default();
        c.tasks()
            .exec(c.request(ExecProcessRequest {
                container_id: container_id.to_string(),
                stdin: path_of("stdin"),
                stdout: path_of("stdout"),
                stderr: path_of("stderr"),
                terminal: spec.tty,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE.into(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(call("tasks.exec"))?;
        Ok(())
    }
}

impl ExecRuntime for Runtime {
    async fn containers(&self) -> Result<Vec<ContainerRecord>> {
        ContainerRuntime::list(self).await
    }

    async fn exec_start(
        &self,
        container_id: &str,
        exec_id: &str,
        spec: &ExecSpec,
        fifo_dir: &Path,
    ) -> Result<ExecIo> {
        let c = self.containerd();
        let mut io = ExecIo::default();
        let started = async {
            self.exec_create(container_id, exec_id, spec, fifo_dir, &mut io)
                .await?;
            c.tasks()
                .start(c.request(TaskStartRequest {
                    container_id: container_id.to_string(),
                    exec_id: exec_id.to_string(),
                }))
                .await
                .map_err(call("tasks.start exec"))?;
            Ok::<(), Error>(())
        }
        .await;
        match started {
            Ok(()) => Ok(io),
            Err(e) => {
                drop(io);
                self.exec_remove(container_id, exec_id, fifo_dir).await;
                Err(e)
            }
        }
    }

    async fn exec_wait(&self, container_id: &str, exec_id: &str) -> Result<u32> {
        let c = self.containerd();
        Ok(c.tasks()
            .wait(c.request(WaitRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(call("tasks.wait exec"))?
            .into_inner()
            .exit_status)
    }

    async fn exec_resize(
        &self,
        container_id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let c = self.containerd();
        c.tasks()
            .resize_pty(c.request(ResizePtyRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            }))
            .await
            .map_err(call("tasks.resize_pty"))?;
        Ok(())
    }

    async fn exec_close_stdin(&self, container_id: &str, exec_id: &str) -> Result<()> {
        let c = self.containerd();
        c.tasks()
            .close_io(c.request(CloseIoRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            }))
            .await
            .map_err(call("tasks.close_io"))?;
        Ok(())
    }

    async fn exec_kill(&self, container_id: &str, exec_id: &str) -> Result<()> {
        let c = self.containerd();
        match c
            .tasks()
            .kill(c.request(KillRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                signal: 9,
                all: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                Ok(())
            }
            Err(status) => Err(Error::Call {
                call: "tasks.kill exec",
                status,
            }),
        }
    }

    async fn exec_remove(&self, container_id: &str, exec_id: &str, fifo_dir: &Path) {
        let c = self.containerd();
        match c
            .tasks()
            .delete_process(c.request(DeleteProcessRequest {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                tracing::warn!(container_id, exec_id, error = %s, "deleting exec process")
            }
        }
        match tokio::fs::remove_dir_all(fifo_dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %fifo_dir.display(), error = %e, "removing exec FIFOs")
            }
        }
    }

    fn attachable(&self, container_id: &str) -> Option<Arc<Attachable>> {
        self.container_io().get(container_id)
    }

    async fn container_resize(&self, container_id: &str, width: u32, height: u32) -> Result<()> {
        // The container's own process is the task's, named by no exec ID.
        self.exec_resize(container_id, "", width, height).await
    }

    async fn container_close_stdin(&self, container_id: &str) -> Result<()> {
        let Some(attachable) = self.attachable(container_id) else {
            return Ok(());
        };
        if attachable.close_stdin().await {
            self.exec_close_stdin(container_id, "").await?;
        }
        Ok(())
    }

    async fn container_running(&self, container_id: &str) -> Result<bool> {
        self.task_running(container_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_keeps_the_containers_environment_user_and_directory() {
        let container = serde_json::json!({
            "process": {
                "terminal": false,
                "consoleSize": {"height": 10, "width": 10},
                "user": {"uid": 1000, "gid": 1000},
                "args": ["/bin/server"],
                "env": ["PATH=/bin", "MODE=prod"],
                "cwd": "/srv",
            }
        });
        let spec = ExecSpec {
            args: vec!["sh".into(), "-c".into(), "id".into()],
            tty: true,
            ..Default::default()
        };
        let p = exec_process(&container, &spec);
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "id"]));
        assert_eq!(p["terminal"], true);
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["env"][1], "MODE=prod");
        assert_eq!(p["cwd"], "/srv");
        assert!(p.get("consoleSize").is_none());
    }

    #[test]
    fn a_container_without_a_process_spec_gets_roots_defaults() {
        let p = exec_process(&serde_json::Value::Null, &ExecSpec::default());
        assert_eq!(p["user"]["uid"], 0);
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["terminal"], false);
    }

    #[tokio::test]
    async fn output_fifo_readers_end_only_when_the_holder_is_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stdout");
        let mut holders = Vec::new();
        let mut reader = output_fifo(&path, &mut holders).unwrap();
        // A writer that comes and goes (the shim) does not end the stream.
        let mut writer = pipe::OpenOptions::new().open_sender(&path).unwrap();
        writer.write_all(b"hello").await.unwrap();
        drop(writer);
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            reader.read(&mut [0u8; 1]),
        )
        .await;
        assert!(early.is_err(), "the reader saw end of file while held");
        holders.clear();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
