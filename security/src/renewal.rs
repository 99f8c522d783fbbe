//! The renewal loop masters and agents share: every few seconds, renew the
//! certificate when it is due (fewer than 90 days left) or when `skiff
//! certificate rotate` left its request file; retry at the next check on
//! failure. How to renew, and so why renewing can fail, is the caller's (a
//! master signs its own, an agent asks a master).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::identity::CertInfo;

/// How often the request file and the expiry are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs until `shutdown`. `current` says what the certificate in use is;
/// `renew(forced)` makes and swaps in a new one; its error is logged and
/// the renewal tried again at the next check.
pub async fn run<C, R, F, E>(
    tls_dir: &Path,
    what: &'static str,
    current: C,
    mut renew: R,
    shutdown: CancellationToken,
) where
    C: Fn() -> CertInfo,
    R: FnMut(bool) -> F,
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let request = crate::rotate_request_path(tls_dir);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let forced = request.exists();
        if !forced && !current().needs_renewal(std::time::SystemTime::now()) {
            continue;
        }
        match renew(forced).await {
            Ok(()) => {
                let info = current();
                tracing::info!(
                    what,
                    forced,
                    serial = %info.serial,
                    until = %humantime::format_rfc3339_seconds(info.not_after),
                    "certificate renewed"
                );
                if forced {
                    let _ = std::fs::remove_file(&request);
                }
            }
            Err(e) => tracing::warn!(what, error = %e, "certificate renewal failed; retrying"),
        }
    }
}
