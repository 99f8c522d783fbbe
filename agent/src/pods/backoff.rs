//! Restart pacing. A crashing container restarts at once the first time,
//! then after 10 s, 20 s, 40 s … capped at 5 minutes (the kubelet's
//! CrashLoopBackOff); the pace starts over once a run lasts 10 minutes.
//! Image pulls and failed starts are retried on the same curve.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    last: Duration,
}

impl Backoff {
    pub fn crash_loop() -> Backoff {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            current: Duration::ZERO,
            last: Duration::ZERO,
        }
    }

    pub fn errors() -> Backoff {
        Backoff::crash_loop()
    }

    /// The delay before the next attempt, and advances the curve.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.last = delay;
        self.current = if self.current.is_zero() {
            self.initial
        } else {
            (self.current * 2).min(self.max)
        };
        delay
    }

    /// The delay the last `next_delay` returned.
    pub fn last_delay(&self) -> Duration {
        self.last
    }

    /// Whether any attempt has been paced yet.
    pub fn started(&self) -> bool {
        !self.current.is_zero()
    }

    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
        self.last = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_curve_matches_the_kubelet() {
        let mut b = Backoff::crash_loop();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::from_secs(10));
    }
}
