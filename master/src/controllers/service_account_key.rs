//! The cluster's service account signing key, kept by the leader: when the
//! store holds no `kube-system/skiff-service-account-key` Secret (a new
//! cluster, or one made by a build without it), a new key is made and
//! stored, sealed under the cluster CA's key
//! (`security::service_account_key`). It is a create, so however many
//! leaders look, the cluster gets one key. A Secret that cannot be opened
//! is reported, not replaced: replacing it would refuse every token issued
//! with it; deleting it is the operator's choice.
//! Not a reconciler: a loop that looks at once and then periodically, as
//! [`super::default_storage_class`] does.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use crate::security::service_account_key::{SealingKey, KEY_NAMESPACE, KEY_SECRET};
use skiff_objects::Kind;

/// Looks again this often.
const RESYNC: Duration = Duration::from_secs(30);

/// Makes sure the store holds a signing key. Idempotent: nothing is
/// written when it does.
pub async fn reconcile(ctx: &Context, sealing: &SealingKey) -> Result<(), ReconcileError> {
    if let Some(stored) = ctx.store.get(Kind::Secret, KEY_NAMESPACE, KEY_SECRET)? {
        if let Err(e) = sealing.open_object(&stored) {
            tracing::error!(error = %e, "the service account signing key is unusable");
        }
        return Ok(());
    }
    let (secret, key) = sealing.new_key_secret()?;
    match ctx.writer.create(secret).await {
        Ok(_) => {
            tracing::info!(kid = %key.kid(), "made the cluster's service account signing key");
            Ok(())
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps a signing key while leading, until `shutdown`. A failed pass is
/// logged and tried again at the next.
pub async fn run(ctx: Context, sealing: Arc<SealingKey>, shutdown: CancellationToken) {
    loop {
        if let Err(e) = reconcile(&ctx, &sealing).await {
            tracing::warn!(error = %e, "cannot keep the service account signing key; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::recording::{context, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;

    fn sealing() -> SealingKey {
        skiff_security::install_crypto_provider();
        let ca = skiff_security::ClusterCa::generate().unwrap();
        SealingKey::from_ca_key(ca.key_pem()).unwrap()
    }

    /// The key the store holds, opened.
    fn stored_kid(objects: &RecordingObjects, sealing: &SealingKey) -> String {
        let stored = objects
            .get(Kind::Secret, KEY_NAMESPACE, KEY_SECRET)
            .unwrap()
            .expect("the key's Secret");
        // A document, as this release writes Secrets.
        assert!(skiff_objects::legacy_bodies::is_moved_document(&stored));
        sealing.open_object(&stored).unwrap().kid().to_owned()
    }

    #[tokio::test]
    async fn one_key_is_made_and_kept_and_a_new_one_made_once_it_is_deleted() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        let sealing = sealing();
        reconcile(&ctx, &sealing).await.unwrap();
        let writes = objects.writes();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(
            (writes[0].op, writes[0].kind, writes[0].name.as_str()),
            (WriteOp::Create, Kind::Secret, KEY_SECRET)
        );
        let first = stored_kid(&objects, &sealing);

        // Kept: another pass, or another leader's, writes nothing.
        objects.clear_writes();
        reconcile(&ctx, &sealing).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
        assert_eq!(stored_kid(&objects, &sealing), first);

        // Deleted: a new key.
        objects
            .remove(Kind::Secret, KEY_NAMESPACE, KEY_SECRET, "")
            .unwrap();
        objects.clear_writes();
        reconcile(&ctx, &sealing).await.unwrap();
        assert_eq!(objects.writes().len(), 1, "made again once deleted");
        assert_ne!(stored_kid(&objects, &sealing), first);
    }

    #[tokio::test]
    async fn a_key_sealed_under_another_ca_is_reported_and_left_alone() {
        let objects = RecordingObjects::new();
        let ctx = context(&objects);
        let (foreign, _) = sealing().new_key_secret().unwrap();
        objects.seed(foreign);
        reconcile(&ctx, &sealing()).await.unwrap();
        assert!(objects.writes().is_empty(), "{:?}", objects.writes());
    }
}
