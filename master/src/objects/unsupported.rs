//! Fields skiff accepts and stores but does not act on yet (hostNetwork,
//! initContainers, persistentVolumeClaim volumes, NodePort and
//! LoadBalancer Services). Writes that use them are answered with a
//! warning per field (the REST API's `Warning` header, which kubectl
//! prints), so nothing is silently ignored.

use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::Object;
use skiff_proto::v1;

/// One warning per field of `object` that skiff does not act on yet.
pub fn warnings(object: &Object) -> Vec<String> {
    let mut out = Vec::new();
    match object.kind.as_ref() {
        Some(Body::Pod(pod)) => pod_spec(pod.spec.as_ref(), "spec", &mut out),
        Some(Body::Deployment(d)) => {
            let template = d.spec.as_ref().and_then(|s| s.template.as_ref());
            pod_spec(
                template.and_then(|t| t.spec.as_ref()),
                "spec.template.spec",
                &mut out,
            );
        }
        Some(Body::ReplicaSet(r)) => {
            let template = r.spec.as_ref().and_then(|s| s.template.as_ref());
            pod_spec(
                template.and_then(|t| t.spec.as_ref()),
                "spec.template.spec",
                &mut out,
            );
        }
        Some(Body::Service(service)) => {
            if let Some(spec) = &service.spec {
                match spec.r#type.as_str() {
                    "NodePort" => out.push(
                        "spec.type: NodePort is stored but skiff does not forward node ports yet; the Service is reachable at its clusterIP".to_owned(),
                    ),
                    "LoadBalancer" => out.push(
                        "spec.type: LoadBalancer is stored but skiff provisions no load balancer and forwards no node ports yet; the Service is reachable at its clusterIP".to_owned(),
                    ),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    out
}

fn pod_spec(spec: Option<&v1::PodSpec>, path: &str, out: &mut Vec<String>) {
    let Some(spec) = spec else {
        return;
    };
    if spec.host_network {
        out.push(format!(
            "{path}.hostNetwork: skiff does not run pods in the host's network yet; the pod gets a network namespace of its own"
        ));
    }
    if !spec.init_containers.is_empty() {
        out.push(format!(
            "{path}.initContainers: skiff does not run init containers yet; the pod's containers start without them"
        ));
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if v.persistent_volume_claim.is_some() {
            out.push(format!(
                "{path}.volumes.{i}.persistentVolumeClaim: skiff does not mount persistent volumes yet; the pod waits in ContainerCreating"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_skiff_ignores_gets_a_warning_naming_it() {
        let pod = Object {
            kind: Some(Body::Pod(v1::Pod {
                spec: Some(v1::PodSpec {
                    host_network: true,
                    init_containers: vec![v1::Container::default()],
                    volumes: vec![
                        v1::Volume {
                            name: "scratch".into(),
                            empty_dir: Some(v1::EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                        v1::Volume {
                            name: "data".into(),
                            persistent_volume_claim: Some(v1::PersistentVolumeClaimVolumeSource {
                                claim_name: "data".into(),
                                read_only: false,
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let w = warnings(&pod);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("spec.hostNetwork:"), "{w:?}");
        assert!(w[1].starts_with("spec.initContainers:"), "{w:?}");
        // Volumes skiff mounts are not warned about.
        assert!(
            w[2].starts_with("spec.volumes.1.persistentVolumeClaim:"),
            "{w:?}"
        );

        let service = |t: &str| Object {
            kind: Some(Body::Service(v1::Service {
                spec: Some(v1::ServiceSpec {
                    r#type: t.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        assert_eq!(warnings(&service("NodePort")).len(), 1);
        assert_eq!(warnings(&service("LoadBalancer")).len(), 1);
        assert!(warnings(&service("ClusterIP")).is_empty());

        let plain = Object {
            kind: Some(Body::Pod(v1::Pod::default())),
        };
        assert!(warnings(&plain).is_empty());
    }
}
