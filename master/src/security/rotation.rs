//! Renewing a master's certificates without a restart: when fewer than 90
//! days are left, or when `skiff certificate rotate` asks for it by leaving
//! a request file, a new certificate is issued, written and swapped in. New
//! connections use it at once; open ones keep theirs until they reconnect.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::MasterPki;

/// How often the request file and the expiry are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs until `shutdown`.
pub async fn run(pki: Arc<MasterPki>, shutdown: CancellationToken) {
    let request = skiff_security::rotate_request_path(&pki.dir);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let forced = request.exists();
        if !forced && !pki.due() {
            continue;
        }
        let result = pki.renew().and_then(|_| pki.ensure_admin_conf(forced));
        match result {
            Ok(()) => {
                let info = pki.cert.info();
                tracing::info!(
                    forced,
                    serial = %info.serial,
                    until = %humantime::format_rfc3339_seconds(info.not_after),
                    "master certificate renewed"
                );
                if forced {
                    let _ = std::fs::remove_file(&request);
                }
            }
            // Retried at the next check.
            Err(e) => tracing::warn!(error = %e, "certificate renewal failed"),
        }
    }
}
