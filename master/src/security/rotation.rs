//! Renewing a master's certificates without a restart: when fewer than 90
//! days are left, or when `skiff certificate rotate` asks for it, a new
//! certificate (and admin.conf) is issued, written and swapped in. New
//! connections use it at once; open ones keep theirs until they reconnect.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::MasterPki;

/// Runs until `shutdown`.
pub async fn run(pki: Arc<MasterPki>, shutdown: CancellationToken) {
    let dir = pki.dir.clone();
    let current = pki.clone();
    skiff_security::renewal::run(
        &dir,
        "master",
        move || current.cert.info(),
        |forced| {
            let pki = pki.clone();
            async move {
                pki.renew()
                    .and_then(|_| pki.ensure_admin_conf(forced))
                    .map_err(|e| e.to_string())
            }
        },
        shutdown,
    )
    .await
}
