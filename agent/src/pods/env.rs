//! A container's environment as the kubelet makes it, each time the
//! container starts: first every `envFrom` source in order (each key of a
//! ConfigMap or Secret, prefixed), then every `env` entry in order: a plain
//! `value` with `$(VAR)` references to the variables made so far expanded
//! (`$$` is a literal `$`, an unknown reference stays as written), or a
//! `valueFrom` (a ConfigMap or Secret key, a pod field, a container
//! resource). A later variable of the same name replaces an earlier one.
//! A missing ConfigMap, Secret or key that is not `optional` is an error
//! in the kubelet's words (`configmap "x" not found`), which the pod's
//! status shows as `CreateContainerConfigError`; an optional one leaves
//! its variables out.
//!
//! The same expansion applies to the container's `command` and `args`
//! ([`expand`]), with the finished environment.

use std::collections::{BTreeMap, BTreeSet};

use skiff_objects::pods::container_config_references;
use skiff_proto::v1;

use crate::master_link::{ConfigData, ConfigKind};

use super::downward_api::{self, DownwardApiError, PodFacts};
use super::pod_config::ConfigObjects;

/// Why a container's environment could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The ConfigMap or Secret does not exist.
    #[error("{} {name:?} not found", .kind.resource())]
    Missing { kind: ConfigKind, name: String },
    /// It exists without the key.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: ConfigKind,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("env {name}: {source}")]
    DownwardApi {
        name: String,
        #[source]
        source: DownwardApiError,
    },
}

/// The ConfigMaps and Secrets `container`'s environment reads: the object
/// model's `container_config_references`, which is also what the masters
/// let this node read for the pod.
pub fn references(container: &v1::Container) -> BTreeSet<(ConfigKind, String)> {
    container_config_references(container)
        .into_iter()
        .map(ConfigKind::of_reference)
        .collect()
}

/// Variables in the order they were first set; setting one again
/// replaces its value in place.
#[derive(Debug, Default)]
struct Vars {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Vars {
    fn set(&mut self, name: String, value: String) {
        if !self.values.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.values.insert(name, value);
    }

    fn into_list(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .map(|name| {
                let value = self.values.remove(&name).unwrap_or_default();
                (name, value)
            })
            .collect()
    }
}

/// `container`'s environment (the pod spec's part; the image's comes
/// under it), from the ConfigMaps and Secrets in `objects`.
pub fn container_env(
    container: &v1::Container,
    facts: &PodFacts<'_>,
    objects: &ConfigObjects,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = facts
        .pod
        .metadata
        .as_ref()
        .map_or("", |m| m.namespace.as_str());
    let mut vars = Vars::default();
    for e in &container.env_from {
        let (kind, name, optional) = match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), _) => (ConfigKind::ConfigMap, &r.name, r.optional),
            (None, Some(r)) => (ConfigKind::Secret, &r.name, r.optional),
            (None, None) => continue,
        };
        let Some(data) = objects.get(kind, name) else {
            if optional.unwrap_or(false) {
                continue;
            }
            return Err(EnvError::Missing {
                kind,
                name: name.clone(),
            });
        };
        for (key, value) in &data.data {
            let var = format!("{}{key}", e.prefix);
            if is_env_name(&var) {
                vars.set(var, text(value));
            } else {
                tracing::debug!(%var, %kind, %name, "skipping a key that is no variable name");
            }
        }
    }
    for e in &container.env {
        let value = match &e.value_from {
            _ if !e.value.is_empty() => expand(&e.value, &vars.values),
            None => String::new(),
            Some(from) => {
                let optional_key = |kind: ConfigKind, name: &str, key: &str, optional| {
                    key_value(
                        objects.get(kind, name),
                        kind,
                        namespace,
                        name,
                        key,
                        optional,
                    )
                };
                let found = if let Some(r) = &from.config_map_key_ref {
                    optional_key(ConfigKind::ConfigMap, &r.name, &r.key, r.optional)?
                } else if let Some(r) = &from.secret_key_ref {
                    optional_key(ConfigKind::Secret, &r.name, &r.key, r.optional)?
                } else if let Some(f) = &from.field_ref {
                    let value = downward_api::field_value(facts, &f.field_path);
                    Some(value.map_err(|source| downward(&e.name, source))?)
                } else if let Some(r) = &from.resource_field_ref {
                    let value = downward_api::resource_value(facts, r, &container.name);
                    Some(value.map_err(|source| downward(&e.name, source))?)
                } else {
                    Some(String::new())
                };
                // An optional key that is missing sets nothing.
                let Some(found) = found else {
                    continue;
                };
                found
            }
        };
        vars.set(e.name.clone(), value);
    }
    Ok(vars.into_list())
}

fn downward(name: &str, source: DownwardApiError) -> EnvError {
    EnvError::DownwardApi {
        name: name.to_owned(),
        source,
    }
}

/// The value of `key` of the ConfigMap or Secret `name` (`data`, as
/// found), `None` when it or the key is missing and that is allowed.
fn key_value(
    data: Option<&ConfigData>,
    kind: ConfigKind,
    namespace: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, EnvError> {
    let optional = optional.unwrap_or(false);
    let Some(data) = data else {
        if optional {
            return Ok(None);
        }
        return Err(EnvError::Missing {
            kind,
            name: name.to_owned(),
        });
    };
    match data.data.get(key) {
        Some(value) => Ok(Some(text(value))),
        None if optional => Ok(None),
        None => Err(EnvError::MissingKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// A value as a variable holds it: text (invalid UTF-8 replaced).
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// A variable name as Kubernetes allows it: printable ASCII but `=`.
fn is_env_name(name: &str) -> bool {
    let allowed = |b: u8| (b' '..=b'~').contains(&b) && b != b'=';
    !name.is_empty() && name.bytes().all(allowed)
}

/// `container` with the `$(VAR)` references of its `command` and `args`
/// expanded from its finished environment `env`, as the kubelet runs it.
pub fn with_expanded_command(container: &v1::Container, env: &[(String, String)]) -> v1::Container {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    let mut out = container.clone();
    for arg in out.command.iter_mut().chain(out.args.iter_mut()) {
        *arg = expand(arg, &vars);
    }
    out
}

/// `input` with each `$(NAME)` replaced by the variable's value when
/// `vars` has it (kept as written when not), and `$$` by `$`, as
/// Kubernetes expands env values, commands and args.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            // `$$`: an escaped `$`.
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(end) => {
                    let name = &reference[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[end + 1..];
                }
                None => {
                    // An unclosed reference is kept as written.
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            // A `$` before anything else is kept, and so is what follows.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let known = vars(&[("A", "one"), ("EMPTY", ""), ("B", "$(A)")]);
        let cases = [
            ("plain", "plain"),
            ("$(A)", "one"),
            ("x-$(A)-y", "x-one-y"),
            ("$(A)$(A)", "oneone"),
            ("[$(EMPTY)]", "[]"),
            // Unknown references stay as written.
            ("$(NOPE)", "$(NOPE)"),
            // `$$` escapes: no expansion of what follows.
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$one"),
            ("cost: $$5", "cost: $5"),
            // A lone `$`, or one before anything but `(` or `$`, is kept.
            ("$", "$"),
            ("a$b", "a$b"),
            ("$(A", "$(A"),
            ("$()", "$()"),
            // Values are not expanded again.
            ("$(B)", "$(A)"),
            ("é$(A)ü", "éoneü"),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input, &known), expected, "{input}");
        }
    }

    #[test]
    fn commands_and_args_expand_from_the_finished_environment() {
        let container = v1::Container {
            command: vec!["sh".into(), "-c".into(), "echo $(GREETING)".into()],
            args: vec!["$(NAME)".into(), "$$(NAME)".into(), "$(NOPE)".into()],
            ..Default::default()
        };
        let env = [
            ("GREETING".to_owned(), "hi".to_owned()),
            ("NAME".to_owned(), "web".to_owned()),
        ];
        let expanded = with_expanded_command(&container, &env);
        assert_eq!(expanded.command, ["sh", "-c", "echo hi"]);
        assert_eq!(expanded.args, ["web", "$(NAME)", "$(NOPE)"]);
    }

    fn pod(containers: Vec<v1::Container>) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: "pi-1".into(),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn value(name: &str, value: &str) -> v1::EnvVar {
        v1::EnvVar {
            name: name.into(),
            value: value.into(),
            value_from: None,
        }
    }

    fn from(name: &str, source: v1::EnvVarSource) -> v1::EnvVar {
        v1::EnvVar {
            name: name.into(),
            value: String::new(),
            value_from: Some(source),
        }
    }

    fn config_map_key(name: &str, key: &str, optional: Option<bool>) -> v1::EnvVarSource {
        v1::EnvVarSource {
            config_map_key_ref: Some(v1::ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }
    }

    fn secret_key(name: &str, key: &str, optional: Option<bool>) -> v1::EnvVarSource {
        v1::EnvVarSource {
            secret_key_ref: Some(v1::SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }
    }

    fn env_from_config_map(name: &str, prefix: &str, optional: Option<bool>) -> v1::EnvFromSource {
        v1::EnvFromSource {
            prefix: prefix.into(),
            config_map_ref: Some(v1::ConfigMapEnvSource {
                name: name.into(),
                optional,
            }),
            secret_ref: None,
        }
    }

    fn env_from_secret(name: &str, optional: Option<bool>) -> v1::EnvFromSource {
        v1::EnvFromSource {
            prefix: String::new(),
            config_map_ref: None,
            secret_ref: Some(v1::SecretEnvSource {
                name: name.into(),
                optional,
            }),
        }
    }

    /// ConfigMap `app` (`mode`, `level`, a binary key and a key that is no
    /// variable name) and Secret `creds` (`password`).
    fn objects() -> ConfigObjects {
        let mut app = ConfigData::text(&[("mode", "fast"), ("level", "3"), ("bad=key", "x")]);
        app.binary_data.insert("blob".into(), vec![0, 1]);
        let mut objects = ConfigObjects::default();
        objects.insert(ConfigKind::ConfigMap, "app", Some(app));
        let creds = ConfigData::text(&[("password", "hunter2")]);
        objects.insert(ConfigKind::Secret, "creds", Some(creds));
        objects.insert(ConfigKind::ConfigMap, "gone", None);
        objects
    }

    fn resolve(container: v1::Container) -> Result<Vec<(String, String)>, EnvError> {
        let pod = pod(vec![container.clone()]);
        let allocatable = BTreeMap::new();
        let facts = PodFacts {
            pod: &pod,
            host_ip: "192.168.1.10",
            pod_ip: "10.42.0.7",
            node_allocatable: &allocatable,
        };
        container_env(&container, &facts, &objects())
    }

    fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn every_source_gives_its_variables_in_order() {
        let memory = v1::EnvVarSource {
            resource_field_ref: Some(v1::ResourceFieldSelector {
                resource: "limits.memory".into(),
                divisor: "1Mi".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let field = |path: &str| v1::EnvVarSource {
            field_ref: Some(v1::ObjectFieldSelector {
                api_version: "v1".into(),
                field_path: path.into(),
            }),
            ..Default::default()
        };
        let container = v1::Container {
            name: "main".into(),
            resources: Some(v1::ResourceRequirements {
                limits: [("memory".to_owned(), "64Mi".to_owned())].into(),
                requests: BTreeMap::new(),
            }),
            env_from: vec![
                env_from_config_map("app", "APP_", None),
                env_from_secret("creds", None),
            ],
            env: vec![
                value("GREETING", "hello $(APP_mode) $(password)"),
                from("MODE", config_map_key("app", "mode", None)),
                from("PASSWORD", secret_key("creds", "password", None)),
                from("POD", field("metadata.name")),
                from("POD_IP", field("status.podIP")),
                from("NODE", field("spec.nodeName")),
                from("MEMORY_MI", memory),
                value("URL", "http://$(POD_IP):8080/$(NOPE)"),
                // A later variable replaces an earlier one in place.
                value("APP_level", "9"),
                value("EMPTY", ""),
            ],
            ..Default::default()
        };
        let env = resolve(container).expect("an environment");
        assert_eq!(
            pairs(&env),
            [
                // Binary data and keys that are no variable names are left out.
                ("APP_level", "9"),
                ("APP_mode", "fast"),
                ("password", "hunter2"),
                ("GREETING", "hello fast hunter2"),
                ("MODE", "fast"),
                ("PASSWORD", "hunter2"),
                ("POD", "web"),
                ("POD_IP", "10.42.0.7"),
                ("NODE", "pi-1"),
                ("MEMORY_MI", "64"),
                ("URL", "http://10.42.0.7:8080/$(NOPE)"),
                ("EMPTY", ""),
            ]
        );
    }

    #[test]
    fn missing_objects_and_keys_are_errors_unless_optional() {
        let with = |env: Vec<v1::EnvVar>, env_from: Vec<v1::EnvFromSource>| v1::Container {
            name: "main".into(),
            env,
            env_from,
            ..Default::default()
        };
        let missing_map = EnvError::Missing {
            kind: ConfigKind::ConfigMap,
            name: "gone".into(),
        };
        let cases = [
            (
                with(vec![from("A", config_map_key("gone", "k", None))], vec![]),
                Err(missing_map.clone()),
            ),
            (
                with(vec![], vec![env_from_config_map("gone", "", None)]),
                Err(missing_map.clone()),
            ),
            (
                with(
                    vec![from("A", config_map_key("gone", "k", Some(false)))],
                    vec![],
                ),
                Err(missing_map),
            ),
            (
                with(vec![from("A", secret_key("nope", "k", None))], vec![]),
                Err(EnvError::Missing {
                    kind: ConfigKind::Secret,
                    name: "nope".into(),
                }),
            ),
            (
                with(vec![from("A", secret_key("creds", "user", None))], vec![]),
                Err(EnvError::MissingKey {
                    kind: ConfigKind::Secret,
                    namespace: "shop".into(),
                    name: "creds".into(),
                    key: "user".into(),
                }),
            ),
            // Optional: the variable is left out, the others stay.
            (
                with(
                    vec![
                        from("A", config_map_key("gone", "k", Some(true))),
                        from("B", secret_key("creds", "user", Some(true))),
                        value("C", "c"),
                    ],
                    vec![
                        env_from_config_map("gone", "X_", Some(true)),
                        env_from_secret("nope", Some(true)),
                    ],
                ),
                Ok(vec![("C".to_owned(), "c".to_owned())]),
            ),
        ];
        for (container, expected) in cases {
            let case = format!("{:?} {:?}", container.env, container.env_from);
            assert_eq!(resolve(container), expected, "{case}");
        }
        // In the kubelet's words.
        let missing = EnvError::Missing {
            kind: ConfigKind::ConfigMap,
            name: "x".into(),
        };
        assert_eq!(missing.to_string(), r#"configmap "x" not found"#);
        let missing = EnvError::Missing {
            kind: ConfigKind::Secret,
            name: "x".into(),
        };
        assert_eq!(missing.to_string(), r#"secret "x" not found"#);
        let no_key = EnvError::MissingKey {
            kind: ConfigKind::ConfigMap,
            namespace: "shop".into(),
            name: "app".into(),
            key: "k".into(),
        };
        assert_eq!(
            no_key.to_string(),
            "couldn't find key k in ConfigMap shop/app"
        );
    }

    #[test]
    fn references_name_every_config_map_and_secret_once() {
        let container = v1::Container {
            env: vec![
                from("A", config_map_key("app", "a", None)),
                from("B", config_map_key("app", "b", None)),
                from("C", secret_key("creds", "c", Some(true))),
                value("D", "d"),
            ],
            env_from: vec![env_from_config_map("more", "", None)],
            ..Default::default()
        };
        let found = references(&container);
        let names: Vec<(ConfigKind, &str)> = found
            .iter()
            .map(|(kind, name)| (*kind, name.as_str()))
            .collect();
        let expected = [
            (ConfigKind::ConfigMap, "app"),
            (ConfigKind::ConfigMap, "more"),
            (ConfigKind::Secret, "creds"),
        ];
        assert_eq!(names, expected);
    }
}
