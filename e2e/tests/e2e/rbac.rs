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
//! skiff has no impersonation (`kubectl --as`), and service accounts'
//! tokens are not this test's: escalation refusals, which need a caller
//! that is not an admin, are unit-tested (`api::rbac::escalation`,
//! `api::authz`).

use std::time::{Duration, Instant};

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

/// The defaults the leader makes: bound ClusterRoles, and `view` holding
/// the rules aggregated from `system:aggregate-to-view`.
fn default_policy(k: &Kubectl) {
    eventually("the default ClusterRoleBindings", || {
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
    eventually("view aggregated", || {
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

fn eventually(what: &str, mut probe: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        match probe() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {SETTLE:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
