//! Events as `events.k8s.io/v1` serves them, converted to and from core
//! v1's fields, as kube-apiserver converts them
//! (kubernetes `pkg/apis/events/v1/conversion.go`): the store holds core
//! v1 Events, and the same Events are read and written in either version.
//!
//! Fields named differently: `involvedObject`/`regarding`,
//! `message`/`note`, `reportingComponent`/`reportingController`, and the
//! core fields events.k8s.io keeps as deprecated (`source`,
//! `firstTimestamp`, `lastTimestamp`, `count`); the others (`eventTime`,
//! `series`, `reason`, `type`, `action`, `related`, `reportingInstance`)
//! have the same name in both. Fields neither version has are carried
//! over unchanged.

use serde_json::{Map, Value};

/// `(core v1 name, events.k8s.io/v1 name)` of each field named differently.
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// A core v1 Event's fields (the whole object, or its fields besides
/// `apiVersion`, `kind` and `metadata`) as events.k8s.io/v1 names them.
/// `eventTime`, which events.k8s.io/v1 requires and Events of the core
/// API may lack, is the first occurrence (else the last, else the
/// object's creation) then, in microseconds.
pub fn to_events_v1(fields: &mut Map<String, Value>) {
    for (core, events_v1) in RENAMED {
        rename(fields, core, events_v1);
    }
    if fields.get("eventTime").is_none_or(Value::is_null) {
        let creation = fields
            .get("metadata")
            .and_then(|m| m.get("creationTimestamp"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let seen = ["deprecatedFirstTimestamp", "deprecatedLastTimestamp"]
            .iter()
            .find_map(|f| fields.get(*f).and_then(Value::as_str).map(str::to_owned))
            .or(creation);
        if let Some(micro) = seen.as_deref().and_then(micro_time) {
            fields.insert("eventTime".to_owned(), Value::from(micro));
        }
    }
}

/// An events.k8s.io/v1 Event's fields as core v1 names them.
pub fn to_core(fields: &mut Map<String, Value>) {
    for (core, events_v1) in RENAMED {
        rename(fields, events_v1, core);
    }
}

fn rename(fields: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(value) = fields.remove(from) {
        fields.insert(to.to_owned(), value);
    }
}

/// An RFC 3339 time as a `MicroTime` (`2026-01-02T03:04:05.000000Z`).
fn micro_time(text: &str) -> Option<String> {
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    super::micro_time(at)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn core_event() -> Value {
        json!({
            "metadata": {"name": "web.17f3a", "namespace": "default",
                         "creationTimestamp": "2026-11-30T11:55:01Z"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "BackOff",
            "message": "Back-off restarting failed container",
            "type": "Warning",
            "source": {"component": "kubelet", "host": "node-a"},
            "reportingComponent": "kubelet",
            "reportingInstance": "node-a",
            "firstTimestamp": "2026-11-30T11:55:00Z",
            "lastTimestamp": "2026-11-30T11:59:30Z",
            "count": 4,
            "series": {"count": 4, "lastObservedTime": "2026-11-30T11:59:30.000000Z"},
            "related": {"kind": "Node", "name": "node-a"}
        })
    }

    #[test]
    fn core_events_read_with_events_k8s_io_names() {
        let mut event = fields(core_event());
        to_events_v1(&mut event);
        assert_eq!(event["regarding"]["name"], "web");
        assert_eq!(event["note"], "Back-off restarting failed container");
        assert_eq!(event["reportingController"], "kubelet");
        assert_eq!(event["reportingInstance"], "node-a");
        assert_eq!(event["deprecatedSource"]["host"], "node-a");
        assert_eq!(event["deprecatedFirstTimestamp"], "2026-11-30T11:55:00Z");
        assert_eq!(event["deprecatedLastTimestamp"], "2026-11-30T11:59:30Z");
        assert_eq!(event["deprecatedCount"], 4);
        assert_eq!(event["series"]["count"], 4);
        assert_eq!(event["related"]["kind"], "Node");
        assert_eq!(event["eventTime"], "2026-11-30T11:55:00.000000Z");
        for core in [
            "involvedObject",
            "message",
            "source",
            "count",
            "firstTimestamp",
        ] {
            assert!(event.get(core).is_none(), "{core} left: {event:?}");
        }
    }

    #[test]
    fn the_conversion_round_trips_and_keeps_a_given_event_time() {
        let mut event = fields(core_event());
        event.insert("eventTime".into(), json!("2026-11-30T11:54:59.123456Z"));
        let original = event.clone();
        to_events_v1(&mut event);
        assert_eq!(event["eventTime"], "2026-11-30T11:54:59.123456Z");
        to_core(&mut event);
        assert_eq!(event, original);
    }

    #[test]
    fn an_event_without_any_time_gets_its_creation_as_event_time() {
        let mut event = fields(json!({
            "metadata": {"name": "e", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "reason": "Scheduled"
        }));
        to_events_v1(&mut event);
        assert_eq!(event["eventTime"], "2026-11-30T11:00:00.000000Z");
        let mut bare = fields(json!({"reason": "Scheduled"}));
        to_events_v1(&mut bare);
        assert!(bare.get("eventTime").is_none());
    }
}
