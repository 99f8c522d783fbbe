//! The credentials of the masters this test process started: each master
//! writes its server token and an admin.conf into its data dir, and the
//! harness finds them by the master's API address. Clients, `skiff ctl`,
//! agents and joining masters get their credentials from here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_master::client::Client;
use skiff_security::Credentials;

static MASTERS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Remembers that the master serving `api_addr` keeps its state in
/// `data_dir` (for `skiff server`: its `<data-dir>/server`).
pub fn register_master(api_addr: &str, data_dir: &Path) {
    let mut masters = MASTERS.lock().unwrap_or_else(|p| p.into_inner());
    masters
        .get_or_insert_with(HashMap::new)
        .insert(api_addr.to_owned(), data_dir.to_owned());
}

/// The data dir of the master at `api_addr` (the first of a comma list).
pub fn master_data_dir(api_addr: &str) -> Option<PathBuf> {
    let first = api_addr.split(',').next().unwrap_or(api_addr);
    let masters = MASTERS.lock().unwrap_or_else(|p| p.into_inner());
    masters.as_ref()?.get(first).cloned()
}

/// Waits (up to 30 s) for `path` to exist: a starting master writes its
/// credentials before it serves.
fn wait_for_file(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The admin.conf of the master at `api_addr`.
pub fn admin_conf(api_addr: &str) -> anyhow::Result<PathBuf> {
    let dir = master_data_dir(api_addr)
        .with_context(|| format!("no master started by this test serves {api_addr}"))?;
    let path = dir.join("admin.conf");
    wait_for_file(&path)?;
    Ok(path)
}

/// The server token of the master at `api_addr`.
pub fn join_token(api_addr: &str) -> anyhow::Result<String> {
    let dir = master_data_dir(api_addr)
        .with_context(|| format!("no master started by this test serves {api_addr}"))?;
    let path = dir.join("token");
    wait_for_file(&path)?;
    Ok(std::fs::read_to_string(&path)?.trim().to_owned())
}

/// An admin client of the master at `api_addr`.
pub fn admin_client(api_addr: &str) -> anyhow::Result<Client> {
    skiff_security::install_crypto_provider();
    let credentials = Credentials::load(&admin_conf(api_addr)?)?;
    Ok(Client::new(api_addr, &credentials.transport()?)?)
}

/// The certificate a TLS server at `addr` presents to a new connection
/// (not verified: this only looks at it).
pub async fn served_certificate(addr: &str) -> anyhow::Result<skiff_security::CertInfo> {
    skiff_security::install_crypto_provider();
    let config = skiff_security::tls::unverified_client_config()?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(skiff_security::MASTER_SERVER_NAME)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?
        .clone();
    Ok(skiff_security::CertInfo::from_der(der.as_ref())?)
}
