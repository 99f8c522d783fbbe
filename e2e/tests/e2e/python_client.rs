//! The official Kubernetes Python client (PyPI's `kubernetes`, in the venv
//! `scripts/test-clients` makes) against a real `skiff master` with two
//! hollow nodes, through the REST API: `e2e/python/client_scenario.py`
//! reads the version, lists nodes, creates a Deployment, lists it by
//! label, watches its pods arrive, patches, scales and deletes it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use skiff_e2e::credentials::admin_conf;
use skiff_e2e::hollow::{HollowConfig, HollowFleet};
use skiff_e2e::kube_clients;
use skiff_e2e::master::ready_master;

/// How long the whole script may run before it is killed.
const SCENARIO_WITHIN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_creates_watches_patches_scales_and_deletes_a_deployment() {
    let Some(python) = kube_clients::python_client() else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let fleet = HollowFleet::new(vec![m.api_addr.clone()]);
    let mut nodes = Vec::new();
    for (slot, name) in ["hollow-1", "hollow-2"].into_iter().enumerate() {
        let node = fleet.start(name, slot, HollowConfig::default()).await;
        nodes.push(node.unwrap());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_scenario.py");
    let mut command = tokio::process::Command::new(&python);
    // -u: its lines in order with any traceback; no bytecode written next
    // to the script in the source tree.
    command
        .arg("-u")
        .arg(&script)
        .arg(admin_conf(&m.api_addr).unwrap())
        .arg("py-shop")
        .arg(nodes.len().to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let run = tokio::time::timeout(SCENARIO_WITHIN, command.output()).await;
    let Ok(out) = run else {
        let tail = m.log_tail();
        panic!("the Python client scenario ran past {SCENARIO_WITHIN:?}\n{tail}");
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
    drop(nodes);
}
