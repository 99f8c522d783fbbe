//! The master's metrics, served at `/metrics` beside `/healthz` and
//! `/readyz` (ready = this master knows a leader):
//!
//! - `skiff_api_requests_total{method,code}` and
//!   `skiff_api_request_duration_seconds{method}`: every gRPC call, timed
//!   to its response headers (a stream's first message);
//! - `skiff_raft_commit_duration_seconds`: a write from proposal to
//!   committed and applied; `skiff_raft_leader_changes_total`,
//!   `skiff_raft_is_leader`, `skiff_raft_term`;
//! - `skiff_raft_read_index_total{result}`: leadership confirmations for
//!   linearizable reads (`confirmed`, `retried`, `failed`, `not_leader`);
//!   `skiff_raft_elections_total`: elections this master started;
//!   `skiff_raft_leaderless_seconds_total`: time this master knew no leader;
//!   `skiff_raft_quorum_ack_age_seconds`: on the leader, since a quorum last
//!   acknowledged it;
//! - `skiff_controllers_running`, `skiff_controller_start_failures_total`:
//!   whether this master runs the controllers, and how often a new leader
//!   failed to start them (it retries with backoff);
//! - `skiff_scheduler_binding_duration_seconds`: one binding write;
//! - `skiff_object_cache{measure}`: objects in the decoded cache and their
//!   encoded bytes;
//! - `skiff_nodes{ready}`, `skiff_pods{phase}`: counted from the store when
//!   scraped;
//! - `skiff_node_heartbeat_age_seconds{node}`: on the leader, since each
//!   node's last heartbeat.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use skiff_proto::api::object::Kind as Body;
use skiff_telemetry::{CounterVec, HistogramVec, Registry};

use crate::node_lifecycle::HeartbeatTable;
use crate::store::state_machine::ObjectStore;
use skiff_objects::Kind;

/// Handles to the master's metric families.
#[derive(Clone)]
pub struct MasterMetrics {
    pub registry: Arc<Registry>,
    pub api_requests: Arc<CounterVec>,
    pub api_latency: Arc<HistogramVec>,
    pub raft_commit: Arc<HistogramVec>,
    pub leader_changes: Arc<CounterVec>,
    pub read_index: Arc<CounterVec>,
    pub elections: Arc<CounterVec>,
    pub controller_start_failures: Arc<CounterVec>,
    /// 1 while this master runs the controllers.
    pub controllers_running: Arc<std::sync::atomic::AtomicBool>,
    pub scheduler_binding: Arc<HistogramVec>,
}

impl std::fmt::Debug for MasterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterMetrics").finish_non_exhaustive()
    }
}

impl Default for MasterMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        MasterMetrics {
            api_requests: registry.counter(
                "skiff_api_requests_total",
                "gRPC requests served, by method and gRPC status code.",
                &["method", "code"],
            ),
            api_latency: registry.histogram(
                "skiff_api_request_duration_seconds",
                "Time to answer a gRPC request (to the response headers).",
                &["method"],
            ),
            raft_commit: registry.histogram(
                "skiff_raft_commit_duration_seconds",
                "Time from proposing a write to its being committed by a quorum and applied.",
                &[],
            ),
            leader_changes: registry.counter(
                "skiff_raft_leader_changes_total",
                "Times this master saw the Raft leader change.",
                &[],
            ),
            read_index: registry.counter(
                "skiff_raft_read_index_total",
                "Leadership confirmations for linearizable reads, by result.",
                &["result"],
            ),
            elections: registry.counter(
                "skiff_raft_elections_total",
                "Elections this master started as a candidate.",
                &[],
            ),
            controller_start_failures: registry.counter(
                "skiff_controller_start_failures_total",
                "Times this master, leading, failed to start the controllers (it retries).",
                &[],
            ),
            controllers_running: Default::default(),
            scheduler_binding: registry.histogram(
                "skiff_scheduler_binding_duration_seconds",
                "Time to write one pod binding.",
                &[],
            ),
            registry,
        }
    }
}

impl MasterMetrics {
    /// Adds the gauges read from the store, Raft and the heartbeat table.
    pub fn add_gauges(
        &self,
        store: Arc<ObjectStore>,
        raft: crate::store::Raft,
        heartbeats: Arc<HeartbeatTable>,
    ) {
        let cache_store = store.clone();
        self.registry.gauge_fn(
            "skiff_object_cache",
            "The decoded object cache: objects held, and the sum of their encoded sizes in bytes.",
            &["measure"],
            move || {
                let size = cache_store.cache().size();
                vec![
                    (vec!["objects".into()], size.objects as f64),
                    (vec!["encoded_bytes".into()], size.encoded_bytes as f64),
                ]
            },
        );
        let nodes_store = store.clone();
        self.registry.gauge_fn(
            "skiff_nodes",
            "Nodes, by whether they are Ready.",
            &["ready"],
            move || {
                let (mut ready, mut not_ready) = (0.0, 0.0);
                {
                    let (nodes, _) = nodes_store.cache().list(Kind::Node, None);
                    for o in nodes {
                        if let Some(Body::Node(n)) = &o.kind {
                            let is_ready = n.status.as_ref().is_some_and(|s| {
                                s.conditions
                                    .iter()
                                    .any(|c| c.r#type == "Ready" && c.status == "True")
                            });
                            if is_ready {
                                ready += 1.0
                            } else {
                                not_ready += 1.0
                            }
                        }
                    }
                }
                vec![
                    (vec!["true".into()], ready),
                    (vec!["false".into()], not_ready),
                ]
            },
        );
        self.registry
            .gauge_fn("skiff_pods", "Pods, by phase.", &["phase"], move || {
                let mut by_phase: std::collections::BTreeMap<String, f64> =
                    ["Pending", "Running", "Succeeded", "Failed"]
                        .iter()
                        .map(|p| (p.to_string(), 0.0))
                        .collect();
                {
                    let (pods, _) = store.cache().list(Kind::Pod, None);
                    for o in pods {
                        if let Some(facts) = skiff_objects::pods::facts(&o) {
                            let phase = Some(facts.phase)
                                .filter(|p| !p.is_empty())
                                .unwrap_or_else(|| "Pending".into());
                            *by_phase.entry(phase).or_insert(0.0) += 1.0;
                        }
                    }
                }
                by_phase.into_iter().map(|(k, v)| (vec![k], v)).collect()
            });
        let leader_raft = raft.clone();
        self.registry.gauge_fn(
            "skiff_raft_is_leader",
            "1 on the leader, 0 elsewhere.",
            &[],
            move || {
                let m = leader_raft.metrics().borrow().clone();
                vec![(
                    vec![],
                    if m.current_leader == Some(m.id) {
                        1.0
                    } else {
                        0.0
                    },
                )]
            },
        );
        let term_raft = raft.clone();
        self.registry.gauge_fn(
            "skiff_raft_term",
            "The current Raft term.",
            &[],
            move || vec![(vec![], term_raft.metrics().borrow().current_term as f64)],
        );
        self.registry.gauge_fn(
            "skiff_node_heartbeat_age_seconds",
            "Seconds since each node's last heartbeat (on the leader).",
            &["node"],
            move || {
                heartbeats
                    .snapshot()
                    .into_iter()
                    .map(|(node, at)| (vec![node], at.elapsed().as_secs_f64()))
                    .collect()
            },
        );
        let ack_raft = raft.clone();
        self.registry.gauge_fn(
            "skiff_raft_quorum_ack_age_seconds",
            "On the leader, seconds since a quorum last acknowledged it.",
            &[],
            move || {
                let m = ack_raft.metrics().borrow().clone();
                m.millis_since_quorum_ack
                    .filter(|_| m.state == openraft::ServerState::Leader)
                    .map(|ms| vec![(vec![], ms as f64 / 1000.0)])
                    .unwrap_or_default()
            },
        );
        let running = self.controllers_running.clone();
        self.registry.gauge_fn(
            "skiff_controllers_running",
            "1 while this master runs the controllers (it leads and confirmed it).",
            &[],
            move || {
                let on = running.load(std::sync::atomic::Ordering::Relaxed);
                vec![(vec![], if on { 1.0 } else { 0.0 })]
            },
        );
        // Time without a leader: the finished spans plus the current one.
        let leaderless = Arc::new(std::sync::Mutex::new(Leaderless::default()));
        let read = leaderless.clone();
        self.registry.counter_fn(
            "skiff_raft_leaderless_seconds_total",
            "Seconds this master has known no Raft leader since it started.",
            &[],
            move || {
                let l = read.lock().unwrap_or_else(|p| p.into_inner());
                vec![(vec![], l.seconds())]
            },
        );
        // Leader changes and elections, counted as this master observes them.
        let changes = self.leader_changes.clone();
        let elections = self.elections.clone();
        let mut watch = raft.metrics();
        tokio::spawn(async move {
            let (mut leader, mut state) = {
                let m = watch.borrow();
                (m.current_leader, m.state)
            };
            leaderless
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(leader.is_some());
            while watch.changed().await.is_ok() {
                let (now, now_state) = {
                    let m = watch.borrow();
                    (m.current_leader, m.state)
                };
                if now != leader && now.is_some() {
                    changes.inc(&[]);
                }
                if now_state == openraft::ServerState::Candidate
                    && state != openraft::ServerState::Candidate
                {
                    elections.inc(&[]);
                }
                leaderless
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .observe(now.is_some());
                leader = now;
                state = now_state;
            }
        });
    }
}

/// Seconds spent without a known leader.
#[derive(Default)]
struct Leaderless {
    finished: f64,
    since: Option<Instant>,
}

impl Leaderless {
    fn observe(&mut self, has_leader: bool) {
        match (has_leader, self.since) {
            (true, Some(since)) => {
                self.finished += since.elapsed().as_secs_f64();
                self.since = None;
            }
            (false, None) => self.since = Some(Instant::now()),
            _ => {}
        }
    }

    fn seconds(&self) -> f64 {
        self.finished + self.since.map_or(0.0, |s| s.elapsed().as_secs_f64())
    }
}

/// A tower layer timing and counting every gRPC call.
#[derive(Clone)]
pub struct ApiMetricsLayer {
    pub metrics: MasterMetrics,
}

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
    metrics: MasterMetrics,
}

impl<S, B, R> tower::Service<http::Request<B>> for ApiMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // gRPC calls by method; REST requests by HTTP verb (their paths
        // name objects, too many to be labels).
        let rest = !crate::rest::is_grpc(&request);
        let method = if rest {
            format!("REST {}", request.method())
        } else {
            request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("unknown")
                .to_string()
        };
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) if rest => response.status().as_u16().to_string(),
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(|c| format!("{:?}", tonic::Code::from_i32(c)))
                    .unwrap_or_else(|| "Ok".into()),
                Err(_) => "TransportError".into(),
            };
            metrics.api_requests.inc(&[&method, &code]);
            metrics
                .api_latency
                .observe(&[&method], started.elapsed().as_secs_f64());
            result
        })
    }
}
