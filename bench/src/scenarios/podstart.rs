//! `podstart`: pods on a real node (private containerd + `skiff agent`),
//! timed from the Create call to the moment a watch sees the pod Running
//! with its container started. The busybox image is imported from an
//! archive first, so the figure is pod start, not image pull. Pods are
//! created at `--rate` per second (0: all at once), as Kubernetes' density
//! tests pace them.
//!
//! With `--volumes`, the same number of pods follows, each with a
//! ConfigMap volume, a Secret volume (on tmpfs), an emptyDir and a
//! PersistentVolumeClaim of its own (the built-in `local-path` class:
//! provisioned on the node when the pod is scheduled), its claim created
//! just before it; the figure is their p99 against the plain pods' of the
//! same run (target: at most 1.5 times).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_e2e::agent::{wait_node_ready, RuntimeNode};
use skiff_e2e::busybox_image::BusyboxImage;
use skiff_objects::manifest::parse_manifest;
use skiff_objects::{IntoObject, Kind};
use skiff_proto::api::object::Kind as Body;
use skiff_proto::v1;

use super::common::{round, BenchMaster};
use crate::latency::Latencies;

#[derive(Debug, clap::Args)]
pub struct PodstartArgs {
    #[arg(long, default_value_t = 50)]
    pub pods: usize,
    /// Pods created per second; 0 creates them all at once.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Then as many pods again with a ConfigMap, a Secret, an emptyDir and
    /// a PersistentVolumeClaim each, compared with the plain ones.
    #[arg(long)]
    pub volumes: bool,
}

/// The most the pods with volumes may take (p99) against plain pods.
const VOLUMES_TARGET_RATIO: f64 = 1.5;

/// The ConfigMap and Secret every pod with volumes mounts.
pub(crate) const SHARED_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: podstart-config}
data: {app.conf: "port=8080"}
---
apiVersion: v1
kind: Secret
metadata: {name: podstart-secret}
stringData: {password: s3cret}
"#;

/// Claim `name` of the default class (`local-path`).
pub(crate) fn claim_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 16Mi}}}}
"#
    )
}

/// The plain pod `name` with the shared ConfigMap and Secret, an emptyDir
/// and claim `claim_name` mounted.
pub(crate) fn pod_with_volumes(name: &str, claim_name: &str) -> v1::Pod {
    let mut pod = pod(name);
    let spec = pod.spec.as_mut().expect("a spec");
    let volume = |name: &str, build: fn(&mut v1::Volume)| {
        let mut v = v1::Volume {
            name: name.into(),
            ..Default::default()
        };
        build(&mut v);
        v
    };
    spec.volumes = vec![
        volume("config", |v| {
            v.config_map = Some(Box::new(v1::ConfigMapVolumeSource {
                name: "podstart-config".into(),
                ..Default::default()
            }))
        }),
        volume("secret", |v| {
            v.secret = Some(Box::new(v1::SecretVolumeSource {
                secret_name: "podstart-secret".into(),
                ..Default::default()
            }))
        }),
        volume("scratch", |v| {
            v.empty_dir = Some(Box::new(v1::EmptyDirVolumeSource::default()))
        }),
        v1::Volume {
            name: "data".into(),
            persistent_volume_claim: Some(Box::new(v1::PersistentVolumeClaimVolumeSource {
                claim_name: claim_name.into(),
                read_only: false,
            })),
            ..Default::default()
        },
    ];
    let mount = |volume: &str, path: &str| v1::VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    spec.containers[0].volume_mounts = vec![
        mount("config", "/etc/app"),
        mount("secret", "/run/secret"),
        mount("scratch", "/scratch"),
        mount("data", "/data"),
    ];
    pod
}

/// The one object in YAML document `text`.
pub(crate) fn one_object(file: &str, text: &str) -> anyhow::Result<skiff_proto::api::Object> {
    let mut manifest = parse_manifest(file, text, true)?;
    manifest.objects.pop().context("an object in the manifest")
}

/// How one batch of pods started.
struct Batch {
    latencies: Latencies,
    running: usize,
    total: Duration,
}

const IMAGE: &str = "bench/busybox:1";

fn pod(name: &str) -> v1::Pod {
    v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "podstart".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            termination_grace_period_seconds: Some(1),
            containers: vec![v1::Container {
                name: "main".into(),
                image: IMAGE.into(),
                image_pull_policy: "IfNotPresent".into(),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.container_statuses
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
    })
}

pub async fn run(args: PodstartArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.pods > 0, "--pods must be at least 1");
    anyhow::ensure!(args.rate >= 0.0, "--rate must not be negative");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "podstart runs containers: run it as root with containerd and runc installed"
    );
    let master = BenchMaster::start(&[]).await?;
    let image = BusyboxImage::build()?;
    let node = RuntimeNode::start(
        &master.process.api_addr,
        "bench-node",
        |data| image.write_docker_archive(&data.join("images/busybox.tar"), IMAGE),
        &[],
    )?;
    wait_node_ready(&master.client, "bench-node", Duration::from_secs(60))
        .await
        .with_context(|| node.log_tail())?;

    eprintln!("creating {} pods at {} per second", args.pods, args.rate);
    let plain = run_batch(&master, &node, &args, false).await?;
    let mut out = serde_json::json!({
        "scenario": "podstart",
        "pods": args.pods,
        "rate_per_sec": args.rate,
        "running": plain.running,
        "p50_ms": round(plain.latencies.percentile_ms(50.0)),
        "p99_ms": round(plain.latencies.percentile_ms(99.0)),
        "max_ms": round(plain.latencies.percentile_ms(100.0)),
        "total_s": round(plain.total.as_secs_f64()),
        "target_p99_ms": 1000,
    });
    if args.volumes {
        for shared in parse_manifest("podstart-config.yaml", SHARED_CONFIG, true)?.objects {
            master.client.create(shared).await?;
        }
        eprintln!(
            "creating {} pods with a ConfigMap, a Secret, an emptyDir and a claim each",
            args.pods
        );
        let with = run_batch(&master, &node, &args, true).await?;
        let plain_p99 = plain.latencies.percentile_ms(99.0);
        let volumes_p99 = with.latencies.percentile_ms(99.0);
        let ratio = if plain_p99 > 0.0 {
            volumes_p99 / plain_p99
        } else {
            0.0
        };
        out["volumes"] = serde_json::json!({
            "running": with.running,
            "p50_ms": round(with.latencies.percentile_ms(50.0)),
            "p99_ms": round(volumes_p99),
            "max_ms": round(with.latencies.percentile_ms(100.0)),
            "total_s": round(with.total.as_secs_f64()),
            "p99_vs_plain": round(ratio),
            "target_p99_vs_plain": VOLUMES_TARGET_RATIO,
        });
    }
    Ok(out)
}

/// Creates `args.pods` pods (with volumes, each after its claim, when
/// `volumes`) at `args.rate` per second and times each from its Create
/// to the watch seeing it Running.
async fn run_batch(
    master: &BenchMaster,
    node: &RuntimeNode,
    args: &PodstartArgs,
    volumes: bool,
) -> anyhow::Result<Batch> {
    let prefix = if volumes {
        "podstart-vol-"
    } else {
        "podstart-"
    };
    let from = master.client.list(Kind::Pod, "default").await?.revision;
    let mut watch = master.client.watch(Kind::Pod, "default", from).await?;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(event)) = watch.next().await {
            if let Some(Body::Pod(p)) = event
                .object
                .map(skiff_objects::pods::in_model)
                .and_then(|o| o.kind)
            {
                if running(&p) {
                    let name = p.metadata.map(|m| m.name).unwrap_or_default();
                    if seen_tx.send((name, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let started = Instant::now();
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..args.pods {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let name = format!("{prefix}{i:04}");
        let client = master.client.clone();
        let (claim, object) = if volumes {
            let claim_name = format!("{name}-data");
            let claim = one_object("claim.yaml", &claim_yaml(&claim_name))?;
            (
                Some(claim),
                pod_with_volumes(&name, &claim_name).into_object(),
            )
        } else {
            (None, pod(&name).into_object())
        };
        creating.spawn(async move {
            if let Some(claim) = claim {
                client.create(claim).await?;
            }
            let at = Instant::now();
            client.create(object).await.map(|_| (name, at))
        });
    }
    while let Some(done) = creating.join_next().await {
        let (name, at) = done??;
        created.insert(name, at);
    }

    let mut latencies = Latencies::default();
    let mut done: HashMap<String, Duration> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while done.len() < args.pods {
        let next = tokio::time::timeout_at(deadline, seen_rx.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "only {} of {} pods running after 120 s\n{}",
                    done.len(),
                    args.pods,
                    node.log_tail()
                )
            })?;
        let Some((name, at)) = next else { break };
        if done.contains_key(&name) {
            continue;
        }
        if let Some(created_at) = created.get(&name) {
            let latency = at.saturating_duration_since(*created_at);
            done.insert(name, latency);
            latencies.push(latency);
        }
    }
    let total = started.elapsed();
    watcher.abort();
    let running_tasks = node.task_pids()?.len();
    // A slow pod explains itself: its name, and what the agent warned of.
    let mut slow: Vec<_> = done
        .iter()
        .filter(|(_, l)| **l > Duration::from_millis(500))
        .collect();
    slow.sort();
    if !slow.is_empty() {
        for (name, latency) in &slow {
            eprintln!("slow: {name} took {} ms", latency.as_millis());
        }
        for line in node.agent.log().lines().filter(|l| l.contains("WARN")) {
            eprintln!("agent: {line}");
        }
    }
    eprintln!(
        "{} pods running in {:.1}s; containerd runs {running_tasks} tasks",
        done.len(),
        total.as_secs_f64()
    );
    Ok(Batch {
        latencies,
        running: done.len(),
        total,
    })
}
