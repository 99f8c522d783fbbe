//! A throwaway etcd cluster on loopback: the peer that `store --vs-etcd`
//! measures skiff's Raft store against, in the same run. Each member is
//! Debian's `etcd` 3.4 (`/usr/bin/etcd`, package `etcd-server`) started as a
//! child process with its own client and peer ports (picked free at run
//! time, so an etcd the package may have started on 2379/2380 is not in the
//! way), its data dir and log under the scenario's temp dir, and etcd's
//! default fsync of every log append. Dropping the cluster kills its
//! members, by their own PIDs only, and reaps them, on error paths too.
//!
//! By default every connection is mutual TLS, client and peer, as k3s and
//! kubeadm run etcd and as skiff runs all of its own connections: a CA made
//! for the run, one certificate for the members (127.0.0.1), one for the
//! clients, through the same rustls transport skiff's clients use.
//! [`Security::Plaintext`] measures etcd without it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_security::{CertStore, ClientTransport, ClusterCa, Identity};
use tonic::transport::{Channel, Endpoint};

use crate::etcd_api::kv_client::KvClient;
use crate::etcd_api::maintenance_client::MaintenanceClient;
use crate::etcd_api::{PutRequest, StatusRequest, StatusResponse};

/// Where Debian's `etcd-server` installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// The key the health check writes: outside `/registry/`, so it never
/// meets a measured write.
const HEALTH_KEY: &str = "/skiff-bench/health";

/// How long one health or status call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Fails, saying how to install it, when etcd is not at [`ETCD_BIN`].
pub fn check_installed() -> anyhow::Result<()> {
    check_installed_at(Path::new(ETCD_BIN))
}

fn check_installed_at(bin: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: --vs-etcd runs Debian's etcd 3.4 from there; install it with \
         `apt-get install etcd-server` (or run scripts/setup as root)",
        bin.display()
    );
    Ok(())
}

/// How the members and their clients talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Mutual TLS on client and peer URLs, as skiff's own connections.
    MutualTls,
    /// Plain HTTP/2.
    Plaintext,
}

/// The run's certificate files, as etcd's flags name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where one member listens and keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    /// Mutual TLS with these files, or plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl MemberSpec {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }
}

/// `--initial-cluster`: every member's `name=peer-url`.
pub fn initial_cluster(members: &[MemberSpec]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The command line of `member` in a new cluster of `members` named
/// `token`. Nothing about fsync is passed: etcd's default (fsync every WAL
/// write before acknowledging it) is what skiff is compared with.
pub fn member_args(member: &MemberSpec, members: &[MemberSpec], token: &str) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", member.name),
        format!("--data-dir={}", member.data_dir.display()),
        format!("--listen-client-urls={}", member.client_url()),
        format!("--advertise-client-urls={}", member.client_url()),
        format!("--listen-peer-urls={}", member.peer_url()),
        format!("--initial-advertise-peer-urls={}", member.peer_url()),
        format!("--initial-cluster={}", initial_cluster(members)),
        "--initial-cluster-state=new".to_owned(),
        format!("--initial-cluster-token={token}"),
    ];
    if let Some(tls) = &member.tls {
        let (ca, cert, key) = (tls.ca.display(), tls.cert.display(), tls.key.display());
        args.extend([
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            "--client-cert-auth".to_owned(),
            format!("--trusted-ca-file={ca}"),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            "--peer-client-cert-auth".to_owned(),
            format!("--peer-trusted-ca-file={ca}"),
        ]);
    }
    args
}

/// Makes the run's CA and certificates under `dir`: one for the members
/// (server and client use, 127.0.0.1), and the clients' transport.
fn make_tls(dir: &Path) -> anyhow::Result<(TlsFiles, ClientTransport)> {
    let ca = ClusterCa::generate().context("make a CA for etcd")?;
    let sans = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let member = ca
        .issue(&Identity::Master("etcd".to_owned()), &sans)
        .context("issue the etcd members' certificate")?;
    let client = ca
        .issue(&Identity::Admin, &[])
        .context("issue the etcd clients' certificate")?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("etcd.pem"),
        key: dir.join("etcd-key.pem"),
    };
    for (path, pem) in [
        (&files.ca, ca.cert_pem()),
        (&files.cert, member.cert_pem.as_str()),
        (&files.key, member.key_pem.as_str()),
    ] {
        std::fs::write(path, pem).with_context(|| format!("write {}", path.display()))?;
    }
    let store = CertStore::new(&client.cert_pem, &client.key_pem)
        .context("load the etcd clients' certificate")?;
    let config = skiff_security::tls::client_config(ca.cert_pem(), Some(store))
        .context("TLS client configuration for etcd")?;
    let transport = ClientTransport::new(config, "127.0.0.1").context("TLS transport for etcd")?;
    Ok((files, transport))
}

/// Whether the member that answered `status` is the one it says leads.
pub fn leads(status: &StatusResponse) -> bool {
    let me = status.header.as_ref().map_or(0, |h| h.member_id);
    me != 0 && me == status.leader
}

/// A plain-text HTTP/2 channel to a member's client URL, connected on
/// first use. No request timeout: like skiff's clients, a write waits for
/// its answer.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("etcd client URL {url}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// One running member.
struct Member {
    spec: MemberSpec,
    log_path: PathBuf,
    child: Child,
}

impl Member {
    /// An error about this member, with the end of its log.
    fn error(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "etcd member {} ({}) {what}; see {}\n{}",
            self.spec.name,
            self.spec.client_url(),
            self.log_path.display(),
            log_tail(&self.log_path)
        )
    }
}

/// Running etcd members; killed and reaped on drop.
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    /// How clients reach the members over mutual TLS, when they use it.
    tls: Option<ClientTransport>,
}

impl EtcdCluster {
    /// Starts `size` members of a new cluster under `dir` (data dirs
    /// `etcd-<i>/`, logs `etcd-<i>.log`). Returns once they run; see
    /// [`EtcdCluster::wait_healthy`].
    pub fn start(dir: &Path, size: usize, security: Security) -> anyhow::Result<EtcdCluster> {
        check_installed()?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let (files, transport) = match security {
            Security::MutualTls => {
                let (files, transport) = make_tls(dir)?;
                (Some(files), Some(transport))
            }
            Security::Plaintext => (None, None),
        };
        let specs: Vec<MemberSpec> = (0..size)
            .map(|i| MemberSpec {
                name: format!("etcd-{i}"),
                client_port: skiff_e2e::free_port(),
                peer_port: skiff_e2e::free_port(),
                data_dir: dir.join(format!("etcd-{i}")),
                tls: files.clone(),
            })
            .collect();
        // A token of this run's own, so that no member of another cluster
        // is let in.
        let token = format!("skiff-bench-{}", std::process::id());
        // Members are pushed as they start, so that an error part-way still
        // kills, on drop, the ones already running.
        let mut cluster = EtcdCluster {
            dir: dir.to_owned(),
            members: Vec::with_capacity(size),
            tls: transport,
        };
        for spec in &specs {
            let log_path = dir.join(format!("{}.log", spec.name));
            let log = File::create(&log_path)
                .with_context(|| format!("create {}", log_path.display()))?;
            let mut cmd = Command::new(ETCD_BIN);
            cmd.args(member_args(spec, &specs, &token))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if std::env::consts::ARCH == "aarch64" {
                // etcd 3.4 refuses to start on arm64 unless told it may.
                cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("start {ETCD_BIN} as {}", spec.name))?;
            cluster.members.push(Member {
                spec: spec.clone(),
                log_path,
                child,
            });
        }
        Ok(cluster)
    }

    /// The members' process IDs.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    /// The client URL of member `index`.
    pub fn client_url(&self, index: usize) -> String {
        self.members[index].spec.client_url()
    }

    /// A new connection to `url`, over mutual TLS when the members use it.
    pub fn channel(&self, url: &str) -> anyhow::Result<Channel> {
        match &self.tls {
            Some(transport) => Ok(transport
                .channel(url)
                .with_context(|| format!("etcd client URL {url}"))?),
            None => channel(url),
        }
    }

    /// Waits until every member has accepted a write (a `Put` commits only
    /// once the cluster has a leader and a quorum), failing with the
    /// member's log if it exits or `timeout` passes first.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            let mut kv = KvClient::new(self.channel(&self.members[i].spec.client_url())?);
            let member = &mut self.members[i];
            loop {
                if let Ok(Some(status)) = member.child.try_wait() {
                    let what = format!("exited ({status}) before the cluster was healthy");
                    return Err(member.error(&what));
                }
                let put = PutRequest {
                    key: HEALTH_KEY.as_bytes().to_vec(),
                    value: member.spec.name.as_bytes().to_vec(),
                    ..Default::default()
                };
                let last = match tokio::time::timeout(CALL_TIMEOUT, kv.put(put)).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(status)) => status.to_string(),
                    Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
                };
                if Instant::now() >= deadline {
                    let what = format!("accepted no write within {timeout:?} (last: {last})");
                    return Err(member.error(&what));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The index of the member that leads, as that member itself says.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, member) in self.members.iter().enumerate() {
                let url = member.spec.client_url();
                let mut maintenance = MaintenanceClient::new(self.channel(&url)?);
                let request = maintenance.status(StatusRequest::default());
                let answer = tokio::time::timeout(CALL_TIMEOUT, request).await;
                if answer.is_ok_and(|r| r.is_ok_and(|r| leads(r.get_ref()))) {
                    return Ok(i);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no etcd member said it leads within {timeout:?}; see the logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            // SIGKILL to this member's own PID (etcd is spawned directly, no
            // shell in between); its data goes with the temp dir.
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

/// The end of a member's log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[start..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd_api::ResponseHeader;

    fn specs() -> Vec<MemberSpec> {
        (0..3)
            .map(|i| MemberSpec {
                name: format!("etcd-{i}"),
                client_port: 23790 + i,
                peer_port: 23800 + i,
                data_dir: PathBuf::from(format!("/tmp/b/etcd-{i}")),
                tls: None,
            })
            .collect()
    }

    #[test]
    fn mutual_tls_members_use_https_and_demand_client_certificates() {
        let files = TlsFiles {
            ca: PathBuf::from("/tmp/b/ca.pem"),
            cert: PathBuf::from("/tmp/b/etcd.pem"),
            key: PathBuf::from("/tmp/b/etcd-key.pem"),
        };
        let specs: Vec<MemberSpec> = specs()
            .into_iter()
            .map(|s| MemberSpec {
                tls: Some(files.clone()),
                ..s
            })
            .collect();
        let args = member_args(&specs[0], &specs, "t");
        for expected in [
            "--listen-client-urls=https://127.0.0.1:23790",
            "--initial-advertise-peer-urls=https://127.0.0.1:23800",
            "--client-cert-auth",
            "--peer-client-cert-auth",
            "--trusted-ca-file=/tmp/b/ca.pem",
            "--peer-trusted-ca-file=/tmp/b/ca.pem",
            "--cert-file=/tmp/b/etcd.pem",
            "--peer-key-file=/tmp/b/etcd-key.pem",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "{expected} not in {args:?}"
            );
        }
        assert!(args.iter().all(|a| !a.contains("http://")), "{args:?}");
    }

    #[test]
    fn member_command_line_is_a_new_loopback_cluster() {
        let specs = specs();
        assert_eq!(
            member_args(&specs[1], &specs, "skiff-bench-7"),
            [
                "--name=etcd-1",
                "--data-dir=/tmp/b/etcd-1",
                "--listen-client-urls=http://127.0.0.1:23791",
                "--advertise-client-urls=http://127.0.0.1:23791",
                "--listen-peer-urls=http://127.0.0.1:23801",
                "--initial-advertise-peer-urls=http://127.0.0.1:23801",
                "--initial-cluster=etcd-0=http://127.0.0.1:23800,\
                 etcd-1=http://127.0.0.1:23801,etcd-2=http://127.0.0.1:23802",
                "--initial-cluster-state=new",
                "--initial-cluster-token=skiff-bench-7",
            ]
        );
    }

    #[test]
    fn members_keep_etcds_default_fsync() {
        let specs = specs();
        for spec in &specs {
            let args = member_args(spec, &specs, "t");
            assert!(
                args.iter().all(|a| !a.contains("fsync")),
                "unexpected fsync flag in {args:?}"
            );
        }
    }

    #[test]
    fn missing_etcd_says_how_to_install_it() {
        let e = check_installed_at(Path::new("/nonexistent/etcd")).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("/nonexistent/etcd"), "{text}");
        assert!(text.contains("apt-get install etcd-server"), "{text}");
    }

    #[test]
    fn leader_is_the_member_that_names_itself() {
        let status = |me: u64, leader: u64| StatusResponse {
            header: Some(ResponseHeader {
                member_id: me,
                ..Default::default()
            }),
            leader,
            ..Default::default()
        };
        assert!(leads(&status(7, 7)));
        assert!(!leads(&status(7, 9)));
        // No leader known yet, or no header: not a leader.
        assert!(!leads(&status(0, 0)));
        assert!(!leads(&StatusResponse {
            leader: 7,
            ..Default::default()
        }));
    }
}
