//! RBAC with kubectl 1.35 against a real `skiff master`: the default
//! ClusterRoles and ClusterRoleBindings are there once it leads (`view`
//! aggregated from `system:aggregate-to-view`); a Role and a RoleBinding
//! for the service account `team/robot` made with `kubectl create role` and
//! `kubectl create rolebinding --serviceaccount`; then SubjectAccessReviews
//! (`kubectl create -f`, which prints the status) asking whether that
//! service account may list pods in `team` (yes, naming the binding) and
//! in `default` (no, naming the user and the request), and whether
//! `system:masters` may delete nodes (yes).
//!
//! Then service accounts acting with their own tokens (kubectl with a
//! kubeconfig holding the token and the CA alone, as a pod calls the API),
//! each allowed one verb, which is all Kubernetes asks for its request: an
//! account that may `get,list` pods is refused (403) an eviction until it
//! may `create` `pods/eviction`, and then evicts a Running, Ready pod (on a
//! hollow node) whose PodDisruptionBudget allows it (201, and the pod
//! goes) though it may neither write the budget's status nor delete pods;
//! one that may only `patch` ConfigMaps patches one (it may not even read
//! it); one that may only `watch` ConfigMaps watches them from the start
//! (their `ADDED` events, though it may not list them) and one that may
//! only `list` them may not watch; one that may `list` only the ConfigMap
//! `settings` (`resourceNames`) lists it with the field selector
//! `metadata.name=settings`, and no other way; one that may only
//! `deletecollection` ConfigMaps deletes the labelled ones with a
//! collection's DELETE (it may neither list nor delete one). Each refusal is kube-apiserver's sentence
//! (`configmaps is forbidden: User "system:serviceaccount:narrow:sweeper"
//! cannot list resource "configmaps" in API group "" in the namespace
//! "narrow"`).
//!
//! Then impersonation (`kubectl --as`): the admin acting as the service
//! account `narrow/patcher` is allowed and refused exactly what that
//! account is with its own token; `kubectl --as=jane --as-group=devs auth
//! whoami` shows jane in devs (and `system:authenticated`); a service
//! account without `impersonate` is refused in kube-apiserver's words
//! (`users "jane" is forbidden: User "system:serviceaccount:narrow:impostor"
//! cannot impersonate resource "users" in API group "" at the cluster
//! scope`) and, granted `impersonate` on the user `jane` alone by a
//! ClusterRole, acts as jane (with jane's rights, not its own) but not as
//! bob nor in a group. Escalation refusals are unit-tested
//! (`api::rbac::escalation`, `api::authz`).

use std::time::Duration;

use base64::Engine;
use skiff_e2e::eventually;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::ready_master;

/// How long the leader may take to make the defaults.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_access_reviews_answer_from_role_bindings() {
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let kubectl = Kubectl::new(binary, &m.api_addr).unwrap();
    let task = tokio::task::spawn_blocking(move || scenario(&kubectl));
    if let Err(e) = task.await {
        eprintln!("kubectl 1.35: {}", m.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("rbac scenario: {e}");
    }
}

fn scenario(k: &Kubectl) {
    default_policy(k);
    k.ok(&["create", "namespace", "team"]);
    let role = k.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
        "-n",
        "team",
    ]);
    assert_has(&role, "role.rbac.authorization.k8s.io/pod-reader created");
    let binding = k.ok(&[
        "create",
        "rolebinding",
        "robot-pods",
        "--role=pod-reader",
        "--serviceaccount=team:robot",
        "-n",
        "team",
    ]);
    assert_has(
        &binding,
        "rolebinding.rbac.authorization.k8s.io/robot-pods created",
    );

    let robot = "system:serviceaccount:team:robot";
    let allowed = review(k, "in-team", robot, &[], "team", "list", "pods");
    assert_eq!(allowed.0, "true", "{allowed:?}");
    assert_eq!(
        allowed.1,
        r#"RBAC: allowed by RoleBinding "robot-pods/team" of Role "pod-reader" to ServiceAccount "robot/team""#
    );
    let groups = ["system:serviceaccounts", "system:serviceaccounts:team"];
    let refused = review(k, "in-default", robot, &groups, "default", "list", "pods");
    assert_eq!(refused.0, "false", "{refused:?}");
    assert_has(
        &refused.1,
        r#"RBAC: no rules authorize user "system:serviceaccount:team:robot""#,
    );
    assert_has(
        &refused.1,
        r#"to "list" resource "pods" in namespace "default""#,
    );
    // Not a write the role grants either.
    let delete = review(k, "delete", robot, &[], "team", "delete", "pods");
    assert_eq!(delete.0, "false", "{delete:?}");
    // The admins' group may do everything.
    let masters = review(
        k,
        "masters",
        "someone",
        &["system:masters"],
        "",
        "delete",
        "nodes",
    );
    assert_eq!(masters.0, "true", "{masters:?}");

    // The whole answer, as kubectl prints a created review.
    let manifest = write_review(k, "as-yaml", robot, &[], "team", "get", "pods");
    let out = k.ok(&["create", "-f", manifest.as_str(), "-o", "yaml"]);
    assert_has(&out, "kind: SubjectAccessReview");
    assert_has(&out, "allowed: true");
    assert_has(&out, "robot-pods/team");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_need_only_the_verb_kubernetes_authorizes_a_request_as() {
    kube_clients::on_hollow_cluster(KubectlVersion::V1_35, &["hollow-1"], narrow_grants).await;
}

/// The accounts of [`narrow_grants`] in `narrow`, their Roles (each one
/// verb, besides reading pods for the evictor), and all but the evictor's
/// eviction bound.
const NARROW: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: evictor, namespace: narrow}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: patcher, namespace: narrow}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sweeper, namespace: narrow}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: watcher, namespace: narrow}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: lister, namespace: narrow}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [pods], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: evict, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [pods/eviction], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: patch-configmaps, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: sweep-configmaps, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], verbs: [get, deletecollection]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: watch-configmaps, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], verbs: [watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: list-configmaps, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], verbs: [list]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: picker, namespace: narrow}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: list-settings, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], resourceNames: [settings], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: picker, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: list-settings}
subjects: [{kind: ServiceAccount, name: picker, namespace: narrow}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: evictor-reads, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: evictor, namespace: narrow}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: patcher, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-configmaps}
subjects: [{kind: ServiceAccount, name: patcher, namespace: narrow}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: sweeper, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: sweep-configmaps}
subjects: [{kind: ServiceAccount, name: sweeper, namespace: narrow}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: watcher, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: watch-configmaps}
subjects: [{kind: ServiceAccount, name: watcher, namespace: narrow}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lister, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: list-configmaps}
subjects: [{kind: ServiceAccount, name: lister, namespace: narrow}]
";

/// A budget that lets the `victim` pod go: none of it need stay.
const VICTIM_BUDGET: &str = "\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: victim, namespace: narrow}
spec:
  minAvailable: 0
  selector:
    matchLabels: {app: victim}
";

/// The ConfigMaps the patcher and the sweeper work on.
const CONFIG_MAPS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: narrow}
data: {mode: slow}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: old-1, namespace: narrow, labels: {batch: old}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: old-2, namespace: narrow, labels: {batch: old}}
";

/// The accounts of [`NARROW`], each doing what its one verb allows and
/// refused what it does not.
fn narrow_grants(k: &Kubectl, api_addr: &str) {
    k.ok(&["create", "namespace", "narrow"]);
    apply(k, "narrow", NARROW);
    let evictor = Account::new(k, api_addr, "evictor");
    let patcher = Account::new(k, api_addr, "patcher");
    let sweeper = Account::new(k, api_addr, "sweeper");
    let watcher = Account::new(k, api_addr, "watcher");
    let lister = Account::new(k, api_addr, "lister");
    let picker = Account::new(k, api_addr, "picker");
    evictions(k, &evictor);
    apply(k, "config-maps", CONFIG_MAPS);
    watches(&watcher, &lister);
    named_lists(&picker);
    patches(k, &patcher, &sweeper);
    collection_deletes(k, &patcher, &sweeper);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_acts_exactly_as_the_user_it_is_allowed_to_be() {
    kube_clients::on_hollow_cluster(KubectlVersion::V1_35, &[], impersonations).await;
}

/// The accounts of [`impersonations`] in `narrow`: `patcher` may get and
/// patch ConfigMaps, `impostor` nothing; the user jane may list them.
const IMPERSONATION: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: patcher, namespace: narrow}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: impostor, namespace: narrow}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: patch-configmaps, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: patcher, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-configmaps}
subjects: [{kind: ServiceAccount, name: patcher, namespace: narrow}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: list-configmaps, namespace: narrow}
rules:
- {apiGroups: [\"\"], resources: [configmaps], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: jane, namespace: narrow}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: list-configmaps}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: jane}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: narrow}
data: {mode: slow}
";

/// `impersonate` on the user `jane` alone, bound to `impostor`.
const IMPERSONATE_JANE: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-jane}
rules:
- {apiGroups: [\"\"], resources: [users], resourceNames: [jane], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: impostor-as-jane}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-jane}
subjects: [{kind: ServiceAccount, name: impostor, namespace: narrow}]
";

/// The admin acting as an account, a user shown by whoami, and a service
/// account refused and then allowed to act as jane alone.
fn impersonations(k: &Kubectl, api_addr: &str) {
    k.ok(&["create", "namespace", "narrow"]);
    apply(k, "impersonation", IMPERSONATION);
    let patcher = Account::new(k, api_addr, "patcher");
    let impostor = Account::new(k, api_addr, "impostor");

    // The admin as patcher: what patcher may (get), and refused what it
    // may not (list), in the same words as patcher itself.
    let as_patcher = "--as=system:serviceaccount:narrow:patcher";
    let mode = [
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.data.mode}",
    ];
    let admin_mode: Vec<&str> = [as_patcher, "-n", "narrow"]
        .into_iter()
        .chain(mode)
        .collect();
    assert_eq!(k.ok(&admin_mode), "slow");
    assert_eq!(patcher.ok(&mode), "slow");
    let refused = r#"configmaps is forbidden: User "system:serviceaccount:narrow:patcher" cannot list resource "configmaps" in API group "" in the namespace "narrow""#;
    let err = k.fails(&[as_patcher, "get", "configmaps", "-n", "narrow"]);
    assert_has(&err, "(Forbidden)");
    assert_has(&err, refused);
    let err = patcher.fails(&["get", "configmaps"]);
    assert_has(&err, refused);
    // Without --as, the admin lists them.
    assert_has(
        &k.ok(&["get", "configmaps", "-n", "narrow", "-o", "name"]),
        "configmap/settings",
    );

    // whoami shows the user acted as, its group and system:authenticated.
    let whoami = k.ok(&[
        "--as=jane",
        "--as-group=devs",
        "auth",
        "whoami",
        "-o",
        "json",
    ]);
    let review: serde_json::Value = serde_json::from_str(&whoami).expect("whoami's JSON");
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], "jane", "{whoami}");
    assert_eq!(
        user["groups"],
        serde_json::json!(["devs", "system:authenticated"]),
        "{whoami}"
    );
    let whoami = k.ok(&[as_patcher, "auth", "whoami", "-o", "json"]);
    let review: serde_json::Value = serde_json::from_str(&whoami).expect("whoami's JSON");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:narrow",
            "system:authenticated"
        ]),
        "{whoami}"
    );

    // A service account without `impersonate`: 403 in Kubernetes' words.
    let refused_as = |user: &str, resource: &str| {
        format!(
            r#"{resource} "{user}" is forbidden: User "system:serviceaccount:narrow:impostor" cannot impersonate resource "{resource}" in API group "" at the cluster scope"#
        )
    };
    let err = impostor.fails(&["--as=jane", "get", "configmaps"]);
    assert_has(&err, "(Forbidden)");
    assert_has(&err, &refused_as("jane", "users"));
    // Its own rights list no ConfigMaps either.
    assert_has(&impostor.fails(&["get", "configmaps"]), "(Forbidden)");

    // Granted `impersonate` on jane alone: jane's rights as jane; not bob,
    // nor jane in a group it may not add.
    apply(k, "impersonate-jane", IMPERSONATE_JANE);
    let listed = impostor.ok(&["--as=jane", "get", "configmaps", "-o", "name"]);
    assert_has(&listed, "configmap/settings");
    let err = impostor.fails(&["--as=jane", "get", "configmap", "settings"]);
    assert_has(
        &err,
        r#"configmaps "settings" is forbidden: User "jane" cannot get resource "configmaps" in API group "" in the namespace "narrow""#,
    );
    let err = impostor.fails(&["--as=bob", "get", "configmaps"]);
    assert_has(&err, &refused_as("bob", "users"));
    let err = impostor.fails(&["--as=jane", "--as-group=devs", "get", "configmaps"]);
    assert_has(&err, &refused_as("devs", "groups"));
}

/// The evictor, reading pods, is refused an eviction; allowed `create`
/// of `pods/eviction`, it evicts a pod whose budget takes the disruption.
fn evictions(k: &Kubectl, evictor: &Account<'_>) {
    let ran = k.ok(&[
        "run",
        "victim",
        "--image=busybox",
        "--labels=app=victim",
        "-n",
        "narrow",
    ]);
    assert_has(&ran, "pod/victim created");
    let ready = r#"jsonpath={.status.phase} {.status.conditions[?(@.type=="Ready")].status}"#;
    eventually("victim Running and Ready", SETTLE, || {
        let seen = k.ok(&["get", "pod", "victim", "-n", "narrow", "-o", ready]);
        if seen == "Running True" {
            Ok(())
        } else {
            Err(seen)
        }
    });
    apply(k, "victim-budget", VICTIM_BUDGET);
    // The budget counted with the pod healthy: the eviction takes one of
    // its disruptions (a write of its status), not merely deletes a pod
    // no budget counts.
    let counted = "jsonpath={.status.disruptionsAllowed} {.status.currentHealthy}";
    eventually("the victim's budget counted", SETTLE, || {
        let seen = k.ok(&["get", "pdb", "victim", "-n", "narrow", "-o", counted]);
        if seen == "1 1" {
            Ok(())
        } else {
            Err(seen)
        }
    });
    let eviction = k.home().join("eviction.json");
    let body = r#"{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "victim", "namespace": "narrow"}}"#;
    std::fs::write(&eviction, body).unwrap();
    let eviction = eviction.to_string_lossy().into_owned();
    let url = "/api/v1/namespaces/narrow/pods/victim/eviction";
    let evict = ["create", "--raw", url, "-f", eviction.as_str()];

    let err = evictor.fails(&evict);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"pods "victim" is forbidden: User "system:serviceaccount:narrow:evictor" cannot create resource "pods/eviction" in API group "" in the namespace "narrow""#,
    );
    k.ok(&["get", "pod", "victim", "-n", "narrow"]);
    // Nor may it write what the eviction does.
    let err = evictor.fails(&["delete", "pod", "victim", "--wait=false"]);
    assert_has(&err, "(Forbidden)");

    let bound = k.ok(&[
        "create",
        "rolebinding",
        "evictor-evicts",
        "--role=evict",
        "--serviceaccount=narrow:evictor",
        "-n",
        "narrow",
    ]);
    assert_has(
        &bound,
        "rolebinding.rbac.authorization.k8s.io/evictor-evicts created",
    );
    // A precondition naming another uid is a conflict, and the budget
    // keeps its disruption.
    let wrong_uid = k.home().join("eviction-wrong-uid.json");
    std::fs::write(
        &wrong_uid,
        r#"{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "victim", "namespace": "narrow"}, "deleteOptions": {"preconditions": {"uid": "not-the-victims"}}}"#,
    )
    .unwrap();
    let wrong_uid = wrong_uid.to_string_lossy().into_owned();
    let err = evictor.fails(&["create", "--raw", url, "-f", wrong_uid.as_str()]);
    assert_has(&err, "(Conflict)");
    assert_has(&err, "UID in precondition: not-the-victims");
    let allowed = k.ok(&[
        "get",
        "pdb",
        "victim",
        "-n",
        "narrow",
        "-o",
        "jsonpath={.status.disruptionsAllowed}",
    ]);
    assert_eq!(allowed, "1", "the refused eviction took no disruption");
    let out = evictor.ok(&evict);
    assert_has(&out, r#""status":"Success""#);
    assert_has(&out, r#""code":201"#);
    eventually("the victim gone", SETTLE, || {
        let out = k.run(&["get", "pod", "victim", "-n", "narrow"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && err.contains("(NotFound)") {
            Ok(())
        } else {
            Err(format!("{}{err}", String::from_utf8_lossy(&out.stdout)))
        }
    });
}

/// The patcher patches `settings`, which it may read (kubectl reads what
/// it patches first, as its builder's `RetrieveLazily` does) but not
/// update; the sweeper may not patch it.
fn patches(k: &Kubectl, patcher: &Account<'_>, sweeper: &Account<'_>) {
    let patch = [
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"fast"}}"#,
    ];
    let out = patcher.ok(&patch);
    assert_has(&out, "configmap/settings patched");
    let mode = k.ok(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "narrow",
        "-o",
        "jsonpath={.data.mode}",
    ]);
    assert_eq!(mode, "fast");
    // What it may not do is update: the PUT a patch used to be authorized
    // as is refused.
    let dir = tempfile::tempdir().expect("a temp dir");
    let replacement = dir.path().join("settings.json");
    std::fs::write(
        &replacement,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"narrow"},"data":{"mode":"put"}}"#,
    )
    .expect("write the replacement");
    let err = patcher.fails(&[
        "replace",
        "--raw",
        "/api/v1/namespaces/narrow/configmaps/settings",
        "-f",
        replacement.to_str().expect("a UTF-8 path"),
    ]);
    assert_has(&err, "(Forbidden)");
    let err = sweeper.fails(&patch);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps "settings" is forbidden: User "system:serviceaccount:narrow:sweeper" cannot patch resource "configmaps" in API group "" in the namespace "narrow""#,
    );
}

/// The watcher, which may only `watch` ConfigMaps, watches them from the
/// start: a watch without a resourceVersion begins with every one as
/// `ADDED`, and is authorized as the `watch` it is, not as a list too (its
/// list is refused). The lister, which may only `list` them, lists them
/// but may not watch. (`kubectl get --watch` lists first, so the watch is
/// asked for raw.)
fn watches(watcher: &Account<'_>, lister: &Account<'_>) {
    let url = "/api/v1/namespaces/narrow/configmaps?watch=true&timeoutSeconds=2";
    let out = watcher.ok(&["get", "--raw", url]);
    let added: Vec<String> = out
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a watch event ({e}): {line}"));
            assert_eq!(event["object"]["kind"], "ConfigMap", "{line}");
            let name = event["object"]["metadata"]["name"].as_str();
            (event["type"] == "ADDED").then(|| name.unwrap_or_default().to_owned())
        })
        .collect();
    // Those applied (and kube-root-ca.crt, which every namespace gets),
    // each ADDED as the watch begins.
    for name in ["old-1", "old-2", "settings"] {
        assert!(added.iter().any(|a| a == name), "{name} not ADDED:\n{out}");
    }
    let err = watcher.fails(&["get", "configmaps"]);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps is forbidden: User "system:serviceaccount:narrow:watcher" cannot list resource "configmaps" in API group "" in the namespace "narrow""#,
    );

    let listed = lister.ok(&["get", "configmaps", "-o", "name"]);
    assert_has(&listed, "configmap/settings");
    let err = lister.fails(&["get", "--raw", url]);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps is forbidden: User "system:serviceaccount:narrow:lister" cannot watch resource "configmaps" in API group "" in the namespace "narrow""#,
    );
}

/// The picker, which may `list` only the ConfigMap `settings`
/// (`resourceNames`), lists it with a field selector naming it exactly,
/// which kube-apiserver takes as the list's name; without one, or naming
/// another, its list is refused.
fn named_lists(picker: &Account<'_>) {
    let url = |name: &str| {
        format!("/api/v1/namespaces/narrow/configmaps?fieldSelector=metadata.name%3D{name}")
    };
    let out = picker.ok(&["get", "--raw", &url("settings")]);
    let list: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("a ConfigMapList ({e}): {out}"));
    assert_eq!(list["kind"], "ConfigMapList", "{out}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {out}"))
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["settings"], "{out}");

    let err = picker.fails(&["get", "configmaps"]);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps is forbidden: User "system:serviceaccount:narrow:picker" cannot list resource "configmaps" in API group "" in the namespace "narrow""#,
    );
    let err = picker.fails(&["get", "--raw", &url("old-1")]);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps "old-1" is forbidden: User "system:serviceaccount:narrow:picker" cannot list resource "configmaps""#,
    );
}

/// The sweeper deletes the ConfigMaps labelled `batch=old` with one
/// collection's DELETE, and nothing else; it may neither list them nor
/// delete one, and the patcher may not delete the collection.
fn collection_deletes(k: &Kubectl, patcher: &Account<'_>, sweeper: &Account<'_>) {
    let url = "/api/v1/namespaces/narrow/configmaps?labelSelector=batch%3Dold";
    let err = patcher.fails(&["delete", "--raw", url]);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps is forbidden: User "system:serviceaccount:narrow:patcher" cannot deletecollection resource "configmaps" in API group "" in the namespace "narrow""#,
    );
    assert_eq!(old_config_maps(k).len(), 2);
    let err = sweeper.fails(&["get", "configmaps", "-l", "batch=old"]);
    assert_has(&err, "(Forbidden)");
    assert_has(
        &err,
        r#"configmaps is forbidden: User "system:serviceaccount:narrow:sweeper" cannot list resource "configmaps" in API group "" in the namespace "narrow""#,
    );
    assert_has(
        &sweeper.fails(&["delete", "configmap", "old-1", "--wait=false"]),
        "(Forbidden)",
    );
    let out = sweeper.ok(&["delete", "--raw", url]);
    assert_has(&out, "ConfigMapList");
    assert_eq!(old_config_maps(k), Vec::<String>::new());
    // The others stay.
    k.ok(&["get", "configmap", "settings", "-n", "narrow"]);
    // Namespaces have no deletecollection, not even for the admin, as in
    // kube-apiserver.
    let err = k.fails(&["delete", "--raw", "/api/v1/namespaces"]);
    assert_has(&err, "(MethodNotAllowed)");
    k.ok(&["get", "namespace", "narrow", "kube-system"]);
}

/// The names of the ConfigMaps labelled `batch=old`, as the admin lists
/// them.
fn old_config_maps(k: &Kubectl) -> Vec<String> {
    let out = k.ok(&[
        "get",
        "configmaps",
        "-n",
        "narrow",
        "-l",
        "batch=old",
        "-o",
        "name",
    ]);
    out.lines().map(str::to_owned).collect()
}

/// `kubectl apply -f` of `manifest`, written as `<name>.yaml`.
fn apply(k: &Kubectl, name: &str, manifest: &str) {
    let path = k.home().join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    let path = path.to_string_lossy().into_owned();
    k.ok(&["apply", "-f", path.as_str()]);
}

/// kubectl acting as a service account of `narrow`: a kubeconfig holding
/// the cluster's CA and the account's token, and no client certificate
/// (which would win over the token), as a pod calls the API.
struct Account<'k> {
    kubectl: &'k Kubectl,
    kubeconfig: String,
}

impl<'k> Account<'k> {
    /// A token of `name` (`kubectl create token`, tried until the leader
    /// has made its signing key) in a kubeconfig of its own.
    fn new(k: &'k Kubectl, api_addr: &str, name: &str) -> Account<'k> {
        let mut token = String::new();
        eventually(&format!("a token of {name}"), SETTLE, || {
            let out = k.run(&["create", "token", name, "-n", "narrow"]);
            if out.status.success() {
                token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        let admin = skiff_security::Credentials::load(k.kubeconfig()).expect("admin.conf");
        let ca = base64::engine::general_purpose::STANDARD.encode(&admin.ca_pem);
        let kubeconfig = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: skiff\n\
             \x20 cluster:\n\
             \x20   server: https://{api_addr}\n\
             \x20   certificate-authority-data: {ca}\n\
             users:\n\
             - name: {name}\n\
             \x20 user:\n\
             \x20   token: {token}\n\
             contexts:\n\
             - name: {name}\n\
             \x20 context:\n\
             \x20   cluster: skiff\n\
             \x20   user: {name}\n\
             \x20   namespace: narrow\n\
             current-context: {name}\n"
        );
        let path = k.home().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, kubeconfig).unwrap();
        Account {
            kubectl: k,
            kubeconfig: path.to_string_lossy().into_owned(),
        }
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--kubeconfig", self.kubeconfig.as_str()];
        all.extend_from_slice(args);
        all
    }

    /// `kubectl <args>` as the account, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.kubectl.ok(&self.args(args))
    }

    /// `kubectl <args>` as the account, which must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        self.kubectl.fails(&self.args(args))
    }
}

/// The defaults the leader makes: bound ClusterRoles, and `view` holding
/// the rules aggregated from `system:aggregate-to-view`.
fn default_policy(k: &Kubectl) {
    eventually("the default ClusterRoleBindings", SETTLE, || {
        let out = k.run(&[
            "get",
            "clusterrolebinding",
            "cluster-admin",
            "system:discovery",
            "-o",
            "name",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let both = text.contains("clusterrolebinding.rbac.authorization.k8s.io/cluster-admin")
            && text.contains("clusterrolebinding.rbac.authorization.k8s.io/system:discovery");
        if both {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    let subjects = k.ok(&[
        "get",
        "clusterrolebinding",
        "cluster-admin",
        "-o",
        "jsonpath={.subjects[*].kind} {.subjects[*].name}",
    ]);
    assert_eq!(subjects, "Group system:masters");
    let label = k.ok(&[
        "get",
        "clusterrole",
        "admin",
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/bootstrapping}",
    ]);
    assert_eq!(label, "rbac-defaults");
    eventually("view aggregated", SETTLE, || {
        let out = k.ok(&[
            "get",
            "clusterrole",
            "view",
            "-o",
            "jsonpath={.rules[*].resources}",
        ]);
        if out.contains("pods") && out.contains("deployments") {
            Ok(())
        } else {
            Err(out)
        }
    });
}

/// Writes a SubjectAccessReview named `name` into the runner's home:
/// may `user` in `groups` `verb` `resource` (core group) in `namespace`?
fn write_review(
    k: &Kubectl,
    name: &str,
    user: &str,
    groups: &[&str],
    namespace: &str,
    verb: &str,
    resource: &str,
) -> String {
    let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
    let manifest = format!(
        "apiVersion: authorization.k8s.io/v1\n\
         kind: SubjectAccessReview\n\
         spec:\n\
         \x20 user: \"{user}\"\n\
         \x20 groups: [{}]\n\
         \x20 resourceAttributes:\n\
         \x20   namespace: \"{namespace}\"\n\
         \x20   verb: {verb}\n\
         \x20   resource: {resource}\n",
        groups.join(", ")
    );
    let path = k.home().join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    path.to_string_lossy().into_owned()
}

/// The `status.allowed` and `status.reason` of a SubjectAccessReview
/// created by kubectl (see [`write_review`]).
fn review(
    k: &Kubectl,
    name: &str,
    user: &str,
    groups: &[&str],
    namespace: &str,
    verb: &str,
    resource: &str,
) -> (String, String) {
    let manifest = write_review(k, name, user, groups, namespace, verb, resource);
    let created = |output: &str| k.ok(&["create", "-f", manifest.as_str(), "-o", output]);
    let allowed = created("jsonpath={.status.allowed}");
    let reason = created("jsonpath={.status.reason}");
    (allowed, reason)
}

fn assert_has(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} not in:\n{text}");
}
