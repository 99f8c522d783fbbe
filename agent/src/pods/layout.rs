//! Where a pod's files live under the data dir:
//!
//! ```text
//! pods/<namespace>_<name>_<uid>/etc/{hosts,hostname,resolv.conf}
//! pods/<namespace>_<name>_<uid>/<container>/<restart>.log   (+ .log.1 when rotated)
//! pods/<namespace>_<name>_<uid>/<container>/termination-log  its termination message
//! pods/<namespace>_<name>_<uid>/volumes/<plugin>/<volume>   emptyDir, configMap, secret, ...
//! netns/<uid>                                              the pod's network namespace
//! pause/<uid>                                              the PID of its pause process (shareProcessNamespace)
//! state/pods/<uid>.json                                    the last pod spec the master sent
//! exec/<exec-id>/{stdin,stdout,stderr}                     FIFOs of a running exec session
//! container-io/<container-id>/{stdin,stdout,stderr,io.json} a stdin/tty container's own stdio
//! ```
//!
//! A pod in the host's network gets the node's names instead of its own:
//! the node's hostname and a copy of its `/etc/hosts` ([`NodeNames`]), as
//! the kubelet gives it.
//!
//! The cached specs let a restarted agent keep applying restart policies
//! while no master is reachable. Of a container's logs the two newest runs
//! are kept, what `logs` and `logs -p` read ([`stale_logs`]); each is
//! rotated at [`LOG_MAX_BYTES`] with one rotated copy.

use std::path::{Path, PathBuf};

use skiff_proto::v1;

use super::dns_policy::pod_hostname;
use crate::log_rotation;

/// The pod directory's own subdirectories, beside one per container.
const ETC_DIR: &str = "etc";
const VOLUMES_DIR: &str = "volumes";

#[derive(Debug, Clone)]
pub struct PodLayout {
    data_dir: PathBuf,
}

/// Largest a container log grows before it is rotated.
pub const LOG_MAX_BYTES: u64 = 10 << 20;

/// The node's own names, which a pod in the host's network shares: its
/// hostname (the node's UTS namespace) and its `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNames {
    pub hostname: String,
    pub hosts: String,
}

impl NodeNames {
    /// This machine's: `gethostname`, and `/etc/hosts` (loopback lines
    /// alone when it cannot be read).
    pub fn read() -> NodeNames {
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the node's /etc/hosts");
            String::from(LOOPBACK_HOSTS)
        });
        NodeNames { hostname, hosts }
    }
}

/// The loopback lines every pod's `/etc/hosts` starts with.
const LOOPBACK_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

fn meta(pod: &v1::Pod) -> v1::ObjectMeta {
    pod.metadata.clone().unwrap_or_default()
}

impl PodLayout {
    pub fn new(data_dir: &Path) -> PodLayout {
        PodLayout {
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    pub fn pod_dir(&self, pod: &v1::Pod) -> PathBuf {
        let m = meta(pod);
        self.pod_dir_for(&m.namespace, &m.name, &m.uid)
    }

    pub fn pod_dir_for(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.pods_dir().join(format!("{namespace}_{name}_{uid}"))
    }

    /// The pod UID a directory under [`PodLayout::pods_dir`] is named
    /// after (namespaces and names have no `_`).
    pub fn uid_of_pod_dir(dir_name: &str) -> Option<&str> {
        dir_name
            .rsplit_once('_')
            .map(|(_, uid)| uid)
            .filter(|uid| !uid.is_empty())
    }

    pub fn netns(&self, uid: &str) -> PathBuf {
        self.netns_dir().join(uid)
    }

    /// The file holding the PID of the pod's pause process, PID 1 of the
    /// PID namespace its containers share (`shareProcessNamespace`).
    pub fn pause_file(&self, uid: &str) -> PathBuf {
        self.pause_dir().join(uid)
    }

    /// Where every pod's pause process file is.
    pub fn pause_dir(&self) -> PathBuf {
        self.data_dir.join("pause")
    }

    /// Where the FIFOs of exec sessions are, one directory per session.
    pub fn exec_fifos_dir(&self) -> PathBuf {
        self.data_dir.join("exec")
    }

    /// Where containers started with `stdin` or `tty` have their FIFOs,
    /// one directory per container (`runtime::container_io`).
    pub fn container_io_dir(&self) -> PathBuf {
        self.data_dir.join("container-io")
    }

    /// Where every pod's network namespace file is.
    pub fn netns_dir(&self) -> PathBuf {
        self.data_dir.join("netns")
    }

    fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("state").join("pods")
    }

    pub fn log_file(&self, pod: &v1::Pod, container: &str, restarts: i32) -> PathBuf {
        let m = meta(pod);
        self.log_file_for(&m.namespace, &m.name, &m.uid, container, restarts)
    }

    /// [`PodLayout::log_file`] from the pod's namespace, name and UID (as
    /// a container's labels carry them).
    pub fn log_file_for(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        container: &str,
        restarts: i32,
    ) -> PathBuf {
        self.pod_dir_for(namespace, name, uid)
            .join(container)
            .join(format!("{restarts}.log"))
    }

    /// Where a container's run writes its termination message (bind
    /// mounted at its `terminationMessagePath`; emptied at each start).
    pub fn termination_log(&self, pod: &v1::Pod, container: &str) -> PathBuf {
        self.pod_dir(pod).join(container).join("termination-log")
    }

    /// Keeps the logs of the container's two newest runs, the current one
    /// and the one before it (`--previous`); see [`stale_logs`].
    pub async fn prune_logs(&self, pod: &v1::Pod, container: &str) {
        let dir = self.pod_dir(pod).join(container);
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        let mut files = Vec::new();
        while let Ok(Some(e)) = entries.next_entry().await {
            files.push(e.file_name().to_string_lossy().to_string());
        }
        for stale in stale_logs(&files) {
            let _ = tokio::fs::remove_file(dir.join(stale)).await;
        }
    }

    /// Where the pod's volumes live: one directory per volume plugin
    /// (`kubernetes.io~configmap`, as the kubelet names them), one per
    /// volume in it.
    pub fn volumes_dir(&self, pod: &v1::Pod) -> PathBuf {
        Self::volumes_dir_in(&self.pod_dir(pod))
    }

    /// The volumes directory of the pod whose directory is `pod_dir`.
    pub fn volumes_dir_in(pod_dir: &Path) -> PathBuf {
        pod_dir.join(VOLUMES_DIR)
    }

    /// Whether `name`, a directory in a pod's directory, is a container's
    /// (its logs, its termination message) rather than the pod's own
    /// (`etc`, `volumes`).
    pub fn is_container_dir(name: &str) -> bool {
        name != ETC_DIR && name != VOLUMES_DIR
    }

    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (with
    /// `resolv_conf` in it) for the pod; `/etc/hosts` names the pod as the
    /// kubelet's does, by its host name and, with a subdomain, its FQDN.
    /// A pod in the host's network gets the `node`'s names instead.
    pub async fn write_etc_files(
        &self,
        pod: &v1::Pod,
        resolv_conf: &str,
        node: Option<&NodeNames>,
    ) -> std::io::Result<Vec<(String, String)>> {
        let dir = self.pod_dir(pod).join(ETC_DIR);
        tokio::fs::create_dir_all(&dir).await?;
        let (hostname, hosts) = match node {
            Some(node) => (node.hostname.clone(), node.hosts.clone()),
            None => {
                let (hostname, domain) = pod_hostname(pod);
                let ip = pod.status.as_ref().map(|s| s.pod_ip.as_str()).unwrap_or("");
                let ip = if ip.is_empty() { "127.0.1.1" } else { ip };
                let mut hosts = String::from(LOOPBACK_HOSTS);
                match domain {
                    Some(domain) => {
                        hosts.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"))
                    }
                    None => hosts.push_str(&format!("{ip}\t{hostname}\n")),
                }
                (hostname, hosts)
            }
        };
        let files = [
            ("hosts", hosts),
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv_conf.to_owned()),
        ];
        let mut out = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            tokio::fs::write(&path, text).await?;
            out.push((format!("/etc/{name}"), path.display().to_string()));
        }
        Ok(out)
    }

    /// Removes the pod's files: logs, etc files and cached spec.
    pub async fn remove_pod(&self, pod: &v1::Pod) {
        let m = meta(pod);
        let _ = tokio::fs::remove_dir_all(self.pod_dir(pod)).await;
        let _ = tokio::fs::remove_file(self.cache_dir().join(format!("{}.json", m.uid))).await;
    }

    /// Saves the pod spec (write to a temp file, then rename: never half-written).
    pub async fn cache_pod(&self, pod: &v1::Pod) -> std::io::Result<()> {
        let m = meta(pod);
        let dir = self.cache_dir();
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join(format!(".{}.json.tmp", m.uid));
        let bytes = serde_json::to_vec(pod).map_err(std::io::Error::other)?;
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, dir.join(format!("{}.json", m.uid))).await
    }

    pub async fn forget_pod(&self, uid: &str) {
        let _ = tokio::fs::remove_file(self.cache_dir().join(format!("{uid}.json"))).await;
    }

    /// The pods cached by an earlier run; unreadable files are skipped.
    pub fn cached_pods(&self) -> Vec<v1::Pod> {
        let Ok(entries) = std::fs::read_dir(self.cache_dir()) else {
            return vec![];
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let bytes = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice(&bytes) {
                    Ok(p) => Some(p),
                    Err(err) => {
                        tracing::warn!(file = %e.path().display(), error = %err, "ignoring unreadable cached pod");
                        None
                    }
                }
            })
            .collect()
    }

    /// Rotates every container log over `max` bytes: copied to `.1`, then
    /// truncated in place (the shim appends, so it carries on at the start).
    pub fn rotate_logs(&self, max: u64) {
        let Ok(pods) = std::fs::read_dir(self.pods_dir()) else {
            return;
        };
        for pod in pods.flatten() {
            let Ok(containers) = std::fs::read_dir(pod.path()) else {
                continue;
            };
            for c in containers.flatten() {
                let Ok(logs) = std::fs::read_dir(c.path()) else {
                    continue;
                };
                for log in logs.flatten() {
                    let path = log.path();
                    if path.extension().is_none_or(|e| e != "log") {
                        continue;
                    }
                    if let Err(e) = log_rotation::rotate_if_larger(&path, max) {
                        tracing::warn!(log = %path.display(), error = %e, "cannot rotate log");
                    }
                }
            }
        }
    }
}

/// The run a container log file belongs to: `3` for `3.log` and for its
/// rotated `3.log.1`.
fn log_run(file: &str) -> Option<i32> {
    let (run, rest) = file.split_once('.')?;
    if rest != "log" && !rest.starts_with("log.") {
        return None;
    }
    run.parse().ok()
}

/// Which of a container's log `files` (names in its log dir) belong to
/// runs before the previous one: the kubelet keeps a container's current
/// and previous run, and so does skiff, for `logs` and `logs -p`.
pub fn stale_logs(files: &[String]) -> Vec<String> {
    let mut runs: Vec<i32> = files.iter().filter_map(|f| log_run(f)).collect();
    runs.sort_unstable();
    runs.dedup();
    let Some(&previous) = runs.iter().rev().nth(1) else {
        return Vec::new();
    };
    files
        .iter()
        .filter(|f| log_run(f).is_some_and(|run| run < previous))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: uid.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn etc_files_name_the_pod_by_its_fqdn_and_carry_its_resolv_conf() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        let mut p = pod("u7");
        let spec = p.spec.get_or_insert_with(Default::default);
        spec.hostname = "db-0".into();
        spec.subdomain = "db".into();
        p.status = Some(v1::PodStatus {
            pod_ip: "10.42.0.9".into(),
            ..Default::default()
        });
        let files = layout
            .write_etc_files(&p, "nameserver 10.43.0.10\n", None)
            .await
            .unwrap();
        let read = |name: &str| {
            let path = format!("/etc/{name}");
            let (_, file) = files.iter().find(|(inside, _)| *inside == path).unwrap();
            std::fs::read_to_string(file).unwrap()
        };
        let hosts = read("hosts");
        assert!(
            hosts.ends_with("10.42.0.9\tdb-0.db.default.svc.cluster.local\tdb-0\n"),
            "{hosts}"
        );
        assert_eq!(read("hostname"), "db-0\n");
        assert_eq!(read("resolv.conf"), "nameserver 10.43.0.10\n");

        // In the host's network: the node's names.
        let node = NodeNames {
            hostname: "pi-1".into(),
            hosts: "127.0.0.1\tlocalhost\n192.168.1.20\tpi-1\n".into(),
        };
        let files = layout
            .write_etc_files(&p, "nameserver 10.43.0.10\n", Some(&node))
            .await
            .unwrap();
        let read = |name: &str| {
            let path = format!("/etc/{name}");
            let (_, file) = files.iter().find(|(inside, _)| *inside == path).unwrap();
            std::fs::read_to_string(file).unwrap()
        };
        assert_eq!(read("hosts"), node.hosts);
        assert_eq!(read("hostname"), "pi-1\n");
    }

    #[tokio::test]
    async fn cached_pods_round_trip_and_are_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        layout.cache_pod(&pod("u1")).await.unwrap();
        layout.cache_pod(&pod("u2")).await.unwrap();
        std::fs::write(tmp.path().join("state/pods/bad.json"), "{").unwrap();
        let mut uids: Vec<_> = layout
            .cached_pods()
            .into_iter()
            .map(|p| p.metadata.unwrap().uid)
            .collect();
        uids.sort();
        assert_eq!(uids, ["u1", "u2"]);
        layout.forget_pod("u1").await;
        assert_eq!(layout.cached_pods().len(), 1);
    }

    #[tokio::test]
    async fn logs_rotate_and_old_runs_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = PodLayout::new(tmp.path());
        let p = pod("u1");
        for run in 0..4 {
            let f = layout.log_file(&p, "c", run);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, vec![b'x'; 100]).unwrap();
        }
        layout.prune_logs(&p, "c").await;
        assert!(!layout.log_file(&p, "c", 1).exists());
        assert!(layout.log_file(&p, "c", 2).exists());
        layout.rotate_logs(50);
        let current = layout.log_file(&p, "c", 3);
        assert_eq!(std::fs::metadata(&current).unwrap().len(), 0);
        assert_eq!(
            std::fs::metadata(current.with_extension("log.1"))
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn logs_before_the_previous_run_are_stale() {
        let files: Vec<String> = ["0.log", "1.log", "2.log", "2.log.1", "3.log", "x.txt"]
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(stale_logs(&files), ["0.log", "1.log"]);
        let one_run = vec!["7.log".to_string(), "7.log.1".to_string()];
        assert!(stale_logs(&one_run).is_empty());
        assert!(stale_logs(&[]).is_empty());
    }
}
