//! Generates the prost/tonic code for skiff's protos. The Kubernetes-shaped
//! objects (`skiff.v1`) also get serde derives so that they read and write as
//! Kubernetes YAML/JSON: lowerCamelCase names, Kubernetes' own spelling where
//! it is not plain camelCase (`podIP`, `clusterIP`, ...), empty fields left
//! out except those Kubernetes always writes and clients require
//! ([`ALWAYS_WRITTEN`]), int-or-string / quantity fields accepted in both
//! forms, and JSON held as text ([`RAW_JSON`]) written as that JSON.

const OBJECTS: &str = ".skiff.v1";

/// Fields whose Kubernetes JSON name is not the camelCase of the proto name.
const RENAMES: &[(&str, &str)] = &[
    ("NodeSpec.pod_cidr", "podCIDR"),
    ("DaemonEndpoint.port", "Port"),
    ("NodeSpec.pod_cidrs", "podCIDRs"),
    ("NodeSpec.provider_id", "providerID"),
    ("NodeSystemInfo.machine_id", "machineID"),
    ("NodeSystemInfo.boot_id", "bootID"),
    ("NodeSystemInfo.system_uuid", "systemUUID"),
    ("ContainerPort.host_ip", "hostIP"),
    ("PodStatus.host_ip", "hostIP"),
    ("PodStatus.pod_ip", "podIP"),
    ("PodStatus.pod_ips", "podIPs"),
    ("ContainerStatus.image_id", "imageID"),
    ("ContainerStatus.container_id", "containerID"),
    ("ContainerStateTerminated.container_id", "containerID"),
    ("ServiceSpec.cluster_ip", "clusterIP"),
    ("ServiceSpec.cluster_ips", "clusterIPs"),
    ("ServiceSpec.external_ips", "externalIPs"),
    ("SessionAffinityConfig.client_ip", "clientIP"),
    ("Volume.downward_api", "downwardAPI"),
    ("VolumeProjection.downward_api", "downwardAPI"),
    ("PodSpec.host_pid", "hostPID"),
    ("PodSpec.host_ipc", "hostIPC"),
];

/// Kubernetes `IntOrString` fields.
const INT_OR_STRING: &[&str] = &[
    "HttpGetAction.port",
    "TcpSocketAction.port",
    "ServicePort.target_port",
    "RollingUpdateDeployment.max_unavailable",
    "RollingUpdateDeployment.max_surge",
];

/// `map<string, Quantity>` fields: YAML may write `cpu: 1` or `cpu: "500m"`.
const QUANTITY_MAPS: &[&str] = &[
    "ResourceRequirements.limits",
    "ResourceRequirements.requests",
    "NodeStatus.capacity",
    "NodeStatus.allocatable",
];

/// Fields holding JSON text, written as the JSON they hold and read from any
/// JSON value (Kubernetes' `FieldsV1`).
const RAW_JSON: &[&str] = &["ManagedFieldsEntry.fields_v1"];

/// Single `Quantity` fields: YAML may write `sizeLimit: 1Gi` or `divisor: 1`.
const QUANTITIES: &[&str] = &[
    "EmptyDirVolumeSource.size_limit",
    "ResourceFieldSelector.divisor",
];

/// Fields written even when empty: Kubernetes always writes them, and
/// client libraries refuse objects without them (the Python client's
/// models require them).
const ALWAYS_WRITTEN: &[&str] = &[
    "NodeCondition.type",
    "NodeCondition.status",
    "PodCondition.type",
    "PodCondition.status",
    "DeploymentCondition.type",
    "DeploymentCondition.status",
    "ReplicaSetCondition.type",
    "ReplicaSetCondition.status",
    "NodeAddress.type",
    "NodeAddress.address",
    "NodeSystemInfo.machine_id",
    "NodeSystemInfo.boot_id",
    "NodeSystemInfo.kernel_version",
    "NodeSystemInfo.os_image",
    "NodeSystemInfo.container_runtime_version",
    "NodeSystemInfo.kubelet_version",
    "NodeSystemInfo.kube_proxy_version",
    "NodeSystemInfo.operating_system",
    "NodeSystemInfo.architecture",
    "NodeSystemInfo.system_uuid",
    "ContainerStatus.name",
    "ContainerStatus.ready",
    "ContainerStatus.restart_count",
    "ContainerStatus.image",
    "ContainerStatus.image_id",
    "ReplicaSetStatus.replicas",
];

/// Message fields written as `{}` when unset, as Kubernetes writes a
/// workload's `status` from its creation on (the Python client reads
/// `deployment.status.ready_replicas` and fails on a missing status).
const EMPTY_OBJECT_WHEN_UNSET: &[&str] = &["Deployment.status", "ReplicaSet.status"];

const PROTOS: &[&str] = &[
    "proto/objects.proto",
    "proto/api.proto",
    "proto/node.proto",
    "proto/raft.proto",
    "proto/join.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    // The objects' fields, to leave empty ones out of their JSON except
    // those always written.
    let descriptors = prost_build::Config::new().load_fds(PROTOS, &["proto"])?;
    let mut always_found = 0;
    let mut empty_found = 0;
    for file in descriptors
        .file
        .iter()
        .filter(|f| f.package() == "skiff.v1")
    {
        for message in &file.message_type {
            // proto3 `optional` fields are oneofs of their own (synthetic):
            // plain fields to prost.
            let real_oneof = message
                .field
                .iter()
                .any(|f| f.oneof_index.is_some() && !f.proto3_optional());
            // Maps are nested entry messages: fields to prost.
            let nested = message
                .nested_type
                .iter()
                .any(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()));
            if nested || real_oneof {
                return Err(format!(
                    "skiff.v1.{} has nested messages or oneofs, which build.rs does not handle",
                    message.name()
                )
                .into());
            }
            for field in &message.field {
                let path = format!("{}.{}", message.name(), field.name());
                if ALWAYS_WRITTEN.contains(&path.as_str()) {
                    always_found += 1;
                    continue;
                }
                if EMPTY_OBJECT_WHEN_UNSET.contains(&path.as_str()) {
                    empty_found += 1;
                    config.field_attribute(
                        format!("{OBJECTS}.{path}"),
                        "#[serde(with = \"crate::json_mapping::empty_object_when_unset\")]",
                    );
                    continue;
                }
                config.field_attribute(
                    format!("{OBJECTS}.{path}"),
                    "#[serde(skip_serializing_if = \"crate::json_mapping::is_default\")]",
                );
            }
        }
    }
    if always_found != ALWAYS_WRITTEN.len() {
        return Err("a field of ALWAYS_WRITTEN is not in skiff.v1".into());
    }
    if empty_found != EMPTY_OBJECT_WHEN_UNSET.len() {
        return Err("a field of EMPTY_OBJECT_WHEN_UNSET is not in skiff.v1".into());
    }
    config.btree_map(["."]);
    // Large optional parts, boxed so that objects without them (most) do
    // not carry their size inline (Container is 1.6 KB unboxed; the
    // decoded cache holds every pod).
    config.boxed(format!("{OBJECTS}.Container.liveness_probe"));
    config.boxed(format!("{OBJECTS}.Container.readiness_probe"));
    config.boxed(format!("{OBJECTS}.Container.startup_probe"));
    config.boxed(format!("{OBJECTS}.Container.lifecycle"));
    config.boxed(format!("{OBJECTS}.Container.security_context"));
    // A volume (344 bytes unboxed) and a projection (196) use one source
    // each of several.
    for source in [
        "empty_dir",
        "host_path",
        "config_map",
        "secret",
        "downward_api",
        "projected",
        "persistent_volume_claim",
    ] {
        config.boxed(format!("{OBJECTS}.Volume.{source}"));
    }
    for source in [
        "secret",
        "downward_api",
        "config_map",
        "service_account_token",
    ] {
        config.boxed(format!("{OBJECTS}.VolumeProjection.{source}"));
    }
    // A container's last state (set after a restart only) and a
    // terminated state; workloads' pod templates, which made every
    // object (an enum of the kinds) as large as a Deployment.
    config.boxed(format!("{OBJECTS}.ContainerStatus.last_state"));
    config.boxed(format!("{OBJECTS}.ContainerState.terminated"));
    config.boxed(format!("{OBJECTS}.DeploymentSpec.template"));
    config.boxed(format!("{OBJECTS}.ReplicaSetSpec.template"));
    // A pod's security context and DNS config, set by few pods: every
    // object (an enum of the kinds, a Pod the largest) carried them.
    config.boxed(format!("{OBJECTS}.PodSpec.security_context"));
    config.boxed(format!("{OBJECTS}.PodSpec.dns_config"));
    config.type_attribute(
        OBJECTS,
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default)]",
    );
    for (field, name) in RENAMES {
        config.field_attribute(
            format!("{OBJECTS}.{field}"),
            format!("#[serde(rename = \"{name}\")]"),
        );
    }
    for field in INT_OR_STRING {
        config.field_attribute(
            format!("{OBJECTS}.{field}"),
            "#[serde(with = \"crate::json_mapping::int_or_string\")]",
        );
    }
    for field in QUANTITY_MAPS {
        config.field_attribute(
            format!("{OBJECTS}.{field}"),
            "#[serde(with = \"crate::json_mapping::quantity_map\")]",
        );
    }
    for field in RAW_JSON {
        config.field_attribute(
            format!("{OBJECTS}.{field}"),
            "#[serde(with = \"crate::json_mapping::raw_json\")]",
        );
    }
    for field in QUANTITIES {
        config.field_attribute(
            format!("{OBJECTS}.{field}"),
            "#[serde(with = \"crate::json_mapping::quantity\")]",
        );
    }
    // Sent by masters as the bytes their store holds (`src/watch_event.rs`).
    config.extern_path(".skiff.api.v1.WatchEvent", "crate::watch_event::WatchEvent");
    tonic_prost_build::configure()
        .codec_path("crate::grpc_codec::CompactCodec")
        .compile_with_config(config, PROTOS, &["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("skiff.v1.shrink.rs"),
        shrink_to_fit_impls(&descriptors)?,
    )?;
    Ok(())
}

/// Rust keywords that prost writes as raw identifiers (`r#type`).
const RAW_IDENTIFIERS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "false", "fn",
    "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
    "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
    "virtual", "yield", "try", "gen",
];

/// An inherent `shrink_to_fit` for every `skiff.v1` message: it gives
/// back the spare capacity of each list in the message and in the messages
/// it holds. prost decodes a list by pushing, so a pod's one container
/// takes room for four (1.6 KB); a decoded pod held about 3 KB of such
/// room, which the master's object cache kept for every pod.
fn shrink_to_fit_impls(
    descriptors: &prost_types::FileDescriptorSet,
) -> Result<String, Box<dyn std::error::Error>> {
    use heck::ToUpperCamelCase;
    use prost_types::field_descriptor_proto::{Label, Type};
    use std::fmt::Write;
    let mut out = String::new();
    for file in descriptors
        .file
        .iter()
        .filter(|f| f.package() == "skiff.v1")
    {
        for message in &file.message_type {
            let maps: Vec<String> = message
                .nested_type
                .iter()
                .map(|n| format!("{OBJECTS}.{}.{}", message.name(), n.name()))
                .collect();
            let mut body = String::new();
            for field in &message.field {
                let name = field.name();
                let rust = if RAW_IDENTIFIERS.contains(&name) {
                    format!("r#{name}")
                } else if matches!(name, "self" | "super" | "extern" | "crate") {
                    format!("{name}_")
                } else {
                    name.to_owned()
                };
                let repeated = field.label() == Label::Repeated;
                let message_type = field.r#type() == Type::Message;
                if message_type && maps.iter().any(|m| m == field.type_name()) {
                    // Maps are B-trees, whose nodes have a fixed size.
                    continue;
                }
                if message_type && !field.type_name().starts_with(&format!("{OBJECTS}.")) {
                    return Err(format!(
                        "skiff.v1.{}.{name} is a message of another package, which build.rs does not shrink",
                        message.name()
                    )
                    .into());
                }
                match (repeated, message_type) {
                    (true, true) => writeln!(
                        body,
                        "        self.{rust}.shrink_to_fit();\n        for item in &mut self.{rust} {{\n            item.shrink_to_fit();\n        }}"
                    )?,
                    (true, false) => writeln!(body, "        self.{rust}.shrink_to_fit();")?,
                    (false, true) => writeln!(
                        body,
                        "        if let Some(part) = &mut self.{rust} {{\n            part.shrink_to_fit();\n        }}"
                    )?,
                    (false, false) => {}
                }
            }
            writeln!(
                out,
                "impl {} {{\n    /// Gives back the spare capacity of this message's lists, and of the lists of the messages it holds.\n    pub fn shrink_to_fit(&mut self) {{\n{body}    }}\n}}\n",
                message.name().to_upper_camel_case()
            )?;
        }
    }
    Ok(out)
}
