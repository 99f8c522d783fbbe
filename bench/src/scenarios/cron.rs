//! `cron`: how late CronJobs fire. `--cronjobs` CronJobs scheduled every
//! minute (`* * * * *`) run for `--minutes` minute boundaries, their Jobs
//! completing on hollow nodes (`HollowConfig::complete_after`); a Job watch
//! in this process stamps each Job's ADDED event with this machine's clock
//! and takes off the time it was scheduled for (its
//! `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation, else the
//! Unix minutes in its name `<cronjob>-<minutes>`). The master runs on the
//! same machine, so both times are one clock's. Reported: p50, p99 and the
//! longest lateness over every fire (the target: p99 within 1 s of its
//! minute), and the fires that never came.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_master::controllers::cron_job::model::SCHEDULED_TIMESTAMP_ANNOTATION;
use skiff_objects::manifest::parse_manifest;
use skiff_objects::Kind;
use skiff_proto::api::object::Kind as Body;
use skiff_proto::api::EventType;

use super::common::{round, start_fleet, wait_nodes_ready, BenchMaster};
use crate::latency::Latencies;

/// What the scenario aims for: p99 of the fires this late at most.
const TARGET: Duration = Duration::from_secs(1);
/// How long after the last minute boundary its fires may still come.
const LAST_FIRE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct CronArgs {
    /// Minute boundaries every CronJob fires at.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub minutes: u64,
    /// CronJobs, each scheduled every minute.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub cronjobs: u64,
    /// Hollow nodes the Jobs' pods run on.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// How long each Job's pod runs, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub run_ms: u64,
}

fn cron_job_name(i: u64) -> String {
    format!("bench-cron-{i:03}")
}

fn cron_job_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}, namespace: default}}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  failedJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: registry.local/tick:1.0
            resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}
"#
    )
}

/// Seconds since the Unix epoch.
fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// An RFC 3339 timestamp with whole seconds and a `Z` or `±hh:mm` offset
/// (as the CronJob controller writes the scheduled time in the schedule's
/// zone), in Unix seconds.
fn parse_offset_time(text: &str) -> Option<i64> {
    let (local, offset_seconds) = if let Some(local) = text.strip_suffix('Z') {
        (local, 0)
    } else {
        let split = text.len().checked_sub(6)?;
        let (local, offset) = (text.get(..split)?, text.get(split..)?);
        let sign = match offset.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (hours, minutes) = offset.get(1..)?.split_once(':')?;
        let seconds = hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60;
        (local, sign * seconds)
    };
    let as_utc = humantime::parse_rfc3339_weak(local).ok()?;
    let seconds = as_utc.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(i64::try_from(seconds).ok()? - offset_seconds)
}

/// The time a CronJob's Job was scheduled for, in Unix seconds: its
/// annotation, else the Unix minutes its name ends with.
fn scheduled_for(name: &str, annotations: &BTreeMap<String, String>) -> Option<i64> {
    if let Some(at) = annotations
        .get(SCHEDULED_TIMESTAMP_ANNOTATION)
        .map(String::as_str)
        .and_then(parse_offset_time)
    {
        return Some(at);
    }
    let (_, minutes) = name.rsplit_once('-')?;
    Some(minutes.parse::<i64>().ok()? * 60)
}

/// One fire: the CronJob and the minute it was for.
type Fire = (String, i64);

pub async fn run(args: CronArgs) -> anyhow::Result<serde_json::Value> {
    let master = BenchMaster::start(&[]).await?;
    let fleet = HollowFleet::new(vec![master.process.api_addr.clone()]);
    let config = HollowConfig {
        complete_after: Some(Duration::from_millis(args.run_ms)),
        ..Default::default()
    };
    let _nodes = start_fleet(&fleet, args.nodes, config).await?;
    wait_nodes_ready(&master.client, args.nodes, Duration::from_secs(120)).await?;

    let from = master.client.list(Kind::Job, "default").await?.revision;
    let mut watch = master.client.watch(Kind::Job, "default", from).await?;
    for i in 0..args.cronjobs {
        let name = cron_job_name(i);
        let mut manifest = parse_manifest(&format!("{name}.yaml"), &cron_job_yaml(&name), true)?;
        let cron_job = manifest.objects.pop().context("a CronJob manifest")?;
        master.client.create(cron_job).await?;
    }
    // The first boundary after the creates is the first fire; the run ends
    // once the last one's fires have had time to come.
    let created = unix_seconds(SystemTime::now());
    let first = (created / 60.0).floor() as i64 * 60 + 60;
    let last = first + (args.minutes as i64 - 1) * 60;
    let end_in = (last as f64 - created).max(0.0) + LAST_FIRE_WITHIN.as_secs_f64();
    let before = master.sample()?;
    let started = Instant::now();
    eprintln!(
        "{} CronJobs created; fires at {} minute boundaries, the first in {:.0}s; the run ends in {end_in:.0}s",
        args.cronjobs,
        args.minutes,
        first as f64 - created
    );

    let mut lateness: BTreeMap<Fire, f64> = BTreeMap::new();
    let mut outside = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(end_in);
    loop {
        let next = tokio::time::timeout_at(deadline, watch.next()).await;
        let Ok(event) = next else {
            break;
        };
        let event = event?.context("the Job watch ended")?;
        let arrived = unix_seconds(SystemTime::now());
        if event.r#type != EventType::Added as i32 {
            continue;
        }
        let Some(Body::Generic(job)) = event.object.and_then(|o| o.kind) else {
            continue;
        };
        let meta = job.metadata.unwrap_or_default();
        let Some(owner) = meta
            .owner_references
            .iter()
            .find(|r| r.kind == Kind::CronJob.name())
        else {
            continue;
        };
        let Some(scheduled) = scheduled_for(&meta.name, &meta.annotations) else {
            anyhow::bail!("Job {} says not when it was scheduled for", meta.name);
        };
        if scheduled < first || scheduled > last {
            outside += 1;
            continue;
        }
        let fire = (owner.name.clone(), scheduled);
        lateness.entry(fire).or_insert(arrived - scheduled as f64);
    }
    let after = master.sample()?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let cpu_seconds = (after.cpu_seconds - before.cpu_seconds).max(0.0);

    let expected = args.cronjobs * args.minutes;
    let fires = lateness.len() as u64;
    let mut late = Latencies::default();
    let mut early = 0usize;
    for seconds_late in lateness.values() {
        if *seconds_late < 0.0 {
            early += 1;
        }
        late.push(Duration::from_secs_f64(seconds_late.max(0.0)));
    }
    let p99 = Duration::from_secs_f64(late.percentile_ms(99.0) / 1000.0);
    eprintln!(
        "{fires}/{expected} fires: p50 {:.0} ms, p99 {:.0} ms, longest {:.0} ms late",
        late.percentile_ms(50.0),
        late.percentile_ms(99.0),
        late.percentile_ms(100.0)
    );
    Ok(serde_json::json!({
        "scenario": "cron",
        "cronjobs": args.cronjobs,
        "minutes": args.minutes,
        "nodes": args.nodes,
        "expected_fires": expected,
        "fires": fires,
        "missed_fires": expected.saturating_sub(fires),
        "fires_outside_the_run": outside,
        "fires_before_their_time": early,
        "p50_late_ms": round(late.percentile_ms(50.0)),
        "p99_late_ms": round(late.percentile_ms(99.0)),
        "max_late_ms": round(late.percentile_ms(100.0)),
        "target_ms": TARGET.as_secs_f64() * 1000.0,
        "within_target": fires > 0 && p99 <= TARGET,
        "master_cpu_seconds": round(cpu_seconds),
        "master_cpu_cores": round(cpu_seconds / seconds),
        "master_rss_mib": round(after.rss_bytes as f64 / 1048576.0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_times_read_in_any_offset() {
        assert_eq!(parse_offset_time("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_offset_time("1970-01-01T02:01:00+02:00"), Some(60));
        let half_past = "2025-02-19T16:50:00-04:30";
        assert_eq!(parse_offset_time(half_past), Some(1_740_000_000));
        assert_eq!(parse_offset_time("1970-01-01T00:01:00"), None);
        assert_eq!(parse_offset_time("soon"), None);
    }

    #[test]
    fn a_job_without_the_annotation_is_timed_by_its_name() {
        let none = BTreeMap::new();
        assert_eq!(
            scheduled_for("nightly-29000000", &none),
            Some(1_740_000_000)
        );
        let annotated: BTreeMap<String, String> = [(
            SCHEDULED_TIMESTAMP_ANNOTATION.to_owned(),
            "2025-02-19T21:20:00Z".to_owned(),
        )]
        .into();
        assert_eq!(scheduled_for("x-1", &annotated), Some(1_740_000_000));
        assert_eq!(scheduled_for("nightly", &none), None);
    }
}
