//! Service account tokens with real `skiff master` processes and kubectl
//! 1.35: every namespace has a `default` ServiceAccount; `kubectl create
//! token` (a TokenRequest) gets an ES256 JWT whose `kid` is among the keys
//! `/openid/v1/jwks` publishes; with that token and the cluster's CA alone
//! (no client certificate, as a pod calls the API) a caller is
//! authenticated as `system:serviceaccount:default:default` (200 on
//! discovery, a SelfSubjectReview naming it) but not authorized to list
//! pods (403, not 401); a token bound to a pod dies with the pod; after
//! the account is deleted (and made again, with another uid) its token is
//! refused (401), as is a garbage one. Two masters sign and accept with
//! the one key the cluster keeps, which survives a restart.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use skiff_e2e::bare_https;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlVersion};
use skiff_e2e::master::{ready_master, MasterCluster};

/// How long anything asynchronous (a controller's create, a delete seen)
/// may take.
const SETTLE: Duration = Duration::from_secs(30);
/// This cluster's tokens' issuer and audience.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const WHOAMI: &str = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;

/// Calls `probe` every 200 ms until it answers `Ok`, and returns that;
/// panics after [`SETTLE`] with what it last saw.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {SETTLE:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Part `index` (0: header, 1: claims) of a JWT, as JSON.
fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("JWT part {index} of {token:?}: {e}"));
    serde_json::from_slice(&bytes).expect("JSON")
}

/// `kubectl create token <args>`, tried until it succeeds (the leader
/// makes the signing key and the `default` account as it starts).
async fn create_token(k: &Kubectl, args: &[&str]) -> String {
    let mut command = vec!["create", "token"];
    command.extend_from_slice(args);
    eventually(&format!("kubectl {}", command.join(" ")), || {
        let out = k.run(&command);
        let answer = if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        };
        async move { answer }
    })
    .await
}

/// The uid of the `default` ServiceAccount once it exists and is not
/// `other`.
async fn default_account_uid(k: &Kubectl, other: &str) -> String {
    eventually("a default ServiceAccount", || {
        let out = k.run(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
        let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let answer = if out.status.success() && !uid.is_empty() && uid != other {
            Ok(uid)
        } else {
            Err(format!(
                "uid {uid:?}; {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        };
        async move { answer }
    })
    .await
}

/// `GET path` with `token` and no client certificate, until it answers
/// `code`; returns the body.
async fn answered(api_addr: &str, path: &str, token: Option<&str>, code: u16) -> String {
    eventually(&format!("GET {path} answered {code}"), || async move {
        match bare_https::get(api_addr, path, token).await {
            Ok((got, body)) if got == code => Ok(body),
            Ok((got, body)) => Err(format!("{got}: {body}")),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await
}

/// The `kid`s `/openid/v1/jwks` lists, read with admin.conf.
fn published_kids(k: &Kubectl) -> Vec<String> {
    let jwks: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/openid/v1/jwks"])).unwrap();
    let keys = jwks["keys"].as_array().expect("keys").clone();
    for key in &keys {
        assert_eq!(
            (
                key["kty"].as_str(),
                key["crv"].as_str(),
                key["alg"].as_str()
            ),
            (Some("EC"), Some("P-256"), Some("ES256")),
            "{key}"
        );
        assert_eq!(key["use"], "sig", "{key}");
    }
    keys.iter()
        .map(|key| key["kid"].as_str().expect("a kid").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_authenticates_its_service_account_without_a_client_certificate_until_revoked() {
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let k = Kubectl::new(binary, &m.api_addr).unwrap();
    let api = m.api_addr.as_str();

    // The default account, and a token of it.
    let first_uid = default_account_uid(&k, "").await;
    let token = create_token(&k, &["default"]).await;
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "ES256", "{header}");
    let kid = header["kid"].as_str().expect("a kid").to_owned();
    assert_eq!(published_kids(&k), std::slice::from_ref(&kid));
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["iss"], ISSUER, "{claims}");
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["aud"], serde_json::json!([ISSUER]));
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["uid"], first_uid,
        "{claims}"
    );
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3600, "the default hour");
    let configuration: Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/.well-known/openid-configuration"]))
            .unwrap();
    assert_eq!(configuration["issuer"], ISSUER);
    let jwks_uri = configuration["jwks_uri"].as_str().unwrap_or_default();
    assert!(jwks_uri.ends_with("/openid/v1/jwks"), "{configuration}");

    // With the token and the CA alone: authenticated, not authorized.
    let (code, body) =
        bare_https::get(api, "/api/v1/namespaces/default/pods", Some(token.as_str()))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log_tail()));
    assert_eq!(code, 403, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "Forbidden", "{body}");
    assert_eq!(
        status["message"],
        r#"pods is forbidden: User "system:serviceaccount:default:default" cannot list resource "pods" in API group "" in the namespace "default""#,
        "{body}"
    );
    assert_eq!(
        status["details"],
        serde_json::json!({"kind": "pods"}),
        "{body}"
    );
    answered(api, "/apis", Some(token.as_str()), 200).await;
    answered(api, "/openid/v1/jwks", Some(token.as_str()), 200).await;
    let review = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let (code, body) = bare_https::request(api, "POST", review, Some(token.as_str()), Some(WHOAMI))
        .await
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let whoami: Value = serde_json::from_str(&body).unwrap();
    let user = &whoami["status"]["userInfo"];
    assert_eq!(user["username"], "system:serviceaccount:default:default");
    assert_eq!(user["uid"], first_uid.as_str());
    let groups = user["groups"].to_string();
    assert!(groups.contains("\"system:serviceaccounts\""), "{groups}");
    assert!(
        groups.contains("\"system:serviceaccounts:default\""),
        "{groups}"
    );

    // Anything else is 401 Unauthorized.
    let body = answered(api, "/apis", Some("garbage"), 401).await;
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized")),
        "{body}"
    );
    answered(api, "/apis", None, 401).await;
    let err = k.fails(&["create", "token", "default", "--duration=1m"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    // A token bound to a pod lives as long as the pod.
    k.ok(&["run", "holder", "--image=busybox:1.36", "--restart=Never"]);
    let bound = create_token(
        &k,
        &[
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=holder",
        ],
    )
    .await;
    assert_eq!(
        jwt_part(&bound, 1)["kubernetes.io"]["pod"]["name"],
        "holder"
    );
    answered(api, "/apis", Some(bound.as_str()), 200).await;
    k.ok(&["delete", "pod", "holder", "--grace-period=0", "--force"]);
    answered(api, "/apis", Some(bound.as_str()), 401).await;

    // The account deleted: made again, another account; the token refused.
    k.ok(&["delete", "sa", "default"]);
    let second_uid = default_account_uid(&k, &first_uid).await;
    assert_ne!(second_uid, first_uid);
    answered(api, "/apis", Some(token.as_str()), 401).await;
    let fresh = create_token(&k, &["default"]).await;
    answered(api, "/apis", Some(fresh.as_str()), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_master_signs_and_accepts_with_the_one_key_the_cluster_keeps_across_restarts() {
    let Some(binary) = kube_clients::kubectl(KubectlVersion::V1_35) else {
        return;
    };
    let mut cluster = MasterCluster::start(2).await.unwrap();
    let (first, second) = (
        cluster.masters[0].api_addr.clone(),
        cluster.masters[1].api_addr.clone(),
    );
    let k0 = Kubectl::new(binary.clone(), &first).unwrap();
    let k1 = Kubectl::new(binary, &second).unwrap();
    default_account_uid(&k0, "").await;
    let from_first = create_token(&k0, &["default"]).await;
    let from_second = create_token(&k1, &["default"]).await;
    let kid = jwt_part(&from_first, 0)["kid"].clone();
    assert_eq!(jwt_part(&from_second, 0)["kid"], kid, "one key");
    let kids = published_kids(&k0);
    assert_eq!(published_kids(&k1), kids);
    assert_eq!(kids.len(), 1, "{kids:?}");
    // Each master accepts the other's token.
    answered(&second, "/apis", Some(from_first.as_str()), 200).await;
    answered(&first, "/apis", Some(from_second.as_str()), 200).await;

    // Restarted, a master still has the key, and the token still holds.
    let restarted = &mut cluster.masters[1];
    restarted.stop(Duration::from_secs(10)).unwrap();
    restarted.restart().unwrap();
    restarted
        .wait_ready(SETTLE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    answered(&second, "/apis", Some(from_first.as_str()), 200).await;
    assert_eq!(published_kids(&k1), kids);
}
