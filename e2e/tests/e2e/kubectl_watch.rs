//! Watches with label and field selectors through real kubectl (1.20 and
//! 1.35; `get -w --output-watch-events -o json`, one event a line) against
//! a real `skiff master` with one hollow node, served as kube-apiserver's
//! watch cache serves them: a pod relabelled away from a label-selected
//! watch is DELETED from it (carrying the labels it had) and ADDED again
//! when relabelled back, and a change made while it is away is not sent;
//! a watch selecting `spec.nodeName` first sees a pod ADDED when it is
//! bound to the node (never MODIFIED first), and DELETED when it goes.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::kube_clients::{self, Kubectl, KubectlProcess, KubectlVersion};

/// The hollow node pods are bound to.
const NODE: &str = "hollow-1";
/// How long anything asynchronous (a binding, a watch event) may take.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20_watches_with_selectors_as_kube_apiserver_serves_them() {
    scenario_with(KubectlVersion::V1_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_35_watches_with_selectors_as_kube_apiserver_serves_them() {
    scenario_with(KubectlVersion::V1_35).await;
}

/// [`scenario`] with `version`'s kubectl against a master and one hollow
/// node.
async fn scenario_with(version: KubectlVersion) {
    kube_clients::on_hollow_cluster(version, &[NODE], |k, _| scenario(k)).await;
}

fn scenario(k: &Kubectl) {
    assert_has(&ok(k, "create namespace watching"), "created");
    label_selected(k);
    field_selected(k);
}

/// One event a watch printed: its type, and its object's name, `app`
/// label, `spec.nodeName` and `note` annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: String,
    name: String,
    app: String,
    node: String,
    note: String,
}

/// The events `watch` has printed so far, in order (other lines, such as
/// warnings on stderr, left out).
fn seen(watch: &KubectlProcess) -> Vec<Seen> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    watch
        .output()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|event| {
            let object = &event["object"];
            Seen {
                kind: text(&event["type"]),
                name: text(&object["metadata"]["name"]),
                app: text(&object["metadata"]["labels"]["app"]),
                node: text(&object["spec"]["nodeName"]),
                note: text(&object["metadata"]["annotations"]["note"]),
            }
        })
        .collect()
}

/// The types of `pod`'s events, in order.
fn kinds_of(events: &[Seen], pod: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == pod)
        .map(|e| e.kind.clone())
        .collect()
}

/// Waits until `pod`'s events in `watch`, MODIFIED ones left out, are
/// `want`; answers every event seen then.
fn until_transitions(watch: &KubectlProcess, pod: &str, want: &[&str]) -> Vec<Seen> {
    let mut events = Vec::new();
    eventually(&format!("{pod}'s events to be {want:?}"), || {
        events = seen(watch);
        let transitions: Vec<String> = kinds_of(&events, pod)
            .into_iter()
            .filter(|kind| kind != "MODIFIED")
            .collect();
        if transitions == want {
            Ok(())
        } else {
            Err(format!("{events:#?}\n{}", watch.output()))
        }
    });
    events
}

/// A watch of `app=watched` pods: the pod relabelled away is DELETED
/// (the object as it was, labels included), a change while it is away is
/// not sent, relabelled back it is ADDED (with that change), changes
/// that keep the label are MODIFIED, and its deletion is DELETED.
fn label_selected(k: &Kubectl) {
    let out = ok(
        k,
        "run watched --image=busybox --labels=app=watched -n watching",
    );
    assert_has(&out, "pod/watched created");
    let watch = k
        .spawn(&words(
            "get pods -n watching -l app=watched -w --output-watch-events -o json",
        ))
        .unwrap();
    until_transitions(&watch, "watched", &["ADDED"]);

    ok(k, "label pod watched app=elsewhere --overwrite -n watching");
    let events = until_transitions(&watch, "watched", &["ADDED", "DELETED"]);
    let deleted = events.iter().rfind(|e| e.kind == "DELETED").unwrap();
    assert_eq!(deleted.app, "watched", "DELETED carries the pod as it was");

    // Not selected: nothing is sent for it.
    ok(k, "annotate pod watched note=away -n watching");
    ok(k, "label pod watched app=watched --overwrite -n watching");
    let events = until_transitions(&watch, "watched", &["ADDED", "DELETED", "ADDED"]);
    let kinds = kinds_of(&events, "watched");
    let away = kinds.iter().rposition(|kind| kind == "DELETED").unwrap();
    assert_eq!(
        kinds[away + 1],
        "ADDED",
        "nothing sent while away: {events:#?}"
    );
    let back = events.iter().rfind(|e| e.kind == "ADDED").unwrap();
    assert_eq!((back.app.as_str(), back.note.as_str()), ("watched", "away"));

    ok(k, "annotate pod watched note=back --overwrite -n watching");
    eventually("the annotation MODIFIED", || {
        let events = seen(&watch);
        let modified = events
            .iter()
            .skip_while(|e| e.note != "away")
            .any(|e| e.name == "watched" && e.kind == "MODIFIED" && e.note == "back");
        if modified {
            Ok(())
        } else {
            Err(format!("{events:#?}"))
        }
    });

    // Another pod's changes never reach the watch.
    let out = ok(
        k,
        "run other --image=busybox --labels=app=other -n watching",
    );
    assert_has(&out, "pod/other created");
    ok(k, "delete pod watched -n watching --wait=false");
    let events = until_transitions(&watch, "watched", &["ADDED", "DELETED", "ADDED", "DELETED"]);
    assert!(kinds_of(&events, "other").is_empty(), "{events:#?}");
    drop(watch);
    ok(k, "delete pod other -n watching --wait=false");
}

/// A watch of the pods bound to the node: a new pod is first seen when
/// the scheduler binds it, as ADDED, and DELETED when it goes.
fn field_selected(k: &Kubectl) {
    let selector = format!("--field-selector=spec.nodeName={NODE}");
    let mut args = words("get pods -n watching -w --output-watch-events -o json");
    args.push(&selector);
    let watch = k.spawn(&args).unwrap();
    // Once `first` is seen the watch has listed: what happens after
    // reaches it as changes.
    let out = ok(k, "run first --image=busybox -n watching");
    assert_has(&out, "pod/first created");
    until_transitions(&watch, "first", &["ADDED"]);

    let out = ok(k, "run bound --image=busybox -n watching");
    assert_has(&out, "pod/bound created");
    let events = until_transitions(&watch, "bound", &["ADDED"]);
    let first = events.iter().find(|e| e.name == "bound").unwrap();
    assert_eq!(
        (first.kind.as_str(), first.node.as_str()),
        ("ADDED", NODE),
        "first seen bound, as ADDED: {events:#?}"
    );
    ok(k, "delete pod bound -n watching --wait=false");
    until_transitions(&watch, "bound", &["ADDED", "DELETED"]);
    drop(watch);
}

/// The words of a command line (no quoting: arguments with spaces go in
/// an array).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `kubectl <line>`, which must succeed; its stdout.
fn ok(k: &Kubectl, line: &str) -> String {
    k.ok(&words(line))
}

/// Asserts that `text` contains `needle`, showing `text` if not.
fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// Calls `probe` every 200 ms until it answers `Ok`; panics after
/// [`SETTLE`] with what it last saw.
fn eventually(what: &str, mut probe: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        match probe() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {SETTLE:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
