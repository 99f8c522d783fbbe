//! `rbac`: what RBAC authorization costs a request when many bindings are
//! stored (issue 19: at most 10% more latency with 1,000 RoleBindings
//! present), measured in one run against one master.
//!
//! The caller is a ServiceAccount, `rbac-0/bench-reader`, not the admin:
//! admins (and masters) are allowed by their own rule before RBAC is asked
//! (`api::authz`, `Principal::Privileged`), so their requests never meet a
//! binding. It calls as a pod does: TLS with the cluster CA and no client
//! certificate, HTTP/2, and a token from a TokenRequest (`POST
//! /api/v1/namespaces/rbac-0/serviceaccounts/bench-reader/token`, made by
//! the admin) sent as `Authorization: Bearer`. One RoleBinding grants it
//! `get` and `list` on ConfigMaps in `rbac-0`; the only other bindings
//! that name it or a group it is in are the defaults every authenticated
//! user has (`system:discovery`, ...), there throughout. Its timed
//! requests: a GET of one ConfigMap and a LIST of `rbac-0`'s ConfigMaps
//! (`--configmaps` of them and the namespace's `kube-root-ca.crt`), one at
//! a time.
//!
//! The bindings it is measured among: `--bindings` RoleBindings spread over
//! `--namespaces` namespaces (`rbac-0` among them), each to a
//! ServiceAccount of its namespace (`app-<k>`: as many accounts as
//! bindings), every third also to a User and every fifth also to a Group,
//! of the namespace's Role `app-reader` or the ClusterRoles `view` and
//! `edit` in turn; and `--cluster-bindings` ClusterRoleBindings of `view`
//! to more accounts and groups. None names the measuring account or its
//! groups, so none grants it anything (checked while they are there: it is
//! still refused Secrets, and ConfigMaps elsewhere); what its requests
//! meet is their number alone.
//!
//! The machines are shared and noisy, so the two conditions are not
//! measured one after the other but in alternating blocks: without, with,
//! without, ..., `--cycles` blocks with the bindings between `--cycles` + 1
//! without. Each cycle creates the bindings (and counts them with a list
//! before its block) and deletes them after it. A drift of the machine's
//! speed over the run then weighs on both conditions alike, and each
//! condition's percentiles are taken over all of its blocks' requests
//! pooled. Each cycle's own ratio (its block's p50 over the mean of the
//! blocks just before and after it) is reported too, to show the spread.
//! Every block also times the same requests as the admin, interleaved with
//! the account's: they skip RBAC, so their ratio (with over without) is
//! the control, what the stored bindings cost a request that never reads
//! them (a larger store, the machine's noise). Before each block the store
//! is left to settle (the controllers' writes for new namespaces) and a
//! few untimed rounds warm the connections.
//!
//! The account's p50 with the bindings over its p50 without, for the GET
//! and for the LIST, above `--max-rbac-ratio` fails the run once the
//! figures are printed; `--max-rbac-p99-ratio` does the same for p99 when
//! it is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;

use super::common::{admin_rest_tls, round, round_fine, token_rest_tls, BenchMaster};
use crate::latency::Latencies;
use crate::rest_client::{RestClientError, RestConnection};

/// The measuring account's namespace: the first of the scenario's.
const MEASURED_NAMESPACE: &str = "rbac-0";
/// The measuring ServiceAccount, and the name of its Role and RoleBinding.
const ACCOUNT: &str = "bench-reader";
/// The Role in every namespace that a third of the other bindings bind.
const APP_ROLE: &str = "app-reader";
/// The other bindings' groups: `team-0` to `team-24`.
const TEAMS: usize = 25;
const RBAC_API: &str = "/apis/rbac.authorization.k8s.io/v1";
const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// How long the account's token lives: longer than any run.
const TOKEN_SECONDS: i64 = 86_400;
/// How long the master may take to issue the first token (its leader
/// makes the signing key as it starts), and how often it is asked.
const TOKEN_WITHIN: Duration = Duration::from_secs(30);
const TOKEN_RETRY: Duration = Duration::from_millis(200);
/// Concurrent writers of the fixture and of the other bindings, all on the
/// admin's connection.
const WRITERS: usize = 16;
/// Untimed rounds of every request before each block.
const WARMUP_ROUNDS: usize = 10;
/// The store has settled when two reads of its revision in a row, this
/// far apart, find it unchanged; it is waited for this long at most, then
/// the block is measured anyway (and counted as unsettled).
const SETTLE_POLL: Duration = Duration::from_millis(500);
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
const JSON: &str = "application/json";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, clap::Args)]
pub struct RbacArgs {
    /// RoleBindings present while the account is measured with them, none
    /// naming it.
    #[arg(long, default_value_t = 1000)]
    pub bindings: usize,
    /// ClusterRoleBindings created with them, none naming it either.
    #[arg(long, default_value_t = 10)]
    pub cluster_bindings: usize,
    /// Namespaces the RoleBindings are spread over (the account's among
    /// them).
    #[arg(long, default_value_t = 50)]
    pub namespaces: usize,
    /// ConfigMaps in the account's namespace, which it lists (it GETs the
    /// first).
    #[arg(long, default_value_t = 10)]
    pub configmaps: usize,
    /// Timed requests of each kind (GET, LIST) by each caller (the
    /// account, the admin) in each block.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Blocks with the bindings, each between two blocks without them.
    #[arg(long, default_value_t = 5)]
    pub cycles: usize,
    /// Fail when the account's p50 with the bindings over without, for the
    /// GET or the LIST, is above this; 0 only reports the ratios.
    #[arg(long, default_value_t = 1.10)]
    pub max_rbac_ratio: f64,
    /// The same for p99; 0 (the default) only reports them: a p99 on two
    /// shared cores is mostly the scheduler's.
    #[arg(long, default_value_t = 0.0)]
    pub max_rbac_p99_ratio: f64,
}

/// Refuses settings that cannot make a run.
fn validate(args: &RbacArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.bindings >= 1, "--bindings must be at least 1");
    anyhow::ensure!(args.namespaces >= 1, "--namespaces must be at least 1");
    anyhow::ensure!(
        args.configmaps >= 1,
        "--configmaps must be at least 1: the account GETs the first"
    );
    anyhow::ensure!(args.requests >= 1, "--requests must be at least 1");
    anyhow::ensure!(args.cycles >= 1, "--cycles must be at least 1");
    for (flag, value) in [
        ("--max-rbac-ratio", args.max_rbac_ratio),
        ("--max-rbac-p99-ratio", args.max_rbac_p99_ratio),
    ] {
        anyhow::ensure!(
            value.is_finite() && (value == 0.0 || value >= 1.0),
            "{flag} must be 0 (only report the ratios) or at least 1, not {value}"
        );
    }
    Ok(())
}

fn namespace_name(i: usize) -> String {
    format!("rbac-{i}")
}

fn config_map_name(i: usize) -> String {
    format!("bench-config-{i}")
}

/// The measuring account as a Kubernetes user.
fn account_user() -> String {
    format!("system:serviceaccount:{MEASURED_NAMESPACE}:{ACCOUNT}")
}

/// An object the scenario writes: where it is POSTed, where it then is
/// (and is DELETEd), and its JSON.
#[derive(Debug, Clone)]
struct BenchObject {
    collection: String,
    path: String,
    body: serde_json::Value,
}

impl BenchObject {
    /// `body`, named by its `metadata.name`, in `collection`.
    fn new(collection: String, body: serde_json::Value) -> BenchObject {
        let name = body["metadata"]["name"].as_str().unwrap_or_default();
        let path = format!("{collection}/{name}");
        BenchObject {
            collection,
            path,
            body,
        }
    }
}

/// The namespaces, made first: everything else lives in them.
fn namespaces(args: &RbacArgs) -> Vec<BenchObject> {
    (0..args.namespaces)
        .map(|i| {
            let body = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace_name(i)},
            });
            BenchObject::new("/api/v1/namespaces".to_owned(), body)
        })
        .collect()
}

/// What is there in both conditions: in every namespace the Role that
/// some of the other bindings bind; in the account's, the ConfigMaps it
/// reads, and the account with its Role and RoleBinding.
fn fixture(args: &RbacArgs) -> Vec<BenchObject> {
    let mut objects = Vec::new();
    for i in 0..args.namespaces {
        let namespace = namespace_name(i);
        let role = json!({
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": {"name": APP_ROLE, "namespace": namespace},
            "rules": [{
                "apiGroups": [""],
                "resources": ["configmaps", "pods"],
                "verbs": ["get", "list", "watch"],
            }],
        });
        let roles = format!("{RBAC_API}/namespaces/{namespace}/roles");
        objects.push(BenchObject::new(roles, role));
    }
    let core = format!("/api/v1/namespaces/{MEASURED_NAMESPACE}");
    for i in 0..args.configmaps {
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map_name(i), "namespace": MEASURED_NAMESPACE},
            "data": {
                "index": i.to_string(),
                "settings.yaml": "logLevel: info\nfeatures:\n  - metrics\n",
            },
        });
        objects.push(BenchObject::new(format!("{core}/configmaps"), config_map));
    }
    let account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": ACCOUNT, "namespace": MEASURED_NAMESPACE},
    });
    objects.push(BenchObject::new(format!("{core}/serviceaccounts"), account));
    let rbac = format!("{RBAC_API}/namespaces/{MEASURED_NAMESPACE}");
    let role = json!({
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": {"name": ACCOUNT, "namespace": MEASURED_NAMESPACE},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    });
    objects.push(BenchObject::new(format!("{rbac}/roles"), role));
    let binding = json!({
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": {"name": ACCOUNT, "namespace": MEASURED_NAMESPACE},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": ACCOUNT},
        "subjects": [
            {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": MEASURED_NAMESPACE},
        ],
    });
    objects.push(BenchObject::new(format!("{rbac}/rolebindings"), binding));
    objects
}

/// The bindings the account is measured among (see the module's doc):
/// `--bindings` RoleBindings, then `--cluster-bindings`
/// ClusterRoleBindings. The accounts they name need not exist, as in
/// Kubernetes; whether they do changes nothing RBAC reads.
fn other_bindings(args: &RbacArgs) -> Vec<BenchObject> {
    let mut objects = Vec::new();
    for j in 0..args.bindings {
        let namespace = namespace_name(j % args.namespaces);
        let role_ref = match j % 3 {
            0 => json!({"apiGroup": RBAC_GROUP, "kind": "Role", "name": APP_ROLE}),
            1 => json!({"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "view"}),
            _ => json!({"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "edit"}),
        };
        let mut subjects = vec![json!({
            "kind": "ServiceAccount",
            "name": format!("app-{}", j / args.namespaces),
            "namespace": namespace,
        })];
        if j % 3 == 0 {
            subjects.push(json!({
                "kind": "User",
                "apiGroup": RBAC_GROUP,
                "name": format!("user-{j}@example.com"),
            }));
        }
        if j % 5 == 0 {
            subjects.push(json!({
                "kind": "Group",
                "apiGroup": RBAC_GROUP,
                "name": format!("team-{}", j % TEAMS),
            }));
        }
        let binding = json!({
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": {"name": format!("app-binding-{j}"), "namespace": namespace},
            "roleRef": role_ref,
            "subjects": subjects,
        });
        let bindings = format!("{RBAC_API}/namespaces/{namespace}/rolebindings");
        objects.push(BenchObject::new(bindings, binding));
    }
    for k in 0..args.cluster_bindings {
        let binding = json!({
            "apiVersion": RBAC_API_VERSION,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("app-cluster-binding-{k}")},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": format!("app-{k}"),
                    "namespace": namespace_name(k % args.namespaces),
                },
                {"kind": "Group", "apiGroup": RBAC_GROUP, "name": format!("team-{}", k % TEAMS)},
            ],
        });
        objects.push(BenchObject::new(
            format!("{RBAC_API}/clusterrolebindings"),
            binding,
        ));
    }
    objects
}

/// What [`write_all`] does to each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Delete,
}

/// Creates or deletes every one of `objects` as the admin, from
/// [`WRITERS`] concurrent writers; fails on the first write refused.
async fn write_all(
    admin: &RestConnection,
    objects: &Arc<Vec<BenchObject>>,
    write: Write,
) -> anyhow::Result<()> {
    let writers = WRITERS.min(objects.len()).max(1);
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let (admin, objects) = (admin.clone(), objects.clone());
        tasks.spawn(async move {
            for object in objects.iter().skip(w).step_by(writers) {
                let (method, path, body, expected) = match write {
                    Write::Create => (
                        Method::POST,
                        &object.collection,
                        Some(serde_json::to_vec(&object.body).unwrap_or_default()),
                        StatusCode::CREATED,
                    ),
                    Write::Delete => (Method::DELETE, &object.path, None, StatusCode::OK),
                };
                admin.call(method, path, JSON, body, expected).await?;
            }
            Ok::<(), RestClientError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// What the scenario reads of an answer: an object, a list, a review.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Answer {
    kind: String,
    metadata: AnswerMeta,
    items: Vec<serde::de::IgnoredAny>,
    status: serde_json::Value,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct AnswerMeta {
    name: String,
    resource_version: String,
}

fn answer_of(body: &[u8], what: &str) -> anyhow::Result<Answer> {
    serde_json::from_slice(body).with_context(|| format!("the answer to {what} is not JSON"))
}

/// The token a TokenRequest's answer carries.
fn token_in(body: &[u8]) -> anyhow::Result<String> {
    let answer = answer_of(body, "the TokenRequest")?;
    let token = answer.status["token"].as_str().unwrap_or_default();
    anyhow::ensure!(
        answer.kind == "TokenRequest" && !token.is_empty(),
        "the answer to the TokenRequest is a {:?} without status.token",
        answer.kind
    );
    Ok(token.to_owned())
}

/// The user a SelfSubjectReview's answer names.
fn reviewed_user(body: &[u8]) -> anyhow::Result<String> {
    let answer = answer_of(body, "the SelfSubjectReview")?;
    let user = answer.status["userInfo"]["username"]
        .as_str()
        .unwrap_or_default();
    anyhow::ensure!(
        !user.is_empty(),
        "the SelfSubjectReview answered no status.userInfo.username"
    );
    Ok(user.to_owned())
}

/// A token of the measuring account, requested by the admin, retried
/// until the master can sign one.
async fn account_token(admin: &RestConnection) -> anyhow::Result<String> {
    let path = format!("/api/v1/namespaces/{MEASURED_NAMESPACE}/serviceaccounts/{ACCOUNT}/token");
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": TOKEN_SECONDS},
    });
    let body = serde_json::to_vec(&request)?;
    let deadline = Instant::now() + TOKEN_WITHIN;
    loop {
        let answer = admin
            .call(
                Method::POST,
                &path,
                JSON,
                Some(body.clone()),
                StatusCode::CREATED,
            )
            .await;
        match answer {
            Ok(answer) => return token_in(&answer),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(TOKEN_RETRY).await,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("no token for {MEASURED_NAMESPACE}/{ACCOUNT} within {TOKEN_WITHIN:?}")
                })
            }
        }
    }
}

/// What the account's RoleBinding does not grant is refused (403): the
/// Secrets beside its ConfigMaps, and ConfigMaps in another namespace.
/// With the other bindings there, this shows they grant it nothing.
async fn check_refused(account: &RestConnection, namespaces: usize) -> anyhow::Result<()> {
    let mut paths = vec![format!("/api/v1/namespaces/{MEASURED_NAMESPACE}/secrets")];
    if namespaces > 1 {
        paths.push(format!(
            "/api/v1/namespaces/{}/configmaps",
            namespace_name(1)
        ));
    }
    for path in paths {
        account
            .call(Method::GET, &path, JSON, None, StatusCode::FORBIDDEN)
            .await
            .context("the account must be refused what its RoleBinding does not grant")?;
    }
    Ok(())
}

/// Checks that `account`'s calls are the measuring account's, that RBAC
/// decides them (not a privileged identity's rule), and that its
/// RoleBinding is in force.
async fn check_account(account: &RestConnection, namespaces: usize) -> anyhow::Result<()> {
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
    });
    let answer = account
        .call(
            Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            JSON,
            Some(serde_json::to_vec(&review)?),
            StatusCode::CREATED,
        )
        .await
        .context("the account reviewing who it is")?;
    let user = reviewed_user(&answer)?;
    anyhow::ensure!(
        user == account_user(),
        "the token authenticates {user:?}, not {:?}",
        account_user()
    );
    for request in [Request::Get, Request::List] {
        timed(account, request, 1)
            .await
            .with_context(|| format!("the account's first {request:?}"))?;
    }
    check_refused(account, namespaces).await
}

/// RoleBindings (all namespaces) and ClusterRoleBindings stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BindingCounts {
    role_bindings: usize,
    cluster_role_bindings: usize,
}

impl BindingCounts {
    /// As the admin lists them.
    async fn read(admin: &RestConnection) -> anyhow::Result<BindingCounts> {
        let mut counts = [0; 2];
        for (count, resource) in counts
            .iter_mut()
            .zip(["rolebindings", "clusterrolebindings"])
        {
            let path = format!("{RBAC_API}/{resource}");
            let answer = admin
                .call(Method::GET, &path, JSON, None, StatusCode::OK)
                .await?;
            *count = answer_of(&answer, &format!("a list of {resource}"))?
                .items
                .len();
        }
        Ok(BindingCounts {
            role_bindings: counts[0],
            cluster_role_bindings: counts[1],
        })
    }

    /// These and the other bindings.
    fn with_others(self, args: &RbacArgs) -> BindingCounts {
        BindingCounts {
            role_bindings: self.role_bindings + args.bindings,
            cluster_role_bindings: self.cluster_role_bindings + args.cluster_bindings,
        }
    }

    /// Fails unless the admin lists `self`.
    async fn expect(self, admin: &RestConnection, when: &str) -> anyhow::Result<()> {
        let stored = BindingCounts::read(admin).await?;
        anyhow::ensure!(
            stored == self,
            "{when}: {} RoleBindings and {} ClusterRoleBindings stored, not {} and {}",
            stored.role_bindings,
            stored.cluster_role_bindings,
            self.role_bindings,
            self.cluster_role_bindings
        );
        Ok(())
    }
}

/// The store's revision: a list's resourceVersion (the account's
/// ConfigMaps, a short list).
async fn store_revision(admin: &RestConnection) -> anyhow::Result<String> {
    let answer = admin
        .call(
            Method::GET,
            &Request::List.path(),
            JSON,
            None,
            StatusCode::OK,
        )
        .await?;
    let revision = answer_of(&answer, "a ConfigMap list")?
        .metadata
        .resource_version;
    anyhow::ensure!(!revision.is_empty(), "a list answered no resourceVersion");
    Ok(revision)
}

/// Waits until the store's revision holds still (two reads in a row
/// [`SETTLE_POLL`] apart find it unchanged), for [`SETTLE_WITHIN`] at
/// most: whether it did.
async fn settle(admin: &RestConnection) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut revision = store_revision(admin).await?;
    let mut unchanged = 0;
    while unchanged < 2 {
        if started.elapsed() >= SETTLE_WITHIN {
            eprintln!(
                "the store was still changing after {SETTLE_WITHIN:?} (revision {revision}); \
                 measuring anyway"
            );
            return Ok(false);
        }
        tokio::time::sleep(SETTLE_POLL).await;
        let now = store_revision(admin).await?;
        if now == revision {
            unchanged += 1;
        } else {
            (revision, unchanged) = (now, 0);
        }
    }
    Ok(true)
}

/// What each caller asks in every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// One ConfigMap.
    Get,
    /// The account's namespace's ConfigMaps.
    List,
}

impl Request {
    fn path(self) -> String {
        let collection = format!("/api/v1/namespaces/{MEASURED_NAMESPACE}/configmaps");
        match self {
            Request::Get => format!("{collection}/{}", config_map_name(0)),
            Request::List => collection,
        }
    }

    /// Checks that `body` answers the request: the ConfigMap, or a list of
    /// at least `configmaps`.
    fn check(self, body: &[u8], configmaps: usize) -> anyhow::Result<()> {
        let answer = answer_of(body, &format!("a {self:?}"))?;
        let (answered, expected) = match self {
            Request::Get => (
                answer.kind == "ConfigMap" && answer.metadata.name == config_map_name(0),
                format!("ConfigMap {:?}", config_map_name(0)),
            ),
            Request::List => (
                answer.kind == "ConfigMapList" && answer.items.len() >= configmaps,
                format!("a ConfigMapList of at least {configmaps} items"),
            ),
        };
        anyhow::ensure!(
            answered,
            "a {self:?} answered a {} named {:?} with {} items, not {expected}",
            answer.kind,
            answer.metadata.name,
            answer.items.len()
        );
        Ok(())
    }
}

/// `request` on `connection`: how long the answer took (checked after).
async fn timed(
    connection: &RestConnection,
    request: Request,
    configmaps: usize,
) -> anyhow::Result<Duration> {
    let path = request.path();
    let started = Instant::now();
    let answer = connection
        .call(Method::GET, &path, JSON, None, StatusCode::OK)
        .await?;
    let took = started.elapsed();
    request.check(&answer, configmaps)?;
    Ok(took)
}

/// One block's timed requests, by caller and request.
#[derive(Debug, Default)]
struct Block {
    account_get: Latencies,
    account_list: Latencies,
    admin_get: Latencies,
    admin_list: Latencies,
}

impl Block {
    fn extend(&mut self, other: Block) {
        self.account_get.extend(other.account_get);
        self.account_list.extend(other.account_list);
        self.admin_get.extend(other.admin_get);
        self.admin_list.extend(other.admin_list);
    }
}

/// [`WARMUP_ROUNDS`] untimed rounds, then `--requests` timed ones, each:
/// the account's GET, the admin's, the account's LIST, the admin's; one
/// request at a time.
async fn measure_block(
    account: &RestConnection,
    admin: &RestConnection,
    args: &RbacArgs,
) -> anyhow::Result<Block> {
    let mut block = Block::default();
    for number in 0..WARMUP_ROUNDS + args.requests {
        for request in [Request::Get, Request::List] {
            let by_account = timed(account, request, args.configmaps)
                .await
                .with_context(|| format!("the account's {request:?}"))?;
            let by_admin = timed(admin, request, args.configmaps)
                .await
                .with_context(|| format!("the admin's {request:?}"))?;
            if number < WARMUP_ROUNDS {
                continue;
            }
            let (account_samples, admin_samples) = match request {
                Request::Get => (&mut block.account_get, &mut block.admin_get),
                Request::List => (&mut block.account_list, &mut block.admin_list),
            };
            account_samples.push(by_account);
            admin_samples.push(by_admin);
        }
    }
    Ok(block)
}

/// Every block of one condition (without or with the other bindings).
#[derive(Debug, Default)]
struct Condition {
    /// All its blocks' requests.
    pooled: Block,
    /// Each block's p50 of the account's GET, and of its LIST.
    get_p50s: Vec<f64>,
    list_p50s: Vec<f64>,
    /// The master's largest resident memory after its blocks.
    max_rss_bytes: u64,
}

impl Condition {
    fn add(&mut self, block: Block, rss_bytes: u64) {
        self.get_p50s.push(block.account_get.percentile_ms(50.0));
        self.list_p50s.push(block.account_list.percentile_ms(50.0));
        self.pooled.extend(block);
        self.max_rss_bytes = self.max_rss_bytes.max(rss_bytes);
    }
}

/// `with` over `without`; none over nothing.
fn ratio(with: f64, without: f64) -> Option<f64> {
    (without > 0.0).then(|| with / without)
}

/// Each cycle's ratio: its block's p50 (`with[c]`) over the mean of the
/// blocks without just before and after it (`without[c]`,
/// `without[c + 1]`).
fn cycle_ratios(without: &[f64], with: &[f64]) -> Vec<Option<f64>> {
    with.iter()
        .enumerate()
        .map(|(c, w)| {
            let before = without.get(c)?;
            let after = without.get(c + 1)?;
            ratio(*w, (before + after) / 2.0)
        })
        .collect()
}

/// The account's latency with the other bindings over without, pooled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ratios {
    get_p50: Option<f64>,
    list_p50: Option<f64>,
    get_p99: Option<f64>,
    list_p99: Option<f64>,
}

impl Ratios {
    fn of(without: &Block, with: &Block) -> Ratios {
        let at = |p: f64, without: &Latencies, with: &Latencies| {
            ratio(with.percentile_ms(p), without.percentile_ms(p))
        };
        Ratios {
            get_p50: at(50.0, &without.account_get, &with.account_get),
            list_p50: at(50.0, &without.account_list, &with.account_list),
            get_p99: at(99.0, &without.account_get, &with.account_get),
            list_p99: at(99.0, &without.account_list, &with.account_list),
        }
    }

    /// The larger of the GET's and the LIST's p50 ratios: the figure
    /// `--max-rbac-ratio` holds.
    fn worst_p50(&self) -> Option<f64> {
        Some(self.get_p50?.max(self.list_p50?))
    }
}

/// Why the run fails; empty when it passes. A limit of 0 holds nothing.
fn failures(ratios: &Ratios, max_p50: f64, max_p99: f64) -> Vec<String> {
    let checks = [
        ("GET", "p50", ratios.get_p50, max_p50, "--max-rbac-ratio"),
        ("LIST", "p50", ratios.list_p50, max_p50, "--max-rbac-ratio"),
        (
            "GET",
            "p99",
            ratios.get_p99,
            max_p99,
            "--max-rbac-p99-ratio",
        ),
        (
            "LIST",
            "p99",
            ratios.list_p99,
            max_p99,
            "--max-rbac-p99-ratio",
        ),
    ];
    let mut failures = Vec::new();
    for (request, percentile, ratio, max, flag) in checks {
        if max <= 0.0 {
            continue;
        }
        match ratio {
            Some(r) if r <= max => {}
            Some(r) => failures.push(format!(
                "the account's {request} {percentile} with the other bindings is {r:.2} x \
                 without them, over {flag} {max}"
            )),
            None => failures.push(format!(
                "no {request} was timed without the other bindings, so there is no \
                 {percentile} ratio"
            )),
        }
    }
    failures
}

pub async fn run(args: RbacArgs) -> anyhow::Result<serde_json::Value> {
    validate(&args)?;
    eprintln!("starting a skiff master");
    let master = BenchMaster::start(&[]).await?;
    let address = master.process.api_addr.clone();
    let admin = RestConnection::connect(&address, admin_rest_tls(&address)?).await?;
    let started = Instant::now();
    write_all(&admin, &Arc::new(namespaces(&args)), Write::Create)
        .await
        .context("creating the namespaces")?;
    write_all(&admin, &Arc::new(fixture(&args)), Write::Create)
        .await
        .context("creating the account, its Role and RoleBinding, the ConfigMaps and Roles")?;
    let token = account_token(&admin).await?;
    let account = RestConnection::connect(&address, token_rest_tls(&address)?)
        .await?
        .with_bearer(&token);
    check_account(&account, args.namespaces).await?;
    let mut unsettled = usize::from(!settle(&admin).await?);
    let present = BindingCounts::read(&admin).await?;
    let with_others = present.with_others(&args);
    eprintln!(
        "{} namespaces, {} ConfigMaps and the account {} made in {:.1}s; {} RoleBindings and \
         {} ClusterRoleBindings stored (its own and the defaults); {} cycles of {} requests \
         of each kind, with {} RoleBindings and {} ClusterRoleBindings more",
        args.namespaces,
        args.configmaps,
        account_user(),
        started.elapsed().as_secs_f64(),
        present.role_bindings,
        present.cluster_role_bindings,
        args.cycles,
        args.requests,
        args.bindings,
        args.cluster_bindings
    );

    let others = Arc::new(other_bindings(&args));
    let mut without = Condition::default();
    let mut with = Condition::default();
    let mut creating = Duration::ZERO;
    without.add(
        measure_block(&account, &admin, &args).await?,
        master.sample()?.rss_bytes,
    );
    for cycle in 0..args.cycles {
        let writing = Instant::now();
        write_all(&admin, &others, Write::Create)
            .await
            .context("creating the other bindings")?;
        creating += writing.elapsed();
        unsettled += usize::from(!settle(&admin).await?);
        with_others
            .expect(&admin, "with the other bindings")
            .await?;
        check_refused(&account, args.namespaces)
            .await
            .context("with the other bindings present")?;
        with.add(
            measure_block(&account, &admin, &args).await?,
            master.sample()?.rss_bytes,
        );
        write_all(&admin, &others, Write::Delete)
            .await
            .context("deleting the other bindings")?;
        unsettled += usize::from(!settle(&admin).await?);
        present
            .expect(&admin, "after deleting the other bindings")
            .await?;
        without.add(
            measure_block(&account, &admin, &args).await?,
            master.sample()?.rss_bytes,
        );
        eprintln!(
            "cycle {cycle}: the account's p50 with the bindings (without, before/after): \
             GET {:.3} ms ({:.3}/{:.3}), LIST {:.3} ms ({:.3}/{:.3})",
            with.get_p50s[cycle],
            without.get_p50s[cycle],
            without.get_p50s[cycle + 1],
            with.list_p50s[cycle],
            without.list_p50s[cycle],
            without.list_p50s[cycle + 1]
        );
    }

    let (before, after) = (&without.pooled, &with.pooled);
    let ratios = Ratios::of(before, after);
    let verdict = failures(&ratios, args.max_rbac_ratio, args.max_rbac_p99_ratio);
    let failure = (!verdict.is_empty()).then(|| format!("rbac: {}", verdict.join("; ")));
    let p50 = |l: &Latencies| l.percentile_ms(50.0);
    let p99 = |l: &Latencies| l.percentile_ms(99.0);
    let shown = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
    let written = (args.bindings + args.cluster_bindings) * args.cycles;
    let writes_per_sec = if creating.is_zero() {
        0.0
    } else {
        written as f64 / creating.as_secs_f64()
    };
    eprintln!(
        "rbac: the account's GET p50 {:.3} -> {:.3} ms (x{}), p99 {:.3} -> {:.3} ms (x{}); \
         LIST p50 {:.3} -> {:.3} ms (x{}), p99 {:.3} -> {:.3} ms (x{}); the admin's (no \
         RBAC) GET p50 x{}, LIST p50 x{}",
        p50(&before.account_get),
        p50(&after.account_get),
        shown(ratios.get_p50),
        p99(&before.account_get),
        p99(&after.account_get),
        shown(ratios.get_p99),
        p50(&before.account_list),
        p50(&after.account_list),
        shown(ratios.list_p50),
        p99(&before.account_list),
        p99(&after.account_list),
        shown(ratios.list_p99),
        shown(ratio(p50(&after.admin_get), p50(&before.admin_get))),
        shown(ratio(p50(&after.admin_list), p50(&before.admin_list)))
    );
    let rounded = |r: Option<f64>| r.map(|r| (r * 1000.0).round() / 1000.0);
    let rounded_all =
        |rs: Vec<Option<f64>>| -> Vec<Option<f64>> { rs.into_iter().map(rounded).collect() };
    let report = json!({
        "scenario": "rbac",
        "caller": account_user(),
        "bindings": args.bindings,
        "cluster_bindings": args.cluster_bindings,
        "role_bindings_stored": with_others.role_bindings,
        "cluster_role_bindings_stored": with_others.cluster_role_bindings,
        "role_bindings_stored_without": present.role_bindings,
        "cluster_role_bindings_stored_without": present.cluster_role_bindings,
        "namespaces": args.namespaces,
        "configmaps": args.configmaps,
        "requests": args.requests,
        "cycles": args.cycles,
        "get_p50_ms": round_fine(p50(&before.account_get)),
        "get_p99_ms": round_fine(p99(&before.account_get)),
        "get_with_bindings_p50_ms": round_fine(p50(&after.account_get)),
        "get_with_bindings_p99_ms": round_fine(p99(&after.account_get)),
        "list_p50_ms": round_fine(p50(&before.account_list)),
        "list_p99_ms": round_fine(p99(&before.account_list)),
        "list_with_bindings_p50_ms": round_fine(p50(&after.account_list)),
        "list_with_bindings_p99_ms": round_fine(p99(&after.account_list)),
        "get_ratio_p50": rounded(ratios.get_p50),
        "get_ratio_p99": rounded(ratios.get_p99),
        "list_ratio_p50": rounded(ratios.list_p50),
        "list_ratio_p99": rounded(ratios.list_p99),
        "ratio": rounded(ratios.worst_p50()),
        "get_cycle_ratios_p50": rounded_all(cycle_ratios(&without.get_p50s, &with.get_p50s)),
        "list_cycle_ratios_p50": rounded_all(cycle_ratios(&without.list_p50s, &with.list_p50s)),
        "admin_get_p50_ms": round_fine(p50(&before.admin_get)),
        "admin_list_p50_ms": round_fine(p50(&before.admin_list)),
        "admin_get_ratio_p50": rounded(ratio(p50(&after.admin_get), p50(&before.admin_get))),
        "admin_list_ratio_p50": rounded(ratio(p50(&after.admin_list), p50(&before.admin_list))),
        "account_over_admin_get_p50": rounded(ratio(p50(&before.account_get), p50(&before.admin_get))),
        "account_over_admin_list_p50": rounded(ratio(p50(&before.account_list), p50(&before.admin_list))),
        "binding_writes_per_sec": round(writes_per_sec),
        "unsettled_blocks": unsettled,
        "master_rss_mib_without": round(without.max_rss_bytes as f64 / MIB),
        "master_rss_mib_with": round(with.max_rss_bytes as f64 / MIB),
        "max_rbac_ratio": args.max_rbac_ratio,
        "max_rbac_p99_ratio": args.max_rbac_p99_ratio,
        "pass": failure.is_none(),
        "failure": failure,
    });
    drop(account);
    drop(admin);
    drop(master);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use skiff_master::api::authz::kubernetes_user;
    use skiff_objects::rbac::{Subject, SubjectExt};
    use skiff_security::{Identity, TokenCredential};

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        rbac: RbacArgs,
    }

    /// `skiff-bench rbac` with the flags in `line`.
    fn parse(line: &str) -> RbacArgs {
        let argv = std::iter::once("rbac").chain(line.split_whitespace());
        Cli::try_parse_from(argv).unwrap().rbac
    }

    #[test]
    fn defaults_are_the_issues_thousand_bindings_held_to_ten_percent() {
        let args = parse("");
        assert_eq!((args.bindings, args.cluster_bindings), (1000, 10));
        assert_eq!((args.namespaces, args.configmaps), (50, 10));
        assert_eq!((args.requests, args.cycles), (500, 5));
        assert!((args.max_rbac_ratio - 1.10).abs() < 1e-9);
        assert!(args.max_rbac_p99_ratio.abs() < 1e-9);
        assert!(validate(&args).is_ok());
        let smoke = parse(
            "--bindings 200 --cluster-bindings 5 --namespaces 10 --requests 50 --cycles 2 \
             --max-rbac-ratio 3",
        );
        assert_eq!((smoke.bindings, smoke.requests, smoke.cycles), (200, 50, 2));
        assert!((smoke.max_rbac_ratio - 3.0).abs() < 1e-9);
        assert!(validate(&smoke).is_ok());
    }

    #[test]
    fn refuses_runs_that_cannot_be_made() {
        for line in [
            "--bindings 0",
            "--namespaces 0",
            "--configmaps 0",
            "--requests 0",
            "--cycles 0",
            "--max-rbac-ratio 0.9",
            "--max-rbac-ratio=-1",
            "--max-rbac-ratio NaN",
            "--max-rbac-p99-ratio 0.5",
        ] {
            assert!(validate(&parse(line)).is_err(), "{line}");
        }
        assert!(validate(&parse("--max-rbac-ratio 0 --max-rbac-p99-ratio 2")).is_ok());
        assert!(validate(&parse("--namespaces 1 --cluster-bindings 0")).is_ok());
    }

    /// The measuring account's user and groups, as the master makes them.
    fn measuring_user() -> (String, Vec<String>) {
        let user = kubernetes_user(&Identity::ServiceAccount {
            namespace: MEASURED_NAMESPACE.into(),
            name: ACCOUNT.into(),
            uid: "u-1".into(),
            credential: TokenCredential::default(),
        });
        (user.username, user.groups)
    }

    /// The subjects of a binding, as the master reads them.
    fn subjects_of(binding: &BenchObject) -> Vec<Subject> {
        serde_json::from_value(binding.body["subjects"].clone()).unwrap()
    }

    #[test]
    fn the_other_bindings_spread_over_namespaces_and_never_name_the_account_or_its_groups() {
        let args = parse("--bindings 1000 --cluster-bindings 10 --namespaces 50");
        let bindings = other_bindings(&args);
        assert_eq!(bindings.len(), 1010);
        let (user, groups) = measuring_user();
        assert_eq!(user, account_user());
        let mut per_namespace = std::collections::BTreeMap::new();
        let mut accounts = std::collections::BTreeSet::new();
        for binding in &bindings {
            let namespace = binding.body["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            *per_namespace.entry(namespace.to_owned()).or_insert(0) += 1;
            for subject in subjects_of(binding) {
                assert!(
                    !subject.applies_to(&user, &groups, namespace),
                    "{} names the account: {subject:?}",
                    binding.path
                );
                if subject.kind == "ServiceAccount" {
                    accounts.insert(format!(
                        "{}/{}",
                        subject.namespace.as_deref().unwrap_or_default(),
                        subject.name
                    ));
                }
            }
        }
        // 20 RoleBindings in each of the 50 namespaces, the account's among
        // them, and the ClusterRoleBindings ("").
        assert_eq!(per_namespace.len(), 51);
        assert_eq!(per_namespace[MEASURED_NAMESPACE], 20);
        assert_eq!(per_namespace["rbac-49"], 20);
        assert_eq!(per_namespace[""], 10);
        assert_eq!(accounts.len(), 1000, "as many accounts as RoleBindings");
        // They do name their own subjects: the test above could fail.
        let first = &bindings[0];
        assert_eq!(
            first.path,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac-0/rolebindings/app-binding-0"
        );
        let app = "system:serviceaccount:rbac-0:app-0";
        assert!(subjects_of(first)
            .iter()
            .any(|s| s.applies_to(app, &[], MEASURED_NAMESPACE)));
        let team = ["team-0".to_owned()];
        assert!(subjects_of(first).iter().any(|s| s.applies_to(
            "someone",
            &team,
            MEASURED_NAMESPACE
        )));
        let cluster = &bindings[1000];
        assert_eq!(
            cluster.collection,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
        );
        assert_eq!(cluster.body["kind"], "ClusterRoleBinding");
        assert!(subjects_of(cluster)
            .iter()
            .any(|s| s.applies_to(app, &[], "")));
        // Roles and ClusterRoles in turn.
        let roles: Vec<&str> = bindings[..3]
            .iter()
            .map(|b| b.body["roleRef"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(roles, [APP_ROLE, "view", "edit"]);
    }

    #[test]
    fn the_fixture_grants_the_account_its_configmaps_through_one_role_binding() {
        let args = parse("--namespaces 3 --configmaps 4");
        let objects = fixture(&args);
        let (user, groups) = measuring_user();
        let bindings: Vec<&BenchObject> = objects
            .iter()
            .filter(|o| o.body["kind"] == "RoleBinding")
            .collect();
        assert_eq!(bindings.len(), 1);
        let binding = bindings[0];
        assert!(subjects_of(binding).iter().any(|s| s.applies_to(
            &user,
            &groups,
            MEASURED_NAMESPACE
        )));
        assert_eq!(binding.body["roleRef"]["kind"], "Role");
        assert_eq!(binding.body["roleRef"]["name"], ACCOUNT);
        let role = objects
            .iter()
            .find(|o| o.body["kind"] == "Role" && o.body["metadata"]["name"] == ACCOUNT)
            .expect("the account's Role");
        assert_eq!(
            role.body["rules"][0]["resources"],
            json!(["configmaps"]),
            "ConfigMaps only: Secrets stay refused"
        );
        assert_eq!(role.body["rules"][0]["verbs"], json!(["get", "list"]));
        let config_maps: Vec<&str> = objects
            .iter()
            .filter(|o| o.body["kind"] == "ConfigMap")
            .map(|o| o.path.as_str())
            .collect();
        assert_eq!(config_maps.len(), 4);
        assert_eq!(config_maps[0], Request::Get.path());
        assert_eq!(Request::List.path(), "/api/v1/namespaces/rbac-0/configmaps");
        let app_roles = objects
            .iter()
            .filter(|o| o.body["metadata"]["name"] == APP_ROLE)
            .count();
        assert_eq!(app_roles, 3, "one in each namespace");
        assert!(objects.iter().any(|o| o.body["kind"] == "ServiceAccount"
            && o.path == "/api/v1/namespaces/rbac-0/serviceaccounts/bench-reader"));
        let made = namespaces(&args);
        assert_eq!(made[2].path, "/api/v1/namespaces/rbac-2");
    }

    #[test]
    fn answers_are_checked_for_what_was_asked() {
        let config_map = br#"{"kind":"ConfigMap","metadata":{"name":"bench-config-0"}}"#;
        assert!(Request::Get.check(config_map, 10).is_ok());
        let other = br#"{"kind":"ConfigMap","metadata":{"name":"bench-config-1"}}"#;
        assert!(Request::Get.check(other, 10).is_err());
        let list =
            br#"{"kind":"ConfigMapList","metadata":{"resourceVersion":"7"},"items":[{},{},{}]}"#;
        assert!(Request::List.check(list, 3).is_ok());
        assert!(Request::List.check(list, 4).is_err());
        assert!(Request::List.check(config_map, 0).is_err());
        assert!(Request::Get.check(b"not json", 0).is_err());
        let token = br#"{"kind":"TokenRequest","status":{"token":"eyJ.a.b"}}"#;
        assert_eq!(token_in(token).unwrap(), "eyJ.a.b");
        assert!(token_in(br#"{"kind":"TokenRequest","status":{}}"#).is_err());
        let review = br#"{"kind":"SelfSubjectReview","status":{"userInfo":{"username":"system:serviceaccount:rbac-0:bench-reader"}}}"#;
        assert_eq!(reviewed_user(review).unwrap(), account_user());
        assert!(reviewed_user(br#"{"status":{}}"#).is_err());
    }

    fn close(ratio: Option<f64>, expected: f64) -> bool {
        ratio.is_some_and(|r| (r - expected).abs() < 1e-9)
    }

    fn block_of(get_ms: &[u64], list_ms: &[u64]) -> Block {
        let mut block = Block::default();
        for ms in get_ms {
            block.account_get.push(Duration::from_millis(*ms));
        }
        for ms in list_ms {
            block.account_list.push(Duration::from_millis(*ms));
        }
        block
    }

    #[test]
    fn ratios_are_with_over_without_pooled_and_per_cycle_over_both_neighbours() {
        let mut without = Condition::default();
        let mut with = Condition::default();
        without.add(block_of(&[1, 1, 1], &[2, 2, 2]), 10);
        with.add(block_of(&[2, 2, 2], &[2, 2, 2]), 30);
        without.add(block_of(&[3, 3, 3], &[2, 2, 2]), 20);
        assert_eq!(without.get_p50s.len(), 2);
        assert!(
            close(Some(without.get_p50s[1]), 3.0),
            "{:?}",
            without.get_p50s
        );
        assert_eq!(without.max_rss_bytes, 20);
        let per_cycle = cycle_ratios(&without.get_p50s, &with.get_p50s);
        assert_eq!(per_cycle.len(), 1);
        assert!(
            close(per_cycle[0], 1.0),
            "2 ms between 1 and 3: {per_cycle:?}"
        );
        assert_eq!(cycle_ratios(&[1.0], &[2.0]), [None]);
        assert_eq!(cycle_ratios(&[0.0, 0.0], &[2.0]), [None]);
        let ratios = Ratios::of(&without.pooled, &with.pooled);
        // Without, pooled: 1 1 1 3 3 3: p50 1 ms, p99 3 ms.
        assert!(close(ratios.get_p50, 2.0), "{ratios:?}");
        assert!(close(ratios.get_p99, 2.0 / 3.0), "{ratios:?}");
        assert!(close(ratios.list_p50, 1.0), "{ratios:?}");
        assert!(close(ratios.worst_p50(), 2.0), "{ratios:?}");
        assert_eq!(Ratios::default().worst_p50(), None);
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn the_run_fails_when_a_p50_ratio_is_over_the_limit_and_p99_only_when_asked() {
        let within = Ratios {
            get_p50: Some(1.05),
            list_p50: Some(1.10),
            get_p99: Some(1.8),
            list_p99: Some(0.9),
        };
        assert!(failures(&within, 1.10, 0.0).is_empty());
        let slow_list = Ratios {
            list_p50: Some(1.25),
            ..within
        };
        let failed = failures(&slow_list, 1.10, 0.0);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("LIST p50"), "{failed:?}");
        assert!(failed[0].contains("1.25 x"), "{failed:?}");
        assert!(failures(&slow_list, 0.0, 0.0).is_empty(), "0 only reports");
        let tail = failures(&within, 1.10, 1.5);
        assert_eq!(tail.len(), 1);
        assert!(tail[0].contains("GET p99"), "{tail:?}");
        let nothing = Ratios::default();
        assert_eq!(failures(&nothing, 1.10, 0.0).len(), 2);
        assert!(failures(&nothing, 0.0, 0.0).is_empty());
    }
}
