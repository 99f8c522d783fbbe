//! The ConfigMaps and Secrets one pod reads, as its worker last read them.
//! Every container start and every volume refresh reads them again from
//! the masters ([`ConfigSource`]); when no master answers, the last answer
//! stands in, so a crashed container still restarts and mounted files
//! stay as they were while the masters are away. Nothing is kept past the
//! worker: an agent restarted without masters has only what is on disk.

use std::collections::{BTreeMap, BTreeSet};

use crate::master_link::{ConfigData, ConfigKind, ConfigSource, FetchError};

/// The answers of one round of reads: for each object asked for, its
/// values, or `None` when it does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigObjects {
    objects: BTreeMap<(ConfigKind, String), Option<ConfigData>>,
}

impl ConfigObjects {
    /// The values of `name`, if it exists (and was asked for).
    pub fn get(&self, kind: ConfigKind, name: &str) -> Option<&ConfigData> {
        self.objects
            .get(&(kind, name.to_owned()))
            .and_then(Option::as_ref)
    }

    /// Records an answer: `data`, or `None` when `name` does not exist.
    pub fn insert(&mut self, kind: ConfigKind, name: &str, data: Option<ConfigData>) {
        self.objects.insert((kind, name.to_owned()), data);
    }
}

/// One pod's last answers.
#[derive(Debug, Default)]
pub struct PodConfig {
    last: BTreeMap<(ConfigKind, String), Option<ConfigData>>,
}

impl PodConfig {
    /// Reads each of `wanted` in `namespace` from `source`, falling back
    /// on the last answer when `source` cannot say; an error when it never
    /// could.
    pub async fn read(
        &mut self,
        source: &dyn ConfigSource,
        namespace: &str,
        wanted: &BTreeSet<(ConfigKind, String)>,
    ) -> Result<ConfigObjects, FetchError> {
        let mut out = ConfigObjects::default();
        for (kind, name) in wanted {
            let key = (*kind, name.clone());
            let answer = match source.fetch(*kind, namespace, name).await {
                Ok(found) => {
                    self.last.insert(key.clone(), found.clone());
                    found
                }
                Err(e) => match self.last.get(&key) {
                    Some(last) => {
                        tracing::debug!(error = %e, "using the last answer");
                        last.clone()
                    }
                    None => return Err(e),
                },
            };
            out.objects.insert(key, answer);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master_link::StaticConfigSource;

    #[tokio::test]
    async fn the_last_answer_stands_in_while_no_master_answers() {
        let source = StaticConfigSource::default();
        let cm = ConfigKind::ConfigMap;
        source.put(cm, "shop", "app", ConfigData::text(&[("a", "1")]));
        let wanted: BTreeSet<(ConfigKind, String)> =
            [(cm, "app".to_owned()), (cm, "gone".to_owned())].into();
        let mut config = PodConfig::default();
        let first = config.read(&source, "shop", &wanted).await.expect("read");
        let app = ConfigData::text(&[("a", "1")]);
        assert_eq!(first.get(cm, "app"), Some(&app));
        assert_eq!(first.get(cm, "gone"), None);

        // The masters go away: the last answers, missing ones included.
        source.fail_next(2);
        let again = config.read(&source, "shop", &wanted).await.expect("read");
        assert_eq!(again, first);
        // What was never read cannot stand in.
        source.fail_next(1);
        let other: BTreeSet<(ConfigKind, String)> = [(cm, "other".to_owned())].into();
        let error = config.read(&source, "shop", &other).await;
        assert!(
            matches!(error, Err(FetchError::Unreachable { .. })),
            "{error:?}"
        );
        // Back: the new state.
        source.put(cm, "shop", "gone", ConfigData::text(&[("b", "2")]));
        let back = config.read(&source, "shop", &wanted).await.expect("read");
        assert!(back.get(cm, "gone").is_some());
    }
}
