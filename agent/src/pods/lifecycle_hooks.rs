//! Containers' lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`)
//! as the kubelet runs them: an `exec` runs the command in the container
//! (through containerd, with the container's own process settings) and
//! fails on a non-zero exit; an `httpGet` is the action probes send too
//! ([`super::http_get`]: the pod's address or the hook's `host`, HTTP or
//! HTTPS without verifying the certificate, its headers) and fails only
//! when no answer comes, whatever its status, as the kubelet's does; a
//! `sleep` waits (a failure when cut short). The deprecated `tcpSocket`
//! hook is not run: like the kubelet, skiff counts it as failed. When each
//! runs, and what a failure does (a failed postStart kills the container,
//! a failed preStop is told and the stop goes on), is the pod worker's;
//! here is running one hook and saying what went wrong in the kubelet's
//! words ([`failure_message`]).

use std::time::Duration;

use skiff_proto::v1;

use crate::runtime::ContainerRuntime;

use super::http_get::{HttpGet, HttpGetError, PodAddress, Purpose};
use super::probes::resolve_port;

/// The longest an httpGet hook waits to connect and for its answer: the
/// request runs on an OS thread of its own (inside the pod's namespace
/// for the pod's address), which nothing can cancel, so it is bounded
/// even where Kubernetes sets no bound.
pub const HTTP_HOOK_LIMIT: Duration = Duration::from_secs(30);

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Exec(#[from] crate::runtime::Error),
    #[error("command {command:?} exited with {code}")]
    ExecExit { command: Vec<String>, code: u32 },
    #[error("port {port:?} is not a port of the container")]
    UnknownPort { port: String },
    #[error(transparent)]
    Http(#[from] HttpGetError),
    #[error("tcpSocket hooks are deprecated and not run; use exec, httpGet or sleep")]
    TcpSocket,
    #[error("the hook has no action (exec, httpGet or sleep)")]
    NoAction,
    #[error("did not finish within {0:?}")]
    Unfinished(Duration),
}

/// The container a hook runs for, and how to reach it.
#[derive(Debug, Clone)]
pub struct HookTarget {
    /// containerd's ID of the container.
    pub container_id: String,
    /// The container's spec: its named ports.
    pub container: v1::Container,
    /// The pod's address, an httpGet hook's host unless it names one, and
    /// the namespace it is reached from.
    pub pod: PodAddress,
}

/// Runs `hook` for `target`, an exec or sleep for at most `limit`.
pub async fn run<R: ContainerRuntime>(
    runtime: &R,
    target: &HookTarget,
    hook: &v1::LifecycleHandler,
    limit: Duration,
) -> Result<(), HookError> {
    if let Some(exec) = &hook.exec {
        let code = runtime
            .exec(&target.container_id, exec.command.clone(), limit)
            .await?;
        return if code == 0 {
            Ok(())
        } else {
            Err(HookError::ExecExit {
                command: exec.command.clone(),
                code,
            })
        };
    }
    if let Some(http) = &hook.http_get {
        let port =
            resolve_port(&http.port, &target.container).ok_or_else(|| HookError::UnknownPort {
                port: http.port.clone(),
            })?;
        let timeout = limit.min(HTTP_HOOK_LIMIT).max(Duration::from_secs(1));
        let status = HttpGet::new(http, port)?
            .send(&target.pod, Purpose::Lifecycle, timeout)
            .await?;
        tracing::debug!(container = %target.container_id, status, "httpGet hook answered");
        return Ok(());
    }
    if let Some(sleep) = &hook.sleep {
        let wait = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        if wait > limit {
            tokio::time::sleep(limit).await;
            return Err(HookError::Unfinished(limit));
        }
        tokio::time::sleep(wait).await;
        return Ok(());
    }
    if hook.tcp_socket.is_some() {
        return Err(HookError::TcpSocket);
    }
    Err(HookError::NoAction)
}

/// What failed, in the kubelet's words: `Exec lifecycle hook ([sh -c
/// exit 1]) for Container "main" in Pod "web_default(uid)" failed -
/// error: …`.
pub fn failure_message(
    hook: &v1::LifecycleHandler,
    container: &str,
    pod: &v1::ObjectMeta,
    error: &HookError,
) -> String {
    let (kind, what) = if let Some(exec) = &hook.exec {
        ("Exec", format!("[{}]", exec.command.join(" ")))
    } else if let Some(http) = &hook.http_get {
        ("HTTP", http.path.clone())
    } else if let Some(sleep) = &hook.sleep {
        ("Sleep", format!("{}s", sleep.seconds))
    } else {
        ("TCPSocket", String::new())
    };
    format!(
        "{kind} lifecycle hook ({what}) for Container {container:?} in Pod \"{}_{}({})\" failed - error: {error}",
        pod.name, pod.namespace, pod.uid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::test_http_server::TestHttpServer;
    use crate::runtime::recording::{Call, RecordingRuntime};

    fn target() -> HookTarget {
        HookTarget {
            container_id: "uid1_main".into(),
            container: v1::Container {
                name: "main".into(),
                ports: vec![v1::ContainerPort {
                    name: "http".into(),
                    container_port: 8080,
                    ..Default::default()
                }],
                ..Default::default()
            },
            // Never entered: these tests name a host, which is reached
            // from the node's namespace, this process's own.
            pod: PodAddress {
                netns: "/nonexistent/netns".into(),
                ip: Some(std::net::Ipv4Addr::new(10, 42, 0, 7)),
            },
        }
    }

    fn exec(command: &[&str]) -> v1::LifecycleHandler {
        v1::LifecycleHandler {
            exec: Some(v1::ExecAction {
                command: command.iter().map(|c| (*c).to_owned()).collect(),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exec_hooks_run_in_the_container_and_fail_on_a_non_zero_exit() {
        let runtime = RecordingRuntime::default();
        let hook = exec(&["sh", "-c", "echo hi"]);
        run(&runtime, &target(), &hook, Duration::from_secs(5))
            .await
            .expect("exit 0");
        assert_eq!(runtime.calls(), [Call::Exec("uid1_main".into())]);
        runtime.set_exec_exit(3);
        let error = run(&runtime, &target(), &hook, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(error, HookError::ExecExit { code: 3, .. }),
            "{error}"
        );
        let meta = v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid1".into(),
            ..Default::default()
        };
        assert_eq!(
            failure_message(&hook, "main", &meta, &error),
            r#"Exec lifecycle hook ([sh -c echo hi]) for Container "main" in Pod "web_default(uid1)" failed - error: command ["sh", "-c", "echo hi"] exited with 3"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hooks_wait_no_longer_than_allowed_and_tcp_hooks_are_not_run() {
        let runtime = RecordingRuntime::default();
        let sleep = v1::LifecycleHandler {
            sleep: Some(v1::SleepAction { seconds: 20 }),
            ..Default::default()
        };
        let begun = tokio::time::Instant::now();
        run(&runtime, &target(), &sleep, Duration::from_secs(30))
            .await
            .unwrap();
        let took = begun.elapsed();
        assert!(
            took >= Duration::from_secs(20) && took < Duration::from_secs(21),
            "{took:?}"
        );
        let begun = tokio::time::Instant::now();
        let cut = run(&runtime, &target(), &sleep, Duration::from_secs(4))
            .await
            .unwrap_err();
        let took = begun.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(5),
            "cut at the limit: {took:?}"
        );
        assert_eq!(cut.to_string(), "did not finish within 4s");
        let tcp = v1::LifecycleHandler {
            tcp_socket: Some(v1::TcpSocketAction::default()),
            ..Default::default()
        };
        let error = run(&runtime, &target(), &tcp, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, HookError::TcpSocket), "{error}");
        assert!(runtime.calls().is_empty(), "nothing exec'd");
    }

    fn http_hook(scheme: &str, port: u16) -> v1::LifecycleHandler {
        v1::LifecycleHandler {
            http_get: Some(v1::HttpGetAction {
                host: "127.0.0.1".into(),
                port: port.to_string(),
                scheme: scheme.into(),
                path: "/quit".into(),
                http_headers: vec![v1::HttpHeader {
                    name: "X-Reason".into(),
                    value: "shutdown".into(),
                }],
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_hooks_succeed_on_any_answer_over_http_or_unverified_https() {
        let runtime = RecordingRuntime::default();
        let http = TestHttpServer::http(500).await;
        run(
            &runtime,
            &target(),
            &http_hook("HTTP", http.port),
            Duration::from_secs(5),
        )
        .await
        .expect("any answer will do");
        let head = &http.heads()[0];
        assert!(head.starts_with("GET /quit HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nX-Reason: shutdown\r\n"), "{head}");
        assert!(
            head.contains("\r\nUser-Agent: kube-lifecycle/1.34\r\n"),
            "{head}"
        );
        // A self-signed certificate is no obstacle, as for the kubelet.
        let https = TestHttpServer::https(200).await;
        run(
            &runtime,
            &target(),
            &http_hook("HTTPS", https.port),
            Duration::from_secs(5),
        )
        .await
        .expect("HTTPS without verification");
        assert_eq!(https.heads().len(), 1);
        assert!(runtime.calls().is_empty(), "nothing exec'd");
    }

    #[tokio::test]
    async fn http_hooks_fail_without_an_answer_or_a_port_and_say_so() {
        let runtime = RecordingRuntime::default();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let hook = http_hook("HTTP", port);
        let error = run(&runtime, &target(), &hook, Duration::from_secs(5))
            .await
            .unwrap_err();
        let meta = v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid1".into(),
            ..Default::default()
        };
        let message = failure_message(&hook, "main", &meta, &error);
        assert!(
            message.starts_with(&format!(
                r#"HTTP lifecycle hook (/quit) for Container "main" in Pod "web_default(uid1)" failed - error: Get "http://127.0.0.1:{port}/quit": dial tcp 127.0.0.1:{port}: "#
            )),
            "{message}"
        );
        let mut named = http_hook("HTTP", 80);
        named.http_get.as_mut().unwrap().port = "admin".into();
        let error = run(&runtime, &target(), &named, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"port "admin" is not a port of the container"#
        );
    }
}
