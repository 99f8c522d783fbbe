//! `skiff.api.v1.Datastore` (`DatastoreService`): the operator's calls on
//! the datastore, for admins only (and masters relaying them).
//!
//! - Snapshots: saved by the leader into its `<data-dir>/snapshots/`,
//!   after it confirms its leadership with a quorum and applies everything
//!   committed before (a read index, as for a linearizable read), so every
//!   write acknowledged before the call is in. Listed and deleted on the
//!   leader, or with `local` on the master called.
//! - Membership, on the leader: every member with how far it has
//!   replicated and when it last answered; removing one; re-addressing one
//!   once the master answering at the new addresses says it is that member
//!   and advertises exactly them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use skiff_proto::api::datastore_client::DatastoreClient;
use skiff_proto::api::datastore_server::{Datastore, DatastoreServer};
use skiff_proto::api::{
    ClusterStatusRequest, DeleteSnapshotRequest, DeleteSnapshotResponse, ListSnapshotsRequest,
    ListSnapshotsResponse, MemberStatus, MembersRequest, MembersResponse, ReaddressMemberRequest,
    RemoveMemberRequest, SaveSnapshotRequest, SaveSnapshotResponse, StoredSnapshot,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::routing::LeaderRouter;
use super::transport::ClientTransport;
use super::{api_client, authz, ApiError, MAX_API_REQUEST, MAX_API_RESPONSE};
use crate::cluster::{Cluster, MembershipRefused};
use crate::datastore::snapshot_file::SnapshotInfo;
use crate::datastore::snapshots::{
    Listed, Origin, Saved, SnapshotDir, SnapshotsError, DEFAULT_NAME,
};
use crate::store::MemberNode;

/// How long a snapshot's leader may take to confirm its leadership.
const SAVE_CONFIRM_WITHIN: Duration = Duration::from_secs(10);
/// How long the master at a member's new address has to say who it is.
const IDENTIFY_WITHIN: Duration = Duration::from_secs(5);

/// Serves the datastore calls for one master.
pub struct DatastoreService {
    cluster: Cluster,
    router: LeaderRouter,
    transport: ClientTransport,
    snapshots: SnapshotDir,
    /// This master's advertised API address, for answers that say where a
    /// snapshot is.
    api_addr: String,
}

fn datastore_client(channel: Channel) -> DatastoreClient<Channel> {
    DatastoreClient::new(channel)
        .max_decoding_message_size(MAX_API_RESPONSE)
        .max_encoding_message_size(MAX_API_REQUEST)
}

fn stored(name: String, path: &Path, size: u64, info: &SnapshotInfo) -> StoredSnapshot {
    StoredSnapshot {
        name,
        size_bytes: size,
        revision: info.revision,
        created_unix: info.created_unix,
        objects: info.objects,
        checksum: String::new(),
        path: path.display().to_string(),
        error: String::new(),
        taken_by: info.node_id,
    }
}

impl From<Saved> for StoredSnapshot {
    fn from(saved: Saved) -> StoredSnapshot {
        StoredSnapshot {
            checksum: saved.checksum,
            ..stored(saved.name, &saved.path, saved.size, &saved.info)
        }
    }
}

impl From<Listed> for StoredSnapshot {
    fn from(listed: Listed) -> StoredSnapshot {
        match listed.info {
            Ok((info, checksum)) => StoredSnapshot {
                checksum,
                ..stored(listed.name, &listed.path, listed.size, &info)
            },
            Err(error) => StoredSnapshot {
                name: listed.name,
                size_bytes: listed.size,
                path: listed.path.display().to_string(),
                error,
                ..StoredSnapshot::default()
            },
        }
    }
}

/// Runs a blocking snapshot-directory operation off the async threads.
async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SnapshotsError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SnapshotsError::Task(e.to_string()))?
        .map_err(ApiError::from)
}

impl DatastoreService {
    /// `api_addr` is the API address this master advertises.
    pub fn new(
        cluster: Cluster,
        transport: ClientTransport,
        snapshots: SnapshotDir,
        api_addr: String,
    ) -> DatastoreService {
        DatastoreService {
            router: LeaderRouter::new(cluster.clone(), transport.clone()),
            cluster,
            transport,
            snapshots,
            api_addr,
        }
    }

    /// The tonic service with message limits applied.
    pub fn into_server(self) -> DatastoreServer<DatastoreService> {
        DatastoreServer::new(self)
            .max_decoding_message_size(MAX_API_REQUEST)
            .max_encoding_message_size(MAX_API_RESPONSE)
    }

    async fn save_local(
        &self,
        request: SaveSnapshotRequest,
    ) -> Result<SaveSnapshotResponse, ApiError> {
        self.cluster.linearize(SAVE_CONFIRM_WITHIN).await?;
        let name = if request.name.is_empty() {
            DEFAULT_NAME.to_owned()
        } else {
            request.name
        };
        let (dir, store, id) = (
            self.snapshots.clone(),
            self.cluster.store.clone(),
            self.cluster.id,
        );
        let saved =
            blocking(move || dir.save(&store, id, &name, Origin::OnDemand, SystemTime::now()))
                .await?;
        tracing::info!(
            snapshot = %saved.path.display(),
            revision = saved.info.revision,
            bytes = saved.size,
            "snapshot saved"
        );
        Ok(SaveSnapshotResponse {
            snapshot: Some(saved.into()),
            node_id: self.cluster.id,
            api_addr: self.api_addr.clone(),
        })
    }

    async fn list_local(&self) -> Result<ListSnapshotsResponse, ApiError> {
        let dir = self.snapshots.clone();
        let listed = blocking(move || dir.list()).await?;
        Ok(ListSnapshotsResponse {
            snapshots: listed.into_iter().map(StoredSnapshot::from).collect(),
            node_id: self.cluster.id,
            api_addr: self.api_addr.clone(),
        })
    }

    async fn delete_local(
        &self,
        request: DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, ApiError> {
        let dir = self.snapshots.clone();
        let name = request.name;
        blocking(move || dir.delete(&name)).await?;
        Ok(DeleteSnapshotResponse {
            node_id: self.cluster.id,
            api_addr: self.api_addr.clone(),
        })
    }

    /// The members as this master (the leader) sees them.
    fn member_statuses(&self) -> MembersResponse {
        let leader_id = self.cluster.leader().map_or(0, |(id, _)| id);
        let last_log_index = self
            .cluster
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or_default();
        let members = self
            .cluster
            .member_statuses()
            .into_iter()
            .map(|m| MemberStatus {
                node_id: m.id,
                raft_addr: m.node.raft_addr,
                api_addr: m.node.api_addr,
                voter: m.voter,
                leader: m.leader,
                matched_index: m.matched,
                last_contact_ms: m
                    .last_contact
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                version: m.release.as_ref().map(|r| r.version.clone()),
                data_format: m.release.map(|r| r.data_format),
            })
            .collect();
        MembersResponse {
            members,
            leader_id,
            last_log_index,
        }
    }

    async fn members_local(&self) -> Result<MembersResponse, ApiError> {
        Ok(self.member_statuses())
    }

    async fn remove_local(
        &self,
        request: RemoveMemberRequest,
    ) -> Result<MembersResponse, ApiError> {
        self.cluster.remove_member(request.node_id).await?;
        tracing::info!(member = request.node_id, "member removed from the cluster");
        Ok(self.member_statuses())
    }

    async fn readdress_local(
        &self,
        request: ReaddressMemberRequest,
    ) -> Result<MembersResponse, ApiError> {
        if request.node_id == 0 || request.raft_addr.is_empty() || request.api_addr.is_empty() {
            return Err(ApiError::Invalid(
                "re-addressing needs node_id, raft_addr and api_addr".to_owned(),
            ));
        }
        let id = request.node_id;
        let node = MemberNode {
            raft_addr: request.raft_addr,
            api_addr: request.api_addr,
        };
        if !self.cluster.members().iter().any(|(m, _, _)| *m == id) {
            return Err(MembershipRefused::NotAMember(id).into());
        }
        self.identify(id, &node).await?;
        self.cluster.readdress_member(id, node.clone()).await?;
        tracing::info!(member = id, %node, "member re-addressed");
        Ok(self.member_statuses())
    }

    /// Confirms that the master answering at `node`'s API address is
    /// member `id` and advertises exactly `node`'s addresses.
    async fn identify(&self, id: u64, node: &MemberNode) -> Result<(), ApiError> {
        let unverified = |reason: String| {
            ApiError::from(MembershipRefused::Unverified {
                id,
                node: node.clone(),
                reason,
            })
        };
        let channel = self
            .transport
            .channel(&node.api_addr)
            .map_err(|e| unverified(format!("{:?} is no API address: {e}", node.api_addr)))?;
        let mut request = Request::new(ClusterStatusRequest {});
        request.set_timeout(IDENTIFY_WITHIN);
        let status = api_client(channel)
            .cluster_status(request)
            .await
            .map_err(|s| {
                unverified(format!(
                    "no master answers at {}: {}",
                    node.api_addr,
                    s.message()
                ))
            })?
            .into_inner();
        if status.node_id != id {
            return Err(unverified(format!(
                "the master answering at {} is member {}",
                node.api_addr, status.node_id
            )));
        }
        if status.advertise_api != node.api_addr || status.advertise_raft != node.raft_addr {
            return Err(unverified(format!(
                "member {id} advertises raft={} api={}; restart it with --advertise-address \
                 (or --advertise-api and --advertise-raft) so that it advertises the new \
                 addresses, then ask again",
                status.advertise_raft, status.advertise_api
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Datastore for DatastoreService {
    async fn save_snapshot(
        &self,
        request: Request<SaveSnapshotRequest>,
    ) -> Result<Response<SaveSnapshotResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "save datastore snapshots")?;
        self.router
            .on_leader(
                request,
                |r| self.save_local(r),
                |ch, r| async move { datastore_client(ch).save_snapshot(r).await },
            )
            .await
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "list datastore snapshots")?;
        self.router
            .here_or_on_leader(
                request.get_ref().local,
                request,
                |_| self.list_local(),
                |ch, r| async move { datastore_client(ch).list_snapshots(r).await },
            )
            .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "delete datastore snapshots")?;
        self.router
            .here_or_on_leader(
                request.get_ref().local,
                request,
                |r| self.delete_local(r),
                |ch, r| async move { datastore_client(ch).delete_snapshot(r).await },
            )
            .await
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "list cluster members")?;
        self.router
            .on_leader(
                request,
                |_| self.members_local(),
                |ch, r| async move { datastore_client(ch).members(r).await },
            )
            .await
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "remove cluster members")?;
        self.router
            .on_leader(
                request,
                |r| self.remove_local(r),
                |ch, r| async move { datastore_client(ch).remove_member(r).await },
            )
            .await
    }

    async fn readdress_member(
        &self,
        request: Request<ReaddressMemberRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        authz::privileged(&authz::identity(&request)?, "re-address cluster members")?;
        self.router
            .on_leader(
                request,
                |r| self.readdress_local(r),
                |ch, r| async move { datastore_client(ch).readdress_member(r).await },
            )
            .await
    }
}
