//! The end-to-end tests, one module per area, built as one test binary: each
//! links the whole master and agent, so one binary instead of thirty keeps
//! the build a few GB smaller (CI has a bounded disk). nextest still runs
//! every test in a process of its own.

mod agent_lifecycle;
mod agent_pods;
mod auto_deploy;
mod autoscaling;
mod check_config;
mod cluster_dns;
mod compaction;
mod controllers;
mod ctl;
mod custom_resources;
mod daemonsets;
mod datastore;
mod disk_hygiene;
mod drain;
mod ha;
mod helm;
mod helm_hooks;
mod jobs;
mod kubectl;
mod kubectl_attach;
mod kubectl_delete;
mod kubectl_events;
mod kubectl_exec;
mod kubectl_pods;
mod kubectl_watch;
mod lan_defaults;
mod metrics;
mod nftables_changes;
mod persistent_volumes;
mod pod_config;
mod pod_gc;
mod pod_network;
mod pod_spec;
mod process_namespace;
mod python_client;
mod python_lists;
mod python_token;
mod rbac;
mod resource_metrics;
mod scheduling;
mod security;
mod server;
mod server_side_apply;
mod service_account_volume;
mod service_accounts;
mod service_exposure;
mod settings;
mod statefulsets;
mod store;
mod systemd_units;
mod upgrade;
mod watch_websocket;
mod workload_validation;
