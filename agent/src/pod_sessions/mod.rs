//! Sessions inside pods, served to masters over the agent's mutual-TLS
//! endpoint (the one `AgentLogs` is on; no other port is opened): exec in a
//! running container ([`exec`]), attach to a container's own process
//! ([`attach`]) and TCP port-forward into a pod's network namespace
//! ([`port_forward`]). Each is a bidirectional gRPC stream; the master
//! relays what kubectl or `skiff ctl` sends and receives, as kube-apiserver
//! relays to the kubelet.
//!
//! Only masters may call these: they have already authorized the user as
//! `create` on `pods/exec`, `pods/attach` or `pods/portforward` and logged
//! the session; the agent logs it too.

pub mod attach;
pub mod exec;
pub mod port_forward;

use std::path::PathBuf;
use std::sync::Arc;

use skiff_proto::api::{ExecInput, ExecOutput, PortForwardInput, PortForwardOutput};
use skiff_proto::node::agent_sessions_server::AgentSessions;
use skiff_security::{Identity, PeerInfo};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::pods::layout::PodLayout;
use crate::runtime::containers::{
    ContainerRecord, TaskState, LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID, LABEL_RESTARTS,
};
use crate::runtime::exec::ExecRuntime;

/// Serves exec and port-forward sessions.
pub struct SessionService<R> {
    runtime: Arc<R>,
    layout: Arc<PodLayout>,
    shutdown: CancellationToken,
}

impl<R: ExecRuntime> SessionService<R> {
    /// The service; removes FIFO directories an earlier run of the agent
    /// left behind (their sessions ended with it).
    pub fn new(
        runtime: Arc<R>,
        layout: Arc<PodLayout>,
        shutdown: CancellationToken,
    ) -> SessionService<R> {
        let leftovers = layout.exec_fifos_dir();
        match std::fs::remove_dir_all(&leftovers) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %leftovers.display(), error = %e, "removing old exec FIFOs")
            }
        }
        SessionService {
            runtime,
            layout,
            shutdown,
        }
    }

    fn fifo_dir(&self, exec_id: &str) -> PathBuf {
        self.layout.exec_fifos_dir().join(exec_id)
    }
}

/// Whether `identity` may open sessions here: masters only.
fn is_master(identity: &Identity) -> bool {
    matches!(identity, Identity::Master(_))
}

/// The caller, for the session log.
fn caller<T>(request: &Request<T>) -> String {
    PeerInfo::of(request)
        .and_then(|p| p.identity.as_ref())
        .map(|i| i.to_string())
        .unwrap_or_else(|| "anonymous".into())
}

/// The containers of pod `namespace/name` on this node.
fn pod_containers<'a>(
    records: &'a [ContainerRecord],
    namespace: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a ContainerRecord> + 'a {
    records.iter().filter(move |r| {
        r.labels.get(LABEL_POD_NAMESPACE).map(String::as_str) == Some(namespace)
            && r.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(name)
    })
}

/// The containerd ID of the running container `container` of pod
/// `namespace/name` (its only container when `container` is empty), or
/// why there is none, in words a user can act on.
pub fn running_container(
    records: &[ContainerRecord],
    namespace: &str,
    name: &str,
    container: &str,
) -> Result<String, Status> {
    let mut names: Vec<&str> = pod_containers(records, namespace, name)
        .filter_map(|r| r.labels.get(LABEL_CONTAINER).map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Err(Status::not_found(format!(
            "pod {namespace}/{name} has no containers on this node; is it running?"
        )));
    }
    let chosen = if container.is_empty() {
        match names.as_slice() {
            [only] => *only,
            several => {
                return Err(Status::invalid_argument(format!(
                    "pod {namespace}/{name} has several containers; choose one of: {}",
                    several.join(", ")
                )))
            }
        }
    } else if names.contains(&container) {
        container
    } else {
        return Err(Status::not_found(format!(
            "container {container} not found in pod {namespace}/{name} (containers: {})",
            names.join(", ")
        )));
    };
    pod_containers(records, namespace, name)
        .find(|r| {
            r.labels.get(LABEL_CONTAINER).map(String::as_str) == Some(chosen)
                && matches!(r.state, TaskState::Running { .. })
        })
        .map(|r| r.id.clone())
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "container {chosen} of pod {namespace}/{name} is not running"
            ))
        })
}

/// The UID of pod `namespace/name` if any of its containers runs here
/// (its network namespace is then up).
pub fn running_pod_uid(
    records: &[ContainerRecord],
    namespace: &str,
    name: &str,
) -> Result<String, Status> {
    pod_containers(records, namespace, name)
        .filter(|r| matches!(r.state, TaskState::Running { .. }))
        .find_map(|r| r.labels.get(LABEL_POD_UID).cloned())
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "pod {namespace}/{name} is not running on this node"
            ))
        })
}

/// The log file of container record `id`'s current run, from its labels.
fn run_log(layout: &PodLayout, records: &[ContainerRecord], id: &str) -> Option<PathBuf> {
    let record = records.iter().find(|r| r.id == id)?;
    let label = |name: &str| record.labels.get(name).map(String::as_str);
    let restarts = label(LABEL_RESTARTS)
        .and_then(|r| r.parse::<i32>().ok())
        .unwrap_or(0);
    Some(layout.log_file_for(
        label(LABEL_POD_NAMESPACE)?,
        label(LABEL_POD_NAME)?,
        label(LABEL_POD_UID)?,
        label(LABEL_CONTAINER)?,
        restarts,
    ))
}

fn runtime_error(e: crate::runtime::Error) -> Status {
    Status::unavailable(format!("container runtime: {e}"))
}

#[tonic::async_trait]
impl<R: ExecRuntime> AgentSessions for SessionService<R> {
    type ExecStream = ReceiverStream<Result<ExecOutput, Status>>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        PeerInfo::require(&request, is_master, "exec in this node's containers")?;
        let who = caller(&request);
        let mut input = request.into_inner();
        let start = exec::read_start(&mut input).await?;
        let records = self.runtime.containers().await.map_err(runtime_error)?;
        let namespace = if start.namespace.is_empty() {
            "default"
        } else {
            start.namespace.as_str()
        };
        let container_id = running_container(&records, namespace, &start.name, &start.container)?;
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        tracing::info!(
            caller = %who,
            pod = %format!("{namespace}/{}", start.name),
            container = %start.container,
            container_id = %container_id,
            command = ?start.command,
            exec_id = %exec_id,
            "exec session"
        );
        let session = exec::ExecSession {
            runtime: self.runtime.clone(),
            container_id,
            fifo_dir: self.fifo_dir(&exec_id),
            exec_id,
            shutdown: self.shutdown.clone(),
        };
        let output = session.start(&start, input).await?;
        Ok(Response::new(output))
    }

    type AttachStream = ReceiverStream<Result<ExecOutput, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        PeerInfo::require(&request, is_master, "attach to this node's containers")?;
        let who = caller(&request);
        let mut input = request.into_inner();
        let start = attach::read_start(&mut input).await?;
        let records = self.runtime.containers().await.map_err(runtime_error)?;
        let namespace = if start.namespace.is_empty() {
            "default"
        } else {
            start.namespace.as_str()
        };
        let container_id = running_container(&records, namespace, &start.name, &start.container)?;
        let log_path = run_log(&self.layout, &records, &container_id).ok_or_else(|| {
            Status::internal(format!(
                "container {container_id} has no pod labels; it is not one of skiff's"
            ))
        })?;
        tracing::info!(
            caller = %who,
            pod = %format!("{namespace}/{}", start.name),
            container = %start.container,
            container_id = %container_id,
            stdin = start.stdin,
            tty = start.tty,
            "attach session"
        );
        let session = attach::AttachSession {
            runtime: self.runtime.clone(),
            container_id,
            log_path,
            shutdown: self.shutdown.clone(),
        };
        Ok(Response::new(session.start(&start, input).await))
    }

    type PortForwardStream = ReceiverStream<Result<PortForwardOutput, Status>>;

    async fn port_forward(
        &self,
        request: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        PeerInfo::require(&request, is_master, "port-forward into this node's pods")?;
        let who = caller(&request);
        let mut input = request.into_inner();
        let start = port_forward::read_start(&mut input).await?;
        let namespace = if start.namespace.is_empty() {
            "default".to_owned()
        } else {
            start.namespace.clone()
        };
        let records = self.runtime.containers().await.map_err(runtime_error)?;
        let uid = running_pod_uid(&records, &namespace, &start.name)?;
        tracing::info!(
            caller = %who,
            pod = %format!("{namespace}/{}", start.name),
            port = start.port,
            "port-forward connection"
        );
        let port = port_forward::port_of(&start)?;
        let socket =
            port_forward::connect(self.layout.netns(&uid), port, &namespace, &start.name).await?;
        Ok(Response::new(port_forward::relay(
            socket,
            input,
            self.shutdown.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn record(id: &str, pod: &str, container: &str, running: bool) -> ContainerRecord {
        let labels: HashMap<String, String> = [
            (LABEL_POD_NAMESPACE, "default"),
            (LABEL_POD_NAME, pod),
            (LABEL_CONTAINER, container),
            (LABEL_POD_UID, "uid-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        ContainerRecord {
            id: id.into(),
            labels,
            image: "busybox".into(),
            state: if running {
                TaskState::Running { pid: 7 }
            } else {
                TaskState::Exited {
                    code: 0,
                    finished_at: String::new(),
                }
            },
        }
    }

    #[test]
    fn the_running_run_of_the_named_or_only_container_is_chosen() {
        let records = vec![
            record("web-0", "web", "main", false),
            record("web-1", "web", "main", true),
            record("db-0", "db", "main", true),
        ];
        assert_eq!(
            running_container(&records, "default", "web", "").unwrap(),
            "web-1"
        );
        assert_eq!(
            running_container(&records, "default", "web", "main").unwrap(),
            "web-1"
        );
        assert_eq!(running_pod_uid(&records, "default", "db").unwrap(), "uid-1");
    }

    #[test]
    fn an_attached_containers_log_is_its_current_runs() {
        let mut running = record("web-1", "web", "main", true);
        running.labels.insert(LABEL_RESTARTS.into(), "2".into());
        let layout = PodLayout::new(std::path::Path::new("/data"));
        assert_eq!(
            run_log(&layout, &[running], "web-1").unwrap(),
            std::path::Path::new("/data/pods/default_web_uid-1/main/2.log")
        );
        assert!(run_log(&layout, &[], "web-1").is_none());
    }

    #[test]
    fn unknown_stopped_and_ambiguous_containers_are_refused_in_words() {
        let records = vec![
            record("a", "two", "app", true),
            record("b", "two", "sidecar", true),
            record("c", "done", "main", false),
        ];
        let e = running_container(&records, "default", "two", "").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("app, sidecar"), "{}", e.message());
        let e = running_container(&records, "default", "two", "nope").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(
            e.message(),
            "container nope not found in pod default/two (containers: app, sidecar)"
        );
        let e = running_container(&records, "default", "done", "").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            e.message(),
            "container main of pod default/done is not running"
        );
        let e = running_container(&records, "default", "ghost", "").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = running_pod_uid(&records, "default", "done").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }
}
