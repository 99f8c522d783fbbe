//! A recording fake of [`UsageSource`] for the sampler's tests: the
//! machine's and each cgroup's counters, and the storage filesystem's
//! size, are what the test sets (a cgroup not set does not exist, nor a
//! storage filesystem), each can be made to fail, and every cgroup read is
//! recorded. Passed in explicitly where [`super::host::HostUsage`]
//! would be.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use super::{Sample, UsageError, UsageSource};
use crate::runtime::image_gc::FsUsage;

#[derive(Debug, Default)]
struct Inner {
    /// `None`: reading the machine fails.
    machine: Option<Sample>,
    cgroups: HashMap<String, Sample>,
    failing: HashSet<String>,
    reads: Vec<String>,
    storage: Option<FsUsage>,
    storage_failing: bool,
}

/// The fake counters.
#[derive(Debug, Default)]
pub struct RecordingUsage {
    inner: Mutex<Inner>,
}

impl RecordingUsage {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The machine's counters from now on.
    pub fn set_machine(&self, sample: Sample) {
        self.lock().machine = Some(sample);
    }

    /// Reading the machine's counters fails from now on.
    pub fn fail_machine(&self) {
        self.lock().machine = None;
    }

    /// The cgroup at `cgroups_path` exists with these counters (and reads).
    pub fn set_cgroup(&self, cgroups_path: &str, sample: Sample) {
        let mut inner = self.lock();
        inner.failing.remove(cgroups_path);
        inner.cgroups.insert(cgroups_path.to_owned(), sample);
    }

    /// The cgroup is gone.
    pub fn remove_cgroup(&self, cgroups_path: &str) {
        self.lock().cgroups.remove(cgroups_path);
    }

    /// Reading the cgroup fails from now on.
    pub fn fail_cgroup(&self, cgroups_path: &str) {
        self.lock().failing.insert(cgroups_path.to_owned());
    }

    /// The storage filesystem measures this from now on.
    pub fn set_storage(&self, usage: FsUsage) {
        let mut inner = self.lock();
        inner.storage_failing = false;
        inner.storage = Some(usage);
    }

    /// Measuring the storage filesystem fails from now on.
    pub fn fail_storage(&self) {
        self.lock().storage_failing = true;
    }

    /// Every cgroup read so far, in order.
    pub fn reads(&self) -> Vec<String> {
        self.lock().reads.clone()
    }
}

impl UsageSource for RecordingUsage {
    fn machine(&self) -> Result<Sample, UsageError> {
        self.lock().machine.ok_or_else(|| UsageError::Parse {
            path: PathBuf::from("/proc/stat"),
            problem: "made to fail".to_owned(),
        })
    }

    fn cgroup(&self, cgroups_path: &str) -> Result<Option<Sample>, UsageError> {
        let mut inner = self.lock();
        inner.reads.push(cgroups_path.to_owned());
        if inner.failing.contains(cgroups_path) {
            return Err(UsageError::Parse {
                path: PathBuf::from(cgroups_path),
                problem: "made to fail".to_owned(),
            });
        }
        Ok(inner.cgroups.get(cgroups_path).copied())
    }

    fn storage(&self) -> Result<Option<FsUsage>, UsageError> {
        let inner = self.lock();
        if inner.storage_failing {
            return Err(UsageError::Read {
                path: PathBuf::from("/var/lib/skiff/storage"),
                source: std::io::Error::other("made to fail"),
            });
        }
        Ok(inner.storage)
    }
}
