//! Busy threads that keep every core of the machine working, for tests
//! that must hold under load (a Raspberry Pi compiling, a 2-core box that
//! also runs the workloads). The threads belong to the test process and
//! stop when the handle is dropped, also when the test fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One spinning thread per core until dropped.
pub struct CpuLoad {
    stop: Arc<AtomicBool>,
    spins: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuLoad {
    /// Starts one busy thread per available core.
    pub fn all_cores() -> CpuLoad {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuLoad::threads(cores)
    }

    /// Starts `n` busy threads.
    pub fn threads(n: usize) -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                let spins = spins.clone();
                std::thread::Builder::new()
                    .name(format!("cpu-load-{i}"))
                    .spawn(move || {
                        let mut x: u64 = i as u64 + 1;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..100_000 {
                                // xorshift: work the optimiser cannot drop.
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                            }
                            spins.fetch_add(std::hint::black_box(x) & 1 | 1, Ordering::Relaxed);
                        }
                    })
                    .expect("spawn a cpu-load thread")
            })
            .collect();
        CpuLoad {
            stop,
            spins,
            threads,
        }
    }

    /// Rounds of busy work done so far (to check the load really ran).
    pub fn rounds(&self) -> u64 {
        self.spins.load(Ordering::Relaxed)
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
