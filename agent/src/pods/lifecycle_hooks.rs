//! Containers' lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`)
//! as the kubelet runs them: an `exec` runs the command in the container
//! (through containerd, with the container's own process settings) and
//! fails on a non-zero exit; an `httpGet` is the action probes send too
//! ([`super::http_get`]: the pod's address or the hook's `host`, HTTP or
//! HTTPS without verifying the certificate, its headers) and fails only
//! when no answer comes, whatever its status, as the kubelet's does; a
//! `sleep` waits (a failure when cut short). An `https` hook whose server
//! answers the TLS handshake in plain HTTP is sent again as HTTP, without
//! its `Authorization` header, and succeeds if that is answered: the
//! kubelet's fallback (`runHTTPHandler`) for hooks written before it
//! honoured `scheme`, told as a Warning Event about the pod,
//! `LifecycleHTTPFallback`. The deprecated `tcpSocket` hook is not run:
//! like the kubelet, skiff counts it as failed ("Cannot run handler").
//! When each runs, and what a failure does (a failed postStart kills the
//! container, a failed preStop is told and the stop goes on), is the pod
//! worker's; here is running one hook and saying what went wrong in the
//! kubelet's words ([`failure_message`]).

use std::time::Duration;

use skiff_proto::v1;
use tokio::time::Instant;

use crate::master_link::{EventKind, EventSender};
use crate::runtime::ContainerRuntime;

use super::http_get::{HttpGet, HttpGetError, Purpose};
use super::pod_address::PodAddress;
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

/// The reason of the Event told when an HTTPS hook fell back to HTTP.
pub const HTTP_FALLBACK_REASON: &str = "LifecycleHTTPFallback";

/// Runs `hook` for `target`, an exec or sleep for at most `limit`; an
/// httpGet hook's fallback to HTTP is told on `events` about `pod`.
pub async fn run<R: ContainerRuntime>(
    runtime: &R,
    events: &EventSender,
    pod: &v1::ObjectMeta,
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
        let request = HttpGet::new(http, port)?;
        let begun = Instant::now();
        let status = match request.send(&target.pod, Purpose::Lifecycle, timeout).await {
            Err(error @ HttpGetError::HttpAnswerToHttps { .. }) => {
                let left = timeout.saturating_sub(begun.elapsed());
                http_fallback(events, pod, target, &request, error, left).await?
            }
            answered => answered?,
        };
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

/// The kubelet's retry of an HTTPS `request` its server answered in
/// plain HTTP (`error`): the same request as HTTP within `left`. Its
/// status once answered, told as a `LifecycleHTTPFallback` Warning about
/// the pod; else the HTTPS request's error, as the kubelet returns it.
async fn http_fallback(
    events: &EventSender,
    pod: &v1::ObjectMeta,
    target: &HookTarget,
    request: &HttpGet,
    error: HttpGetError,
    left: Duration,
) -> Result<u16, HttpGetError> {
    let authority = request.authority(&target.pod);
    tracing::info!(
        container = %target.container_id, %authority, %error,
        "HTTPS request to lifecycle hook got HTTP response, retrying with HTTP"
    );
    if left.is_zero() {
        return Err(error);
    }
    let plain = request.plain_http();
    match plain.send(&target.pod, Purpose::Lifecycle, left).await {
        Ok(status) => {
            let message = format!(
                "request to HTTPS lifecycle hook {authority} got HTTP response, retry with HTTP succeeded"
            );
            events.pod(pod, "", EventKind::Warning, HTTP_FALLBACK_REASON, message);
            Ok(status)
        }
        Err(retry) => {
            tracing::debug!(container = %target.container_id, error = %retry, "the HTTP retry failed too");
            Err(error)
        }
    }
}

/// What failed, in the kubelet's words: `Exec lifecycle hook ([sh -c
/// exit 1]) for Container "main" in Pod "web_default(uid)" failed -
/// error: …`; `Cannot run handler: invalid handler: …` for a hook with
/// no action skiff runs (a `tcpSocket` one).
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
        return format!("Cannot run handler: invalid handler: {error}");
    };
    format!(
        "{kind} lifecycle hook ({what}) for Container {container:?} in Pod \"{}_{}({})\" failed - error: {error}",
        pod.name, pod.namespace, pod.uid
    )
}

#[cfg(test)]
mod tests {
    use skiff_proto::node::NodeEvent;
    use tokio::sync::mpsc;

    use super::*;
    use crate::master_link::event_channel;
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

    fn meta() -> v1::ObjectMeta {
        v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid1".into(),
            ..Default::default()
        }
    }

    /// Runs hooks for [`target`] of pod [`meta`] on a recording runtime,
    /// keeping the Events they tell.
    struct Hooks {
        runtime: RecordingRuntime,
        events: EventSender,
        told: mpsc::Receiver<NodeEvent>,
    }

    impl Hooks {
        fn new() -> Hooks {
            let metrics = crate::metrics::AgentMetrics::default();
            let (events, told) = event_channel(metrics.events_dropped.clone());
            Hooks {
                runtime: RecordingRuntime::default(),
                events,
                told,
            }
        }

        async fn run(&self, hook: &v1::LifecycleHandler, limit: Duration) -> Result<(), HookError> {
            run(&self.runtime, &self.events, &meta(), &target(), hook, limit).await
        }

        /// The Events told so far.
        fn told(&mut self) -> Vec<NodeEvent> {
            let mut told = Vec::new();
            while let Ok(event) = self.told.try_recv() {
                told.push(event);
            }
            told
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
        let mut h = Hooks::new();
        let hook = exec(&["sh", "-c", "echo hi"]);
        h.run(&hook, Duration::from_secs(5)).await.expect("exit 0");
        assert_eq!(h.runtime.calls(), [Call::Exec("uid1_main".into())]);
        h.runtime.set_exec_exit(3);
        let error = h.run(&hook, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(error, HookError::ExecExit { code: 3, .. }),
            "{error}"
        );
        assert_eq!(
            failure_message(&hook, "main", &meta(), &error),
            r#"Exec lifecycle hook ([sh -c echo hi]) for Container "main" in Pod "web_default(uid1)" failed - error: command ["sh", "-c", "echo hi"] exited with 3"#
        );
        assert!(h.told().is_empty(), "the worker tells failures, not run");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hooks_wait_no_longer_than_allowed_and_tcp_hooks_are_not_run() {
        let h = Hooks::new();
        let sleep = v1::LifecycleHandler {
            sleep: Some(v1::SleepAction { seconds: 20 }),
            ..Default::default()
        };
        let begun = tokio::time::Instant::now();
        h.run(&sleep, Duration::from_secs(30)).await.unwrap();
        let took = begun.elapsed();
        assert!(
            took >= Duration::from_secs(20) && took < Duration::from_secs(21),
            "{took:?}"
        );
        let begun = tokio::time::Instant::now();
        let cut = h.run(&sleep, Duration::from_secs(4)).await.unwrap_err();
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
        let error = h.run(&tcp, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(error, HookError::TcpSocket), "{error}");
        assert_eq!(
            failure_message(&tcp, "main", &meta(), &error),
            "Cannot run handler: invalid handler: tcpSocket hooks are deprecated and not run; use exec, httpGet or sleep"
        );
        assert!(h.runtime.calls().is_empty(), "nothing exec'd");
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
        let mut h = Hooks::new();
        let http = TestHttpServer::http(500).await;
        h.run(&http_hook("HTTP", http.port), Duration::from_secs(5))
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
        h.run(&http_hook("HTTPS", https.port), Duration::from_secs(5))
            .await
            .expect("HTTPS without verification");
        assert_eq!(https.heads().len(), 1);
        assert!(h.runtime.calls().is_empty(), "nothing exec'd");
        assert!(h.told().is_empty(), "no fallback: {:?}", h.told());
    }

    #[tokio::test]
    async fn an_https_hook_answered_in_plain_http_falls_back_to_http_and_says_so() {
        let mut h = Hooks::new();
        let plain = TestHttpServer::http(204).await;
        let mut hook = http_hook("HTTPS", plain.port);
        let headers = &mut hook.http_get.as_mut().unwrap().http_headers;
        headers.push(v1::HttpHeader {
            name: "authorization".into(),
            value: "Bearer secret".into(),
        });
        h.run(&hook, Duration::from_secs(5))
            .await
            .expect("answered over HTTP on the retry");
        // The handshake got a 400 and no head; the retry is the one request.
        let heads = plain.heads();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(heads[0].starts_with("GET /quit HTTP/1.1\r\n"), "{heads:?}");
        assert!(heads[0].contains("\r\nX-Reason: shutdown\r\n"), "{heads:?}");
        assert!(
            !heads[0].to_ascii_lowercase().contains("authorization"),
            "credentials stay off plain HTTP: {heads:?}"
        );
        let told = h.told();
        assert_eq!(told.len(), 1, "{told:?}");
        let event = &told[0];
        assert_eq!(
            (event.r#type.as_str(), event.reason.as_str()),
            ("Warning", "LifecycleHTTPFallback")
        );
        assert_eq!(
            event.message,
            format!(
                "request to HTTPS lifecycle hook 127.0.0.1:{} got HTTP response, retry with HTTP succeeded",
                plain.port
            )
        );
        assert_eq!(
            (event.kind.as_str(), event.name.as_str(), event.uid.as_str()),
            ("Pod", "web", "uid1")
        );
        assert_eq!(event.field_path, "", "about the pod, as the kubelet's");
    }

    #[tokio::test]
    async fn a_fallback_that_fails_too_fails_the_hook_with_the_https_error() {
        let mut h = Hooks::new();
        // Answers one connection in plain HTTP, then listens no more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut tcp, _) = listener.accept().unwrap();
            let mut hello = [0u8; 16 * 1024];
            let _ = tcp.read(&mut hello);
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            // Closed once the client is done, lest unread bytes turn the
            // close into a reset that loses the answer.
            let _ = tcp.shutdown(std::net::Shutdown::Write);
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = tcp.read_to_end(&mut Vec::new());
        });
        let error = h
            .run(&http_hook("HTTPS", port), Duration::from_secs(5))
            .await
            .unwrap_err();
        server.join().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                r#"Get "https://127.0.0.1:{port}/quit": http: server gave HTTP response to HTTPS client"#
            )
        );
        assert!(h.told().is_empty(), "no fallback told");
    }

    #[tokio::test]
    async fn http_hooks_fail_without_an_answer_or_a_port_and_say_so() {
        let h = Hooks::new();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let hook = http_hook("HTTP", port);
        let error = h.run(&hook, Duration::from_secs(5)).await.unwrap_err();
        let message = failure_message(&hook, "main", &meta(), &error);
        assert!(
            message.starts_with(&format!(
                r#"HTTP lifecycle hook (/quit) for Container "main" in Pod "web_default(uid1)" failed - error: Get "http://127.0.0.1:{port}/quit": dial tcp 127.0.0.1:{port}: "#
            )),
            "{message}"
        );
        let mut named = http_hook("HTTP", 80);
        named.http_get.as_mut().unwrap().port = "admin".into();
        let error = h.run(&named, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"port "admin" is not a port of the container"#
        );
    }
}
