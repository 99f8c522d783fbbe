//! Image garbage collection, as the kubelet does it: when the filesystem
//! holding containerd's images is at or above the high threshold of use
//! (`--image-gc-high-threshold`, 85 %), unused images are removed, the
//! least recently used first, until it is at or under the low threshold
//! (`--image-gc-low-threshold`, 80 %). Usage is what statvfs(2) reports
//! for that filesystem ([`FilesystemUsage`]), counted as the kubelet does:
//! what unprivileged users cannot use any more.
//!
//! An image is unused when no container of this agent, running or exited,
//! was created from it, no pod the node should run names it (asked only
//! when a collection is due), it is not pinned (images imported from
//! archives are), and it was first seen at least `--image-minimum-gc-age`
//! ago (2 min: a freshly pulled image is not taken before its container
//! exists). skiff runs no pause or sandbox image, so there is none to
//! spare. "Least recently used" is the last pass that saw a container
//! using it, else when containerd stored it. A removal deletes the image
//! name with containerd's garbage collection run before it answers, so the
//! filesystem is measured again after each and collection stops as soon
//! as the low threshold is reached; what each removal freed is logged.
//!
//! Containers come through [`ContainerRuntime`] and images through
//! [`ImageInventory`], so the choice is unit-tested against the recording
//! fake runtime and a fake filesystem.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::containers::ContainerRuntime;
use super::images::{ImageInventory, ImageRecord};
use super::{io, Result};

/// Default `--image-gc-high-threshold` (percent used), the kubelet's.
pub const DEFAULT_HIGH_THRESHOLD: u8 = 85;
/// Default `--image-gc-low-threshold` (percent used), the kubelet's.
pub const DEFAULT_LOW_THRESHOLD: u8 = 80;
/// Default `--image-minimum-gc-age`, the kubelet's.
pub const DEFAULT_MINIMUM_AGE: Duration = Duration::from_secs(120);
/// Default `--image-gc-interval`: how often usage is checked.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Where a containerd the agent did not start keeps its images, unless
/// `--image-gc-path` says otherwise.
pub const SYSTEM_CONTAINERD_ROOT: &str = "/var/lib/containerd";

/// Thresholds that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("--image-gc-high-threshold {0}: not a percentage; give 0 to 100")]
    High(u8),
    #[error("--image-gc-low-threshold {0}: not a percentage; give 0 to 100")]
    Low(u8),
    #[error("--image-gc-low-threshold ({low}) must be below --image-gc-high-threshold ({high}): unused images are removed from the high one down to the low one")]
    LowNotBelowHigh { low: u8, high: u8 },
}

/// When collection starts and where it stops, in percent of the
/// filesystem used; the low one is below the high one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    high: u8,
    low: u8,
}

impl Thresholds {
    /// Checks that both are percentages and `low` is below `high`.
    pub fn new(high: u8, low: u8) -> std::result::Result<Thresholds, ThresholdError> {
        if high > 100 {
            return Err(ThresholdError::High(high));
        }
        if low > 100 {
            return Err(ThresholdError::Low(low));
        }
        if low >= high {
            return Err(ThresholdError::LowNotBelowHigh { low, high });
        }
        Ok(Thresholds { high, low })
    }

    pub fn high(self) -> u8 {
        self.high
    }

    pub fn low(self) -> u8 {
        self.low
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            high: DEFAULT_HIGH_THRESHOLD,
            low: DEFAULT_LOW_THRESHOLD,
        }
    }
}

/// How the agent collects images; the CLI fills this from flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGcConfig {
    pub thresholds: Thresholds,
    /// How long an image is left alone after it was first seen.
    pub minimum_age: Duration,
    /// How often usage is checked.
    pub interval: Duration,
    /// A path on the filesystem holding containerd's images; `None`: the
    /// private containerd's root, or [`SYSTEM_CONTAINERD_ROOT`] when the
    /// agent was given a socket.
    pub path: Option<PathBuf>,
}

impl Default for ImageGcConfig {
    fn default() -> Self {
        ImageGcConfig {
            thresholds: Thresholds::default(),
            minimum_age: DEFAULT_MINIMUM_AGE,
            interval: DEFAULT_INTERVAL,
            path: None,
        }
    }
}

/// A filesystem's size and what is left of it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    /// Free to unprivileged users (statvfs' `f_bavail`).
    pub available: u64,
}

impl FsUsage {
    /// Percent used, rounded up, as the kubelet counts it.
    pub fn used_percent(self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        let available = u128::from(self.available.min(self.capacity));
        let available_percent = available * 100 / u128::from(self.capacity);
        100 - u64::try_from(available_percent).unwrap_or(100)
    }

    /// Bytes to free before at most `low_percent` is used.
    pub fn to_free(self, low_percent: u8) -> u64 {
        let free_percent = u128::from(100u8.saturating_sub(low_percent));
        let wanted_available = u128::from(self.capacity) * free_percent / 100;
        let short = wanted_available.saturating_sub(u128::from(self.available));
        u64::try_from(short).unwrap_or(u64::MAX)
    }
}

/// How full a filesystem is: the kernel's answer, behind a trait so that
/// collection can be tested against a fake.
pub trait FilesystemUsage: Send + Sync + 'static {
    /// The usage of the filesystem holding `path`.
    fn usage(&self, path: &Path) -> std::io::Result<FsUsage>;
}

/// The real [`FilesystemUsage`]: statvfs(2) on the path, or on its nearest
/// existing parent (a containerd root not made yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl FilesystemUsage for Statvfs {
    fn usage(&self, path: &Path) -> std::io::Result<FsUsage> {
        let measured = path
            .ancestors()
            .find(|candidate| candidate.exists())
            .unwrap_or(Path::new("/"));
        let stat = nix::sys::statvfs::statvfs(measured)?;
        let fragment = widen(stat.fragment_size());
        Ok(FsUsage {
            capacity: widen(stat.blocks()).saturating_mul(fragment),
            available: widen(stat.blocks_available()).saturating_mul(fragment),
        })
    }
}

/// statvfs counts come as `c_ulong` and `fsblkcnt_t`: u64 here, u32 on
/// 32-bit ARM.
fn widen<N: Into<u64>>(count: N) -> u64 {
    count.into()
}

/// What collection remembers of an image between passes (the kubelet's
/// `firstDetected` and `lastUsed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    first: SystemTime,
    last_used: Option<SystemTime>,
}

/// One image removed, and the space that came free with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub name: String,
    pub freed_bytes: u64,
}

/// What one collection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub removed: Vec<Removed>,
    pub before: FsUsage,
    pub after: FsUsage,
}

/// The image collector of one agent.
pub struct ImageGc<R, F> {
    runtime: Arc<R>,
    filesystem: F,
    /// A path on the filesystem holding the images.
    path: PathBuf,
    thresholds: Thresholds,
    minimum_age: Duration,
    seen: HashMap<String, Seen>,
}

impl<R, F> std::fmt::Debug for ImageGc<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageGc")
            .field("path", &self.path)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl<R: ContainerRuntime + ImageInventory, F: FilesystemUsage> ImageGc<R, F> {
    pub fn new(
        runtime: Arc<R>,
        filesystem: F,
        path: PathBuf,
        thresholds: Thresholds,
        minimum_age: Duration,
    ) -> ImageGc<R, F> {
        ImageGc {
            runtime,
            filesystem,
            path,
            thresholds,
            minimum_age,
            seen: HashMap::new(),
        }
    }

    /// One check at `now`: notes which images are in use, and when the
    /// filesystem is at or above the high threshold, removes unused ones
    /// until it is at or under the low one. `wanted` names the images the
    /// node's pods use, normalised; it is asked only when collection is
    /// due. `None` when none was.
    pub async fn pass(
        &mut self,
        now: SystemTime,
        wanted: impl FnOnce() -> HashSet<String> + Send,
    ) -> Result<Option<Collected>> {
        let images = self.runtime.list_images().await?;
        let in_use: HashSet<String> = self
            .runtime
            .list()
            .await?
            .into_iter()
            .map(|c| c.image)
            .filter(|image| !image.is_empty())
            .collect();
        self.observe(&images, &in_use, now);
        let before = self.measure()?;
        if before.used_percent() < u64::from(self.thresholds.high) {
            return Ok(None);
        }
        let wanted = wanted();
        let minimum_age = self.minimum_age;
        let chosen = candidates(&images, &in_use, &wanted, &self.seen, now, minimum_age);
        let mut removed = Vec::new();
        let mut usage = before;
        for image in chosen {
            if usage.to_free(self.thresholds.low) == 0 {
                break;
            }
            match self.runtime.remove_image(image).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(image = %image.name, error = %e, "cannot remove image");
                    continue;
                }
            }
            self.seen.remove(&image.name);
            let after = self.measure()?;
            let freed_bytes = after.available.saturating_sub(usage.available);
            tracing::info!(image = %image.name, freed_bytes, "removed unused image");
            removed.push(Removed {
                name: image.name.clone(),
                freed_bytes,
            });
            usage = after;
        }
        Ok(Some(Collected {
            removed,
            before,
            after: usage,
        }))
    }

    /// Remembers when each image was first seen and last seen in use, and
    /// forgets images that are gone.
    fn observe(&mut self, images: &[ImageRecord], in_use: &HashSet<String>, now: SystemTime) {
        let present: HashSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
        self.seen.retain(|name, _| present.contains(name.as_str()));
        for image in images {
            let fresh = Seen {
                first: now,
                last_used: None,
            };
            let seen = self.seen.entry(image.name.clone()).or_insert(fresh);
            if in_use.contains(&image.name) {
                seen.last_used = Some(now);
            }
        }
    }

    fn measure(&self) -> Result<FsUsage> {
        let path = &self.path;
        self.filesystem
            .usage(path)
            .map_err(io(format!("measuring the space on {}", path.display())))
    }

    /// Logs how a collection ended.
    fn report(&self, collected: &Collected) {
        let freed_bytes: u64 = collected.removed.iter().map(|r| r.freed_bytes).sum();
        let removed = collected.removed.len();
        let before = collected.before.used_percent();
        let after = collected.after.used_percent();
        let path = self.path.display();
        if collected.after.to_free(self.thresholds.low) == 0 {
            tracing::info!(
                removed,
                freed_bytes,
                used_percent_before = before,
                used_percent_after = after,
                filesystem = %path,
                "image garbage collection"
            );
        } else {
            tracing::warn!(
                removed,
                freed_bytes,
                used_percent_before = before,
                used_percent_after = after,
                low_threshold = self.thresholds.low,
                filesystem = %path,
                "image garbage collection cannot get under the low threshold: every other image \
                 is in use, pinned, named by a pod, or younger than --image-minimum-gc-age"
            );
        }
    }
}

/// The images a collection may remove, least recently used first: not
/// pinned, not used by a container, not wanted by a pod, and first seen at
/// least `minimum_age` before `now`. Ordered by last use, else by when
/// containerd stored them; ties by name.
fn candidates<'a>(
    images: &'a [ImageRecord],
    in_use: &HashSet<String>,
    wanted: &HashSet<String>,
    seen: &HashMap<String, Seen>,
    now: SystemTime,
    minimum_age: Duration,
) -> Vec<&'a ImageRecord> {
    let mut chosen: Vec<(SystemTime, &ImageRecord)> = images
        .iter()
        .filter(|i| !i.pinned && !in_use.contains(&i.name) && !wanted.contains(&i.name))
        .filter_map(|i| {
            let seen = seen.get(&i.name)?;
            let age = now.duration_since(seen.first).unwrap_or_default();
            if age < minimum_age {
                return None;
            }
            Some((seen.last_used.unwrap_or(i.created), i))
        })
        .collect();
    chosen.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    chosen.into_iter().map(|(_, image)| image).collect()
}

/// Checks every `interval` until `shutdown`, collecting when due and
/// logging what each collection did; `wanted` names the images the
/// node's pods use.
pub async fn run<R, F, W>(
    mut gc: ImageGc<R, F>,
    interval: Duration,
    wanted: W,
    shutdown: CancellationToken,
) where
    R: ContainerRuntime + ImageInventory,
    F: FilesystemUsage,
    W: Fn() -> HashSet<String> + Send + Sync + 'static,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match gc.pass(SystemTime::now(), &wanted).await {
            Ok(None) => {}
            Ok(Some(collected)) => gc.report(&collected),
            Err(e) => {
                tracing::warn!(error = %e, "image garbage collection failed; trying again later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::runtime::containers::ContainerRecord;
    use crate::runtime::recording::{Call, RecordingRuntime};
    use crate::runtime::TaskState;

    /// A filesystem of `capacity` bytes holding `others` bytes besides
    /// the fake runtime's images.
    struct ImageDisk {
        runtime: Arc<RecordingRuntime>,
        capacity: u64,
        others: u64,
    }

    impl FilesystemUsage for ImageDisk {
        fn usage(&self, _path: &Path) -> std::io::Result<FsUsage> {
            let used = self.others + self.runtime.image_bytes();
            Ok(FsUsage {
                capacity: self.capacity,
                available: self.capacity.saturating_sub(used),
            })
        }
    }

    /// `minutes` after the fake epoch the tests start at.
    fn at(minutes: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + minutes * 60)
    }

    fn container(id: &str, image: &str, state: TaskState) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            labels: Default::default(),
            image: image.into(),
            state,
        }
    }

    fn exited() -> TaskState {
        TaskState::Exited {
            code: 0,
            finished_at: String::new(),
        }
    }

    /// A collector on a 1,000-byte filesystem with `others` bytes that are
    /// not images, thresholds 85/80 and no minimum age.
    fn collector(
        runtime: &Arc<RecordingRuntime>,
        others: u64,
    ) -> ImageGc<RecordingRuntime, ImageDisk> {
        let disk = ImageDisk {
            runtime: runtime.clone(),
            capacity: 1000,
            others,
        };
        let path = PathBuf::from("/var/lib/skiff/agent/containerd/root");
        ImageGc::new(
            runtime.clone(),
            disk,
            path,
            Thresholds::default(),
            Duration::ZERO,
        )
    }

    fn removed_images(runtime: &RecordingRuntime) -> Vec<String> {
        runtime
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::RemoveImage(name) => Some(name),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn unused_images_go_oldest_first_until_the_low_threshold() {
        let runtime = Arc::new(RecordingRuntime::default());
        // The oldest image is the one in use.
        runtime.add_image("in-use", at(0), 100, false);
        runtime.add_image("old", at(1), 150, false);
        runtime.add_image("middle", at(2), 150, false);
        runtime.add_image("new", at(3), 100, false);
        let running = TaskState::Running { pid: 7 };
        runtime.add_container(container("u1_main", "in-use", running));
        // 460 + 500 of images: 96 % used; 80 % means freeing 160 bytes.
        let mut gc = collector(&runtime, 460);
        let collected = gc.pass(at(10), HashSet::new).await.unwrap().unwrap();
        assert_eq!(removed_images(&runtime), ["old", "middle"]);
        assert_eq!(runtime.image_names(), ["in-use", "new"]);
        assert_eq!(
            collected.removed,
            [
                Removed {
                    name: "old".into(),
                    freed_bytes: 150
                },
                Removed {
                    name: "middle".into(),
                    freed_bytes: 150
                },
            ]
        );
        assert_eq!(collected.before.used_percent(), 96);
        assert_eq!(collected.after.used_percent(), 66);
        // Under the high threshold now: nothing more goes.
        assert_eq!(gc.pass(at(11), HashSet::new).await.unwrap(), None);
        assert_eq!(runtime.image_names(), ["in-use", "new"]);
    }

    #[tokio::test]
    async fn nothing_goes_under_the_high_threshold() {
        let runtime = Arc::new(RecordingRuntime::default());
        runtime.add_image("unused", at(0), 100, false);
        // 740 + 100: 84 % used.
        let mut gc = collector(&runtime, 740);
        assert_eq!(gc.pass(at(10), HashSet::new).await.unwrap(), None);
        assert!(removed_images(&runtime).is_empty());
    }

    #[tokio::test]
    async fn images_in_use_wanted_or_pinned_never_go() {
        let runtime = Arc::new(RecordingRuntime::default());
        runtime.add_image("running", at(0), 100, false);
        runtime.add_image("exited", at(1), 100, false);
        runtime.add_image("wanted", at(2), 100, false);
        runtime.add_image("pinned", at(3), 100, true);
        runtime.add_image("unused", at(4), 100, false);
        let running = TaskState::Running { pid: 7 };
        runtime.add_container(container("u1_a", "running", running));
        // An exited container still holds its image (its logs, a restart).
        runtime.add_container(container("u1_b", "exited", exited()));
        // 500 + 500: full; everything that may go has to.
        let mut gc = collector(&runtime, 500);
        let wanted = || HashSet::from(["wanted".to_string()]);
        let collected = gc.pass(at(10), wanted).await.unwrap().unwrap();
        assert_eq!(removed_images(&runtime), ["unused"]);
        assert_eq!(
            runtime.image_names(),
            ["exited", "pinned", "running", "wanted"]
        );
        assert_eq!(collected.after.used_percent(), 90);
    }

    #[tokio::test]
    async fn the_last_use_counts_before_the_creation_time() {
        let runtime = Arc::new(RecordingRuntime::default());
        runtime.add_image("used-lately", at(0), 100, false);
        runtime.add_container(container("u1_main", "used-lately", exited()));
        // 700 + 100: 80 % used, nothing to do but note the use.
        let mut gc = collector(&runtime, 700);
        assert_eq!(gc.pass(at(10), HashSet::new).await.unwrap(), None);
        // Stored before that use and never used; then the container goes.
        runtime.add_image("never-used", at(5), 100, false);
        runtime.remove("u1_main").await.unwrap();
        // 90 % used, 100 bytes to free: created first, the image used
        // lately is used more recently than the other was stored.
        let collected = gc.pass(at(20), HashSet::new).await.unwrap().unwrap();
        assert_eq!(removed_images(&runtime), ["never-used"]);
        assert_eq!(runtime.image_names(), ["used-lately"]);
        assert_eq!(collected.after.used_percent(), 80);
    }

    #[tokio::test]
    async fn an_image_first_seen_lately_waits_for_the_minimum_age() {
        let runtime = Arc::new(RecordingRuntime::default());
        runtime.add_image("pulled", at(0), 100, false);
        let disk = ImageDisk {
            runtime: runtime.clone(),
            capacity: 1000,
            others: 800,
        };
        let path = PathBuf::from("/containerd");
        let minimum_age = Duration::from_secs(120);
        let mut gc = ImageGc::new(
            runtime.clone(),
            disk,
            path,
            Thresholds::default(),
            minimum_age,
        );
        let collected = gc.pass(at(10), HashSet::new).await.unwrap().unwrap();
        assert!(collected.removed.is_empty());
        let collected = gc.pass(at(11), HashSet::new).await.unwrap().unwrap();
        assert!(collected.removed.is_empty(), "seen only a minute ago");
        gc.pass(at(12), HashSet::new).await.unwrap().unwrap();
        assert_eq!(removed_images(&runtime), ["pulled"]);
    }

    #[tokio::test]
    async fn wanted_images_are_asked_for_only_when_collection_is_due() {
        let runtime = Arc::new(RecordingRuntime::default());
        runtime.add_image("unused", at(0), 100, false);
        let mut gc = collector(&runtime, 100);
        let asked = AtomicBool::new(false);
        let wanted = || {
            asked.store(true, Ordering::Relaxed);
            HashSet::new()
        };
        assert_eq!(gc.pass(at(10), wanted).await.unwrap(), None);
        assert!(!asked.load(Ordering::Relaxed));
    }

    #[test]
    fn thresholds_are_percentages_low_below_high() {
        assert_eq!(Thresholds::default(), Thresholds::new(85, 80).unwrap());
        assert_eq!(Thresholds::new(1, 0).unwrap().high(), 1);
        assert_eq!(Thresholds::new(100, 99).unwrap().low(), 99);
        assert_eq!(Thresholds::new(101, 80), Err(ThresholdError::High(101)));
        assert_eq!(Thresholds::new(85, 200), Err(ThresholdError::Low(200)));
        let equal = Thresholds::new(80, 80).unwrap_err();
        let expected = ThresholdError::LowNotBelowHigh { low: 80, high: 80 };
        assert_eq!(equal, expected);
        assert!(
            equal
                .to_string()
                .contains("must be below --image-gc-high-threshold"),
            "{equal}"
        );
        assert!(Thresholds::new(50, 90).is_err());
    }

    #[test]
    fn usage_is_counted_as_the_kubelet_counts_it() {
        let usage = FsUsage {
            capacity: 1000,
            available: 155,
        };
        // 15.5 % available: 85 % used, rounded up.
        assert_eq!(usage.used_percent(), 85);
        assert_eq!(usage.to_free(80), 45);
        assert_eq!(usage.to_free(0), 845);
        let empty = FsUsage {
            capacity: 0,
            available: 0,
        };
        assert_eq!(empty.used_percent(), 0);
        assert_eq!(empty.to_free(80), 0);
    }

    #[test]
    fn statvfs_measures_a_path_not_made_yet_on_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let usage = Statvfs.usage(&tmp.path().join("containerd/root")).unwrap();
        assert!(usage.capacity > 0);
        assert!(usage.available <= usage.capacity);
    }
}
