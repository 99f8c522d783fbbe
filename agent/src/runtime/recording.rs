//! A recording fake of [`ContainerRuntime`] and [`ImageInventory`] for
//! unit-testing the pod workers, the leftover sweep and image garbage
//! collection: containers and stored images live in maps, every call is
//! recorded (and the spec of each container's last start kept), tests make
//! containers exit, image pulls or starts can be made to fail, images
//! given a `USER` and accounts, and execs (probes, hooks) scripted with
//! an exit code and a duration. Passed in explicitly where the real
//! runtime would be.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use containerd_client::types::Descriptor;

use super::containers::{
    ContainerRecord, ContainerRuntime, StartRequest, TaskState, LABEL_RESTARTS,
};
use super::docker_config::PullKeyring;
use super::image_accounts::ImageAccounts;
use super::images::{ImageInventory, ImageRecord, PullPolicy};
use super::oci::{ImageInfo, RunConfig};
use super::reference::ImageRef;
use super::{Error, Result};

/// One call made to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureImage(String),
    Start { id: String, restarts: String },
    Signal { id: String, signal: u32 },
    Remove(String),
    Exec(String),
    RemoveImage(String),
}

/// An image in the fake store, with the space it takes.
#[derive(Debug, Clone)]
struct StoredImage {
    record: ImageRecord,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    containers: BTreeMap<String, ContainerRecord>,
    images: BTreeMap<String, StoredImage>,
    calls: Vec<Call>,
    next_pid: u32,
    missing_images: BTreeSet<String>,
    failing_starts: u32,
    /// Processes ignore SIGTERM, as a shell as PID 1 does: only SIGKILL
    /// ends them.
    ignoring_sigterm: bool,
    /// The runtime spec each container was last started with.
    specs: BTreeMap<String, serde_json::Value>,
    /// The `USER` of every image.
    image_user: Option<String>,
    /// The `/etc/passwd` and `/etc/group` of every image.
    accounts: ImageAccounts,
    /// Each exec's container and command, in order.
    execs: Vec<(String, Vec<String>)>,
    /// What an exec of a command (its arguments joined by spaces) does:
    /// its exit code, after how long; others exit with `exec_exit` at once.
    scripted_execs: BTreeMap<String, (u32, Duration)>,
    exec_exit: u32,
    /// Images a registry serves only with these user and password.
    private_images: BTreeMap<String, (String, String)>,
    /// Each pull's image and the user name it was made with.
    pulls: Vec<(String, Option<String>)>,
}

/// The fake runtime.
#[derive(Debug)]
pub struct RecordingRuntime {
    inner: Mutex<Inner>,
    images: tokio::sync::watch::Sender<u64>,
}

impl Default for RecordingRuntime {
    fn default() -> Self {
        RecordingRuntime {
            inner: Mutex::new(Inner {
                next_pid: 100,
                ..Default::default()
            }),
            images: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl RecordingRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The runtime spec container `id` was last started with.
    pub fn started_spec(&self, id: &str) -> Option<serde_json::Value> {
        self.lock().specs.get(id).cloned()
    }

    /// The container's main process exits with `code`.
    pub fn exit(&self, id: &str, code: u32) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.state = TaskState::Exited {
                code,
                finished_at: "2026-01-01T00:00:00Z".into(),
            };
        }
    }

    /// From now on, containers ignore SIGTERM (stopping one then takes its
    /// whole grace period, and a SIGKILL).
    pub fn ignore_sigterm(&self) {
        self.lock().ignoring_sigterm = true;
    }

    /// A container that an earlier agent left running.
    pub fn add_running(&self, id: &str, labels: BTreeMap<String, String>) -> u32 {
        let mut inner = self.lock();
        inner.next_pid += 1;
        let pid = inner.next_pid;
        inner.containers.insert(
            id.to_string(),
            ContainerRecord {
                id: id.to_string(),
                labels: labels.into_iter().collect(),
                image: String::new(),
                state: TaskState::Running { pid },
            },
        );
        pid
    }

    /// A container as an earlier agent (or older code) left it.
    pub fn add_container(&self, record: ContainerRecord) {
        self.lock().containers.insert(record.id.clone(), record);
    }

    /// An image in the store, taking `bytes` on disk, pinned or not.
    pub fn add_image(&self, name: &str, created: SystemTime, bytes: u64, pinned: bool) {
        let record = ImageRecord {
            name: name.to_string(),
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: format!("sha256:{name}"),
                size: 1,
                annotations: Default::default(),
            },
            created,
            pinned,
        };
        self.lock()
            .images
            .insert(name.to_string(), StoredImage { record, bytes });
    }

    /// The names of the stored images, in order.
    pub fn image_names(&self) -> Vec<String> {
        self.lock().images.keys().cloned().collect()
    }

    /// What the stored images take on disk together.
    pub fn image_bytes(&self) -> u64 {
        self.lock().images.values().map(|i| i.bytes).sum()
    }

    pub fn state(&self, id: &str) -> Option<TaskState> {
        self.lock().containers.get(id).map(|c| c.state.clone())
    }

    /// Pulls of `image` fail until [`RecordingRuntime::provide_image`].
    pub fn hide_image(&self, image: &str) {
        self.lock().missing_images.insert(image.to_string());
    }

    pub fn provide_image(&self, image: &str) {
        self.lock().missing_images.remove(image);
        self.images.send_modify(|n| *n += 1);
    }

    /// The next `n` starts fail.
    pub fn fail_starts(&self, n: u32) {
        self.lock().failing_starts = n;
    }

    /// Pulls of `image` succeed only with `user` and `password` from the
    /// pod's pull Secrets, and fail as a registry's 401 otherwise.
    pub fn require_credentials(&self, image: &str, user: &str, password: &str) {
        self.lock()
            .private_images
            .insert(image.to_string(), (user.to_string(), password.to_string()));
    }

    /// Each pull so far: the image and the user name of the credentials
    /// from the pod's pull Secrets it was made with (the accepted ones,
    /// else the last tried).
    pub fn pulls(&self) -> Vec<(String, Option<String>)> {
        self.lock().pulls.clone()
    }

    /// From now on, execs exit with `code` unless scripted otherwise.
    pub fn set_exec_exit(&self, code: u32) {
        self.lock().exec_exit = code;
    }

    /// From now on, an exec of `command` (its arguments joined by spaces)
    /// takes `after`, then exits with `code`.
    pub fn script_exec(&self, command: &str, code: u32, after: Duration) {
        self.lock()
            .scripted_execs
            .insert(command.to_string(), (code, after));
    }

    /// Each exec so far: the container and the command.
    pub fn exec_commands(&self) -> Vec<(String, Vec<String>)> {
        self.lock().execs.clone()
    }

    /// From now on, images say they run as `user` (their `USER`).
    pub fn set_image_user(&self, user: &str) {
        self.lock().image_user = Some(user.to_string());
    }

    /// From now on, images have these `/etc/passwd` and `/etc/group`.
    pub fn set_image_accounts(&self, passwd: &str, group: &str) {
        self.lock().accounts = ImageAccounts {
            passwd: passwd.to_string(),
            group: group.to_string(),
        };
    }
}

impl ContainerRuntime for RecordingRuntime {
    async fn ensure_image(
        &self,
        image: &str,
        _policy: PullPolicy,
        keyring: &PullKeyring,
    ) -> Result<ImageInfo> {
        let mut inner = self.lock();
        inner.calls.push(Call::EnsureImage(image.to_string()));
        // Every matching credential in turn, as the real pull: the user
        // of the one accepted is recorded, else of the last tried.
        let candidates: Vec<_> = ImageRef::parse(image)
            .map(|r| keyring.lookup(&r.registry, &r.repository))
            .unwrap_or_default();
        let required = inner.private_images.get(image).cloned();
        let accepted = match &required {
            None => candidates.first().copied(),
            Some((user, password)) => candidates
                .iter()
                .copied()
                .find(|c| &c.username == user && &c.password == password),
        };
        let used = accepted.or(candidates.last().copied());
        inner
            .pulls
            .push((image.to_string(), used.map(|c| c.username.clone())));
        if required.is_some() && accepted.is_none() {
            let hint = match used {
                Some(c) => format!("refused with the credentials from {}", c.origin),
                None => "no credentials for this registry".to_string(),
            };
            return Err(Error::Image {
                image: image.to_string(),
                message: format!("401 Unauthorized ({hint})"),
            });
        }
        if inner.missing_images.contains(image) {
            return Err(Error::Image {
                image: image.to_string(),
                message: "not found".into(),
            });
        }
        Ok(ImageInfo {
            name: image.to_string(),
            id: "sha256:fake".into(),
            config: RunConfig {
                cmd: Some(vec!["sh".into()]),
                user: inner.image_user.clone(),
                ..Default::default()
            },
            chain_id: "sha256:chain".into(),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(!self.lock().missing_images.contains(image))
    }

    fn images_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.images.subscribe()
    }

    async fn image_accounts(&self, _image: &ImageInfo) -> Result<ImageAccounts> {
        Ok(self.lock().accounts.clone())
    }

    async fn start(&self, request: StartRequest) -> Result<u32> {
        let mut inner = self.lock();
        let restarts = request
            .labels
            .get(LABEL_RESTARTS)
            .cloned()
            .unwrap_or_default();
        inner.calls.push(Call::Start {
            id: request.id.clone(),
            restarts,
        });
        if inner.failing_starts > 0 {
            inner.failing_starts -= 1;
            // A failed start as containerd reports one: tasks.start refused.
            return Err(Error::Call {
                call: "tasks.start",
                status: tonic::Status::unavailable("injected start failure"),
            });
        }
        inner.next_pid += 1;
        let pid = inner.next_pid;
        inner.specs.insert(request.id.clone(), request.spec);
        inner.containers.insert(
            request.id.clone(),
            ContainerRecord {
                id: request.id,
                labels: request.labels,
                image: request.image.name,
                state: TaskState::Running { pid },
            },
        );
        Ok(pid)
    }

    async fn signal(&self, id: &str, signal: u32) -> Result<()> {
        let mut inner = self.lock();
        inner.calls.push(Call::Signal {
            id: id.to_string(),
            signal,
        });
        if signal == 15 && inner.ignoring_sigterm {
            return Ok(());
        }
        if let Some(c) = inner.containers.get_mut(id) {
            if matches!(c.state, TaskState::Running { .. }) {
                c.state = TaskState::Exited {
                    code: 128 + signal,
                    finished_at: "2026-01-01T00:00:00Z".into(),
                };
            }
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerRecord>> {
        Ok(self.lock().containers.get(id).cloned())
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>> {
        Ok(self.lock().containers.values().cloned().collect())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.calls.push(Call::Remove(id.to_string()));
        inner.containers.remove(id);
        Ok(())
    }

    async fn exec(&self, id: &str, args: Vec<String>, timeout: Duration) -> Result<u32> {
        let (code, after) = {
            let mut inner = self.lock();
            inner.calls.push(Call::Exec(id.to_string()));
            inner.execs.push((id.to_string(), args.clone()));
            let default = (inner.exec_exit, Duration::ZERO);
            let scripted = inner.scripted_execs.get(&args.join(" ")).copied();
            scripted.unwrap_or(default)
        };
        if after > timeout {
            tokio::time::sleep(timeout).await;
            return Err(Error::Timeout {
                what: format!("exec in {id}"),
                after: timeout,
            });
        }
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        Ok(code)
    }
}

impl ImageInventory for RecordingRuntime {
    async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        Ok(self
            .lock()
            .images
            .values()
            .map(|i| i.record.clone())
            .collect())
    }

    async fn remove_image(&self, image: &ImageRecord) -> Result<bool> {
        let mut inner = self.lock();
        inner.calls.push(Call::RemoveImage(image.name.clone()));
        Ok(inner.images.remove(&image.name).is_some())
    }
}
