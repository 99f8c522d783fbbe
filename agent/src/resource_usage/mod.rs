//! The node's and its pods' resource usage, measured as the kubelet
//! (cAdvisor) measures it for metrics-server, for the masters' metrics API
//! (`kubectl top`, autoscaling). Every [`SAMPLE_EVERY`] the sampler lists
//! the running containers (through the runtime, whose labels name each
//! one's pod), reads each one's cgroup (cumulative CPU time, memory
//! working set) and the machine's counters, turns CPU time into a rate
//! over the time since the previous pass (the reading's window), and
//! publishes the reading for the heartbeats to carry
//! ([`crate::master_link::UsageFeed`]). Each reading also says how big the
//! filesystem holding the node's `local-path` volumes is and how much of
//! it is free (statvfs(2)), for the provisioner's warning about a claim
//! larger than that. Nothing is written to disk.
//!
//! A container has no rate on the pass it is first seen, after it
//! restarted (a new run, a new cgroup) or when its counter went back; a
//! pod is reported only with every running container of it measured,
//! never with a part of its use. The first pass, and one where the
//! machine's counters cannot be read, publish nothing.
//!
//! The kernel's files are behind the narrow [`UsageSource`] trait:
//! [`host::HostUsage`] reads them, [`recording::RecordingUsage`] is the
//! fake the sampler's tests script.

pub mod host;
pub mod recording;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_proto::node::{
    ContainerResourceUsage, FilesystemUsage, NodeResourceUsage, PodResourceUsage,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::master_link::UsageReading;
use crate::pods::worker::cgroups_path;
use crate::runtime::containers::{
    LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_RESTARTS,
};
use crate::runtime::image_gc::FsUsage;
use crate::runtime::{ContainerRecord, ContainerRuntime, TaskState};

/// How often the sampler reads the counters: the window of each reading
/// (metrics-server's default resolution is 15 s; the masters answer
/// readings up to 30 s old).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Cumulative counters of one cgroup, or of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// CPU time used since the cgroup (or the machine) started, in
    /// nanoseconds of one CPU.
    pub cpu_nanos: u64,
    /// The memory working set now, in bytes.
    pub memory_bytes: u64,
}

/// A counter that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {problem}", .path.display())]
    Parse { path: PathBuf, problem: String },
}

impl UsageError {
    fn parse(path: &Path, problem: impl Into<String>) -> UsageError {
        UsageError::Parse {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The kernel's counters the sampler reads.
pub trait UsageSource: Send + Sync + 'static {
    /// The whole machine's.
    fn machine(&self) -> Result<Sample, UsageError>;
    /// A container's cgroup (its runtime spec's `cgroupsPath`); `None`
    /// when there is none (a container that just stopped).
    fn cgroup(&self, cgroups_path: &str) -> Result<Option<Sample>, UsageError>;
    /// The filesystem holding the node's `local-path` volumes; `None` when
    /// this source is not given one to measure.
    fn storage(&self) -> Result<Option<FsUsage>, UsageError>;
}

impl<T: UsageSource> UsageSource for Arc<T> {
    fn machine(&self) -> Result<Sample, UsageError> {
        T::machine(self)
    }

    fn cgroup(&self, cgroups_path: &str) -> Result<Option<Sample>, UsageError> {
        T::cgroup(self, cgroups_path)
    }

    fn storage(&self) -> Result<Option<FsUsage>, UsageError> {
        T::storage(self)
    }
}

/// A running container of a pod, as its runtime labels name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    /// Which run of it (its restart count): a new run has a new cgroup,
    /// whose counters start over.
    pub run: String,
}

/// The running containers among `records` that belong to pods (labelled
/// by the pod workers); exited ones and anything else are left out.
pub fn running_containers(records: &[ContainerRecord]) -> Vec<RunningContainer> {
    records
        .iter()
        .filter(|r| matches!(r.state, TaskState::Running { .. }))
        .filter_map(|r| {
            let label = |key: &str| r.labels.get(key).filter(|v| !v.is_empty()).cloned();
            Some(RunningContainer {
                namespace: label(LABEL_POD_NAMESPACE)?,
                pod: label(LABEL_POD_NAME)?,
                uid: label(LABEL_POD_UID)?,
                container: label(LABEL_CONTAINER)?,
                run: label(LABEL_RESTARTS).unwrap_or_default(),
            })
        })
        .collect()
}

/// A pod in a pass: namespace, name, UID.
type PodKey = (String, String, String);

/// One container in a pass, and its counters (`None`: not measured).
type Measured<'a> = (&'a RunningContainer, Option<Sample>);

/// One pass's counters, kept for the next pass's rates.
struct Pass {
    at: Instant,
    machine: Option<Sample>,
    /// By pod UID and container name: the run and its CPU time.
    containers: HashMap<(String, String), (String, u64)>,
}

/// Turns passes over the counters into readings.
pub struct Sampler<S> {
    source: S,
    previous: Option<Pass>,
    /// Whether the machine's counters failed on the last pass (warned once).
    machine_failing: bool,
    /// Whether measuring the storage filesystem failed on the last pass
    /// (warned once).
    storage_failing: bool,
}

impl<S: UsageSource> Sampler<S> {
    pub fn new(source: S) -> Sampler<S> {
        Sampler {
            source,
            previous: None,
            machine_failing: false,
            storage_failing: false,
        }
    }

    /// The storage filesystem now, as the wire carries it; `None` when it
    /// is not measured or cannot be (then the masters warn of nothing).
    fn storage(&mut self) -> Option<FilesystemUsage> {
        match self.source.storage() {
            Ok(usage) => {
                self.storage_failing = false;
                usage.map(|u| FilesystemUsage {
                    capacity_bytes: u.capacity,
                    available_bytes: u.available,
                })
            }
            Err(e) => {
                if !self.storage_failing {
                    tracing::warn!(error = %e, "cannot measure the filesystem of local-path volumes; claims larger than its free space will not be warned of");
                }
                self.storage_failing = true;
                None
            }
        }
    }

    /// Reads the counters at `now` for `containers`: the reading over the
    /// time since the previous pass, or `None` (the first pass, or the
    /// machine's counters unreadable now or then).
    pub fn sample(
        &mut self,
        now: Instant,
        containers: &[RunningContainer],
    ) -> Option<NodeResourceUsage> {
        let machine = match self.source.machine() {
            Ok(sample) => {
                self.machine_failing = false;
                Some(sample)
            }
            Err(e) => {
                if !self.machine_failing {
                    tracing::warn!(error = %e, "cannot read the node's resource usage; the metrics API will not have it");
                }
                self.machine_failing = true;
                None
            }
        };
        // Each pod's containers with their samples.
        let mut pods: BTreeMap<PodKey, Vec<Measured<'_>>> = BTreeMap::new();
        let mut counters = HashMap::new();
        for container in containers {
            let path = cgroups_path(&container.uid, &container.container);
            let sample = match self.source.cgroup(&path) {
                Ok(sample) => sample,
                Err(e) => {
                    tracing::debug!(cgroup = %path, error = %e, "container resource usage unread");
                    None
                }
            };
            if let Some(sample) = sample {
                let key = (container.uid.clone(), container.container.clone());
                counters.insert(key, (container.run.clone(), sample.cpu_nanos));
            }
            let pod = (
                container.namespace.clone(),
                container.pod.clone(),
                container.uid.clone(),
            );
            pods.entry(pod).or_default().push((container, sample));
        }
        let previous = self.previous.replace(Pass {
            at: now,
            machine,
            containers: counters,
        })?;
        let window = now.checked_duration_since(previous.at)?;
        if window.is_zero() {
            return None;
        }
        let (machine, before) = (machine?, previous.machine?);
        let mut reading = NodeResourceUsage {
            window_millis: u32::try_from(window.as_millis()).unwrap_or(u32::MAX),
            age_millis: 0,
            cpu_nanocores: rate(before.cpu_nanos, machine.cpu_nanos, window).unwrap_or(0),
            memory_working_set_bytes: machine.memory_bytes,
            pods: Vec::new(),
            storage: self.storage(),
        };
        for ((namespace, name, uid), measured) in pods {
            let containers: Option<Vec<ContainerResourceUsage>> = measured
                .into_iter()
                .map(|(container, sample)| {
                    let sample = sample?;
                    let key = (container.uid.clone(), container.container.clone());
                    let (run, cpu_before) = previous.containers.get(&key)?;
                    if *run != container.run {
                        return None;
                    }
                    Some(ContainerResourceUsage {
                        name: container.container.clone(),
                        cpu_nanocores: rate(*cpu_before, sample.cpu_nanos, window)?,
                        memory_working_set_bytes: sample.memory_bytes,
                    })
                })
                .collect();
            let Some(mut containers) = containers else {
                continue;
            };
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            reading.pods.push(PodResourceUsage {
                namespace,
                name,
                uid,
                containers,
            });
        }
        Some(reading)
    }
}

/// CPU time from `before` to `after` over `window`, in billionths of a
/// CPU; `None` when the counter went back (a new cgroup).
fn rate(before: u64, after: u64, window: Duration) -> Option<u64> {
    let used = after.checked_sub(before)?;
    let nanocores = u128::from(used) * 1_000_000_000 / window.as_nanos().max(1);
    Some(u64::try_from(nanocores).unwrap_or(u64::MAX))
}

/// Samples every `every` until `shutdown`, publishing each reading on
/// `readings`. The counters are small kernel files, read in place.
pub async fn run<R: ContainerRuntime, S: UsageSource>(
    runtime: Arc<R>,
    source: S,
    every: Duration,
    readings: watch::Sender<Option<UsageReading>>,
    shutdown: CancellationToken,
) {
    let mut sampler = Sampler::new(source);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let records = match runtime.list().await {
            Ok(records) => records,
            Err(e) => {
                // The next pass's window spans this one.
                tracing::debug!(error = %e, "cannot list containers for their resource usage");
                continue;
            }
        };
        let containers = running_containers(&records);
        let now = Instant::now();
        if let Some(usage) = sampler.sample(now, &containers) {
            readings.send_replace(Some(UsageReading { taken: now, usage }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recording::RecordingUsage;
    use super::*;
    use crate::runtime::recording::RecordingRuntime;

    const SECOND: Duration = Duration::from_secs(1);
    const CPU_SECOND: u64 = 1_000_000_000;

    fn running(namespace: &str, pod: &str, uid: &str, container: &str) -> RunningContainer {
        RunningContainer {
            namespace: namespace.into(),
            pod: pod.into(),
            uid: uid.into(),
            container: container.into(),
            run: "0".into(),
        }
    }

    fn sample(cpu_nanos: u64, memory_bytes: u64) -> Sample {
        Sample {
            cpu_nanos,
            memory_bytes,
        }
    }

    /// A fake with the machine and `web`'s two containers at their start.
    fn started() -> (Arc<RecordingUsage>, Vec<RunningContainer>) {
        let usage = Arc::new(RecordingUsage::default());
        usage.set_machine(sample(100 * CPU_SECOND, 2 << 30));
        usage.set_cgroup("/skiff/u-web/app", sample(5 * CPU_SECOND, 10 << 20));
        usage.set_cgroup("/skiff/u-web/log", sample(CPU_SECOND, 1 << 20));
        let containers = vec![
            running("shop", "web", "u-web", "log"),
            running("shop", "web", "u-web", "app"),
        ];
        (usage, containers)
    }

    #[test]
    fn cpu_is_a_rate_over_the_time_between_passes() {
        let (usage, containers) = started();
        let mut sampler = Sampler::new(usage.clone());
        let t0 = Instant::now();
        assert_eq!(sampler.sample(t0, &containers), None, "no rate yet");
        // In ten seconds: the machine used 25 CPU-seconds (2.5 CPUs), app
        // 7.5 (750m), log 0.01 (1m).
        usage.set_machine(sample(125 * CPU_SECOND, 3 << 30));
        usage.set_cgroup("/skiff/u-web/app", sample(12_500_000_000, 12 << 20));
        usage.set_cgroup("/skiff/u-web/log", sample(1_010_000_000, 1 << 20));
        let reading = sampler.sample(t0 + 10 * SECOND, &containers).unwrap();
        assert_eq!(reading.window_millis, 10_000);
        assert_eq!(reading.age_millis, 0);
        assert_eq!(reading.cpu_nanocores, 2_500_000_000);
        assert_eq!(reading.memory_working_set_bytes, 3 << 30);
        assert_eq!(reading.pods.len(), 1);
        let web = &reading.pods[0];
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str(), web.uid.as_str()),
            ("shop", "web", "u-web")
        );
        let containers: Vec<(&str, u64, u64)> = web
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.cpu_nanocores, c.memory_working_set_bytes))
            .collect();
        assert_eq!(
            containers,
            [("app", 750_000_000, 12 << 20), ("log", 1_000_000, 1 << 20)],
            "by name"
        );
        let reads = usage.reads();
        assert!(reads.contains(&"/skiff/u-web/app".to_owned()), "{reads:?}");
    }

    #[test]
    fn a_pod_is_left_out_until_every_container_of_it_has_a_rate() {
        let (usage, mut containers) = started();
        usage.set_cgroup("/skiff/u-db/db", sample(0, 1));
        containers.push(running("shop", "db", "u-db", "db"));
        let mut sampler = Sampler::new(usage.clone());
        let t0 = Instant::now();
        sampler.sample(t0, &containers);
        // A sidecar of `web` starts: new, no rate on this pass.
        usage.set_cgroup("/skiff/u-web/proxy", sample(0, 1));
        let mut with_sidecar = containers.clone();
        with_sidecar.push(running("shop", "web", "u-web", "proxy"));
        let reading = sampler.sample(t0 + 10 * SECOND, &with_sidecar).unwrap();
        let names: Vec<&str> = reading.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["db"], "web waits for its sidecar's second sample");
        let reading = sampler.sample(t0 + 20 * SECOND, &with_sidecar).unwrap();
        let names: Vec<&str> = reading.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(reading.pods[1].containers.len(), 3);
        assert_eq!(reading.window_millis, 10_000, "since the previous pass");
    }

    #[test]
    fn a_restarted_container_or_a_counter_gone_back_has_no_rate_for_a_pass() {
        let (usage, containers) = started();
        let mut sampler = Sampler::new(usage.clone());
        let t0 = Instant::now();
        sampler.sample(t0, &containers);
        // app restarted: a new run, its new cgroup's counters from zero.
        let mut restarted = containers.clone();
        restarted[1].run = "1".into();
        usage.set_cgroup("/skiff/u-web/app", sample(CPU_SECOND, 1));
        let reading = sampler.sample(t0 + 10 * SECOND, &restarted).unwrap();
        assert!(reading.pods.is_empty(), "{reading:?}");
        usage.set_cgroup("/skiff/u-web/app", sample(2 * CPU_SECOND, 1));
        let reading = sampler.sample(t0 + 20 * SECOND, &restarted).unwrap();
        assert_eq!(reading.pods.len(), 1);
        // The counter going back without a new run label (a cgroup made
        // again) is not a rate either.
        usage.set_cgroup("/skiff/u-web/app", sample(CPU_SECOND / 2, 1));
        let reading = sampler.sample(t0 + 30 * SECOND, &restarted).unwrap();
        assert!(reading.pods.is_empty());
    }

    #[test]
    fn a_container_whose_cgroup_is_gone_or_unreadable_leaves_its_pod_out() {
        let (usage, containers) = started();
        let mut sampler = Sampler::new(usage.clone());
        let t0 = Instant::now();
        sampler.sample(t0, &containers);
        usage.remove_cgroup("/skiff/u-web/log");
        let reading = sampler.sample(t0 + 10 * SECOND, &containers).unwrap();
        assert!(reading.pods.is_empty());
        usage.set_cgroup("/skiff/u-web/log", sample(CPU_SECOND, 1));
        usage.fail_cgroup("/skiff/u-web/app");
        let reading = sampler.sample(t0 + 20 * SECOND, &containers).unwrap();
        assert!(reading.pods.is_empty());
        assert_eq!(reading.cpu_nanocores, 0, "the machine did nothing");
    }

    #[test]
    fn no_reading_while_the_machines_counters_cannot_be_read() {
        let (usage, containers) = started();
        let mut sampler = Sampler::new(usage.clone());
        let t0 = Instant::now();
        sampler.sample(t0, &containers);
        usage.fail_machine();
        assert_eq!(sampler.sample(t0 + 10 * SECOND, &containers), None);
        usage.set_machine(sample(110 * CPU_SECOND, 1));
        assert_eq!(
            sampler.sample(t0 + 20 * SECOND, &containers),
            None,
            "no machine counters to compare with"
        );
        let reading = sampler.sample(t0 + 30 * SECOND, &containers).unwrap();
        assert_eq!(reading.cpu_nanocores, 0);
        assert_eq!(reading.pods.len(), 1, "the containers kept their counters");
    }

    #[test]
    fn a_reading_says_how_full_the_storage_filesystem_is_when_it_is_measured() {
        let (usage, containers) = started();
        let mut sampler = Sampler::new(usage.clone());
        let t0 = Instant::now();
        sampler.sample(t0, &containers);
        let reading = sampler.sample(t0 + 10 * SECOND, &containers).unwrap();
        assert_eq!(reading.storage, None, "no storage dir to measure");
        usage.set_storage(FsUsage {
            capacity: 64 << 30,
            available: 20 << 30,
        });
        let reading = sampler.sample(t0 + 20 * SECOND, &containers).unwrap();
        assert_eq!(
            reading.storage,
            Some(FilesystemUsage {
                capacity_bytes: 64 << 30,
                available_bytes: 20 << 30,
            })
        );
        // Unmeasurable: the reading goes without it, never with a guess.
        usage.fail_storage();
        let reading = sampler.sample(t0 + 30 * SECOND, &containers).unwrap();
        assert_eq!(reading.storage, None);
        assert_eq!(reading.pods.len(), 1, "the rest of the reading stands");
    }

    #[test]
    fn rates_are_exact_and_never_negative() {
        assert_eq!(rate(0, CPU_SECOND, SECOND), Some(CPU_SECOND));
        assert_eq!(rate(0, CPU_SECOND, 4 * SECOND), Some(250_000_000));
        assert_eq!(rate(5, 4, SECOND), None);
        assert_eq!(rate(0, 3, Duration::from_nanos(2)), Some(1_500_000_000));
        assert_eq!(rate(0, u64::MAX, Duration::from_nanos(1)), Some(u64::MAX));
    }

    #[test]
    fn only_running_labelled_containers_are_measured() {
        let labels = |container: &str, restarts: &str| -> HashMap<String, String> {
            [
                (LABEL_POD_UID, "u1"),
                (LABEL_POD_NAME, "web"),
                (LABEL_POD_NAMESPACE, "shop"),
                (LABEL_CONTAINER, container),
                (LABEL_RESTARTS, restarts),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        let record =
            |id: &str, labels: HashMap<String, String>, state: TaskState| ContainerRecord {
                id: id.to_owned(),
                labels,
                image: String::new(),
                state,
            };
        let records = [
            record("u1_app", labels("app", "2"), TaskState::Running { pid: 7 }),
            record(
                "u1_old",
                labels("old", "0"),
                TaskState::Exited {
                    code: 0,
                    finished_at: String::new(),
                },
            ),
            record("u1_new", labels("new", "0"), TaskState::NoTask),
            record(
                "stranger",
                Default::default(),
                TaskState::Running { pid: 8 },
            ),
        ];
        assert_eq!(
            running_containers(&records),
            [RunningContainer {
                namespace: "shop".into(),
                pod: "web".into(),
                uid: "u1".into(),
                container: "app".into(),
                run: "2".into(),
            }]
        );
    }

    #[tokio::test]
    async fn the_loop_publishes_a_reading_each_pass_after_the_first() {
        let runtime = Arc::new(RecordingRuntime::default());
        let labels: BTreeMap<String, String> = [
            (LABEL_POD_UID, "u1"),
            (LABEL_POD_NAME, "web"),
            (LABEL_POD_NAMESPACE, "shop"),
            (LABEL_CONTAINER, "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        runtime.add_running("u1_app", labels);
        let usage = Arc::new(RecordingUsage::default());
        usage.set_machine(sample(0, 1));
        usage.set_cgroup("/skiff/u1/app", sample(0, 1));
        let (tx, mut rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let sampler = tokio::spawn(run(
            runtime,
            usage.clone(),
            Duration::from_millis(20),
            tx,
            shutdown.clone(),
        ));
        let reading = tokio::time::timeout(10 * SECOND, async {
            loop {
                rx.changed().await.unwrap();
                if let Some(reading) = rx.borrow_and_update().clone() {
                    return reading;
                }
            }
        })
        .await
        .expect("a reading within ten seconds");
        assert_eq!(reading.usage.pods.len(), 1);
        assert_eq!(reading.usage.pods[0].containers[0].name, "app");
        assert!(reading.taken <= Instant::now());
        shutdown.cancel();
        tokio::time::timeout(10 * SECOND, sampler)
            .await
            .expect("the loop stops")
            .unwrap();
    }
}
