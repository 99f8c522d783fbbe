//! A typed client of the skiff API, used by `skiff ctl`, agents, the
//! benchmarks and the tests. gRPC statuses come back as [`ClientError`]s
//! that say what happened in Kubernetes terms.

use std::time::Duration;

use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::datastore_client::DatastoreClient;
use skiff_proto::api::pod_sessions_client::PodSessionsClient;
use skiff_proto::api::{
    ClusterStatusRequest, ClusterStatusResponse, CreateRequest, DeleteRequest,
    DeleteSnapshotRequest, DeleteSnapshotResponse, GetRequest, ListRequest, ListResponse,
    ListSnapshotsRequest, ListSnapshotsResponse, MembersRequest, MembersResponse, Object,
    ReaddressMemberRequest, RemoveMemberRequest, SaveSnapshotRequest, SaveSnapshotResponse,
    UpdateRequest, WatchEvent, WatchRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::api::transport::ClientTransport;
use crate::api::{MAX_API_REQUEST, MAX_API_RESPONSE};
use skiff_objects::{legacy_bodies, Kind};

/// Why a call failed, in the terms of the API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("bad server address {addr:?}: {message}")]
    BadAddress { addr: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The watched revision is gone: list again.
    #[error("{0}")]
    Compacted(String),
    /// No leader, or the master could not be reached: retry.
    #[error("skiff API at {addr} unavailable: {message}")]
    Unavailable { addr: String, message: String },
    #[error("skiff API at {addr}: {code:?}: {message}")]
    Other {
        addr: String,
        code: Code,
        message: String,
    },
}

impl ClientError {
    pub fn from_status(addr: &str, status: Status) -> ClientError {
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => ClientError::NotFound(message),
            Code::AlreadyExists => ClientError::AlreadyExists(message),
            Code::Aborted => ClientError::Conflict(message),
            Code::InvalidArgument | Code::ResourceExhausted => ClientError::Invalid(message),
            Code::OutOfRange => ClientError::Compacted(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                ClientError::Unavailable {
                    addr: addr.to_owned(),
                    message,
                }
            }
            code => ClientError::Other {
                addr: addr.to_owned(),
                code,
                message,
            },
        }
    }

    /// Whether a delete's uid precondition did not hold: the object was
    /// replaced by another of its name.
    pub fn is_uid_mismatch(&self) -> bool {
        matches!(
            self,
            ClientError::Other {
                code: Code::FailedPrecondition,
                message,
                ..
            } if message.contains("UID in precondition")
        )
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one master's API.
#[derive(Clone)]
pub struct Client {
    api: ApiClient<Channel>,
    datastore: DatastoreClient<Channel>,
    sessions: PodSessionsClient<Channel>,
    addr: String,
}

/// How long a snapshot may take to save (the leader writes the whole
/// store).
const SAVE_SNAPSHOT_WITHIN: Duration = Duration::from_secs(300);

/// A running watch: changes in revision order.
pub struct Watch {
    stream: tonic::Streaming<WatchEvent>,
    addr: String,
}

impl Watch {
    /// The next change; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>> {
        let event = self
            .stream
            .message()
            .await
            .map_err(|s| ClientError::from_status(&self.addr, s))?;
        Ok(event.map(|mut event| {
            event.object = event.object.map(legacy_bodies::to_document);
            event.previous = event.previous.map(legacy_bodies::to_document);
            event
        }))
    }
}

/// `message` as a request that names the data format this client reads
/// (`skiff_objects::legacy_bodies`): a master answers with the kinds held
/// as documents as documents.
fn reading_documents<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        legacy_bodies::FORMAT_HEADER,
        tonic::metadata::MetadataValue::from(legacy_bodies::LATEST_FORMAT),
    );
    request
}

/// A list's objects as documents, whatever a master of an older release
/// answered.
fn documents_of(mut list: ListResponse) -> ListResponse {
    list.items = list
        .items
        .into_iter()
        .map(legacy_bodies::to_document)
        .collect();
    list
}

impl Client {
    /// A client for the master at `addr` (`host:port`). Connects lazily, so
    /// this fails only on a malformed address.
    pub fn new(addr: &str, transport: &ClientTransport) -> Result<Client> {
        let channel = transport
            .channel(addr)
            .map_err(|e| ClientError::BadAddress {
                addr: addr.to_owned(),
                message: e.to_string(),
            })?;
        let api = ApiClient::new(channel.clone())
            .max_decoding_message_size(MAX_API_RESPONSE)
            .max_encoding_message_size(MAX_API_REQUEST);
        let datastore = DatastoreClient::new(channel.clone())
            .max_decoding_message_size(MAX_API_RESPONSE)
            .max_encoding_message_size(MAX_API_REQUEST);
        let sessions = PodSessionsClient::new(channel);
        Ok(Client {
            api,
            datastore,
            sessions,
            addr: addr.to_owned(),
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn status(&self, s: Status) -> ClientError {
        ClientError::from_status(&self.addr, s)
    }

    /// Refuses, before sending, a request the API would refuse for size.
    fn check_size(message: &impl prost::Message) -> Result<()> {
        let len = message.encoded_len();
        if len > MAX_API_REQUEST {
            return Err(ClientError::Invalid(format!(
                "request is {len} bytes; the API accepts at most {MAX_API_REQUEST} bytes"
            )));
        }
        Ok(())
    }

    pub async fn create(&self, object: Object) -> Result<Object> {
        Self::check_size(&object)?;
        let request = CreateRequest {
            object: Some(legacy_bodies::for_any_reader(object)),
        };
        let mut api = self.api.clone();
        api.create(reading_documents(request))
            .await
            .map(|r| legacy_bodies::to_document(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        let request = GetRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            serializable: false,
        };
        let mut api = self.api.clone();
        api.get(reading_documents(request))
            .await
            .map(|r| legacy_bodies::to_document(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    /// Every object of a kind; an empty namespace lists all namespaces.
    pub async fn list(&self, kind: Kind, namespace: &str) -> Result<ListResponse> {
        let request = ListRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            serializable: false,
            selecting: None,
            exact_revision: 0,
        };
        let mut api = self.api.clone();
        api.list(reading_documents(request))
            .await
            .map(|r| documents_of(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    /// Like [`Client::list`], but read from this master's own replica
    /// without asking the leader: fast, possibly a little behind.
    pub async fn list_local(&self, kind: Kind, namespace: &str) -> Result<ListResponse> {
        let request = ListRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            serializable: true,
            selecting: None,
            exact_revision: 0,
        };
        let mut api = self.api.clone();
        api.list(reading_documents(request))
            .await
            .map(|r| documents_of(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    /// Replaces metadata and spec; conditional when `resourceVersion` is set.
    pub async fn update(&self, object: Object) -> Result<Object> {
        Self::check_size(&object)?;
        let request = UpdateRequest {
            object: Some(legacy_bodies::for_any_reader(object)),
        };
        let mut api = self.api.clone();
        api.update(reading_documents(request))
            .await
            .map(|r| legacy_bodies::to_document(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    /// Replaces status only; conditional when `resourceVersion` is set.
    pub async fn update_status(&self, object: Object) -> Result<Object> {
        Self::check_size(&object)?;
        let request = UpdateRequest {
            object: Some(legacy_bodies::for_any_reader(object)),
        };
        let mut api = self.api.clone();
        api.update_status(reading_documents(request))
            .await
            .map(|r| legacy_bodies::to_document(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    /// Deletes an object with the default options (Background; a pod bound
    /// to a node stays, terminating, until its node has stopped it); with a
    /// non-empty `resource_version`, only at that version.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Result<Object> {
        let request = DeleteRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            resource_version: resource_version.to_owned(),
            ..DeleteRequest::default()
        };
        self.send_delete(request).await
    }

    async fn send_delete(&self, request: DeleteRequest) -> Result<Object> {
        let mut api = self.api.clone();
        api.delete(reading_documents(request))
            .await
            .map(|r| legacy_bodies::to_document(r.into_inner()))
            .map_err(|s| self.status(s))
    }

    /// Deletes an object with the default options, only while it has
    /// `uid`: one recreated under its name in between fails with
    /// `ClientError::is_uid_mismatch`, as an eviction's
    /// delete does in Kubernetes.
    pub async fn delete_with_uid(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Object> {
        let request = DeleteRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            ..DeleteRequest::default()
        };
        self.send_delete(request).await
    }

    /// Streams every change of `kind` after `from_revision`.
    pub async fn watch(&self, kind: Kind, namespace: &str, from_revision: u64) -> Result<Watch> {
        let request = WatchRequest {
            kind: kind.name().to_owned(),
            namespace: namespace.to_owned(),
            from_revision,
            with_previous: false,
        };
        let mut api = self.api.clone();
        let stream = api
            .watch(reading_documents(request))
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        Ok(Watch {
            stream,
            addr: self.addr.clone(),
        })
    }

    /// A container's log as a stream of chunks (see `PodLogsRequest`).
    pub async fn pod_logs(
        &self,
        request: skiff_proto::api::PodLogsRequest,
    ) -> Result<tonic::Streaming<skiff_proto::api::LogChunk>> {
        let mut api = self.api.clone();
        Ok(api
            .pod_logs(request)
            .await
            .map_err(|s| self.status(s))?
            .into_inner())
    }

    /// Opens an exec session: `input`'s first message says what to run
    /// (`ExecStart`), the rest are stdin, resizes and the end of stdin.
    pub async fn exec(
        &self,
        input: impl tokio_stream::Stream<Item = skiff_proto::api::ExecInput> + Send + 'static,
    ) -> Result<tonic::Streaming<skiff_proto::api::ExecOutput>> {
        let mut sessions = self.sessions.clone();
        Ok(sessions
            .exec(input)
            .await
            .map_err(|s| self.status(s))?
            .into_inner())
    }

    /// Opens one port-forward connection: `input`'s first message says
    /// where to (`PortForwardStart`), the rest are the bytes to send.
    pub async fn port_forward(
        &self,
        input: impl tokio_stream::Stream<Item = skiff_proto::api::PortForwardInput> + Send + 'static,
    ) -> Result<tonic::Streaming<skiff_proto::api::PortForwardOutput>> {
        let mut sessions = self.sessions.clone();
        Ok(sessions
            .port_forward(input)
            .await
            .map_err(|s| self.status(s))?
            .into_inner())
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse> {
        let mut api = self.api.clone();
        api.cluster_status(ClusterStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// Saves a snapshot of the store on the leader, named
    /// `<name>-<unix-time>` (`on-demand-…` for an empty name).
    pub async fn save_snapshot(&self, name: &str) -> Result<SaveSnapshotResponse> {
        let mut datastore = self.datastore.clone();
        let mut request = tonic::Request::new(SaveSnapshotRequest {
            name: name.to_owned(),
        });
        request.set_timeout(SAVE_SNAPSHOT_WITHIN);
        datastore
            .save_snapshot(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// The leader's snapshots (`local`: this master's), oldest first.
    pub async fn list_snapshots(&self, local: bool) -> Result<ListSnapshotsResponse> {
        let mut datastore = self.datastore.clone();
        datastore
            .list_snapshots(ListSnapshotsRequest { local })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// Deletes a snapshot of the leader's (`local`: of this master's).
    pub async fn delete_snapshot(&self, name: &str, local: bool) -> Result<DeleteSnapshotResponse> {
        let mut datastore = self.datastore.clone();
        let request = DeleteSnapshotRequest {
            name: name.to_owned(),
            local,
        };
        datastore
            .delete_snapshot(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// The masters, as the leader sees them.
    pub async fn members(&self) -> Result<MembersResponse> {
        let mut datastore = self.datastore.clone();
        datastore
            .members(MembersRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// Removes master `node_id` from the cluster.
    pub async fn remove_member(&self, node_id: u64) -> Result<MembersResponse> {
        let mut datastore = self.datastore.clone();
        let mut request = tonic::Request::new(RemoveMemberRequest { node_id });
        request.set_timeout(Duration::from_secs(60));
        datastore
            .remove_member(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// Records new addresses for master `node_id`.
    pub async fn readdress_member(
        &self,
        node_id: u64,
        raft_addr: &str,
        api_addr: &str,
    ) -> Result<MembersResponse> {
        let mut datastore = self.datastore.clone();
        let mut request = tonic::Request::new(ReaddressMemberRequest {
            node_id,
            raft_addr: raft_addr.to_owned(),
            api_addr: api_addr.to_owned(),
        });
        request.set_timeout(Duration::from_secs(60));
        datastore
            .readdress_member(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }

    /// Asks the cluster to add a master (forwarded to the leader).
    pub async fn join(
        &self,
        node_id: u64,
        raft_addr: &str,
        api_addr: &str,
    ) -> Result<skiff_proto::api::JoinResponse> {
        let mut api = self.api.clone();
        let mut request = tonic::Request::new(skiff_proto::api::JoinRequest {
            node_id,
            raft_addr: raft_addr.to_owned(),
            api_addr: api_addr.to_owned(),
        });
        request.set_timeout(Duration::from_secs(120));
        api.join_cluster(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.status(s))
    }
}
