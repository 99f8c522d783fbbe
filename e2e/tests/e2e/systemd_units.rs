//! The systemd units pass `systemd-analyze verify`, and `install.sh` /
//! `skiff-uninstall.sh` install and remove skiff under a temp root (no
//! systemd runs as PID 1 here, so nothing is started). `install.sh` checks
//! the machine with `skiff check-config` first and stops when it fails;
//! run again, it replaces the binary and keeps the earlier settings; piped
//! into `sh -`, it downloads the binary (from a `python3 -m http.server`
//! on loopback) and checks it against its checksum. The units and scripts
//! it writes are the files in `systemd/`.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use skiff_e2e::host_fixture::HostFixture;
use skiff_e2e::{e2e_prerequisites, free_port, skiff_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copies `unit` with ExecStart pointing at `binary`, then verifies it.
fn verify(unit: &Path, binary: &Path, dir: &Path) -> std::process::Output {
    let text = std::fs::read_to_string(unit).unwrap();
    let rewritten = text.replace("/usr/local/bin/skiff ", &format!("{} ", binary.display()));
    let copy = dir.join(unit.file_name().unwrap());
    std::fs::write(&copy, rewritten).unwrap();
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !e2e_prerequisites(&["systemd-analyze"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in ["skiff-server.service", "skiff-agent.service"] {
        let path = repo().join("systemd").join(unit);
        let text = std::fs::read_to_string(&path).unwrap();
        for needed in [
            "Type=notify",
            "Restart=always",
            "Delegate=yes",
            "KillMode=process",
            "LimitNOFILE=",
            "TimeoutStopSec=30s",
            // Longer than the agent's --join-timeout (5 min), never 0.
            "TimeoutStartSec=6min",
            "EnvironmentFile=",
        ] {
            assert!(text.contains(needed), "{unit} lacks {needed}");
        }
        let out = verify(&path, &skiff_bin(), dir.path());
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn install(root: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("systemd/install.sh"))
        .env("INSTALL_SKIFF_ROOT", root)
        .env("INSTALL_SKIFF_BINARY", skiff_bin())
        .env_remove("SKIFF_SERVER")
        .env_remove("SKIFF_TOKEN")
        .env_remove("INSTALL_SKIFF_EXEC");
    // The machine check reads this machine unless a test says otherwise.
    for variable in ["SKIFF_SKIP_CHECK", "SKIFF_PROC_ROOT", "SKIFF_SYS_ROOT"] {
        cmd.env_remove(variable);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn install_and_uninstall_an_agent_under_a_temp_root() {
    // install.sh checks this machine first: it needs what an agent runs.
    if !e2e_prerequisites(&["systemd-analyze", "sh", "containerd", "runc", "nft"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = install(
        r,
        &[
            ("SKIFF_SERVER", "192.168.1.10:6443"),
            ("SKIFF_TOKEN", "K10abc::node:secret"),
            ("INSTALL_SKIFF_EXEC", "agent --node-name pi-2"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("run skiff by hand:  /usr/local/bin/skiff agent --server 192.168.1.10:6443 --node-name pi-2"), "{stdout}");
    let bin = r.join("usr/local/bin/skiff");
    assert!(Command::new(&bin)
        .arg("version")
        .output()
        .unwrap()
        .status
        .success());
    for script in ["skiff-uninstall.sh", "skiff-killall.sh"] {
        let m = std::fs::metadata(r.join("usr/local/bin").join(script)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
    }
    let env = r.join("etc/skiff/skiff-agent.env");
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(
        text.contains("SKIFF_ARGS=\"--server 192.168.1.10:6443 --node-name pi-2\""),
        "{text}"
    );
    assert!(
        text.contains("SKIFF_TOKEN=\"K10abc::node:secret\""),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600,
        "the token file is private"
    );
    let unit = r.join("etc/systemd/system/skiff-agent.service");
    let scratch = tempfile::tempdir().unwrap();
    let out = verify(&unit, &bin, scratch.path());
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad input is refused with a reason, and nothing is written.
    let bad = tempfile::tempdir().unwrap();
    let out = install(bad.path(), &[("INSTALL_SKIFF_EXEC", "agnet --server x:1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with server or agent"));
    let out = install(bad.path(), &[("INSTALL_SKIFF_EXEC", "agent")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --server"));
    let out = install(bad.path(), &[("INSTALL_SKIFF_EXEC", "agent --server x:1")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a join token"));
    assert!(!bad.path().join("etc").exists());

    let out = Command::new("sh")
        .arg(repo().join("systemd/skiff-uninstall.sh"))
        .env("INSTALL_SKIFF_ROOT", r)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!bin.exists() && !unit.exists() && !env.exists());
}

#[test]
fn a_server_install_is_the_default() {
    let root = tempfile::tempdir().unwrap();
    // Not about this machine (which may lack containerd): no check.
    let out = install(root.path(), &[("SKIFF_SKIP_CHECK", "1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Agents are to join with a token that expires, not the server token.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("skiff token create --ttl"), "{stdout}");
    assert!(!stdout.contains("server/token"), "{stdout}");
    assert!(root
        .path()
        .join("etc/systemd/system/skiff-server.service")
        .exists());
    let text = std::fs::read_to_string(root.path().join("etc/skiff/skiff-server.env")).unwrap();
    assert!(text.contains("SKIFF_ARGS=\"\""), "{text}");
}

/// Its stdout, once it succeeded.
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_sh_writes_the_units_and_scripts_of_systemd_dir() {
    let agent = "agent --server 192.168.1.10:6443 --token K10abc::node:secret";
    for (exec, unit) in [
        ("server", "skiff-server.service"),
        (agent, "skiff-agent.service"),
    ] {
        let root = tempfile::tempdir().unwrap();
        // Not about this machine: no check.
        let env = [("SKIFF_SKIP_CHECK", "1"), ("INSTALL_SKIFF_EXEC", exec)];
        succeeded(&install(root.path(), &env));
        let written = root.path().join("etc/systemd/system").join(unit);
        let written = std::fs::read_to_string(written).unwrap();
        let file = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
        assert_eq!(written, file, "{unit} differs from systemd/{unit}");
        for script in ["skiff-uninstall.sh", "skiff-killall.sh"] {
            let written = root.path().join("usr/local/bin").join(script);
            let written = std::fs::read_to_string(written).unwrap();
            let file = std::fs::read_to_string(repo().join("systemd").join(script)).unwrap();
            assert_eq!(written, file, "{script} differs from systemd/{script}");
        }
    }
}

#[test]
fn a_second_install_replaces_the_binary_and_keeps_the_settings() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = install(
        r,
        &[
            ("SKIFF_SKIP_CHECK", "1"),
            ("SKIFF_SERVER", "192.168.1.10:6443"),
            ("SKIFF_TOKEN", "K10abc::node:secret"),
            ("INSTALL_SKIFF_EXEC", "agent --node-name pi-2"),
        ],
    );
    succeeded(&out);
    // A setting added to the env file by hand, and a config file.
    let env = r.join("etc/skiff/skiff-agent.env");
    let mut settings = std::fs::read_to_string(&env).unwrap();
    settings.push_str("SKIFF_LOG=debug\n");
    std::fs::write(&env, &settings).unwrap();
    let config = r.join("etc/skiff/config.yaml");
    let config_text = "node-label: [zone=garage]\n";
    std::fs::write(&config, config_text).unwrap();

    // "A newer binary": this one with bytes appended, which the ELF loader
    // ignores, so that it runs and differs.
    let scratch = tempfile::tempdir().unwrap();
    let newer = scratch.path().join("skiff");
    let mut bytes = std::fs::read(skiff_bin()).unwrap();
    bytes.extend_from_slice(b"newer");
    std::fs::write(&newer, &bytes).unwrap();
    std::fs::set_permissions(&newer, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Run again with nothing but the new binary.
    let newer = newer.to_str().unwrap();
    let env_vars = [("SKIFF_SKIP_CHECK", "1"), ("INSTALL_SKIFF_BINARY", newer)];
    let stdout = succeeded(&install(r, &env_vars));
    let installed = std::fs::read(r.join("usr/local/bin/skiff")).unwrap();
    assert!(installed == bytes, "not replaced: {stdout}");
    assert!(stdout.contains("replaced skiff"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), settings);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), config_text);
    // Still the agent it was, with its arguments.
    let by_hand = "run skiff by hand:  /usr/local/bin/skiff agent --server 192.168.1.10:6443";
    assert!(stdout.contains(by_hand), "{stdout}");
    assert!(!r.join("etc/skiff/skiff-server.env").exists());

    // New arguments replace the earlier ones; the token and the setting
    // added by hand stay.
    let exec = "agent --server 192.168.1.11:6443 --node-name pi-2";
    let env_vars = [("SKIFF_SKIP_CHECK", "1"), ("INSTALL_SKIFF_EXEC", exec)];
    succeeded(&install(r, &env_vars));
    let text = std::fs::read_to_string(&env).unwrap();
    let args = "SKIFF_ARGS=\"--server 192.168.1.11:6443 --node-name pi-2\"";
    assert!(text.contains(args), "{text}");
    let token = "SKIFF_TOKEN=\"K10abc::node:secret\"";
    assert!(text.contains(token), "{text}");
    assert!(text.contains("SKIFF_LOG=debug"), "{text}");
    assert_eq!(mode(&env), 0o600, "the token file is private");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), config_text);
}

/// `python3 -m http.server` serving a directory on loopback; killed (by
/// its PID) when dropped.
struct HttpServer {
    child: Child,
    addr: String,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let mut server = HttpServer { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("python3 -m http.server ended: {status}");
            }
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cat install.sh | sh -` under `root` (also its working directory, so
/// nothing beside the script can be found), the machine check skipped.
fn install_piped(root: &Path, env: &[(&str, &str)]) -> Output {
    let script = std::fs::read(repo().join("systemd/install.sh")).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-")
        .current_dir(root)
        .env("INSTALL_SKIFF_ROOT", root)
        .env("SKIFF_SKIP_CHECK", "1");
    for variable in [
        "INSTALL_SKIFF_BINARY",
        "INSTALL_SKIFF_URL",
        "INSTALL_SKIFF_VERSION",
        "INSTALL_SKIFF_RELEASES",
        "INSTALL_SKIFF_EXEC",
        "SKIFF_SERVER",
        "SKIFF_TOKEN",
    ] {
        cmd.env_remove(variable);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed when dropped: the script ends there.
    child.stdin.take().unwrap().write_all(&script).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn install_sh_piped_into_sh_installs_a_downloaded_binary_that_matches_its_checksum() {
    if !e2e_prerequisites(&["sh", "python3", "curl", "sha256sum"]) {
        return;
    }
    let served = tempfile::tempdir().unwrap();
    let s = served.path();
    let binary = std::fs::read(skiff_bin()).unwrap();
    let sha256 = format!("{:x}", Sha256::digest(&binary));
    std::fs::write(s.join("skiff"), &binary).unwrap();
    std::fs::write(s.join("skiff.sha256"), format!("{sha256}  skiff\n")).unwrap();
    // A download that does not match its checksum.
    std::fs::write(s.join("tampered"), b"not skiff").unwrap();
    std::fs::write(s.join("tampered.sha256"), format!("{sha256}  skiff\n")).unwrap();
    // A release, laid out as GitHub's are, without a checksum.
    let arch = skiff_e2e::busybox_image::arch();
    let release = s.join("releases/download/v9.9.9");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join(format!("skiff-{arch}")), &binary).unwrap();
    let server = HttpServer::start(s);

    let root = tempfile::tempdir().unwrap();
    let url = format!("http://{}/skiff", server.addr);
    let env = [("INSTALL_SKIFF_URL", url.as_str())];
    let stdout = succeeded(&install_piped(root.path(), &env));
    assert!(stdout.contains("checksum verified"), "{stdout}");
    let installed = root.path().join("usr/local/bin/skiff");
    assert!(std::fs::read(&installed).unwrap() == binary, "{stdout}");
    assert_eq!(mode(&installed), 0o755);
    let unit = root.path().join("etc/systemd/system/skiff-server.service");
    assert!(unit.exists(), "{stdout}");

    // A download that does not match is refused; the installed binary stays.
    let url = format!("http://{}/tampered", server.addr);
    let env = [("INSTALL_SKIFF_URL", url.as_str())];
    let out = install_piped(root.path(), &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("does not match its checksum"), "{stderr}");
    assert!(std::fs::read(&installed).unwrap() == binary);

    // A release by its version.
    let other = tempfile::tempdir().unwrap();
    let releases = format!("http://{}/releases", server.addr);
    let env = [
        ("INSTALL_SKIFF_RELEASES", releases.as_str()),
        ("INSTALL_SKIFF_VERSION", "v9.9.9"),
    ];
    let stdout = succeeded(&install_piped(other.path(), &env));
    let asset = format!("/releases/download/v9.9.9/skiff-{arch}");
    assert!(stdout.contains(&asset), "{stdout}");
    assert!(stdout.contains("not verified"), "{stdout}");
    let installed = other.path().join("usr/local/bin/skiff");
    assert!(std::fs::read(installed).unwrap() == binary, "{stdout}");
}

#[test]
fn install_stops_when_the_machine_check_fails() {
    let host = HostFixture::without_memory_cgroup().unwrap();
    let proc_root = host.proc_root().display().to_string();
    let sys_root = host.sys_root().display().to_string();
    let check_env = [
        ("SKIFF_PROC_ROOT", proc_root.as_str()),
        ("SKIFF_SYS_ROOT", sys_root.as_str()),
    ];
    let root = tempfile::tempdir().unwrap();
    let unit = root.path().join("etc/systemd/system");
    let unit = unit.join("skiff-server.service");
    let out = install(root.path(), &check_env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("cgroup_memory=1 cgroup_enable=memory"),
        "{stdout}"
    );
    assert!(stderr.contains("SKIFF_SKIP_CHECK=1"), "{stderr}");
    assert!(!unit.exists(), "no unit after a failed check");

    let mut skipping = check_env.to_vec();
    skipping.push(("SKIFF_SKIP_CHECK", "1"));
    let out = install(root.path(), &skipping);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(unit.exists());
}

#[test]
fn a_master_tells_systemd_when_it_is_serving() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let port = |_: u8| format!("127.0.0.1:{}", skiff_e2e::free_port());
    let mut child = Command::new(skiff_bin())
        .args(["master", "--data-dir"])
        .arg(dir.path().join("m"))
        .args([
            "--listen",
            &port(0),
            "--raft-listen",
            &port(1),
            "--metrics-listen",
            "none",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let got = socket.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
}
