//! The downward API: a pod's own fields (`fieldRef`: its name, namespace,
//! UID, labels, annotations, node, service account, addresses) and its
//! containers' resources (`resourceFieldRef`: limits and requests in units
//! of a divisor) as the values of environment variables and of the files
//! of downwardAPI volumes, worded as the kubelet words them: whole label
//! and annotation maps as sorted `key="value"` lines, resources rounded up,
//! and a limit the container does not set read as the node's allocatable
//! amount.

use std::collections::BTreeMap;

use skiff_objects::{pods, Quantity, QuantityError};
use skiff_proto::v1;

/// Why a downward API value could not be made. Validation keeps these out
/// of stored pods; a pod cached by an older build may still have them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardApiError {
    #[error("fieldPath {0:?} is not supported")]
    UnsupportedField(String),
    #[error("resource {0:?} is not supported")]
    UnsupportedResource(String),
    #[error("resourceFieldRef names container {0:?}, which the pod does not have")]
    NoContainer(String),
    #[error("resourceFieldRef {field}: {source}")]
    BadQuantity {
        field: String,
        #[source]
        source: QuantityError,
    },
}

/// What the node knows of a pod beyond its spec: where it runs.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    pub pod: &'a v1::Pod,
    pub host_ip: &'a str,
    /// The pod's address; empty on a node without a pod network.
    pub pod_ip: &'a str,
    /// The node's allocatable resources (`cpu`, `memory`): what a
    /// container without a limit may use.
    pub node_allocatable: &'a BTreeMap<String, String>,
}

/// The value of the pod field `field_path` (`metadata.name`,
/// `metadata.labels['app']`, `status.podIP`, ...).
pub fn field_value(facts: &PodFacts<'_>, field_path: &str) -> Result<String, DownwardApiError> {
    let meta = facts.pod.metadata.clone().unwrap_or_default();
    let spec = facts.pod.spec.as_ref();
    for (map_name, map) in [
        ("metadata.labels", &meta.labels),
        ("metadata.annotations", &meta.annotations),
    ] {
        if field_path == map_name {
            return Ok(format_map(map));
        }
        let key = field_path
            .strip_prefix(map_name)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"));
        if let Some(key) = key {
            return Ok(map.get(key).cloned().unwrap_or_default());
        }
    }
    let value = match field_path {
        "metadata.name" => meta.name,
        "metadata.namespace" => meta.namespace,
        "metadata.uid" => meta.uid,
        "spec.nodeName" => spec.map(|s| s.node_name.clone()).unwrap_or_default(),
        // Kubernetes' admission gives every pod a service account.
        "spec.serviceAccountName" => spec.map_or("default", pods::service_account).to_owned(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_owned(),
        other => return Err(DownwardApiError::UnsupportedField(other.to_owned())),
    };
    Ok(value)
}

/// The value of a `resourceFieldRef`: the resource of the container it
/// names, or of `default_container` when it names none (environment
/// variables read their own container's), in units of its divisor,
/// rounded up.
pub fn resource_value(
    facts: &PodFacts<'_>,
    selector: &v1::ResourceFieldSelector,
    default_container: &str,
) -> Result<String, DownwardApiError> {
    let name = if selector.container_name.is_empty() {
        default_container
    } else {
        selector.container_name.as_str()
    };
    let container = facts
        .pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().chain(&s.init_containers))
        .find(|c| c.name == name)
        .ok_or_else(|| DownwardApiError::NoContainer(name.to_owned()))?;
    let (part, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| DownwardApiError::UnsupportedResource(selector.resource.clone()))?;
    if !["cpu", "memory", "ephemeral-storage"].contains(&resource) {
        return Err(DownwardApiError::UnsupportedResource(
            selector.resource.clone(),
        ));
    }
    let resources = container.resources.clone().unwrap_or_default();
    let set = match part {
        // A request left out is the limit, as Kubernetes' defaults make it.
        "requests" => resources
            .requests
            .get(resource)
            .or_else(|| resources.limits.get(resource)),
        "limits" => resources
            .limits
            .get(resource)
            .or_else(|| facts.node_allocatable.get(resource)),
        _ => {
            return Err(DownwardApiError::UnsupportedResource(
                selector.resource.clone(),
            ));
        }
    };
    let quantity = |field: &str, text: &str| {
        Quantity::parse(text).map_err(|source| DownwardApiError::BadQuantity {
            field: field.to_owned(),
            source,
        })
    };
    let amount = match set {
        Some(text) => quantity(selector.resource.as_str(), text.as_str())?,
        None => Quantity::default(),
    };
    let divisor = match selector.divisor.as_str() {
        "" => None,
        text => Some(quantity("divisor", text)?).filter(|d| *d != Quantity::default()),
    };
    // CPU in millicores, the rest in whole units, as the kubelet counts.
    let (amount, divisor) = if resource == "cpu" {
        (amount.milli(), divisor.map_or(1000, |d| d.milli()))
    } else {
        (amount.units_ceil(), divisor.map_or(1, |d| d.units_ceil()))
    };
    Ok(div_ceil(amount, divisor.max(1)).to_string())
}

/// `amount / divisor`, rounded up (towards positive infinity).
fn div_ceil(amount: i64, divisor: i64) -> i64 {
    let quotient = amount / divisor;
    if amount % divisor > 0 {
        quotient + 1
    } else {
        quotient
    }
}

/// A label or annotation map as the kubelet writes it into a file: one
/// `key="value"` line per entry (the value quoted as Go quotes strings),
/// sorted by key, no newline after the last.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `value` in double quotes with Go's escapes (`%q`).
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {
                let code = u32::from(c);
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02x}"));
                } else {
                    out.push_str(&format!("\\u{code:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> v1::Pod {
        let container = |name: &str, limits: &[(&str, &str)], requests: &[(&str, &str)]| {
            let map = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            };
            v1::Container {
                name: name.to_owned(),
                resources: Some(v1::ResourceRequirements {
                    limits: map(limits),
                    requests: map(requests),
                }),
                ..Default::default()
            }
        };
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "shop".into(),
                uid: "u-1".into(),
                labels: [("app", "web"), ("tier", "front")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                annotations: [("note", "say \"hi\"\n")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: "pi-1".into(),
                containers: vec![
                    container("main", &[("cpu", "250m"), ("memory", "64Mi")], &[]),
                    container("side", &[], &[("cpu", "100m"), ("memory", "10M")]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn allocatable() -> BTreeMap<String, String> {
        [("cpu", "4"), ("memory", "2Gi")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn pod_fields_read_as_the_kubelet_gives_them() {
        let pod = pod();
        let allocatable = allocatable();
        let facts = PodFacts {
            pod: &pod,
            host_ip: "192.168.1.10",
            pod_ip: "10.42.0.7",
            node_allocatable: &allocatable,
        };
        let cases = [
            ("metadata.name", "web"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "u-1"),
            ("metadata.labels['tier']", "front"),
            ("metadata.labels['none']", ""),
            ("metadata.annotations['note']", "say \"hi\"\n"),
            ("metadata.labels", "app=\"web\"\ntier=\"front\""),
            ("metadata.annotations", "note=\"say \\\"hi\\\"\\n\""),
            ("spec.nodeName", "pi-1"),
            ("spec.serviceAccountName", "default"),
            ("status.hostIP", "192.168.1.10"),
            ("status.podIP", "10.42.0.7"),
            ("status.podIPs", "10.42.0.7"),
        ];
        for (field, value) in cases {
            assert_eq!(field_value(&facts, field).as_deref(), Ok(value), "{field}");
        }
        let unsupported = field_value(&facts, "status.phase");
        let expected = DownwardApiError::UnsupportedField("status.phase".into());
        assert_eq!(unsupported, Err(expected));
    }

    #[test]
    fn resources_are_rounded_up_in_divisor_units_and_unset_limits_are_the_nodes() {
        let pod = pod();
        let allocatable = allocatable();
        let facts = PodFacts {
            pod: &pod,
            host_ip: "",
            pod_ip: "",
            node_allocatable: &allocatable,
        };
        let selector = |container: &str, resource: &str, divisor: &str| v1::ResourceFieldSelector {
            container_name: container.to_owned(),
            resource: resource.to_owned(),
            divisor: divisor.to_owned(),
        };
        let cases = [
            // The container's own (none named): 250m is 1 core rounded up.
            (selector("", "limits.cpu", ""), "1"),
            (selector("", "limits.cpu", "1m"), "250"),
            (selector("", "limits.memory", ""), "67108864"),
            (selector("", "limits.memory", "1Mi"), "64"),
            (selector("", "limits.memory", "1Gi"), "1"),
            (selector("", "limits.memory", "0"), "67108864"),
            // No request: the limit.
            (selector("", "requests.memory", "1Mi"), "64"),
            // Another container, with requests and no limits: the node's.
            (selector("side", "requests.cpu", "1m"), "100"),
            (selector("side", "requests.memory", "1k"), "10000"),
            (selector("side", "limits.cpu", ""), "4"),
            (selector("side", "limits.memory", "1Mi"), "2048"),
            // Nothing set anywhere.
            (selector("side", "requests.ephemeral-storage", ""), "0"),
        ];
        for (selector, value) in cases {
            let got = resource_value(&facts, &selector, "main");
            assert_eq!(got.as_deref(), Ok(value), "{selector:?}");
        }
        let missing = resource_value(&facts, &selector("nope", "limits.cpu", ""), "main");
        assert_eq!(missing, Err(DownwardApiError::NoContainer("nope".into())));
        let odd = resource_value(&facts, &selector("", "limits.gpu", ""), "main");
        let expected = DownwardApiError::UnsupportedResource("limits.gpu".into());
        assert_eq!(odd, Err(expected));
    }

    #[test]
    fn maps_are_sorted_quoted_lines() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", "tab\there"), ("c", "\u{1}é")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let expected = "a=\"tab\\there\"\nb=\"2\"\nc=\"\\x01é\"";
        assert_eq!(format_map(&map), expected);
        assert_eq!(format_map(&BTreeMap::new()), "");
    }
}
