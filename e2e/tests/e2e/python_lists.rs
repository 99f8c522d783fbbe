//! Lists at a revision with the official Kubernetes Python client against
//! a real `skiff master`: `e2e/python/list_scenario.py` pages through
//! ConfigMaps (`limit`/`continue`) while they change between pages (every
//! page at the first page's revision, together the list as it was), lists
//! with `resourceVersionMatch=Exact` at that revision, and is refused as
//! kube-apiserver refuses bad list options (422 naming the ListOptions'
//! field, 400 for `continue` with a `resourceVersion`, 504 for a revision
//! the master has not reached).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use skiff_e2e::credentials::admin_conf;
use skiff_e2e::kube_clients;
use skiff_e2e::master::ready_master;

/// How long the whole script may run before it is killed.
const SCENARIO_WITHIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_exact_lists_are_at_one_revision_with_the_python_client() {
    let Some(python) = kube_clients::python_client() else {
        return;
    };
    let (_dir, m) = ready_master().await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/list_scenario.py");
    let mut command = tokio::process::Command::new(&python);
    // -u: its lines in order with any traceback; no bytecode written next
    // to the script in the source tree.
    command
        .arg("-u")
        .arg(&script)
        .arg(admin_conf(&m.api_addr).unwrap())
        .arg("py-lists")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let run = tokio::time::timeout(SCENARIO_WITHIN, command.output()).await;
    let Ok(out) = run else {
        let tail = m.log_tail();
        panic!("the list scenario ran past {SCENARIO_WITHIN:?}\n{tail}");
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
    assert!(stdout.lines().any(|l| l == "PASSED"), "{stdout}");
}
