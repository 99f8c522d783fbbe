//! Generates the prost/tonic code for skiff's protos. The Kubernetes-shaped
//! objects (`skiff.v1`) also get serde derives so that they read and write as
//! Kubernetes YAML/JSON: lowerCamelCase names, Kubernetes' own spelling where
//! it is not plain camelCase (`podIP`, `clusterIP`, ...), empty fields left
//! out, and int-or-string / quantity fields accepted in both forms.

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    config.type_attribute(
        OBJECTS,
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default)]",
    );
    config.field_attribute(
        OBJECTS,
        "#[serde(skip_serializing_if = \"crate::json_mapping::is_default\")]",
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
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "proto/objects.proto",
            "proto/api.proto",
            "proto/node.proto",
            "proto/raft.proto",
            "proto/join.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
