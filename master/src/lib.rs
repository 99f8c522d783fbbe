//! The skiff master: keeps the cluster's desired state in a Raft-replicated
//! object store and serves it over gRPC and the Kubernetes REST API. The
//! object model (kinds, validation, defaults, manifests) is `skiff-objects`.
//!
//! - [`events`]: Kubernetes Events, bounded in the leader's memory.
//! - [`resource_metrics`]: the nodes' and pods' resource usage readings,
//!   in the leader's memory (the metrics API, autoscaling).
//! - [`store`]: openraft + redb: the log, the revisioned state machine,
//!   peer transport.
//! - [`datastore`]: snapshots, cluster reset and the data format, as an
//!   operator runs the store.
//! - [`api`]: the public gRPC API, forwarding to the leader where needed.
//! - [`client`]: a typed client of that API, for the CLI, agents and tests.
//! - [`server`]: starting, joining and stopping a master.
//! - [`http_serving`]: the API port's connections, with HTTP upgrades
//!   (kubectl exec's WebSocket).
//! - [`metrics`]: what `/metrics` shows.
//! - [`recorded_format`]: the data format every master has named,
//!   recorded in the store for the leaders after.
//! - [`auto_deploy`]: manifests applied from `<data-dir>/manifests/`.

pub mod api;
pub mod auto_deploy;
pub mod client;
pub mod cluster;
pub mod controllers;
pub mod datastore;
pub mod events;
pub mod http_serving;
pub mod leader;
pub mod metrics;
pub mod node_lifecycle;
pub mod node_ports;
pub mod recorded_format;
pub mod resource_metrics;
pub mod rest;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod service_ips;
pub mod store;
pub mod writer;
