//! The ConfigMaps and Secrets one pod reads, as its worker last read them.
//! Every container start and every volume refresh reads them again from
//! the masters ([`ConfigSource`]); when no master answers, the last answer
//! stands in, so a crashed container still restarts and mounted files
//! stay as they were while the masters are away. Nothing is kept past the
//! worker: an agent restarted without masters has only what is on disk.
//!
//! The service account tokens of its projected volumes too, as the
//! kubelet's token manager keeps them: a token is asked for again once
//! 80% of its lifetime has passed or it is older than 24 hours
//! ([`needs_refresh`]); until then the one held is used. When no new one
//! can be had, the one held stands in while it has not expired.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use skiff_objects::pods;
use skiff_proto::v1;

use crate::master_link::{
    ConfigData, ConfigKind, ConfigSource, FetchError, ServiceAccountToken, TokenFor, TokenWanted,
};

/// A token older than this is replaced whatever its lifetime.
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// The part of its lifetime (percent) after which a token is replaced.
pub const REFRESH_AFTER_PERCENT: u32 = 80;

/// Whether `token` should be replaced at `now` (the kubelet's rule,
/// without its jitter): 80% of its lifetime gone, or older than a day.
pub fn needs_refresh(token: &ServiceAccountToken, now: SystemTime) -> bool {
    let lifetime = token
        .expires_at
        .duration_since(token.issued_at)
        .unwrap_or_default();
    let refresh_at = token.issued_at + lifetime * REFRESH_AFTER_PERCENT / 100;
    now >= refresh_at || now >= token.issued_at + MAX_TOKEN_AGE
}

/// The answers of one round of reads: for each object asked for, its
/// values, or `None` when it does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigObjects {
    objects: BTreeMap<(ConfigKind, String), Option<ConfigData>>,
    /// The service account tokens asked for.
    tokens: BTreeMap<TokenWanted, String>,
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

    /// The token for `wanted`, if it was asked for.
    pub fn token(&self, wanted: &TokenWanted) -> Option<&str> {
        self.tokens.get(wanted).map(String::as_str)
    }

    /// Records the token for `wanted`.
    pub fn insert_token(&mut self, wanted: TokenWanted, token: String) {
        self.tokens.insert(wanted, token);
    }
}

/// One pod's last answers.
#[derive(Debug, Default)]
pub struct PodConfig {
    last: BTreeMap<(ConfigKind, String), Option<ConfigData>>,
    /// The tokens held, by what they were asked for with.
    tokens: BTreeMap<TokenWanted, ServiceAccountToken>,
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

    /// Puts into `out` a token of `pod`'s service account, bound to `pod`,
    /// for each of `wanted`: the one held unless it [`needs_refresh`] at
    /// `now`, else a new one from `source`; when none can be had, the one
    /// held while it has not expired, else the error.
    pub async fn read_tokens(
        &mut self,
        source: &dyn ConfigSource,
        pod: &v1::Pod,
        wanted: &BTreeSet<TokenWanted>,
        now: SystemTime,
        out: &mut ConfigObjects,
    ) -> Result<(), FetchError> {
        for want in wanted {
            let held = self.tokens.get(want);
            if let Some(token) = held.filter(|t| !needs_refresh(t, now)) {
                out.insert_token(want.clone(), token.token.clone());
                continue;
            }
            let request = token_for(pod, want);
            let token = match source.request_token(&request).await {
                Ok(token) => {
                    tracing::info!(
                        pod = %request.pod_name,
                        namespace = %request.namespace,
                        service_account = %request.service_account,
                        "got a service account token"
                    );
                    self.tokens.insert(want.clone(), token.clone());
                    token
                }
                Err(e) => match held.filter(|t| now < t.expires_at) {
                    Some(token) => {
                        tracing::warn!(error = %e, "keeping the service account token held");
                        token.clone()
                    }
                    None => return Err(e),
                },
            };
            out.insert_token(want.clone(), token.token);
        }
        Ok(())
    }
}

/// The TokenRequest for `wanted` of `pod`: its service account (`default`
/// when it names none), bound to it by name and uid.
fn token_for(pod: &v1::Pod, wanted: &TokenWanted) -> TokenFor {
    let meta = pod.metadata.clone().unwrap_or_default();
    let account = pod.spec.as_ref().map_or("default", pods::service_account);
    TokenFor {
        namespace: meta.namespace,
        service_account: account.to_owned(),
        pod_name: meta.name,
        pod_uid: meta.uid,
        wanted: wanted.clone(),
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

    fn pod() -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                uid: "uid-1".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                service_account_name: "builder".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn wanted(seconds: i64) -> BTreeSet<TokenWanted> {
        [TokenWanted {
            audience: String::new(),
            expiration_seconds: seconds,
        }]
        .into()
    }

    /// The token `read_tokens` gives at `now` for `wanted`.
    async fn token_at(
        config: &mut PodConfig,
        source: &StaticConfigSource,
        wanted: &BTreeSet<TokenWanted>,
        now: SystemTime,
    ) -> Result<String, FetchError> {
        let mut out = ConfigObjects::default();
        config
            .read_tokens(source, &pod(), wanted, now, &mut out)
            .await?;
        let want = wanted.iter().next().unwrap();
        Ok(out.token(want).expect("a token").to_owned())
    }

    #[tokio::test]
    async fn tokens_are_bound_to_the_pod_and_refreshed_after_80_percent_of_their_life() {
        let source = StaticConfigSource::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        source.set_token_clock(start);
        let wanted = wanted(3607);
        let mut config = PodConfig::default();
        let first = token_at(&mut config, &source, &wanted, start)
            .await
            .unwrap();
        assert_eq!(first, "token-1-web");
        let requests = source.token_requests();
        let expected = TokenFor {
            namespace: "shop".into(),
            service_account: "builder".into(),
            pod_name: "web".into(),
            pod_uid: "uid-1".into(),
            wanted: wanted.iter().next().unwrap().clone(),
        };
        assert_eq!(requests, [expected]);

        // Before 80% of 3607 s (2885.6 s): the same token, nothing asked.
        let early = start + Duration::from_secs(2885);
        let again = token_at(&mut config, &source, &wanted, early)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(source.token_requests().len(), 1);

        // After: a new one.
        let late = start + Duration::from_secs(2886);
        source.set_token_clock(late);
        let renewed = token_at(&mut config, &source, &wanted, late).await.unwrap();
        assert_eq!(renewed, "token-2-web");
        assert_eq!(source.token_requests().len(), 2);
    }

    #[tokio::test]
    async fn a_long_lived_token_is_refreshed_after_a_day() {
        let source = StaticConfigSource::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        source.set_token_clock(start);
        let week = wanted(7 * 24 * 3600);
        let mut config = PodConfig::default();
        token_at(&mut config, &source, &week, start).await.unwrap();
        let before = start + MAX_TOKEN_AGE - Duration::from_secs(1);
        token_at(&mut config, &source, &week, before).await.unwrap();
        assert_eq!(source.token_requests().len(), 1);
        let after = start + MAX_TOKEN_AGE;
        token_at(&mut config, &source, &week, after).await.unwrap();
        assert_eq!(source.token_requests().len(), 2);
    }

    #[tokio::test]
    async fn a_held_token_stands_in_until_it_expires_and_none_is_an_error() {
        let source = StaticConfigSource::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        source.set_token_clock(start);
        let wanted = wanted(3600);
        let mut config = PodConfig::default();

        // Never had one: the error, naming the account.
        source.fail_next_tokens(1);
        let error = token_at(&mut config, &source, &wanted, start)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Token { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "failed to fetch token for serviceaccount shop/builder: injected failure"
        );

        // Retried: one.
        let first = token_at(&mut config, &source, &wanted, start)
            .await
            .unwrap();
        // Due for refresh but the masters refuse: the held one, unexpired.
        let due = start + Duration::from_secs(3000);
        source.fail_next_tokens(1);
        let kept = token_at(&mut config, &source, &wanted, due).await.unwrap();
        assert_eq!(kept, first);
        // Expired: the error.
        let expired = start + Duration::from_secs(3600);
        source.fail_next_tokens(1);
        assert!(token_at(&mut config, &source, &wanted, expired)
            .await
            .is_err());
    }
}
