//! The StorageClass every cluster has, kept by the leader as k3s ships it:
//! `local-path` (provisioner `rancher.io/local-path`, WaitForFirstConsumer,
//! reclaim Delete), marked the default class, so that a claim that names
//! no class gets a volume on the node of its first pod.
//!
//! It is created again when it is missing; one that exists is left as it
//! is (someone may have changed it, or made another class the default, on
//! purpose), as with the built-in Services ([`super::kubernetes_service`]).
//! Not a reconciler: a loop that looks at once and then periodically.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use skiff_objects::storage::{local_path_class, LOCAL_PATH_CLASS};
use skiff_objects::{IntoObject, Kind};

/// Looks again this often.
const RESYNC: Duration = Duration::from_secs(30);

/// Makes sure the `local-path` StorageClass exists. Idempotent: nothing is
/// written when it does.
pub async fn reconcile(ctx: &Context) -> Result<(), ReconcileError> {
    if ctx
        .store
        .get(Kind::StorageClass, "", LOCAL_PATH_CLASS)?
        .is_some()
    {
        return Ok(());
    }
    match ctx.writer.create(local_path_class().into_object()).await {
        Ok(_) => {
            tracing::info!(name = LOCAL_PATH_CLASS, "created the built-in StorageClass");
            Ok(())
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the built-in StorageClass while leading, until `shutdown`. A
/// failed pass is logged and tried again at the next.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    loop {
        if let Err(e) = reconcile(&ctx).await {
            tracing::warn!(error = %e, "cannot keep the local-path StorageClass; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use skiff_objects::storage::ClassView;

    #[tokio::test]
    async fn the_local_path_class_is_made_once_and_a_changed_one_left_alone() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        reconcile(&ctx).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(
            (writes[0].op, writes[0].kind, writes[0].name.as_str()),
            (WriteOp::Create, Kind::StorageClass, LOCAL_PATH_CLASS)
        );
        let class = objects
            .get(Kind::StorageClass, "", LOCAL_PATH_CLASS)
            .unwrap()
            .map(Arc::unwrap_or_clone)
            .and_then(|o| ClassView::read(&o))
            .expect("the class");
        assert!(class.default);
        assert!(class.waits_for_first_consumer());

        objects.clear_writes();
        reconcile(&ctx).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());

        objects
            .remove(Kind::StorageClass, "", LOCAL_PATH_CLASS, "")
            .unwrap();
        objects.clear_writes();
        reconcile(&ctx).await.unwrap();
        assert_eq!(objects.writes().len(), 1, "made again once deleted");
    }
}
