//! Containers and tasks. A skiff container is a containerd container (the
//! spec, labels naming its pod, a snapshot holding its root filesystem)
//! plus a runc task (the running process). Its stdout and stderr go to a
//! log file that the runc shim writes directly, so logs need no reader in
//! the agent and keep flowing while the agent restarts. A container with
//! `stdin: true` or `tty: true` gets FIFOs instead, which the agent copies
//! into that log file and to attached sessions ([`super::container_io`]).
//!
//! [`ContainerRuntime`] is the narrow interface the pod workers use; the
//! containerd implementation is [`Runtime`]. What a pod needs from the
//! kernel around its containers (network namespace, pod network, cgroup
//! OOM counters) is not containerd's and sits behind the pods' own
//! sandbox trait.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ListTasksRequest, StartRequest as TaskStartRequest,
    SubscribeRequest, WaitRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use prost::Message;
use tokio::sync::mpsc;

use super::container_io::{ContainerIo, StdioMode};
use super::docker_config::PullKeyring;
use super::image_accounts::ImageAccounts;
use super::images::{ImageInventory, ImageRecord, ImageStore, PullPolicy};
use super::oci::ImageInfo;
use super::{call, Containerd, Error, Result, SNAPSHOTTER};

/// Label holding the pod UID a container belongs to.
pub const LABEL_POD_UID: &str = "skiff.io/pod-uid";
pub const LABEL_POD_NAME: &str = "skiff.io/pod-name";
pub const LABEL_POD_NAMESPACE: &str = "skiff.io/pod-namespace";
pub const LABEL_CONTAINER: &str = "skiff.io/container";
pub const LABEL_RESTARTS: &str = "skiff.io/restart-count";
pub const LABEL_STARTED_AT: &str = "skiff.io/started-at";
pub const LABEL_IMAGE_ID: &str = "skiff.io/image-id";

/// What starting a container needs.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub image: ImageInfo,
    pub spec: serde_json::Value,
    pub log_path: PathBuf,
    /// Its own stdin and terminal, as the container spec asks.
    pub stdio: StdioMode,
}

/// The state of a container's task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// No task: created but never started, or its task was deleted.
    NoTask,
    Running {
        pid: u32,
    },
    Exited {
        code: u32,
        finished_at: String,
    },
}

/// A container as containerd knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: HashMap<String, String>,
    /// The image name it was created from (what keeps that image in use).
    pub image: String,
    pub state: TaskState,
}

/// A task that ended, as containerd reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEvent {
    Exit { container_id: String },
    Oom { container_id: String },
}

/// Exit details of a finished container.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub code: u32,
    pub finished_at: String,
}

/// The operations pod workers need from a container runtime.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The image, pulled as `policy` says (trying in turn the credentials
    /// `keyring`, the pod's pull Secrets, has for its registry) and
    /// unpacked.
    fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        keyring: &PullKeyring,
    ) -> impl std::future::Future<Output = Result<ImageInfo>> + Send;
    /// Whether the image is on the node already (so that `IfNotPresent`
    /// will not pull it).
    fn image_present(&self, image: &str) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Changes whenever a new image becomes available.
    fn images_changed(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The image's `/etc/passwd` and `/etc/group` (empty when it has
    /// none), which user and group names resolve by.
    fn image_accounts(
        &self,
        image: &ImageInfo,
    ) -> impl std::future::Future<Output = Result<ImageAccounts>> + Send;
    /// Creates the container and starts its task; returns the PID.
    fn start(&self, request: StartRequest)
        -> impl std::future::Future<Output = Result<u32>> + Send;
    /// Sends `signal` to every process of the container's task.
    fn signal(&self, id: &str, signal: u32)
        -> impl std::future::Future<Output = Result<()>> + Send;
    /// The container, if it exists.
    fn inspect(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<ContainerRecord>>> + Send;
    /// Every container of this agent.
    fn list(&self) -> impl std::future::Future<Output = Result<Vec<ContainerRecord>>> + Send;
    /// Removes the task (killing it if needed), the container and its snapshot.
    fn remove(&self, id: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Runs `args` inside the container as its own process runs (user,
    /// environment, working directory); returns the exit code, or an
    /// error if it did not finish within `timeout`.
    fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<u32>> + Send;
}

/// The containerd implementation.
#[derive(Clone, Debug)]
pub struct Runtime {
    containerd: Containerd,
    images: Arc<ImageStore>,
    io: Arc<ContainerIo>,
}

/// The most of `/etc/passwd` or `/etc/group` read from an image.
const ACCOUNT_FILE_MAX: u64 = 1 << 20;

const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RUNC: &str = "io.containerd.runc.v2";

fn timestamp(t: Option<prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    if t.seconds <= 0 {
        return String::new();
    }
    let time = std::time::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.max(0) as u32);
    skiff_objects::rfc3339(time)
}

fn task_state(process: Option<containerd_client::types::v1::Process>) -> TaskState {
    match process {
        None => TaskState::NoTask,
        Some(p) => match ProcessStatus::try_from(p.status).unwrap_or(ProcessStatus::Unknown) {
            ProcessStatus::Stopped => TaskState::Exited {
                code: p.exit_status,
                finished_at: timestamp(p.exited_at),
            },
            ProcessStatus::Created => TaskState::NoTask,
            _ => TaskState::Running { pid: p.pid },
        },
    }
}

impl Runtime {
    /// The runtime; containers started with their own stdio keep its FIFOs
    /// under `io_dir`.
    pub fn new(containerd: Containerd, images: Arc<ImageStore>, io_dir: PathBuf) -> Runtime {
        Runtime {
            containerd,
            images,
            io: Arc::new(ContainerIo::new(io_dir)),
        }
    }

    /// The OCI spec container `container_id` was created with (null when
    /// it has none).
    pub(super) async fn container_spec(&self, container_id: &str) -> Result<serde_json::Value> {
        let c = &self.containerd;
        let container = c
            .containers()
            .get(c.request(GetContainerRequest {
                id: container_id.to_string(),
            }))
            .await
            .map_err(call("containers.get"))?
            .into_inner()
            .container;
        let spec = container
            .and_then(|c| c.spec)
            .map(|any| serde_json::from_slice(&any.value).unwrap_or(serde_json::Value::Null))
            .unwrap_or(serde_json::Value::Null);
        Ok(spec)
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    pub(crate) fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// The own stdio of the containers started with stdin or a terminal.
    pub(crate) fn container_io(&self) -> &ContainerIo {
        &self.io
    }

    /// Whether container `id`'s task is running.
    pub(crate) async fn task_running(&self, id: &str) -> Result<bool> {
        Ok(matches!(
            task_state(self.task(id).await?),
            TaskState::Running { .. }
        ))
    }

    /// After an agent restart: copying resumes for the running containers
    /// started with their own stdio; the FIFOs of any other are removed.
    pub async fn recover_container_io(&self) -> Result<()> {
        let running: HashSet<String> = ContainerRuntime::list(self)
            .await?
            .into_iter()
            .filter(|c| matches!(c.state, TaskState::Running { .. }))
            .map(|c| c.id)
            .collect();
        self.io.recover(&running);
        Ok(())
    }

    async fn task(&self, id: &str) -> Result<Option<containerd_client::types::v1::Process>> {
        let c = &self.containerd;
        match c
            .tasks()
            .get(c.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::Call {
                call: "tasks.get",
                status: s,
            }),
        }
    }

    /// Prepares the container's snapshot and creates the container, both
    /// under `lease`; the mounts of its rootfs. Removes the snapshot again
    /// if the container cannot be created.
    async fn create_container(
        &self,
        request: &StartRequest,
        lease: &str,
    ) -> Result<Vec<containerd_client::types::Mount>> {
        let c = &self.containerd;
        let id = request.id.clone();
        let mounts = c
            .snapshots()
            .prepare(c.request_in_lease(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                    parent: request.image.chain_id.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await
            .map_err(call("snapshots.prepare"))?
            .into_inner()
            .mounts;
        let spec = prost_types::Any {
            type_url: SPEC_TYPE.into(),
            value: serde_json::to_vec(&request.spec).unwrap_or_default(),
        };
        let container = Container {
            id: id.clone(),
            labels: request.labels.clone(),
            image: request.image.name.clone(),
            runtime: Some(ContainerRuntimeInfo {
                name: RUNC.into(),
                options: None,
            }),
            spec: Some(spec),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.clone(),
            created_at: None,
            updated_at: None,
            extensions: HashMap::new(),
            sandbox: String::new(),
        };
        let created = c
            .containers()
            .create(c.request_in_lease(
                CreateContainerRequest {
                    container: Some(container),
                },
                Some(lease),
            ))
            .await;
        if let Err(status) = created {
            self.images.remove_snapshot(&id).await;
            return Err(Error::Call {
                call: "containers.create",
                status,
            });
        }
        Ok(mounts)
    }

    async fn delete_task(&self, id: &str) -> Result<()> {
        let c = &self.containerd;
        if let Some(p) = self.task(id).await? {
            if !matches!(
                task_state(Some(p)),
                TaskState::Exited { .. } | TaskState::NoTask
            ) {
                let _ = self.signal(id, 9).await;
                // The shim reports the exit asynchronously.
                for _ in 0..100 {
                    match self.task(id).await? {
                        Some(p)
                            if matches!(task_state(Some(p.clone())), TaskState::Running { .. }) =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        _ => break,
                    }
                }
            }
            match c
                .tasks()
                .delete(c.request(DeleteTaskRequest {
                    container_id: id.to_string(),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => {
                    return Err(Error::Call {
                        call: "tasks.delete",
                        status: s,
                    })
                }
            }
        }
        Ok(())
    }

    /// Turns containerd's task events for this namespace into a channel.
    /// Reconnects when the stream breaks; ends when the receiver is dropped.
    pub fn events(&self) -> mpsc::Receiver<RuntimeEvent> {
        let (tx, rx) = mpsc::channel(256);
        let c = self.containerd.clone();
        tokio::spawn(async move {
            loop {
                let filters = vec![
                    format!("namespace=={},topic==\"/tasks/exit\"", c.namespace()),
                    format!("namespace=={},topic==\"/tasks/oom\"", c.namespace()),
                ];
                let stream = c
                    .events()
                    .subscribe(c.request(SubscribeRequest { filters }))
                    .await;
                if let Ok(stream) = stream {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(envelope)) = stream.message().await {
                        let Some(event) = envelope.event else {
                            continue;
                        };
                        let message = match envelope.topic.as_str() {
                            "/tasks/exit" => {
                                containerd_client::events::TaskExit::decode(event.value.as_slice())
                                    .ok()
                                    .map(|e| RuntimeEvent::Exit {
                                        container_id: e.container_id,
                                    })
                            }
                            "/tasks/oom" => {
                                containerd_client::events::TaskOom::decode(event.value.as_slice())
                                    .ok()
                                    .map(|e| RuntimeEvent::Oom {
                                        container_id: e.container_id,
                                    })
                            }
                            _ => None,
                        };
                        if let Some(m) = message {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        rx
    }
}

impl ImageInventory for Runtime {
    async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        self.images.list_images().await
    }

    async fn remove_image(&self, image: &ImageRecord) -> Result<bool> {
        self.images.remove_image(image).await
    }
}

impl ContainerRuntime for Runtime {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        keyring: &PullKeyring,
    ) -> Result<ImageInfo> {
        self.images.ensure(image, policy, keyring).await
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        let name = super::images::normalize(image)?;
        Ok(self.images.lookup(&name).await?.is_some())
    }

    fn images_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.images.stored()
    }

    async fn image_accounts(&self, image: &ImageInfo) -> Result<ImageAccounts> {
        let paths = ["/etc/passwd", "/etc/group"];
        let files = self
            .images
            .read_files(&image.chain_id, &paths, ACCOUNT_FILE_MAX)
            .await?;
        let mut texts = files.into_iter().map(|f| {
            f.map(|d| String::from_utf8_lossy(&d).into_owned())
                .unwrap_or_default()
        });
        Ok(ImageAccounts {
            passwd: texts.next().unwrap_or_default(),
            group: texts.next().unwrap_or_default(),
        })
    }

    async fn start(&self, request: StartRequest) -> Result<u32> {
        let c = &self.containerd;
        let id = request.id.clone();
        // Leftovers of an earlier attempt with the same ID go first.
        self.remove(&id).await?;
        if let Some(dir) = request.log_path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(super::io(format!("creating {}", dir.display())))?;
        }
        // The snapshot is nobody's until the container naming it exists:
        // without a lease containerd's garbage collector, run after any
        // deletion in the namespace, may remove it in between and the task
        // then fails to mount its rootfs.
        let lease = c.create_lease("container").await?;
        let created = self.create_container(&request, &lease.id).await;
        c.delete_lease(lease).await;
        let mounts = created?;
        let started = async {
            // Its own stdio as FIFOs the agent holds, or the log file the
            // shim writes.
            let prepared = if request.stdio.attachable() {
                Some(self.io.prepare(&id, request.stdio, &request.log_path)?)
            } else {
                None
            };
            let (stdin, stdout, stderr) = match &prepared {
                Some(p) => p.task_paths(),
                None => {
                    let log = format!("file://{}", request.log_path.display());
                    (String::new(), log.clone(), log)
                }
            };
            c.tasks()
                .create(c.request(CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: mounts,
                    stdin,
                    stdout,
                    stderr,
                    terminal: request.stdio.tty,
                    checkpoint: None,
                    options: None,
                    runtime_path: String::new(),
                }))
                .await
                .map_err(call("tasks.create"))?;
            // The shim has its ends of the FIFOs open now.
            if let Some(prepared) = prepared {
                self.io.started(prepared);
            }
            let r = c
                .tasks()
                .start(c.request(TaskStartRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                }))
                .await
                .map_err(call("tasks.start"))?;
            Ok::<u32, Error>(r.into_inner().pid)
        }
        .await;
        if started.is_err() {
            let _ = self.remove(&id).await;
        }
        started
    }

    async fn signal(&self, id: &str, signal: u32) -> Result<()> {
        let c = &self.containerd;
        match c
            .tasks()
            .kill(c.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: true,
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
            Err(s) => Err(Error::Call {
                call: "tasks.kill",
                status: s,
            }),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerRecord>> {
        let c = &self.containerd;
        let container = match c
            .containers()
            .get(c.request(GetContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(r) => r.into_inner().container,
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => {
                return Err(Error::Call {
                    call: "containers.get",
                    status: s,
                })
            }
        };
        let Some(container) = container else {
            return Ok(None);
        };
        let state = task_state(self.task(id).await?);
        Ok(Some(ContainerRecord {
            id: container.id,
            labels: container.labels,
            image: container.image,
            state,
        }))
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>> {
        let c = &self.containerd;
        let containers = c
            .containers()
            .list(c.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(call("containers.list"))?
            .into_inner()
            .containers;
        let tasks = c
            .tasks()
            .list(c.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(call("tasks.list"))?
            .into_inner()
            .tasks;
        let mut by_id: HashMap<String, containerd_client::types::v1::Process> =
            tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        Ok(containers
            .into_iter()
            .map(|container| {
                let state = task_state(by_id.remove(&container.id));
                ContainerRecord {
                    id: container.id,
                    labels: container.labels,
                    image: container.image,
                    state,
                }
            })
            .collect())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let c = &self.containerd;
        self.delete_task(id).await?;
        self.io.forget(id);
        match c
            .containers()
            .delete(c.request(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                return Err(Error::Call {
                    call: "containers.delete",
                    status: s,
                })
            }
        }
        self.images.remove_snapshot(id).await;
        Ok(())
    }

    async fn exec(&self, id: &str, args: Vec<String>, timeout: Duration) -> Result<u32> {
        let c = &self.containerd;
        let exec_id = format!("probe-{:08x}", rand::random::<u32>());
        // As the container's own process runs (user, environment, working
        // directory, capabilities), with these arguments: what the kubelet
        // gives exec probes and hooks.
        let process = super::spec::exec_process(&self.container_spec(id).await?, &args, false);
        c.tasks()
            .exec(c.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE.into(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(call("tasks.exec"))?;
        let outcome = async {
            // Wait first, so an exec that ends at once is not missed.
            let mut tasks = c.tasks();
            let wait = tasks.wait(c.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            }));
            let mut starter = c.tasks();
            let start = starter.start(c.request(TaskStartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            }));
            let (waited, started) = tokio::join!(tokio::time::timeout(timeout, wait), start);
            started.map_err(call("tasks.start exec"))?;
            match waited {
                Ok(r) => Ok(r.map_err(call("tasks.wait exec"))?.into_inner().exit_status),
                Err(_) => {
                    let _ = c
                        .tasks()
                        .kill(c.request(KillRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.clone(),
                            signal: 9,
                            all: false,
                        }))
                        .await;
                    Err(Error::Timeout {
                        what: format!("exec in {id}"),
                        after: timeout,
                    })
                }
            }
        }
        .await;
        let _ = c
            .tasks()
            .delete_process(c.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id,
            }))
            .await;
        outcome
    }
}
