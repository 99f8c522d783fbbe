//! The systemd units pass `systemd-analyze verify`, and `install.sh` /
//! `skiff-uninstall.sh` install and remove skiff under a temp root (no
//! systemd runs as PID 1 here, so nothing is started). `install.sh` checks
//! the machine with `skiff check-config` first and stops when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_e2e::host_fixture::HostFixture;
use skiff_e2e::{e2e_prerequisites, skiff_bin};

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

fn install(root: &Path, env: &[(&str, &str)]) -> std::process::Output {
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
