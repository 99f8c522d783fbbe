//! A pod's image pull Secrets (`spec.imagePullSecrets`, and those its
//! service account gave it when it was created) read for a pull: each
//! Secret from the masters (which let this node read it because a pod
//! bound here names it), its Docker config into a
//! [`PullKeyring`] whose credentials for the image's registry the pull
//! tries in turn. As the kubelet does, a Secret that is missing or holds no
//! Docker config does not stop the pull: it is tried without it, and what
//! went wrong is kept ([`PullSecrets::problems`]) for the pod's Event and,
//! if the pull then fails, its status.

use std::collections::BTreeSet;

use skiff_proto::v1;

use crate::master_link::{ConfigKind, ConfigSource};
use crate::runtime::docker_config::PullKeyring;

use super::pod_config::PodConfig;

/// The credentials of a pod's pull Secrets, and the Secrets that could
/// not give any.
#[derive(Debug, Default)]
pub struct PullSecrets {
    pub keyring: PullKeyring,
    /// Why a named Secret gave nothing (`secret "regcred" not found`),
    /// one per Secret.
    pub problems: Vec<String>,
}

impl PullSecrets {
    /// The kubelet's Event message when some could not be read.
    pub fn event_message(&self) -> String {
        format!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
            self.problems.join("; ")
        )
    }

    /// A failed pull's message, with what went wrong with the Secrets.
    pub fn explain(&self, pull_error: &str) -> String {
        if self.problems.is_empty() {
            pull_error.to_owned()
        } else {
            format!(
                "{pull_error} (imagePullSecrets: {})",
                self.problems.join("; ")
            )
        }
    }
}

/// The names of `spec`'s pull Secrets, each once, in order.
pub fn names(spec: &v1::PodSpec) -> Vec<String> {
    let mut seen = BTreeSet::new();
    spec.image_pull_secrets
        .iter()
        .map(|r| r.name.clone())
        .filter(|name| !name.is_empty() && seen.insert(name.clone()))
        .collect()
}

/// Reads `pod`'s pull Secrets from `source` (the last answer standing in
/// while no master answers, as for its other Secrets).
pub async fn read(config: &mut PodConfig, source: &dyn ConfigSource, pod: &v1::Pod) -> PullSecrets {
    let mut out = PullSecrets::default();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    let namespace = pod.metadata.as_ref().map_or("", |m| m.namespace.as_str());
    for name in names(spec) {
        let wanted: BTreeSet<(ConfigKind, String)> = [(ConfigKind::Secret, name.clone())].into();
        let objects = match config.read(source, namespace, &wanted).await {
            Ok(objects) => objects,
            Err(e) => {
                out.problems.push(e.to_string());
                continue;
            }
        };
        let Some(secret) = objects.get(ConfigKind::Secret, &name) else {
            out.problems.push(format!("secret {name:?} not found"));
            continue;
        };
        match out.keyring.add_secret(&name, &secret.data) {
            Ok(0) => out
                .problems
                .push(format!("secret {name:?} has no registry credentials")),
            Ok(_) => {}
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master_link::{ConfigData, StaticConfigSource};

    fn pod(secrets: &[&str]) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                image_pull_secrets: secrets
                    .iter()
                    .map(|n| v1::LocalObjectReference { name: (*n).into() })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn docker_config_secrets_become_credentials_and_the_others_problems() {
        let source = StaticConfigSource::default();
        let config =
            r#"{"auths": {"127.0.0.1:5000": {"username": "skiff", "password": "s3cret"}}}"#;
        let regcred = ConfigData {
            data: [(".dockerconfigjson".to_owned(), config.as_bytes().to_vec())].into(),
            ..Default::default()
        };
        source.put(ConfigKind::Secret, "shop", "regcred", regcred);
        source.put(
            ConfigKind::Secret,
            "shop",
            "opaque",
            ConfigData::text(&[("a", "b")]),
        );
        let pod = pod(&["regcred", "missing", "opaque", "regcred", ""]);
        assert_eq!(
            names(pod.spec.as_ref().unwrap()),
            ["regcred", "missing", "opaque"]
        );
        let mut cache = PodConfig::default();
        let read = read(&mut cache, &source, &pod).await;
        let found = read.keyring.lookup("127.0.0.1:5000", "team/app");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].username, "skiff");
        assert_eq!(read.problems.len(), 2, "{:?}", read.problems);
        assert_eq!(read.problems[0], r#"secret "missing" not found"#);
        assert!(
            read.problems[1].starts_with(r#"secret "opaque" has neither"#),
            "{:?}",
            read.problems
        );
        assert_eq!(
            read.explain("image x: 401 Unauthorized"),
            r#"image x: 401 Unauthorized (imagePullSecrets: secret "missing" not found; secret "opaque" has neither a .dockerconfigjson nor a .dockercfg key; make it with `kubectl create secret docker-registry`)"#
        );
        assert!(read.event_message().starts_with(
            "Unable to retrieve some image pull secrets (secret \"missing\" not found; "
        ));
        // A pod without any reads nothing.
        let none = super::read(&mut cache, &source, &pod_without()).await;
        assert!(none.keyring.is_empty() && none.problems.is_empty());
        assert_eq!(none.explain("e"), "e");
    }

    fn pod_without() -> v1::Pod {
        pod(&[])
    }
}
