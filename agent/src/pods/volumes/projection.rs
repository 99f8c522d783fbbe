//! What the files of configMap, secret, downwardAPI and projected volumes
//! hold, as the kubelet projects them: every key of the ConfigMap
//! (`data` and `binaryData`) or Secret as a file named after it, or only
//! the `items` listed, each at its `path`; pod fields and container
//! resources for downwardAPI items; the sources of a projected volume
//! together in one directory. Each file gets its item's `mode`, else the
//! volume's `defaultMode`. A missing object is an error unless `optional`
//! (then it gives no files), and so is a listed key it lacks. A projected
//! `serviceAccountToken` source is the pod's token ([`tokens`] says which
//! are asked for; the pod's `PodConfig` holds and refreshes them) at its
//! `path`, with the volume's mode.

use std::collections::BTreeSet;

use skiff_objects::pods::volume_config_references;
use skiff_proto::v1;

use crate::master_link::{ConfigData, ConfigKind, TokenWanted};
use crate::pods::downward_api::{self, DownwardApiError, PodFacts};
use crate::pods::pod_config::ConfigObjects;

use super::atomic_writer::{FileEntry, Payload};

// The mode of a volume's files when neither the item nor the volume sets
// one (0644): what the master's defaulting writes too.
use skiff_objects::defaults::DEFAULT_VOLUME_FILE_MODE as DEFAULT_MODE;

/// Why a volume's files could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The ConfigMap or Secret does not exist.
    #[error("{} {name:?} not found", .kind.resource())]
    Missing { kind: ConfigKind, name: String },
    /// An item names a key the object lacks.
    #[error("{} {name:?} references non-existent key: {key}", .kind.resource())]
    MissingKey {
        kind: ConfigKind,
        name: String,
        key: String,
    },
    /// A token the volume asks for was not read (a defect of the caller).
    #[error("no service account token was read for {path:?}")]
    NoToken { path: String },
    #[error("item {path}: {source}")]
    DownwardApi {
        path: String,
        #[source]
        source: DownwardApiError,
    },
}

/// The ConfigMaps and Secrets `volume` projects: the object model's
/// `volume_config_references`, which is also what the masters let this
/// node read for the pod.
pub fn references(volume: &v1::Volume) -> BTreeSet<(ConfigKind, String)> {
    volume_config_references(volume)
        .into_iter()
        .map(ConfigKind::of_reference)
        .collect()
}

/// A token's lifetime when its source names none: what the masters'
/// defaulting writes into a stored pod's source too.
pub use skiff_objects::defaults::DEFAULT_TOKEN_EXPIRATION_SECONDS as DEFAULT_TOKEN_SECONDS;

/// What the `serviceAccountToken` source `source` asks for.
pub fn token_wanted(source: &v1::ServiceAccountTokenProjection) -> TokenWanted {
    TokenWanted {
        audience: source.audience.clone(),
        expiration_seconds: source.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
    }
}

/// The service account tokens `volume` projects.
pub fn tokens(volume: &v1::Volume) -> BTreeSet<TokenWanted> {
    volume
        .projected
        .iter()
        .flat_map(|p| &p.sources)
        .filter_map(|s| s.service_account_token.as_deref())
        .map(token_wanted)
        .collect()
}

/// The files of `volume` (configMap, secret, downwardAPI or projected),
/// from the ConfigMaps and Secrets in `objects`; none for other volumes.
pub fn payload(
    volume: &v1::Volume,
    objects: &ConfigObjects,
    facts: &PodFacts<'_>,
) -> Result<Payload, ProjectionError> {
    let mut out = Payload::new();
    if let Some(c) = &volume.config_map {
        let source = KeySource {
            kind: ConfigKind::ConfigMap,
            name: &c.name,
            items: &c.items,
            optional: c.optional.unwrap_or(false),
        };
        source.project(objects, mode(c.default_mode), &mut out)?;
    }
    if let Some(s) = &volume.secret {
        let source = KeySource {
            kind: ConfigKind::Secret,
            name: &s.secret_name,
            items: &s.items,
            optional: s.optional.unwrap_or(false),
        };
        source.project(objects, mode(s.default_mode), &mut out)?;
    }
    if let Some(d) = &volume.downward_api {
        downward_files(facts, &d.items, mode(d.default_mode), &mut out)?;
    }
    if let Some(p) = &volume.projected {
        let default_mode = mode(p.default_mode);
        for source in &p.sources {
            if let Some(c) = &source.config_map {
                let source = KeySource {
                    kind: ConfigKind::ConfigMap,
                    name: &c.name,
                    items: &c.items,
                    optional: c.optional.unwrap_or(false),
                };
                source.project(objects, default_mode, &mut out)?;
            }
            if let Some(s) = &source.secret {
                let source = KeySource {
                    kind: ConfigKind::Secret,
                    name: &s.name,
                    items: &s.items,
                    optional: s.optional.unwrap_or(false),
                };
                source.project(objects, default_mode, &mut out)?;
            }
            if let Some(d) = &source.downward_api {
                downward_files(facts, &d.items, default_mode, &mut out)?;
            }
            if let Some(t) = &source.service_account_token {
                let Some(token) = objects.token(&token_wanted(t)) else {
                    return Err(ProjectionError::NoToken {
                        path: t.path.clone(),
                    });
                };
                let entry = FileEntry {
                    data: token.as_bytes().to_vec(),
                    mode: default_mode,
                };
                out.insert(t.path.clone(), entry);
            }
        }
    }
    Ok(out)
}

/// A mode as the API gives it (`Option<i32>`, 0 to 0777) as file bits.
fn mode(mode: Option<i32>) -> u32 {
    u32::try_from(mode.unwrap_or(DEFAULT_MODE)).unwrap_or(0o644) & 0o777
}

/// The keys of one ConfigMap or Secret, as a volume (or one source of a
/// projected volume) takes them.
struct KeySource<'a> {
    kind: ConfigKind,
    name: &'a str,
    items: &'a [v1::KeyToPath],
    optional: bool,
}

impl KeySource<'_> {
    fn project(
        &self,
        objects: &ConfigObjects,
        default_mode: u32,
        out: &mut Payload,
    ) -> Result<(), ProjectionError> {
        let Some(data) = objects.get(self.kind, self.name) else {
            if self.optional {
                return Ok(());
            }
            return Err(ProjectionError::Missing {
                kind: self.kind,
                name: self.name.to_owned(),
            });
        };
        if self.items.is_empty() {
            for (key, value) in all_keys(data) {
                let entry = FileEntry {
                    data: value.clone(),
                    mode: default_mode,
                };
                out.insert(key.clone(), entry);
            }
            return Ok(());
        }
        for item in self.items {
            let value = data
                .data
                .get(&item.key)
                .or_else(|| data.binary_data.get(&item.key));
            let Some(value) = value else {
                if self.optional {
                    continue;
                }
                return Err(ProjectionError::MissingKey {
                    kind: self.kind,
                    name: self.name.to_owned(),
                    key: item.key.clone(),
                });
            };
            let mode = item.mode.map_or(default_mode, |m| mode(Some(m)));
            let entry = FileEntry {
                data: value.clone(),
                mode,
            };
            out.insert(item.path.clone(), entry);
        }
        Ok(())
    }
}

/// Every key of `data`, binary ones too.
fn all_keys(data: &ConfigData) -> impl Iterator<Item = (&String, &Vec<u8>)> {
    data.data.iter().chain(&data.binary_data)
}

/// The files of downwardAPI `items`.
fn downward_files(
    facts: &PodFacts<'_>,
    items: &[v1::DownwardApiVolumeFile],
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), ProjectionError> {
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => downward_api::field_value(facts, &f.field_path),
            (None, Some(r)) => downward_api::resource_value(facts, r, ""),
            (None, None) => Ok(String::new()),
        };
        let value = value.map_err(|source| ProjectionError::DownwardApi {
            path: item.path.clone(),
            source,
        })?;
        let mode = item.mode.map_or(default_mode, |m| mode(Some(m)));
        let entry = FileEntry {
            data: value.into_bytes(),
            mode,
        };
        out.insert(item.path.clone(), entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod() -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![v1::Container {
                    name: "main".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// ConfigMap `app` (`a`, and binary `b`) and Secret `creds` (`user`,
    /// `password`).
    fn objects() -> ConfigObjects {
        let mut app = ConfigData::text(&[("a", "1")]);
        app.binary_data.insert("b".into(), vec![0, 1]);
        let creds = ConfigData::text(&[("user", "admin"), ("password", "hunter2")]);
        let mut objects = ConfigObjects::default();
        objects.insert(ConfigKind::ConfigMap, "app", Some(app));
        objects.insert(ConfigKind::Secret, "creds", Some(creds));
        objects.insert(ConfigKind::ConfigMap, "gone", None);
        objects
    }

    fn files(volume: &v1::Volume) -> Result<BTreeMap<String, (String, u32)>, ProjectionError> {
        let pod = pod();
        let allocatable = BTreeMap::new();
        let facts = PodFacts {
            pod: &pod,
            host_ip: "",
            pod_ip: "",
            node_allocatable: &allocatable,
        };
        let payload = payload(volume, &objects(), &facts)?;
        Ok(payload
            .into_iter()
            .map(|(path, f)| {
                (
                    path,
                    (String::from_utf8_lossy(&f.data).into_owned(), f.mode),
                )
            })
            .collect())
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> v1::KeyToPath {
        v1::KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn config_map(name: &str, items: Vec<v1::KeyToPath>, optional: Option<bool>) -> v1::Volume {
        v1::Volume {
            name: "v".into(),
            config_map: Some(Box::new(v1::ConfigMapVolumeSource {
                name: name.into(),
                items,
                default_mode: Some(0o640),
                optional,
            })),
            ..Default::default()
        }
    }

    fn entries(pairs: &[(&str, &str, u32)]) -> BTreeMap<String, (String, u32)> {
        pairs
            .iter()
            .map(|(p, d, m)| ((*p).to_owned(), ((*d).to_owned(), *m)))
            .collect()
    }

    #[test]
    fn every_key_or_the_items_listed_become_files_with_their_modes() {
        let all = files(&config_map("app", vec![], None)).unwrap();
        let binary = String::from_utf8_lossy(&[0, 1]).into_owned();
        let expected = entries(&[("a", "1", 0o640), ("b", binary.as_str(), 0o640)]);
        assert_eq!(all, expected);
        let listed = vec![
            item("a", "conf/a.txt", Some(0o400)),
            item("b", "b.bin", None),
        ];
        let some = files(&config_map("app", listed, None)).unwrap();
        let expected = entries(&[
            ("conf/a.txt", "1", 0o400),
            ("b.bin", binary.as_str(), 0o640),
        ]);
        assert_eq!(some, expected);
        let secret = v1::Volume {
            name: "s".into(),
            secret: Some(Box::new(v1::SecretVolumeSource {
                secret_name: "creds".into(),
                items: vec![item("password", "pw", None)],
                default_mode: None,
                optional: None,
            })),
            ..Default::default()
        };
        let expected = entries(&[("pw", "hunter2", 0o644)]);
        assert_eq!(files(&secret).unwrap(), expected);
    }

    #[test]
    fn missing_objects_and_keys_are_errors_unless_optional() {
        let missing = files(&config_map("gone", vec![], None));
        let expected = ProjectionError::Missing {
            kind: ConfigKind::ConfigMap,
            name: "gone".into(),
        };
        assert_eq!(missing, Err(expected.clone()));
        assert_eq!(expected.to_string(), r#"configmap "gone" not found"#);
        let optional = files(&config_map("gone", vec![], Some(true)));
        assert_eq!(optional, Ok(BTreeMap::new()));
        let no_key = files(&config_map("app", vec![item("x", "x", None)], None));
        let expected = ProjectionError::MissingKey {
            kind: ConfigKind::ConfigMap,
            name: "app".into(),
            key: "x".into(),
        };
        assert_eq!(no_key, Err(expected));
        let listed = vec![item("x", "x", None), item("a", "a", None)];
        let optional = files(&config_map("app", listed, Some(true)));
        assert_eq!(optional, Ok(entries(&[("a", "1", 0o640)])));
    }

    #[test]
    fn downward_api_and_projected_sources_share_one_directory() {
        let labels = v1::DownwardApiVolumeFile {
            path: "labels".into(),
            field_ref: Some(v1::ObjectFieldSelector {
                api_version: "v1".into(),
                field_path: "metadata.labels".into(),
            }),
            resource_field_ref: None,
            mode: None,
        };
        let name = v1::DownwardApiVolumeFile {
            path: "name".into(),
            field_ref: Some(v1::ObjectFieldSelector {
                api_version: "v1".into(),
                field_path: "metadata.name".into(),
            }),
            resource_field_ref: None,
            mode: Some(0o600),
        };
        let volume = v1::Volume {
            name: "all".into(),
            projected: Some(Box::new(v1::ProjectedVolumeSource {
                sources: vec![
                    v1::VolumeProjection {
                        config_map: Some(Box::new(v1::ConfigMapProjection {
                            name: "app".into(),
                            items: vec![item("a", "a", None)],
                            optional: None,
                        })),
                        ..Default::default()
                    },
                    v1::VolumeProjection {
                        secret: Some(Box::new(v1::SecretProjection {
                            name: "creds".into(),
                            items: vec![],
                            optional: None,
                        })),
                        ..Default::default()
                    },
                    v1::VolumeProjection {
                        downward_api: Some(Box::new(v1::DownwardApiProjection {
                            items: vec![labels, name],
                        })),
                        ..Default::default()
                    },
                ],
                default_mode: Some(0o444),
            })),
            ..Default::default()
        };
        let expected = entries(&[
            ("a", "1", 0o444),
            ("user", "admin", 0o444),
            ("password", "hunter2", 0o444),
            ("labels", "app=\"web\"", 0o444),
            ("name", "web", 0o600),
        ]);
        assert_eq!(files(&volume).unwrap(), expected);
        let named: Vec<(ConfigKind, String)> = references(&volume).into_iter().collect();
        let expected = [
            (ConfigKind::ConfigMap, "app".to_owned()),
            (ConfigKind::Secret, "creds".to_owned()),
        ];
        assert_eq!(named, expected);
    }

    #[test]
    fn the_api_access_volume_holds_token_ca_and_namespace() {
        // Exactly what the masters' ServiceAccount admission gives a pod.
        let volume = v1::Volume {
            name: "kube-api-access-abcde".into(),
            projected: Some(Box::new(skiff_objects::pods::api_access_volume_source())),
            ..Default::default()
        };
        let wanted: Vec<TokenWanted> = tokens(&volume).into_iter().collect();
        let token = TokenWanted {
            audience: String::new(),
            expiration_seconds: 3607,
        };
        assert_eq!(wanted, std::slice::from_ref(&token));
        let mut objects = ConfigObjects::default();
        objects.insert(
            ConfigKind::ConfigMap,
            "kube-root-ca.crt",
            Some(ConfigData::text(&[("ca.crt", "PEM")])),
        );
        let pod = pod();
        let allocatable = BTreeMap::new();
        let facts = PodFacts {
            pod: &pod,
            host_ip: "",
            pod_ip: "",
            node_allocatable: &allocatable,
        };
        // The token not read: an error, not a volume without it.
        let missing = payload(&volume, &objects, &facts).unwrap_err();
        assert_eq!(
            missing,
            ProjectionError::NoToken {
                path: "token".into()
            }
        );
        objects.insert_token(token, "header.claims.signature".into());
        let files: BTreeMap<String, (String, u32)> = payload(&volume, &objects, &facts)
            .unwrap()
            .into_iter()
            .map(|(p, f)| (p, (String::from_utf8_lossy(&f.data).into_owned(), f.mode)))
            .collect();
        let expected = entries(&[
            ("token", "header.claims.signature", 0o644),
            ("ca.crt", "PEM", 0o644),
            ("namespace", "shop", 0o644),
        ]);
        assert_eq!(files, expected);
    }
}
