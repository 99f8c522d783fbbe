//! A loopback image registry for the pull tests: Debian's `docker-registry`
//! (distribution 2.8) serving plain HTTP on `127.0.0.1:<free port>`, with
//! its config, storage, htpasswd file and log in one temp dir. Optionally
//! with basic auth; the bcrypt hash for the htpasswd file is made by
//! `perl`'s `crypt()` (glibc's libcrypt does bcrypt), so `apache2-utils`
//! is not needed. Images are pushed with `skopeo`.
//!
//! Dropping the handle stops the registry by the PID this harness started
//! (SIGTERM, SIGKILL after 5 s) and removes the dir, also when a test fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{file_tail, free_port, terminate};

/// The registry binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long [`LoopbackRegistry::start`] waits for `/v2/` to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the registry gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running loopback registry and its temp dir.
pub struct LoopbackRegistry {
    child: Child,
    addr: String,
    log_path: PathBuf,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl LoopbackRegistry {
    /// Starts a registry without auth and waits (blocking, at most 15 s)
    /// until it answers `GET /v2/`.
    pub fn start() -> anyhow::Result<LoopbackRegistry> {
        LoopbackRegistry::spawn(None)
    }

    /// Like [`LoopbackRegistry::start`], with htpasswd basic auth admitting
    /// only `user` / `password`.
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<LoopbackRegistry> {
        anyhow::ensure!(
            !user.is_empty() && !user.contains(':') && !user.contains('\n'),
            "invalid htpasswd user name {user:?}"
        );
        LoopbackRegistry::spawn(Some((user.to_string(), password.to_string())))
    }

    fn spawn(credentials: Option<(String, String)>) -> anyhow::Result<LoopbackRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-registry-")
            .tempdir()
            .context("create registry temp dir")?;
        let d = dir.path();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            data = yaml_str(&d.join("data")),
        );
        if let Some((user, password)) = &credentials {
            let htpasswd = d.join("htpasswd");
            let line = format!("{user}:{}\n", bcrypt(password)?);
            std::fs::write(&htpasswd, line)
                .with_context(|| format!("write {}", htpasswd.display()))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-e2e\n    path: {}\n",
                yaml_str(&htpasswd)
            ));
        }
        let config_path = d.join("config.yml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("write {}", config_path.display()))?;

        let log_path = d.join("registry.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // REGISTRY_* variables would override the config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {REGISTRY_BIN}"))?;
        // From here on, Drop stops it if anything fails.
        let mut registry = LoopbackRegistry {
            child,
            addr,
            log_path,
            credentials,
            dir,
        };
        registry.wait_ready().with_context(|| registry.log_tail())?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("docker-registry exited during startup: {status}");
            }
            if answers_v2(&self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "registry on {} did not answer GET /v2/ within {START_TIMEOUT:?}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `127.0.0.1:PORT/<repo_tag>`, the name to pull a pushed image by.
    pub fn image_ref(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// The user and password, if started with auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the registry's log, for failure messages.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path, 30)
    }

    /// Pushes an OCI image-layout archive (holding one image) as
    /// `<repo_tag>` (e.g. `busybox:e2e`), with `skopeo copy
    /// --preserve-digests`, so the pushed manifest keeps its digest and
    /// its layers stay as they are (skopeo would otherwise gzip
    /// uncompressed layers and change the manifest digest).
    pub fn push_oci_archive(&self, archive: &Path, repo_tag: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join("skopeo-tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut cmd = Command::new("skopeo");
        // No policy.json needed; temp files under our dir, not /var/tmp.
        cmd.arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(&tmp)
            .arg("copy")
            .arg("--quiet")
            .arg("--preserve-digests")
            .arg("--dest-tls-verify=false");
        if let Some((user, password)) = &self.credentials {
            cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        let mut source = std::ffi::OsString::from("oci-archive:");
        source.push(archive);
        cmd.arg(source)
            .arg(format!("docker://{}", self.image_ref(repo_tag)))
            .stdin(Stdio::null());
        let out = cmd.output().context("run skopeo")?;
        anyhow::ensure!(
            out.status.success(),
            "skopeo copy {} to {} failed ({}): {}\n{}",
            archive.display(),
            self.image_ref(repo_tag),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log_tail()
        );
        Ok(())
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        terminate(&mut self.child, STOP_GRACE);
    }
}

/// A path as a YAML double-quoted string.
fn yaml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Whether an HTTP server on `addr` answers `GET /v2/` with 200 (no auth)
/// or 401 (auth): HTTP/1.0 over a plain TCP stream.
fn answers_v2(addr: &str) -> bool {
    let Ok(sock) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = Vec::new();
    let _ = stream.take(64).read_to_end(&mut head);
    let head = String::from_utf8_lossy(&head);
    head.starts_with("HTTP/1.") && matches!(head.get(9..12), Some("200" | "401"))
}

/// A bcrypt hash (`$2b$05$...`) of `password` for an htpasswd file, made by
/// `perl -e 'print crypt(...)'` with a random salt.
fn bcrypt(password: &str) -> anyhow::Result<String> {
    const B64: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut salt: String = (0..21)
        .map(|_| B64[rand::random_range(0..B64.len())] as char)
        .collect();
    // The 22nd character carries only 2 bits: keep it canonical.
    salt.push(b".Oeu"[rand::random_range(0..4)] as char);
    // Cost 5: the registry checks the hash on every request.
    let setting = format!("$2b$05${salt}");
    let out = Command::new("perl")
        .arg("-e")
        .arg("print crypt($ARGV[0], $ARGV[1])")
        .arg(password)
        .arg(&setting)
        .stdin(Stdio::null())
        .output()
        .context("run perl to make a bcrypt hash")?;
    let hash = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success() && hash.starts_with(&setting) && hash.len() == 60,
        "perl crypt() made no bcrypt hash (got {hash:?}, {}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(hash)
}
