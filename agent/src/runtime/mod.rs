//! The container runtime: skiff's side of containerd. One [`Containerd`]
//! client talks to one containerd socket and keeps everything of this agent
//! in one containerd namespace. Images are pulled or imported into the
//! content store and unpacked into overlay snapshots; containers get an OCI
//! runtime spec built from the pod spec and run as runc tasks whose stdout
//! and stderr the shim writes straight into log files (or, for containers
//! with `stdin` or `tty`, FIFOs the agent copies from: [`container_io`]).
//!
//! The pod workers see the runtime only through the narrow
//! [`ContainerRuntime`] trait, so their restart and status logic can be
//! tested against a recording fake. Interactive exec and attach ([`exec`])
//! are behind their own narrow trait, [`exec::ExecRuntime`]. Image garbage collection
//! ([`image_gc`]) sees it through that and [`images::ImageInventory`].

pub mod container_io;
pub mod containers;
pub mod content;
pub mod docker_config;
pub mod exec;
pub mod host_devices;
pub mod image_accounts;
pub mod image_gc;
pub mod images;
pub mod import;
pub mod oci;
pub mod recording;
pub mod reference;
pub mod registry;
pub mod registry_auth;
pub mod registry_client;
pub mod rootfs_files;
pub mod seccomp;
pub mod spec;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod test_registry;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use tonic::transport::Channel;

pub use containers::{
    ContainerRecord, ContainerRuntime, ExitInfo, RuntimeEvent, StartRequest, TaskState,
};

/// The snapshotter every skiff container uses (Debian's containerd default).
pub const SNAPSHOTTER: &str = "overlayfs";

/// Errors from talking to containerd and from handling images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to containerd at {path}: {source}; is containerd running there?")]
    Connect {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd {call}: {status}")]
    Call {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("image {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: Box<registry_client::RegistryError>,
    },
    /// Every credential for the image's registry was tried, in the
    /// kubelet's order, and none worked; the secrets themselves are never
    /// shown, only whose they were.
    #[error("image {image}: none of the {tried} credentials for registry {registry} worked (tried in this order: {origins}); the last attempt: {last}")]
    CredentialsExhausted {
        image: String,
        registry: String,
        tried: usize,
        /// Where each came from, in the order tried.
        origins: String,
        #[source]
        last: Box<registry_client::RegistryError>,
    },
    #[error("image {image}: not a valid image reference: {source}")]
    Reference {
        image: String,
        #[source]
        source: reference::ReferenceError,
    },
    #[error("registry config {path}: {source}; fix it, or remove it to pull anonymously")]
    RegistriesFile {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("image config blob {digest} is larger than 16 MiB, far more than a config needs; rebuild the image")]
    ConfigTooLarge { digest: String },
    #[error("image archive {file}: {source}")]
    Archive {
        file: String,
        #[source]
        source: Box<import::ArchiveError>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
    #[error("containerd supervisor: containerd is not in PATH; install it (apt-get install containerd runc) or pass --containerd-socket")]
    ContainerdNotInstalled,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Maps a tonic error into [`Error::Call`] naming the call.
pub(crate) fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Call { call, status }
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A client for one containerd namespace.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Containerd {
    /// Connects to the socket at `path`, retrying for up to `wait` while the
    /// socket does not exist yet (a containerd child that is starting).
    pub async fn connect(path: &Path, namespace: &str, wait: Duration) -> Result<Containerd> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match containerd_client::connect(path).await {
                Ok(channel) => {
                    let client = Containerd {
                        channel,
                        namespace: namespace.to_string(),
                    };
                    // A connection is lazy about errors; ask for the version
                    // so a dead socket fails here and not at the first pod.
                    match client.version().await {
                        Ok(_) => return Ok(client),
                        Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                        Err(_) => {}
                    }
                }
                Err(source) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Connect {
                        path: path.display().to_string(),
                        source,
                    })
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let v = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(call("version"))?;
        Ok(v.into_inner().version)
    }

    /// Wraps `message` in a request carrying this agent's namespace.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_in_lease(message, None)
    }

    pub(crate) fn request_in_lease<T>(&self, message: T, lease: Option<&str>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        let md = req.metadata_mut();
        if let Ok(ns) = self.namespace.parse() {
            md.insert("containerd-namespace", ns);
        }
        if let Some(lease) = lease.and_then(|l| l.parse().ok()) {
            md.insert("containerd-lease", lease);
        }
        req
    }

    pub(crate) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    pub(crate) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub(crate) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
    pub(crate) fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub(crate) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub(crate) fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    pub(crate) fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
    pub(crate) fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }
}

/// A containerd lease: content and snapshots written under it are safe
/// from containerd's garbage collector until it is dropped, so a pull that
/// dies halfway leaves nothing behind once the lease expires.
pub(crate) struct Lease {
    pub id: String,
}

impl Containerd {
    pub(crate) async fn create_lease(&self, purpose: &str) -> Result<Lease> {
        use containerd_client::services::v1::CreateRequest;
        let id = format!("skiff-{purpose}-{:016x}", rand::random::<u64>());
        let mut labels = std::collections::HashMap::new();
        // Expire on its own if this agent dies before deleting it.
        labels.insert("containerd.io/gc.expire".to_string(), rfc3339_in(3600));
        self.leases()
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(call("leases.create"))?;
        Ok(Lease { id })
    }

    pub(crate) async fn delete_lease(&self, lease: Lease) {
        use containerd_client::services::v1::DeleteRequest;
        let _ = self
            .leases()
            .delete(self.request(DeleteRequest {
                id: lease.id,
                sync: false,
            }))
            .await;
    }
}

/// Now plus `secs`, as RFC 3339 (what containerd's gc.expire label wants).
fn rfc3339_in(secs: u64) -> String {
    skiff_objects::rfc3339(SystemTime::now() + Duration::from_secs(secs))
}
