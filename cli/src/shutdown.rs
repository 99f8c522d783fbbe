//! One shutdown path: SIGTERM or SIGINT cancels the token every task holds;
//! a second signal, or work that outlasts the grace period, exits at once.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// How long in-flight work may take to drain after the first signal. The
/// systemd units' `TimeoutStopSec` is longer than this.
pub const GRACE: Duration = Duration::from_secs(20);

/// A token cancelled on the first SIGTERM/SIGINT.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received; draining (a second signal exits now)");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = tokio::time::sleep(GRACE) => {
                tracing::warn!("shutdown grace of {GRACE:?} expired");
            }
        }
        std::process::exit(130);
    });
    token
}
