//! NodePorts for Services stored before skiff gave them: a NodePort or
//! LoadBalancer Service written by an earlier build has ports without a
//! `nodePort` (and a LoadBalancer with `externalTrafficPolicy: Local` no
//! `healthCheckNodePort`) until it is next written. Once per leadership,
//! when the leader's loops start, each such Service is written again as
//! stored: the write path (`ObjectWriter::update`, which runs
//! `node_ports::NodePorts::assign` on every Service update) fills in what
//! is missing from the node-port range, with the same checks as any
//! update. The update is conditional on the resourceVersion read; a
//! Service changed meanwhile is read again (a few times), and one that
//! still cannot be written is logged and left to its next write or the
//! next leadership. Not a reconciler: one pass over the Services.

use std::sync::Arc;

use skiff_proto::api::Object;
use tokio_util::sync::CancellationToken;

use super::{Context, ReconcileError};
use crate::node_ports::lacks_node_ports;
use skiff_objects::{services, Kind, ObjectExt};

/// How many times a Service changed under the pass is read again.
const CONFLICT_RETRIES: usize = 3;

fn lacks(object: &Object) -> bool {
    services::read(object).is_some_and(|s| lacks_node_ports(&s))
}

/// Writes every Service that lacks nodePorts again, once; answers how many
/// were written.
pub async fn backfill(ctx: &Context) -> Result<usize, ReconcileError> {
    let (services, _) = ctx.store.list(Kind::Service, None)?;
    let mut written = 0;
    for service in services.iter().filter(|s| lacks(s)) {
        let meta = service.meta();
        let (namespace, name) = (meta.namespace.clone(), meta.name.clone());
        let mut current: Arc<Object> = service.clone();
        for attempt in 0..=CONFLICT_RETRIES {
            match ctx.writer.update(Object::clone(&current)).await {
                Ok(_) => {
                    written += 1;
                    tracing::info!(%namespace, %name, "gave a Service stored without them its nodePorts");
                    break;
                }
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => {
                    match ctx.store.get(Kind::Service, &namespace, &name)? {
                        Some(again) if lacks(&again) => current = again,
                        // Gone, or given its ports by the write that won.
                        _ => break,
                    }
                }
                Err(e) if e.is_not_found() => break,
                Err(e) => {
                    tracing::warn!(%namespace, %name, error = %e, "cannot give a Service its missing nodePorts; it gets them at its next update");
                    break;
                }
            }
        }
    }
    Ok(written)
}

/// Runs [`backfill`] once while leading (unless `shutdown` comes first).
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        done = backfill(&ctx) => match done {
            Ok(0) => {}
            Ok(n) => tracing::info!(services = n, "nodePorts given to Services stored without them"),
            Err(e) => tracing::warn!(error = %e, "cannot look for Services stored without nodePorts"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::controllers::context::{ObjectWrites, WriteFuture};
    use crate::controllers::recording::{Failure, RecordingObjects, WriteOp};
    use crate::controllers::ObjectReads;
    use crate::node_ports::NodePorts;
    use crate::store::cache::ObjectCache;
    use skiff_objects::deletion::DeleteOptions;

    /// The write path as this pass meets it: Service updates get their
    /// nodePorts from the real allocator (as `ObjectWriter::update` gives
    /// them), then land in the recording store; each update is recorded.
    struct AllocatingWrites {
        objects: Arc<RecordingObjects>,
        ports: NodePorts,
        cache: ObjectCache,
        updates: Mutex<Vec<String>>,
    }

    impl ObjectWrites for AllocatingWrites {
        fn create(&self, object: Object) -> WriteFuture<'_> {
            ObjectWrites::create(&*self.objects, object)
        }

        fn update(&self, mut object: Object) -> WriteFuture<'_> {
            let meta = object.meta().clone();
            self.updates.lock().unwrap().push(meta.name.clone());
            let old = self
                .objects
                .get(Kind::Service, &meta.namespace, &meta.name)
                .ok()
                .flatten()
                .and_then(|o| services::read(&o));
            if let Some(mut service) = services::read(&object) {
                if let Err(e) = self.ports.assign(&self.cache, &mut service, old.as_ref()) {
                    return Box::pin(std::future::ready(Err(e.into())));
                }
                services::set_spec(&mut object, service.spec.unwrap_or_default());
            }
            ObjectWrites::update(&*self.objects, object)
        }

        fn update_status(&self, object: Object) -> WriteFuture<'_> {
            ObjectWrites::update_status(&*self.objects, object)
        }

        fn delete_with<'a>(
            &'a self,
            kind: Kind,
            namespace: &'a str,
            name: &'a str,
            options: DeleteOptions,
        ) -> WriteFuture<'a> {
            self.objects.delete_with(kind, namespace, name, options)
        }
    }

    const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: old-np}
spec: {type: NodePort, selector: {app: a}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: old-lb}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: fine}
spec: {type: NodePort, ports: [{port: 80, nodePort: 30081}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec: {ports: [{port: 80}]}
"#;

    fn setup() -> (Arc<RecordingObjects>, Arc<AllocatingWrites>, Context) {
        let objects = RecordingObjects::new();
        objects.seed_yaml(SERVICES);
        objects.clear_writes();
        let writes = Arc::new(AllocatingWrites {
            objects: objects.clone(),
            ports: NodePorts::new(Default::default()),
            cache: ObjectCache::default(),
            updates: Mutex::default(),
        });
        let registry = skiff_telemetry::Registry::new();
        let ctx = Context::new(
            objects.clone(),
            writes.clone(),
            registry.histogram("test_binding_seconds", "Binding latency in tests.", &[]),
        );
        (objects, writes, ctx)
    }

    fn service_of(objects: &RecordingObjects, name: &str) -> services::Service {
        let stored = objects.get(Kind::Service, "default", name).unwrap();
        match stored.as_deref().and_then(services::read) {
            Some(s) => s,
            None => panic!("no Service {name}: {stored:?}"),
        }
    }

    fn node_port_of(objects: &RecordingObjects, name: &str) -> i32 {
        services::node_port(&services::ports(&service_of(objects, name))[0])
    }

    #[tokio::test]
    async fn only_services_lacking_ports_are_written_again_and_get_them() {
        let (objects, writes, ctx) = setup();
        assert_eq!(backfill(&ctx).await.unwrap(), 2);
        let mut updated = writes.updates.lock().unwrap().clone();
        updated.sort();
        assert_eq!(updated, ["old-lb", "old-np"]);
        // Updates of those Services, nothing else.
        assert!(objects
            .writes()
            .iter()
            .all(|w| w.op == WriteOp::Update && w.kind == Kind::Service));
        let node_port = node_port_of(&objects, "old-np");
        assert!((30000..=32767).contains(&node_port), "{node_port}");
        assert_eq!(node_port_of(&objects, "old-lb"), 30080, "kept");
        let lb = service_of(&objects, "old-lb");
        assert_ne!(services::health_check_node_port(&lb), 0);
        // A second leadership finds nothing to do.
        writes.updates.lock().unwrap().clear();
        assert_eq!(backfill(&ctx).await.unwrap(), 0);
        assert!(writes.updates.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_conflict_is_read_again_and_other_failures_are_left() {
        let (objects, _writes, ctx) = setup();
        objects.fail_next(
            WriteOp::Update,
            Kind::Service,
            Some("old-np"),
            Failure::Conflict,
        );
        objects.fail_next(
            WriteOp::Update,
            Kind::Service,
            Some("old-lb"),
            Failure::Unavailable,
        );
        assert_eq!(backfill(&ctx).await.unwrap(), 1);
        assert_ne!(node_port_of(&objects, "old-np"), 0);
        let lb = service_of(&objects, "old-lb");
        assert_eq!(services::health_check_node_port(&lb), 0);
    }
}
