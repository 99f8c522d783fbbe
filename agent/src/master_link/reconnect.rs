//! The pause before calling a master again after a call or stream failed:
//! 200 ms doubling to 5 s, back to 200 ms once a connection has proved
//! itself. Short enough to follow a new leader within an election, long
//! enough that a fleet of agents does not hammer a master that is down.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const FIRST: Duration = Duration::from_millis(200);
const MOST: Duration = Duration::from_secs(5);

/// Backoff between reconnects.
#[derive(Debug)]
pub(super) struct Reconnect {
    delay: Duration,
}

impl Reconnect {
    pub(super) fn new() -> Reconnect {
        Reconnect { delay: FIRST }
    }

    /// Sleeps the current delay and doubles it; `false` on shutdown.
    pub(super) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(self.delay) => {}
        }
        self.delay = (self.delay * 2).min(MOST);
        true
    }

    pub(super) fn reset(&mut self) {
        self.delay = FIRST;
    }
}
