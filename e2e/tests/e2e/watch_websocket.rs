//! Watches over WebSocket, as Headlamp opens them, against a real `skiff
//! master`: `e2e/python/watch_websocket_scenario.py` connects with
//! websocket-client (the WebSocket library of the official Kubernetes
//! Python client, in the venv `scripts/test-clients` makes) and the admin
//! client certificate, creates, patches and deletes a ConfigMap and reads
//! ADDED, MODIFIED and DELETED as one JSON text message each, has a ping
//! answered and its close answered with the server's, runs a WatchList of
//! one ConfigMap through a `/watch/` path (the initial-events-end bookmark),
//! sees `timeoutSeconds` close the socket, and a bad field selector refused
//! before the upgrade.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use skiff_e2e::credentials::admin_conf;
use skiff_e2e::kube_clients;
use skiff_e2e::master::ready_master;

/// How long the whole script may run before it is killed.
const SCENARIO_WITHIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_watches_carry_each_event_as_one_text_message_until_either_side_closes() {
    let Some(python) = kube_clients::python_client() else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/watch_websocket_scenario.py");
    let mut command = tokio::process::Command::new(&python);
    // -u: its lines in order with any traceback; no bytecode written next
    // to the script in the source tree.
    command
        .arg("-u")
        .arg(&script)
        .arg(admin_conf(&m.api_addr).unwrap())
        .arg("ws-watching")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let run = tokio::time::timeout(SCENARIO_WITHIN, command.output()).await;
    let Ok(out) = run else {
        let tail = m.log_tail();
        panic!("the WebSocket watch scenario ran past {SCENARIO_WITHIN:?}\n{tail}");
    };
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}\n{}",
        script.display(),
        out.status,
        m.log_tail()
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
}
