//! The data format every master of the cluster has named, recorded in the
//! replicated store: the ConfigMap `kube-system/skiff-data-format`.
//!
//! The leader writes each moved kind (`skiff_objects::legacy_bodies`) in
//! the encoding the lowest data format among the members reads, as named
//! in their Raft answers (`Cluster::members_data_format`). A member that
//! has not answered since this master started (one that is down) names
//! none, and without a record the leader would write every moved kind in
//! its protobuf model again, refusing what the model cannot hold: a pod
//! with a node affinity, or an agent's status report of one, while one
//! master of three is down. Once every member has named a format, the
//! leader records it ([`run`]), and every leader after it writes at least
//! that format (`Cluster::recorded_data_format` reads the record). A
//! member that named it has opened its data dir with a
//! release that reads it, and an older release refuses that data dir
//! ("downgrade refused"), so no master of an older release can read the
//! log again. (A master of an older release joining afresh, with an empty
//! data dir, is not refused yet.)

use std::time::Duration;

use skiff_objects::{generic, Kind, ObjectExt};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::cluster::{recorded_format_of, DATA_FORMAT_KEY, DATA_FORMAT_RECORD};
use crate::writer::ObjectWriter;

/// How often the leader looks whether every member names a later format.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The record of `format`.
pub fn record(format: u32) -> Object {
    let (namespace, name) = DATA_FORMAT_RECORD;
    let mut document = v1::GenericObject {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        metadata: Some(v1::ObjectMeta {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ..Default::default()
        }),
        content: Vec::new(),
    };
    let content = serde_json::json!({ "data": { DATA_FORMAT_KEY: format.to_string() } });
    if let serde_json::Value::Object(map) = content {
        generic::set_content(&mut document, &map);
    }
    Object {
        kind: Some(Body::Generic(document)),
    }
}

/// On the leader, until `term` ends: records the format every member
/// names, whenever it is later than the one recorded.
pub async fn run(writer: ObjectWriter, term: CancellationToken) {
    let mut look = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = look.tick() => {}
        }
        if let Err(e) = record_named(&writer).await {
            tracing::debug!(error = %e, "cannot record the cluster's data format yet");
        }
    }
}

/// Records the format every member names, if it is later than the one
/// recorded; answers the format recorded now.
pub async fn record_named(writer: &ObjectWriter) -> crate::writer::Result<u32> {
    let cluster = writer.cluster();
    let named = cluster.members_named_format();
    let (namespace, name) = DATA_FORMAT_RECORD;
    let stored = cluster.store.cache().get(Kind::ConfigMap, namespace, name);
    let recorded = stored.as_deref().and_then(recorded_format_of).unwrap_or(0);
    if named <= recorded {
        return Ok(recorded);
    }
    let mut object = record(named);
    match stored {
        Some(stored) => {
            if let Ok(meta) = object.meta_mut() {
                meta.resource_version = stored.meta().resource_version.clone();
            }
            writer.update(object).await?;
        }
        None => {
            writer.create(object).await?;
        }
    }
    tracing::info!(
        format = named,
        "every master reads this data format: recorded"
    );
    Ok(named)
}

#[cfg(test)]
mod tests {
    use skiff_objects::{legacy_bodies, pods};

    use super::*;
    use crate::store::MemberNode;

    #[tokio::test]
    async fn once_every_member_named_a_format_a_silent_member_does_not_turn_the_cluster_back() {
        let (_dir, writer) = crate::writer::tests::one_member().await;
        let namespace = skiff_objects::namespaces::named(DATA_FORMAT_RECORD.0, "");
        writer.create(namespace).await.unwrap();
        let latest = legacy_bodies::LATEST_FORMAT;
        assert_eq!(writer.cluster().recorded_data_format(), 0);
        assert_eq!(record_named(&writer).await.unwrap(), latest);
        assert_eq!(writer.cluster().recorded_data_format(), latest);
        // A member that has not answered (down, say) names nothing.
        let learner = MemberNode {
            raft_addr: "127.0.0.1:9".into(),
            api_addr: "127.0.0.1:9".into(),
        };
        let raft = &writer.cluster().raft;
        raft.add_learner(2, learner, false).await.unwrap();
        assert_eq!(writer.cluster().members_named_format(), 0);
        assert_eq!(writer.cluster().members_data_format(), latest, "the record");
        // The record is not lowered.
        assert_eq!(record_named(&writer).await.unwrap(), latest);
        assert_eq!(writer.cluster().recorded_data_format(), latest);
        // A pod with a field the protobuf model lacks is written as a
        // document still.
        let pod = serde_json::json!({"spec": {
            "os": {"name": "linux"},
            "containers": [{"name": "c", "image": "busybox"}],
        }});
        let meta = v1::ObjectMeta {
            name: "placed".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let placed = generic::document("v1", "Pod", Some(meta), pod);
        let stored = writer
            .create(Object {
                kind: Some(Body::Generic(placed)),
            })
            .await
            .unwrap();
        let read = pods::read(&stored).unwrap();
        assert_eq!(read.spec.unwrap().os.unwrap().name, "linux");
    }
}
