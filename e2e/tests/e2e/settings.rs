//! Settings precedence for the long-running commands: flag, then SKIFF_*
//! variable, then the config file, then the default; bad settings are
//! clear errors at start. Observed on real `skiff master` processes through
//! where their `/healthz` answers.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::{free_port, skiff_bin};

fn healthz(addr: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}

/// Starts a master with `config` as its file, `env` and `flags`; returns the
/// metrics address that answered, among `candidates`.
fn answering(
    config: &str,
    env: &[(&str, String)],
    flags: &[String],
    candidates: &[String],
) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(skiff_bin());
    cmd.arg("master")
        .arg("--config")
        .arg(&file)
        .args(["--data-dir", &dir.path().join("m").display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--raft-listen", &format!("127.0.0.1:{}", free_port())])
        .args(flags)
        .env_remove("SKIFF_METRICS_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while Instant::now() < deadline && found.is_none() {
        found = candidates.iter().find(|c| healthz(c)).cloned();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn flags_beat_variables_beat_the_file_beats_defaults() {
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let file = format!("metrics-listen: {}\nlog-format: json\n", addrs[0]);
    assert_eq!(
        answering(&file, &[], &[], &addrs).as_deref(),
        Some(addrs[0].as_str()),
        "file"
    );
    let env = [("SKIFF_METRICS_LISTEN", addrs[1].clone())];
    assert_eq!(
        answering(&file, &env, &[], &addrs).as_deref(),
        Some(addrs[1].as_str()),
        "variable over file"
    );
    let flags = vec!["--metrics-listen".to_string(), addrs[2].clone()];
    assert_eq!(
        answering(&file, &env, &flags, &addrs).as_deref(),
        Some(addrs[2].as_str()),
        "flag over variable"
    );
}

fn start_error(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(skiff_bin())
        .args(["agent", "--config"])
        .arg(&file)
        .env_remove("SKIFF_SERVER")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_settings_are_clear_errors_at_start() {
    let (code, err) = start_error("server: 127.0.0.1:1\nnode-nmae: pi\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unknown setting \"node-nmae\"") && err.contains("config.yaml"),
        "{err}"
    );
    let (code, err) = start_error("server: 127.0.0.1:1\nheartbeat-interval: soon\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("soon") && err.contains("heartbeat-interval"),
        "{err}"
    );
    let (code, err) = start_error("server: [unclosed\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("config.yaml") && err.contains("line"), "{err}");
    let out = Command::new(skiff_bin())
        .args(["agent", "--config", "/nonexistent/skiff.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/skiff.yaml"));
    // Raft timings that cannot work stop a master before it starts.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(skiff_bin())
        .arg("master")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--raft-heartbeat-interval",
            "400ms",
            "--raft-election-timeout",
            "1s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--raft-election-timeout") && err.contains("three heartbeat intervals"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}
