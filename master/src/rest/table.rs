//! Server-side Tables: the columns and rows `kubectl get` prints, worked out
//! by the server as the Kubernetes API server's printers work them out
//! (kubernetes/kubernetes `pkg/printers/internalversion/printers.go`).
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints
//! the columns it is given, so these are Kubernetes' own: the same names,
//! types and priorities (like the API server, every row carries the `-o wide`
//! cells too, and kubectl hides the priority-1 columns), with cells computed
//! the same way: a pod's STATUS from its containers' states, a Job's from its
//! conditions, an autoscaler's TARGETS from its metrics and their current
//! values, AGE as apimachinery's `HumanDuration`. Every kind skiff serves
//! has its printer (core: Pod, Node, Namespace, Service, Endpoints, Secret,
//! ConfigMap, ServiceAccount, Event, PersistentVolume(Claim), ResourceQuota;
//! apps: Deployment, ReplicaSet, DaemonSet, StatefulSet, ControllerRevision;
//! batch: Job, CronJob; networking: Ingress, IngressClass, NetworkPolicy;
//! RBAC bindings; PodDisruptionBudget; HorizontalPodAutoscaler; StorageClass,
//! CSIDriver; Lease; EndpointSlice; PriorityClass), except the kinds
//! Kubernetes has none for either (Role, ClusterRole, LimitRange), which get
//! the API server's default columns, Name and Created At. Objects are read
//! as Kubernetes JSON, and defensively: a missing field prints as kubectl
//! prints it (`<none>`, `<unset>`, `0`, `<unknown>`). Quantities print as
//! the object holds them (the API server stores them canonical; skiff keeps
//! what was sent). Nothing here fails; bad input gives a cell such as
//! `<invalid>`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// One column of a Table (a `meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The header, in Kubernetes' capitalisation ("Name", "Nominated Node").
    pub name: &'static str,
    /// The OpenAPI type of the cells: "string", "integer", "boolean" or
    /// "date". As in Kubernetes, a few columns say "string" and hold
    /// integers or booleans, and CronJob's "boolean" SUSPEND holds strings.
    pub value_type: &'static str,
    /// "name" for a column holding the object's name, else "".
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: shown by `kubectl get -o wide` only.
    pub priority: i32,
}

impl Column {
    /// This column as an entry of a Table's `columnDefinitions`.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.value_type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The columns of a kind's Table; `kind` is the Kubernetes kind ("Pod",
/// "Node", ...). A kind without a Kubernetes printer gets Name and Created At.
pub fn columns(kind: &str) -> &'static [Column] {
    Printer::of(kind).columns()
}

/// The cells of `object`'s row, one per column of [`columns`], in order:
/// strings, or integers and booleans where Kubernetes puts them. Ages are
/// counted up to `now`.
pub fn cells(kind: &str, object: &Value, now: OffsetDateTime) -> Vec<Value> {
    Printer::of(kind).cells(object, now)
}

/// A `meta.k8s.io/v1` Table of `objects` (all of Kubernetes kind `kind`):
/// `metadata.resourceVersion` is `resource_version` (what `kubectl get -w`
/// watches from), `columnDefinitions` are left out unless `with_columns` (a
/// watch sends them in its first event only), and each row holds its cells
/// and the object's metadata as a `PartialObjectMetadata`, where kubectl
/// finds the namespace and labels.
pub fn table(
    kind: &str,
    objects: &[&Value],
    resource_version: &str,
    with_columns: bool,
    now: OffsetDateTime,
) -> Value {
    let printer = Printer::of(kind);
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        let version = Value::from(resource_version);
        metadata.insert("resourceVersion".to_owned(), version);
    }
    let mut table = Map::new();
    table.insert("kind".to_owned(), Value::from("Table"));
    table.insert("apiVersion".to_owned(), Value::from("meta.k8s.io/v1"));
    table.insert("metadata".to_owned(), Value::Object(metadata));
    if with_columns {
        let definitions = printer.columns().iter().map(Column::definition);
        let definitions = Value::Array(definitions.collect());
        table.insert("columnDefinitions".to_owned(), definitions);
    }
    let rows = objects.iter().map(|object| row(printer, object, now));
    table.insert("rows".to_owned(), Value::Array(rows.collect()));
    Value::Object(table)
}

/// [`table`] with its columns written as JSON into `out` a row at a time:
/// each object `objects` yields is made into its row, written and dropped
/// before the next is made (a list of many objects never exists as one
/// JSON tree). `metadata` is the Table's (`resourceVersion`, `continue`).
pub fn write_table(
    out: &mut Vec<u8>,
    kind: &str,
    objects: impl Iterator<Item = Value>,
    metadata: &Value,
    now: OffsetDateTime,
) {
    let printer = Printer::of(kind);
    out.extend_from_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, metadata);
    out.extend_from_slice(br#","columnDefinitions":"#);
    let definitions: Vec<Value> = printer.columns().iter().map(Column::definition).collect();
    let _ = serde_json::to_writer(&mut *out, &definitions);
    out.extend_from_slice(br#","rows":["#);
    for (i, object) in objects.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, &owned_row(printer, object, now));
    }
    out.extend_from_slice(b"]}");
}

/// apimachinery's `HumanDuration`, the AGE format: two or three significant
/// figures ("45s", "9m59s", "3h", "7d23h", "2y1d").
pub fn human_duration(d: Duration) -> String {
    human_seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `HumanDuration` of a signed number of whole seconds: up to a second in
/// the future is clock skew ("0s"), further is "<invalid>".
pub(super) fn human_seconds(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            rest => format!("{days}d{rest}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            rest => format!("{years}y{rest}d"),
        };
    }
    format!("{years}y")
}

pub(super) const NAME_DOC: &str =
    "Name must be unique within a namespace. Is required when creating \
    resources, although some resources may allow a client to request the generation of an \
    appropriate name automatically. Cannot be updated.";
pub(super) const CREATED_DOC: &str =
    "CreationTimestamp is a timestamp representing the server time when \
    this object was created. It is represented in RFC3339 form and is in UTC.";
const RESTARTS_DOC: &str = "The number of times the containers in this pod have been restarted \
    and when the last container in this pod has restarted.";

/// The column holding each object's name.
const NAME: Column = Column {
    name: "Name",
    value_type: "string",
    format: "name",
    description: NAME_DOC,
    priority: 0,
};
const AGE: Column = column("Age", "string", CREATED_DOC);
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide("Selector", "string", "Label selector for pods.");

/// A column that plain `kubectl get` shows.
const fn column(name: &'static str, value_type: &'static str, doc: &'static str) -> Column {
    Column {
        name,
        value_type,
        format: "",
        description: doc,
        priority: 0,
    }
}

/// A column that only `kubectl get -o wide` shows.
const fn wide(name: &'static str, value_type: &'static str, doc: &'static str) -> Column {
    Column {
        priority: 1,
        ..column(name, value_type, doc)
    }
}

const POD_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    column(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    column("Restarts", "string", RESTARTS_DOC),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set when this pod preempts other pods on the node.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column(
        "Version",
        "string",
        "Kubelet Version reported by the node (status.nodeInfo).",
    ),
    wide(
        "Internal-IP",
        "string",
        "The node's first address of type InternalIP.",
    ),
    wide(
        "External-IP",
        "string",
        "The node's first address of type ExternalIP.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release.",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r'.",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API.",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the namespace"),
    AGE,
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "type determines how the Service is exposed (ClusterIP, NodePort, ...).",
    ),
    column(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service, usually assigned randomly.",
    ),
    column(
        "External-IP",
        "string",
        "IP addresses for which nodes in the cluster also accept traffic for this service.",
    ),
    column(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods that have the desired template spec.",
    ),
    column(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds).",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    column(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    column(
        "Ready",
        "integer",
        "The number of pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    column("Data", "string", "Data contains the secret data."),
    AGE,
];

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    column("Data", "string", "The number of data entries."),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        "string",
        "The secrets pods running as this ServiceAccount may use.",
    ),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    column(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    column(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    column(
        "Reason",
        "string",
        "A short, machine understandable reason for this event.",
    ),
    column(
        "Object",
        "string",
        "The object that this event is about (involvedObject).",
    ),
    wide(
        "Subobject",
        "string",
        "The field of the involved object the event is about (fieldPath).",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event, and the host it runs on.",
    ),
    column(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded.",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        format: "name",
        ..wide("Name", "string", NAME_DOC)
    },
];

const JOB_SELECTOR: Column = wide(
    "Selector",
    "string",
    "A label query over pods that should match the pod count.",
);

const JOB_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "Status of the job."),
    column(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    column("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    JOB_SELECTOR,
];

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    column("Schedule", "string", "The schedule in Cron format."),
    column(
        "Timezone",
        "string",
        "The time zone name for the given schedule.",
    ),
    column(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions.",
    ),
    column(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    column(
        "Last Schedule",
        "string",
        "The last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    JOB_SELECTOR,
];

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod.",
    ),
    column(
        "Current",
        "integer",
        "The number of nodes running at least one daemon pod that should run it.",
    ),
    column(
        "Ready",
        "integer",
        "The number of nodes that should run the daemon pod and have a ready one.",
    ),
    column(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    column(
        "Available",
        "integer",
        "The number of nodes that should run the daemon pod and have an available one.",
    ),
    column(
        "Node Selector",
        "string",
        "A selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "A label query over pods that are managed by the daemon set.",
    ),
];

const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    column("Controller", "string", "Controller of the object"),
    column(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

const PERSISTENT_VOLUME_CLAIM_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    column(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    column(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    column(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    column("StorageClass", "string", "StorageClass of the pvc"),
    column(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

const PERSISTENT_VOLUME_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    column(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted.",
    ),
    column(
        "Reclaim Policy",
        "string",
        "What happens to a persistent volume when released from its claim.",
    ),
    column(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    column(
        "Claim",
        "string",
        "The claim bound to this volume (claimRef), as namespace/name.",
    ),
    column("StorageClass", "string", "StorageClass of the pv"),
    column(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    column(
        "Reason",
        "string",
        "A brief CamelCase string that describes any failure.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "Whether the volume holds a formatted filesystem or stays a raw block device.",
    ),
];

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    column(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    column(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    column("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    column(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole.",
    ),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

const CLUSTER_ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Role",
        "string",
        "RoleRef can only reference a ClusterRole in the global namespace.",
    ),
    AGE,
    wide("Users", "string", "Users in the clusterRoleBinding"),
    wide("Groups", "string", "Groups in the clusterRoleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

const POD_DISRUPTION_BUDGET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    column(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    column(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

const HORIZONTAL_POD_AUTOSCALER_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Reference",
        "string",
        "The scaled resource, whose Scale subresource the autoscaler sets.",
    ),
    column(
        "Targets",
        "string",
        "The metrics used to calculate the desired replica count.",
    ),
    column(
        "MinPods",
        "string",
        "The lower limit for the number of replicas.",
    ),
    column(
        "MaxPods",
        "string",
        "The upper limit for the number of replicas.",
    ),
    column(
        "Replicas",
        "string",
        "The current number of replicas of pods managed by this autoscaler.",
    ),
    AGE,
];

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    column(
        "ReclaimPolicy",
        "string",
        "The reclaimPolicy of dynamically provisioned PersistentVolumes.",
    ),
    column(
        "VolumeBindingMode",
        "string",
        "How PersistentVolumeClaims should be provisioned and bound.",
    ),
    column(
        "AllowVolumeExpansion",
        "string",
        "Whether the storage class allows volume expansion.",
    ),
    AGE,
];

const CSI_DRIVER_COLUMNS: &[Column] = &[
    NAME,
    column(
        "AttachRequired",
        "boolean",
        "Whether the CSI volume driver requires an attach operation.",
    ),
    column(
        "PodInfoOnMount",
        "boolean",
        "Whether the driver requires pod information during mount operations.",
    ),
    column(
        "StorageCapacity",
        "boolean",
        "Whether pod scheduling considers the storage capacity the driver reports.",
    ),
    column(
        "TokenRequests",
        "string",
        "The audiences of the service account tokens the driver needs.",
    ),
    column(
        "RequiresRepublish",
        "boolean",
        "Whether the driver wants NodePublishVolume called periodically.",
    ),
    column(
        "Modes",
        "string",
        "The kinds of volumes the driver supports (volumeLifecycleModes).",
    ),
    AGE,
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Holder",
        "string",
        "The identity of the holder of the current lease.",
    ),
    AGE,
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "AddressType",
        "string",
        "The type of address carried by this EndpointSlice.",
    ),
    column(
        "Ports",
        "string",
        "The network ports exposed by each endpoint in this slice.",
    ),
    column(
        "Endpoints",
        "string",
        "The list of unique endpoints in this slice.",
    ),
    AGE,
];

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Value",
        "integer",
        "value represents the integer value of this priority class.",
    ),
    column(
        "Global-Default",
        "boolean",
        "Whether this is the default priority for pods without a priority class.",
    ),
    AGE,
    column(
        "PreemptionPolicy",
        "string",
        "The policy for preempting pods with lower priority.",
    ),
];

const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    column(
        "Limit",
        "string",
        "The maximum amount of cpu/memory that a container may use.",
    ),
    AGE,
];

/// The API server's table for kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[NAME, column("Created At", "date", CREATED_DOC)];

/// The printers Kubernetes has for skiff's kinds, and the default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Node,
    Namespace,
    Service,
    Endpoints,
    Deployment,
    ReplicaSet,
    Secret,
    ConfigMap,
    ServiceAccount,
    Event,
    Job,
    CronJob,
    DaemonSet,
    StatefulSet,
    ControllerRevision,
    PersistentVolumeClaim,
    PersistentVolume,
    Ingress,
    IngressClass,
    NetworkPolicy,
    RoleBinding,
    ClusterRoleBinding,
    PodDisruptionBudget,
    HorizontalPodAutoscaler,
    StorageClass,
    CsiDriver,
    Lease,
    EndpointSlice,
    PriorityClass,
    ResourceQuota,
    /// Any other kind (Role, ClusterRole, LimitRange): Name and Created At.
    Default,
}

impl Printer {
    fn of(kind: &str) -> Self {
        match kind {
            "Pod" => Self::Pod,
            "Node" => Self::Node,
            "Namespace" => Self::Namespace,
            "Service" => Self::Service,
            "Endpoints" => Self::Endpoints,
            "Deployment" => Self::Deployment,
            "ReplicaSet" => Self::ReplicaSet,
            "Secret" => Self::Secret,
            "ConfigMap" => Self::ConfigMap,
            "ServiceAccount" => Self::ServiceAccount,
            "Event" => Self::Event,
            "Job" => Self::Job,
            "CronJob" => Self::CronJob,
            "DaemonSet" => Self::DaemonSet,
            "StatefulSet" => Self::StatefulSet,
            "ControllerRevision" => Self::ControllerRevision,
            "PersistentVolumeClaim" => Self::PersistentVolumeClaim,
            "PersistentVolume" => Self::PersistentVolume,
            "Ingress" => Self::Ingress,
            "IngressClass" => Self::IngressClass,
            "NetworkPolicy" => Self::NetworkPolicy,
            "RoleBinding" => Self::RoleBinding,
            "ClusterRoleBinding" => Self::ClusterRoleBinding,
            "PodDisruptionBudget" => Self::PodDisruptionBudget,
            "HorizontalPodAutoscaler" => Self::HorizontalPodAutoscaler,
            "StorageClass" => Self::StorageClass,
            "CSIDriver" => Self::CsiDriver,
            "Lease" => Self::Lease,
            "EndpointSlice" => Self::EndpointSlice,
            "PriorityClass" => Self::PriorityClass,
            "ResourceQuota" => Self::ResourceQuota,
            _ => Self::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Self::Pod => POD_COLUMNS,
            Self::Node => NODE_COLUMNS,
            Self::Namespace => NAMESPACE_COLUMNS,
            Self::Service => SERVICE_COLUMNS,
            Self::Endpoints => ENDPOINTS_COLUMNS,
            Self::Deployment => DEPLOYMENT_COLUMNS,
            Self::ReplicaSet => REPLICA_SET_COLUMNS,
            Self::Secret => SECRET_COLUMNS,
            Self::ConfigMap => CONFIG_MAP_COLUMNS,
            Self::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
            Self::Event => EVENT_COLUMNS,
            Self::Job => JOB_COLUMNS,
            Self::CronJob => CRON_JOB_COLUMNS,
            Self::DaemonSet => DAEMON_SET_COLUMNS,
            Self::StatefulSet => STATEFUL_SET_COLUMNS,
            Self::ControllerRevision => CONTROLLER_REVISION_COLUMNS,
            Self::PersistentVolumeClaim => PERSISTENT_VOLUME_CLAIM_COLUMNS,
            Self::PersistentVolume => PERSISTENT_VOLUME_COLUMNS,
            Self::Ingress => INGRESS_COLUMNS,
            Self::IngressClass => INGRESS_CLASS_COLUMNS,
            Self::NetworkPolicy => NETWORK_POLICY_COLUMNS,
            Self::RoleBinding => ROLE_BINDING_COLUMNS,
            Self::ClusterRoleBinding => CLUSTER_ROLE_BINDING_COLUMNS,
            Self::PodDisruptionBudget => POD_DISRUPTION_BUDGET_COLUMNS,
            Self::HorizontalPodAutoscaler => HORIZONTAL_POD_AUTOSCALER_COLUMNS,
            Self::StorageClass => STORAGE_CLASS_COLUMNS,
            Self::CsiDriver => CSI_DRIVER_COLUMNS,
            Self::Lease => LEASE_COLUMNS,
            Self::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
            Self::PriorityClass => PRIORITY_CLASS_COLUMNS,
            Self::ResourceQuota => RESOURCE_QUOTA_COLUMNS,
            Self::Default => DEFAULT_COLUMNS,
        }
    }

    fn cells(self, object: &Value, now: OffsetDateTime) -> Vec<Value> {
        match self {
            Self::Pod => pod_cells(object, now),
            Self::Node => node_cells(object, now),
            Self::Namespace => namespace_cells(object, now),
            Self::Service => service_cells(object, now),
            Self::Endpoints => endpoints_cells(object, now),
            Self::Deployment => deployment_cells(object, now),
            Self::ReplicaSet => replica_set_cells(object, now),
            Self::Secret => secret_cells(object, now),
            Self::ConfigMap => config_map_cells(object, now),
            Self::ServiceAccount => service_account_cells(object, now),
            Self::Event => event_cells(object, now),
            Self::Job => job_cells(object, now),
            Self::CronJob => cron_job_cells(object, now),
            Self::DaemonSet => daemon_set_cells(object, now),
            Self::StatefulSet => stateful_set_cells(object, now),
            Self::ControllerRevision => controller_revision_cells(object, now),
            Self::PersistentVolumeClaim => persistent_volume_claim_cells(object, now),
            Self::PersistentVolume => persistent_volume_cells(object, now),
            Self::Ingress => ingress_cells(object, now),
            Self::IngressClass => ingress_class_cells(object, now),
            Self::NetworkPolicy => network_policy_cells(object, now),
            Self::RoleBinding | Self::ClusterRoleBinding => role_binding_cells(object, now),
            Self::PodDisruptionBudget => pod_disruption_budget_cells(object, now),
            Self::HorizontalPodAutoscaler => autoscaler_cells(object, now),
            Self::StorageClass => storage_class_cells(object, now),
            Self::CsiDriver => csi_driver_cells(object, now),
            Self::Lease => lease_cells(object, now),
            Self::EndpointSlice => endpoint_slice_cells(object, now),
            Self::PriorityClass => priority_class_cells(object, now),
            Self::ResourceQuota => resource_quota_cells(object, now),
            Self::Default => vec![name(object), created_at(object)],
        }
    }

    /// A row's conditions: Kubernetes marks the rows of finished pods
    /// Completed.
    fn row_conditions(self, object: &Value) -> Option<Value> {
        if self != Self::Pod {
            return None;
        }
        let (reason, message) = match text(&object["status"]["phase"]) {
            "Succeeded" => ("Succeeded", "The pod has completed successfully."),
            "Failed" => ("Failed", "The pod failed."),
            _ => return None,
        };
        let condition = json!({
            "type": "Completed",
            "status": "True",
            "reason": reason,
            "message": message,
        });
        Some(Value::Array(vec![condition]))
    }
}

/// One row of a Table: the cells, any conditions, and the object's metadata.
fn row(printer: Printer, object: &Value, now: OffsetDateTime) -> Value {
    let metadata = match &object["metadata"] {
        Value::Object(metadata) => Value::Object(metadata.clone()),
        _ => Value::Object(Map::new()),
    };
    let cells = printer.cells(object, now);
    let conditions = printer.row_conditions(object);
    assemble_row(cells, conditions, metadata)
}

/// [`row`] of an object given away: its metadata moves into the row
/// instead of being copied.
fn owned_row(printer: Printer, mut object: Value, now: OffsetDateTime) -> Value {
    let cells = printer.cells(&object, now);
    let conditions = printer.row_conditions(&object);
    let metadata = match object["metadata"].take() {
        Value::Object(metadata) => Value::Object(metadata),
        _ => Value::Object(Map::new()),
    };
    assemble_row(cells, conditions, metadata)
}

fn assemble_row(cells: Vec<Value>, conditions: Option<Value>, metadata: Value) -> Value {
    let mut row = Map::new();
    row.insert("cells".to_owned(), Value::Array(cells));
    if let Some(conditions) = conditions {
        row.insert("conditions".to_owned(), conditions);
    }
    let partial = json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    });
    row.insert("object".to_owned(), partial);
    Value::Object(row)
}

/// printPod. READY counts ready containers (started sidecars included) out
/// of all; STATUS is the most telling reason among the pod's phase, its init
/// containers' and its containers' states, and its deletion; RESTARTS says
/// when the last restart was.
fn pod_cells(pod: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let conditions = list(&status["conditions"]);
    let init_specs = list(&spec["initContainers"]);
    // Restartable init containers (sidecars) count as containers.
    let sidecars: Vec<&str> = init_specs
        .iter()
        .filter(|container| text(&container["restartPolicy"]) == "Always")
        .map(|container| text(&container["name"]))
        .collect();
    let total = list(&spec["containers"]).len() + sidecars.len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart = None;
    let mut sidecar_restarts = 0;
    let mut last_sidecar_restart = None;

    let phase = text(&status["phase"]);
    let mut reason = match text(&status["reason"]) {
        "" => phase.to_owned(),
        reason => reason.to_owned(),
    };
    let scheduled = condition(conditions, "PodScheduled");
    if scheduled.is_some_and(|c| text(&c["reason"]) == "SchedulingGated") {
        reason = "SchedulingGated".to_owned();
    }

    let init_statuses = list(&status["initContainerStatuses"]);
    let mut initializing = false;
    for (index, container) in init_statuses.iter().enumerate() {
        let count = number(&container["restartCount"]);
        let finished = timestamp(&container["lastState"]["terminated"]["finishedAt"]);
        restarts += count;
        last_restart = latest(last_restart, finished);
        let sidecar = sidecars.contains(&text(&container["name"]));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = latest(last_sidecar_restart, finished);
        }
        let state = &container["state"];
        let terminated = &state["terminated"];
        if terminated.is_object() && number(&terminated["exitCode"]) == 0 {
            continue;
        }
        if sidecar && container["started"].as_bool() == Some(true) {
            if container["ready"].as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        let waiting = text(&state["waiting"]["reason"]);
        reason = if terminated.is_object() {
            format!("Init:{}", terminated_reason(terminated))
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{index}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = condition(conditions, "Initialized").is_some_and(is_true);
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for container in list(&status["containerStatuses"]).iter().rev() {
            restarts += number(&container["restartCount"]);
            let finished = timestamp(&container["lastState"]["terminated"]["finishedAt"]);
            last_restart = latest(last_restart, finished);
            let state = &container["state"];
            let waiting = text(&state["waiting"]["reason"]);
            let running = state["running"].is_object();
            if !waiting.is_empty() {
                reason = waiting.to_owned();
            } else if state["terminated"].is_object() {
                reason = terminated_reason(&state["terminated"]);
            } else if running && container["ready"].as_bool() == Some(true) {
                has_running = true;
                ready += 1;
            }
        }
        // A finished container beside a running one: the pod still runs.
        if reason == "Completed" && has_running {
            let pod_ready = condition(conditions, "Ready").is_some_and(is_true);
            let running = if pod_ready { "Running" } else { "NotReady" };
            reason = running.to_owned();
        }
    }

    let deleting = !text(&pod["metadata"]["deletionTimestamp"]).is_empty();
    if deleting && text(&status["reason"]) == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", human_since(at, now)),
        _ => restarts.to_string(),
    };
    let mut ip = text(&status["podIPs"][0]["ip"]);
    if ip.is_empty() {
        ip = text(&status["podIP"]);
    }
    vec![
        name(pod),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts),
        age(pod, now),
        Value::from(or_none(ip)),
        Value::from(or_none(text(&spec["nodeName"]))),
        Value::from(or_none(text(&status["nominatedNodeName"]))),
        Value::from(readiness_gates(spec, conditions)),
    ]
}

/// A pod's READY, STATUS and RESTARTS cells as `kubectl get pods` prints
/// them (init containers, sidecars and when the last restart was
/// included), for clients that print pods themselves (`skiff ctl get`).
pub fn pod_summary(pod: &Value, now: OffsetDateTime) -> [String; 3] {
    let cells = pod_cells(pod, now);
    let cell = |i: usize| text(cells.get(i).unwrap_or(&Value::Null)).to_owned();
    [cell(1), cell(2), cell(3)]
}

/// What a terminated container state says: its reason, else its signal,
/// else its exit code.
fn terminated_reason(terminated: &Value) -> String {
    let signal = number(&terminated["signal"]);
    match text(&terminated["reason"]) {
        "" if signal != 0 => format!("Signal:{signal}"),
        "" => format!("ExitCode:{}", number(&terminated["exitCode"])),
        reason => reason.to_owned(),
    }
}

/// READINESS GATES: how many of the pod's readiness gates hold, out of all.
fn readiness_gates(spec: &Value, conditions: &[Value]) -> String {
    let gates = list(&spec["readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_owned();
    }
    let passed = gates
        .iter()
        .filter_map(|gate| condition(conditions, text(&gate["conditionType"])))
        .filter(|found| is_true(found))
        .count();
    format!("{passed}/{}", gates.len())
}

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

/// printNode: STATUS from the Ready condition, ROLES from the role labels.
fn node_cells(node: &Value, now: OffsetDateTime) -> Vec<Value> {
    let status = &node["status"];
    let info = &status["nodeInfo"];
    // Kubernetes keeps the last condition of each type.
    let ready = list(&status["conditions"])
        .iter()
        .rev()
        .find(|condition| text(&condition["type"]) == "Ready");
    let mut states = match ready {
        Some(condition) if is_true(condition) => vec!["Ready"],
        Some(_) => vec!["NotReady"],
        None => vec!["Unknown"],
    };
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        states.push("SchedulingDisabled");
    }
    let roles = node_roles(&node["metadata"]["labels"]).join(",");
    vec![
        name(node),
        Value::from(states.join(",")),
        Value::from(or_none(&roles)),
        age(node, now),
        Value::from(text(&info["kubeletVersion"])),
        Value::from(node_address(status, "InternalIP")),
        Value::from(node_address(status, "ExternalIP")),
        Value::from(or_unknown(text(&info["osImage"]))),
        Value::from(or_unknown(text(&info["kernelVersion"]))),
        Value::from(or_unknown(text(&info["containerRuntimeVersion"]))),
    ]
}

/// findNodeRoles: the `<role>` of each `node-role.kubernetes.io/<role>`
/// label and the value of a `kubernetes.io/role` label; sorted, unique.
fn node_roles(labels: &Value) -> Vec<&str> {
    let mut roles = BTreeSet::new();
    for (key, value) in labels.as_object().into_iter().flatten() {
        if let Some(role) = key.strip_prefix(NODE_ROLE_PREFIX) {
            if !role.is_empty() {
                roles.insert(role);
            }
        } else if key == NODE_ROLE_LABEL && !text(value).is_empty() {
            roles.insert(text(value));
        }
    }
    roles.into_iter().collect()
}

/// The node's first address of type `kind`, or "<none>".
fn node_address<'a>(status: &'a Value, kind: &str) -> &'a str {
    list(&status["addresses"])
        .iter()
        .find(|address| text(&address["type"]) == kind)
        .map_or("<none>", |address| text(&address["address"]))
}

fn namespace_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let phase = text(&object["status"]["phase"]);
    vec![name(object), Value::from(phase), age(object, now)]
}

/// printService, with the API server's wide output (nothing clipped).
fn service_cells(service: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &service["spec"];
    // Kubernetes reads clusterIPs; an object that has only clusterIP still
    // shows it.
    let cluster_ip = match list(&spec["clusterIPs"]).first() {
        Some(ip) => text(ip),
        None => or_none(text(&spec["clusterIP"])),
    };
    let ports: Vec<String> = list(&spec["ports"]).iter().map(service_port).collect();
    let ports = ports.join(",");
    vec![
        name(service),
        Value::from(text(&spec["type"])),
        Value::from(cluster_ip),
        Value::from(service_external_ip(service)),
        Value::from(or_none(&ports)),
        age(service, now),
        Value::from(format_labels(&spec["selector"])),
    ]
}

/// One entry of PORT(S): `port/protocol`, or `port:nodePort/protocol`.
fn service_port(port: &Value) -> String {
    let protocol = text(&port["protocol"]);
    match (number(&port["port"]), number(&port["nodePort"])) {
        (exposed, node_port) if node_port > 0 => format!("{exposed}:{node_port}/{protocol}"),
        (exposed, _) => format!("{exposed}/{protocol}"),
    }
}

/// getServiceExternalIP: external IPs, the load balancer's ingress points,
/// or the external name, by service type.
fn service_external_ip(service: &Value) -> String {
    let spec = &service["spec"];
    let external_ips: Vec<&str> = list(&spec["externalIPs"]).iter().map(text).collect();
    match text(&spec["type"]) {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let ingress = &service["status"]["loadBalancer"]["ingress"];
            let mut addresses = load_balancer_addresses(ingress);
            if addresses.is_empty() && external_ips.is_empty() {
                return "<pending>".to_owned();
            }
            addresses.extend(external_ips);
            addresses.join(",")
        }
        "ExternalName" => text(&spec["externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// A load balancer's ingress points (the IP, else the hostname); sorted,
/// unique.
fn load_balancer_addresses(ingress: &Value) -> Vec<&str> {
    let mut addresses = BTreeSet::new();
    for point in list(ingress) {
        let address = match text(&point["ip"]) {
            "" => text(&point["hostname"]),
            ip => ip,
        };
        if !address.is_empty() {
            addresses.insert(address);
        }
    }
    addresses.into_iter().collect()
}

/// labels.FormatLabels: `key=value` pairs sorted by key, or "<none>".
fn format_labels(labels: &Value) -> String {
    let mut pairs: Vec<_> = labels.as_object().into_iter().flatten().collect();
    pairs.sort_by_key(|(key, _)| *key);
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| format!("{key}={}", text(value)))
        .collect();
    or_none(&pairs.join(",")).to_owned()
}

/// How many endpoints formatEndpoints lists before "+ N more...".
const ENDPOINTS_SHOWN: usize = 3;

fn endpoints_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let shown = format_endpoints(list(&object["subsets"]));
    vec![name(object), Value::from(shown), age(object, now)]
}

/// formatEndpoints: the first three `ip:port` (a subset without ports gives
/// bare IPs), then how many more there are.
fn format_endpoints(subsets: &[Value]) -> String {
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = list(&subset["addresses"]);
        let ports = list(&subset["ports"]);
        if ports.is_empty() {
            // A headless service may have no ports.
            count += addresses.len();
            for address in addresses {
                if shown.len() == ENDPOINTS_SHOWN {
                    more = true;
                    break;
                }
                shown.push(text(&address["ip"]).to_owned());
            }
        } else {
            for port in ports {
                count += addresses.len();
                for address in addresses {
                    if shown.len() == ENDPOINTS_SHOWN {
                        more = true;
                        break;
                    }
                    let ip = text(&address["ip"]);
                    shown.push(join_host_port(ip, number(&port["port"])));
                }
            }
        }
    }
    let shown = shown.join(",");
    if more {
        let hidden = count.saturating_sub(ENDPOINTS_SHOWN);
        return format!("{shown} + {hidden} more...");
    }
    shown
}

/// net.JoinHostPort: an IPv6 host goes in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        return format!("[{host}]:{port}");
    }
    format!("{host}:{port}")
}

/// printDeployment: READY is ready replicas out of desired ones.
fn deployment_cells(deployment: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &deployment["spec"];
    let status = &deployment["status"];
    let ready = number(&status["readyReplicas"]);
    let desired = number(&spec["replicas"]);
    let (names, images) = container_cells(&spec["template"]["spec"]["containers"]);
    let selector = label_selector(&spec["selector"]);
    vec![
        name(deployment),
        Value::from(format!("{ready}/{desired}")),
        Value::from(number(&status["updatedReplicas"])),
        Value::from(number(&status["availableReplicas"])),
        age(deployment, now),
        Value::from(names),
        Value::from(images),
        Value::from(selector.unwrap_or_else(|| "<invalid>".to_owned())),
    ]
}

fn replica_set_cells(replica_set: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &replica_set["spec"];
    let status = &replica_set["status"];
    let (names, images) = container_cells(&spec["template"]["spec"]["containers"]);
    let selector = format_label_selector(&spec["selector"]);
    vec![
        name(replica_set),
        Value::from(number(&spec["replicas"])),
        Value::from(number(&status["replicas"])),
        Value::from(number(&status["readyReplicas"])),
        age(replica_set, now),
        Value::from(names),
        Value::from(images),
        Value::from(selector),
    ]
}

/// layoutContainerCells: the containers' names and images, comma-separated.
fn container_cells(containers: &Value) -> (String, String) {
    let containers = list(containers);
    let names: Vec<&str> = containers.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(&c["image"])).collect();
    (names.join(","), images.join(","))
}

/// metav1.FormatLabelSelector: the selector as [`label_selector`] writes
/// it, "<none>" when it is empty or missing, "<error>" when it is invalid.
fn format_label_selector(selector: &Value) -> String {
    match label_selector(selector) {
        Some(selector) => or_none(&selector).to_owned(),
        None => "<error>".to_owned(),
    }
}

/// A label selector as Kubernetes writes it (`LabelSelectorAsSelector`, then
/// `String`): requirements sorted by key, `k=v`, `k in (a,b)`, `k notin
/// (a,b)`, `k`, `!k`, values sorted. "" for an empty or missing selector;
/// None when it is no valid selector (an unknown operator, values where none
/// belong or none where some must be, an empty key).
pub fn label_selector(selector: &Value) -> Option<String> {
    let mut requirements: Vec<(&str, String)> = Vec::new();
    let match_labels = selector["matchLabels"].as_object();
    for (key, value) in match_labels.into_iter().flatten() {
        requirements.push((key.as_str(), format!("{key}={}", value.as_str()?)));
    }
    for expression in list(&selector["matchExpressions"]) {
        let key = text(&expression["key"]);
        let mut values = list(&expression["values"])
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()?;
        values.sort_unstable();
        let joined = values.join(",");
        let requirement = match text(&expression["operator"]) {
            "In" if !values.is_empty() => format!("{key} in ({joined})"),
            "NotIn" if !values.is_empty() => format!("{key} notin ({joined})"),
            "Exists" if values.is_empty() => key.to_owned(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, requirement));
    }
    if requirements.iter().any(|(key, _)| key.is_empty()) {
        return None;
    }
    requirements.sort_by_key(|(key, _)| *key);
    let rendered: Vec<String> = requirements.into_iter().map(|(_, r)| r).collect();
    Some(rendered.join(","))
}

fn secret_cells(secret: &Value, now: OffsetDateTime) -> Vec<Value> {
    vec![
        name(secret),
        Value::from(text(&secret["type"])),
        Value::from(entries(&secret["data"])),
        age(secret, now),
    ]
}

fn config_map_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let data = entries(&object["data"]) + entries(&object["binaryData"]);
    vec![name(object), Value::from(data), age(object, now)]
}

fn service_account_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let secrets = list(&object["secrets"]).len();
    vec![name(object), Value::from(secrets), age(object, now)]
}

/// printEvent (core/v1 Events). LAST SEEN comes from the series, else
/// lastTimestamp, else the first sighting; FIRST SEEN from firstTimestamp,
/// else eventTime. An events.k8s.io/v1 Event (the same Event under other
/// names, printed as kube-apiserver prints it, converted to core) is read
/// by its names where core's are missing.
fn event_cells(event: &Value, now: OffsetDateTime) -> Vec<Value> {
    let either = |field, events_v1| event_field(event, field, events_v1);
    let first = either("firstTimestamp", "deprecatedFirstTimestamp");
    let first_seen = match timestamp(first) {
        Some(at) => human_since(at, now),
        None => since(&event["eventTime"], now),
    };
    let series = &event["series"];
    let (last_seen, count) = if series.is_object() {
        let last_seen = since(&series["lastObservedTime"], now);
        (last_seen, number(&series["count"]))
    } else {
        let last = either("lastTimestamp", "deprecatedLastTimestamp");
        let last_seen = match timestamp(last) {
            Some(at) => human_since(at, now),
            None => first_seen.clone(),
        };
        // A singleton event of the new API has no count.
        let count = match number(either("count", "deprecatedCount")) {
            0 => 1,
            count => count,
        };
        (last_seen, count)
    };
    let involved = either("involvedObject", "regarding");
    let kind = text(&involved["kind"]).to_lowercase();
    let object = match text(&involved["name"]) {
        "" => kind,
        involved_name => format!("{kind}/{involved_name}"),
    };
    let source = either("source", "deprecatedSource");
    let component = match text(&source["component"]) {
        "" => text(either("reportingComponent", "reportingController")),
        component => component,
    };
    let reporter = match text(&source["host"]) {
        "" => text(&event["reportingInstance"]),
        host => host,
    };
    let reporter = match reporter {
        "" => component.to_owned(),
        host => format!("{component}, {host}"),
    };
    vec![
        Value::from(last_seen),
        Value::from(text(&event["type"])),
        Value::from(text(&event["reason"])),
        Value::from(object),
        Value::from(text(&involved["fieldPath"])),
        Value::from(reporter),
        Value::from(text(either("message", "note")).trim()),
        Value::from(first_seen),
        Value::from(count),
        name(event),
    ]
}

/// `field` of a core Event, else `events_v1` of an events.k8s.io one.
fn event_field<'a>(event: &'a Value, field: &str, events_v1: &str) -> &'a Value {
    match &event[field] {
        Value::Null => &event[events_v1],
        value => value,
    }
}

/// printJob. STATUS is the first of Complete, Failed, Terminating (being
/// deleted), Suspended and FailureTarget that holds, else Running;
/// COMPLETIONS is succeeded pods out of the completions asked for (without
/// a count, "of" the parallelism when it is above one); DURATION runs from
/// the start to the completion, or to `now`.
fn job_cells(job: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &job["spec"];
    let status = &job["status"];
    let succeeded = number(&status["succeeded"]);
    let parallelism = number(&spec["parallelism"]);
    let completions = match spec["completions"].as_i64() {
        Some(completions) => format!("{succeeded}/{completions}"),
        None if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
        None => format!("{succeeded}/1"),
    };
    let started = timestamp(&status["startTime"]);
    let duration = match (started, timestamp(&status["completionTime"])) {
        (None, _) => String::new(),
        (Some(start), None) => human_since(start, now),
        (Some(start), Some(end)) => human_since(start, end),
    };
    let conditions = list(&status["conditions"]);
    // hasJobCondition: the first condition of the type decides.
    let holds = |kind: &str| condition(conditions, kind).is_some_and(is_true);
    let deleting = !text(&job["metadata"]["deletionTimestamp"]).is_empty();
    let state = if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if holds("Suspended") {
        "Suspended"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(&spec["template"]["spec"]["containers"]);
    vec![
        name(job),
        Value::from(state),
        Value::from(completions),
        Value::from(duration),
        age(job, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(&spec["selector"])),
    ]
}

/// printCronJob: the schedule and its time zone, SUSPEND as "True",
/// "False" or "<unset>", how many of its jobs are active and how long ago
/// it last scheduled one.
fn cron_job_cells(cron_job: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &cron_job["spec"];
    let status = &cron_job["status"];
    let last_schedule = match &status["lastScheduleTime"] {
        Value::Null => "<none>".to_owned(),
        at => since(at, now),
    };
    let suspend = match spec["suspend"].as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = &spec["jobTemplate"]["spec"];
    let (names, images) = container_cells(&job_spec["template"]["spec"]["containers"]);
    vec![
        name(cron_job),
        Value::from(text(&spec["schedule"])),
        Value::from(spec["timeZone"].as_str().unwrap_or("<none>")),
        Value::from(suspend),
        Value::from(list(&status["active"]).len()),
        Value::from(last_schedule),
        age(cron_job, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(&job_spec["selector"])),
    ]
}

/// printDaemonSet: the scheduling counts from the status, and the pod
/// template's node selector.
fn daemon_set_cells(daemon_set: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &daemon_set["spec"];
    let status = &daemon_set["status"];
    let pod_spec = &spec["template"]["spec"];
    let (names, images) = container_cells(&pod_spec["containers"]);
    vec![
        name(daemon_set),
        Value::from(number(&status["desiredNumberScheduled"])),
        Value::from(number(&status["currentNumberScheduled"])),
        Value::from(number(&status["numberReady"])),
        Value::from(number(&status["updatedNumberScheduled"])),
        Value::from(number(&status["numberAvailable"])),
        Value::from(format_labels(&pod_spec["nodeSelector"])),
        age(daemon_set, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(&spec["selector"])),
    ]
}

/// printStatefulSet: READY is ready replicas out of desired ones.
fn stateful_set_cells(stateful_set: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &stateful_set["spec"];
    let ready = number(&stateful_set["status"]["readyReplicas"]);
    let desired = number(&spec["replicas"]);
    let (names, images) = container_cells(&spec["template"]["spec"]["containers"]);
    vec![
        name(stateful_set),
        Value::from(format!("{ready}/{desired}")),
        age(stateful_set, now),
        Value::from(names),
        Value::from(images),
    ]
}

/// printControllerRevision: CONTROLLER is the owner reference marked as
/// controller, as `kind.group/name`.
fn controller_revision_cells(revision: &Value, now: OffsetDateTime) -> Vec<Value> {
    let owners = list(&revision["metadata"]["ownerReferences"]);
    let controller = owners
        .iter()
        .find(|owner| owner["controller"].as_bool() == Some(true));
    let controller = controller.map_or_else(|| "<none>".to_owned(), controller_name);
    vec![
        name(revision),
        Value::from(controller),
        Value::from(number(&revision["revision"])),
        age(revision, now),
    ]
}

/// formatResourceName of a controller reference: the lowercase group kind
/// and the name (`daemonset.apps/fluentd`, `replicationcontroller/web`),
/// the bare name when the reference has neither kind nor group.
/// "<invalid>" for an apiVersion with two slashes, where Kubernetes fails
/// the whole request.
fn controller_name(owner: &Value) -> String {
    let api_version = text(&owner["apiVersion"]);
    // schema.ParseGroupVersion.
    let group = match api_version.matches('/').count() {
        0 => "",
        1 => api_version.split('/').next().unwrap_or(""),
        _ => return "<invalid>".to_owned(),
    };
    let kind = text(&owner["kind"]);
    let owner_name = text(&owner["name"]);
    let group_kind = match group {
        "" => kind.to_owned(),
        group => format!("{kind}.{group}"),
    };
    if group_kind.is_empty() {
        return owner_name.to_owned();
    }
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

/// printPersistentVolumeClaim: CAPACITY and ACCESS MODES come from the
/// status once the claim is bound to a volume, and are empty before.
fn persistent_volume_claim_cells(claim: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &claim["spec"];
    let status = &claim["status"];
    let volume = text(&spec["volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        let capacity = quantity_or(&status["capacity"]["storage"], "0");
        (capacity, access_modes(&status["accessModes"]))
    };
    vec![
        name(claim),
        Value::from(volume_phase(claim)),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class_name(claim)),
        Value::from(or_unset(&spec["volumeAttributesClassName"])),
        age(claim, now),
        Value::from(or_unset(&spec["volumeMode"])),
    ]
}

/// printPersistentVolume: CLAIM is the bound claim as `namespace/name`.
fn persistent_volume_cells(volume: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &volume["spec"];
    let claim = match &spec["claimRef"] {
        Value::Null => String::new(),
        claim => format!("{}/{}", text(&claim["namespace"]), text(&claim["name"])),
    };
    vec![
        name(volume),
        Value::from(quantity_or(&spec["capacity"]["storage"], "0")),
        Value::from(access_modes(&spec["accessModes"])),
        Value::from(text(&spec["persistentVolumeReclaimPolicy"])),
        Value::from(volume_phase(volume)),
        Value::from(claim),
        Value::from(storage_class_name(volume)),
        Value::from(or_unset(&spec["volumeAttributesClassName"])),
        Value::from(text(&volume["status"]["reason"])),
        age(volume, now),
        Value::from(or_unset(&spec["volumeMode"])),
    ]
}

/// A volume's or claim's STATUS: its phase, or Terminating once deleted.
fn volume_phase(object: &Value) -> &str {
    if !text(&object["metadata"]["deletionTimestamp"]).is_empty() {
        return "Terminating";
    }
    text(&object["status"]["phase"])
}

/// The access modes and their short names, in the order
/// GetAccessModesAsString lists them.
const ACCESS_MODES: [(&str, &str); 4] = [
    ("ReadWriteOnce", "RWO"),
    ("ReadOnlyMany", "ROX"),
    ("ReadWriteMany", "RWX"),
    ("ReadWriteOncePod", "RWOP"),
];

/// GetAccessModesAsString: the short names of the modes in `modes`, each
/// once, in Kubernetes' order whatever the object's.
fn access_modes(modes: &Value) -> String {
    let modes: Vec<&str> = list(modes).iter().map(text).collect();
    let mut short = Vec::new();
    for (mode, abbreviation) in ACCESS_MODES {
        if modes.contains(&mode) {
            short.push(abbreviation);
        }
    }
    short.join(",")
}

const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// GetPersistentVolume(Claim)Class: the beta annotation when there is one,
/// else `spec.storageClassName`.
fn storage_class_name(object: &Value) -> &str {
    let annotation = &object["metadata"]["annotations"][BETA_STORAGE_CLASS];
    match annotation.as_str() {
        Some(class) => class,
        None => text(&object["spec"]["storageClassName"]),
    }
}

/// How many hosts formatHosts lists before "+ N more...".
const INGRESS_HOSTS_SHOWN: usize = 3;

/// printIngress, with the API server's wide output (the address unclipped).
fn ingress_cells(ingress: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &ingress["spec"];
    let balancer = &ingress["status"]["loadBalancer"]["ingress"];
    let address = load_balancer_addresses(balancer).join(",");
    // formatPorts.
    let ports = if list(&spec["tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ingress),
        Value::from(spec["ingressClassName"].as_str().unwrap_or("<none>")),
        Value::from(ingress_hosts(list(&spec["rules"]))),
        Value::from(address),
        Value::from(ports),
        age(ingress, now),
    ]
}

/// formatHosts: the hosts of the first rules, up to three, then how many
/// rules more there are; "*" when none names a host.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == INGRESS_HOSTS_SHOWN {
            more = true;
        }
        let host = text(&rule["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_owned();
    }
    let shown = hosts.join(",");
    if more {
        let hidden = rules.len().saturating_sub(INGRESS_HOSTS_SHOWN);
        return format!("{shown} + {hidden} more...");
    }
    shown
}

/// printIngressClass: PARAMETERS as `Kind.apiGroup/name`.
fn ingress_class_cells(class: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &class["spec"];
    let parameters = match &spec["parameters"] {
        Value::Null => "<none>".to_owned(),
        parameters => {
            let kind = text(&parameters["kind"]);
            let target = text(&parameters["name"]);
            match parameters["apiGroup"].as_str() {
                Some(group) => format!("{kind}.{group}/{target}"),
                None => format!("{kind}/{target}"),
            }
        }
    };
    vec![
        name(class),
        Value::from(text(&spec["controller"])),
        Value::from(parameters),
        age(class, now),
    ]
}

fn network_policy_cells(policy: &Value, now: OffsetDateTime) -> Vec<Value> {
    let selector = format_label_selector(&policy["spec"]["podSelector"]);
    vec![name(policy), Value::from(selector), age(policy, now)]
}

/// printRoleBinding and printClusterRoleBinding: ROLE as `Kind/name`, and
/// the subjects by kind (rbac.SubjectsStrings; other kinds are left out).
fn role_binding_cells(binding: &Value, now: OffsetDateTime) -> Vec<Value> {
    let role = &binding["roleRef"];
    let role = format!("{}/{}", text(&role["kind"]), text(&role["name"]));
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in list(&binding["subjects"]) {
        let subject_name = text(&subject["name"]);
        match text(&subject["kind"]) {
            "User" => users.push(subject_name.to_owned()),
            "Group" => groups.push(subject_name.to_owned()),
            "ServiceAccount" => {
                let namespace = text(&subject["namespace"]);
                service_accounts.push(format!("{namespace}/{subject_name}"));
            }
            _ => {}
        }
    }
    vec![
        name(binding),
        Value::from(role),
        age(binding, now),
        Value::from(users.join(", ")),
        Value::from(groups.join(", ")),
        Value::from(service_accounts.join(", ")),
    ]
}

fn pod_disruption_budget_cells(budget: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &budget["spec"];
    vec![
        name(budget),
        Value::from(disruption_bound(&spec["minAvailable"])),
        Value::from(disruption_bound(&spec["maxUnavailable"])),
        Value::from(number(&budget["status"]["disruptionsAllowed"])),
        age(budget, now),
    ]
}

/// A budget's minAvailable or maxUnavailable, an IntOrString, as written
/// ("2", "50%"); "N/A" when unset.
fn disruption_bound(bound: &Value) -> String {
    match bound {
        Value::Number(count) => count.to_string(),
        Value::String(share) => share.clone(),
        _ => "N/A".to_owned(),
    }
}

/// printHorizontalPodAutoscaler: REFERENCE as `Kind/name`, TARGETS as
/// formatHPAMetrics writes them.
fn autoscaler_cells(autoscaler: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &autoscaler["spec"];
    let status = &autoscaler["status"];
    let target = &spec["scaleTargetRef"];
    let reference = format!("{}/{}", text(&target["kind"]), text(&target["name"]));
    let metrics = list(&spec["metrics"]);
    let targets = autoscaler_targets(metrics, list(&status["currentMetrics"]));
    let min_pods = match spec["minReplicas"].as_i64() {
        Some(min) => min.to_string(),
        None => "<unset>".to_owned(),
    };
    vec![
        name(autoscaler),
        Value::from(reference),
        Value::from(targets),
        Value::from(min_pods),
        Value::from(number(&spec["maxReplicas"])),
        Value::from(number(&status["currentReplicas"])),
        age(autoscaler, now),
    ]
}

/// How many metrics formatHPAMetrics lists before "+ N more...".
const METRICS_SHOWN: usize = 2;

/// formatHPAMetrics: the first two metrics, each as its current value
/// against its target, then how many more there are; "<none>" without
/// metrics.
fn autoscaler_targets(metrics: &[Value], statuses: &[Value]) -> String {
    if metrics.is_empty() {
        return "<none>".to_owned();
    }
    let shown: Vec<String> = metrics
        .iter()
        .take(METRICS_SHOWN)
        .enumerate()
        .map(|(index, metric)| metric_target(metric, statuses.get(index)))
        .collect();
    let shown = shown.join(", ");
    if metrics.len() > METRICS_SHOWN {
        let hidden = metrics.len() - METRICS_SHOWN;
        return format!("{shown} + {hidden} more...");
    }
    shown
}

/// One metric of formatHPAMetrics, against `status`, the current metric at
/// the same position: `current/target`, with " (avg)" for an average value
/// of an object or external metric, behind `name: ` for a (container)
/// resource, whose utilizations are percentages. The current value is
/// "<unknown>" until a status of the same source is there; a quantity
/// missing where Kubernetes expects one prints as Go prints a nil quantity,
/// "<nil>".
fn metric_target(metric: &Value, status: Option<&Value>) -> String {
    let source = match text(&metric["type"]) {
        "External" => "external",
        "Pods" => "pods",
        "Object" => "object",
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        _ => return "<unknown type>".to_owned(),
    };
    let spec = &metric[source];
    let target = &spec["target"];
    let average = &target["averageValue"];
    // Kubernetes reads the status only when it is of the metric's source.
    let current = status
        .map(|status| &status[source])
        .filter(|found| found.is_object())
        .map(|found| &found["current"]);
    let measured = |field: &str| match current {
        Some(current) => quantity_or(&current[field], "<nil>"),
        None => "<unknown>".to_owned(),
    };
    match source {
        "external" | "object" if !average.is_null() => {
            let value = current
                .map(|current| &current["averageValue"])
                .filter(|value| !value.is_null());
            let shown = value.map_or_else(|| "<unknown>".to_owned(), quantity_text);
            format!("{shown}/{} (avg)", quantity_text(average))
        }
        "external" | "object" => {
            let goal = quantity_or(&target["value"], "<nil>");
            format!("{}/{goal}", measured("value"))
        }
        "pods" => {
            let goal = quantity_or(average, "<nil>");
            format!("{}/{goal}", measured("averageValue"))
        }
        _ if !average.is_null() => {
            let resource = text(&spec["name"]);
            let goal = quantity_text(average);
            format!("{resource}: {}/{goal}", measured("averageValue"))
        }
        _ => {
            let resource = text(&spec["name"]);
            let utilization = current.and_then(|current| current["averageUtilization"].as_i64());
            let shown = utilization.map_or_else(|| "<unknown>".to_owned(), percent);
            let goal = target["averageUtilization"].as_i64();
            let goal = goal.map_or_else(|| "<auto>".to_owned(), percent);
            format!("{resource}: {shown}/{goal}")
        }
    }
}

fn percent(share: i64) -> String {
    format!("{share}%")
}

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// printStorageClass: the default class's name is marked "(default)";
/// unset fields show Kubernetes' defaults.
fn storage_class_cells(class: &Value, now: OffsetDateTime) -> Vec<Value> {
    let annotations = &class["metadata"]["annotations"];
    let is_default = [DEFAULT_CLASS, BETA_DEFAULT_CLASS]
        .iter()
        .any(|key| text(&annotations[*key]) == "true");
    let mut shown = text(&class["metadata"]["name"]).to_owned();
    if is_default {
        shown.push_str(" (default)");
    }
    let expansion = class["allowVolumeExpansion"].as_bool().unwrap_or(false);
    vec![
        Value::from(shown),
        Value::from(text(&class["provisioner"])),
        Value::from(class["reclaimPolicy"].as_str().unwrap_or("Delete")),
        Value::from(class["volumeBindingMode"].as_str().unwrap_or("Immediate")),
        Value::from(expansion),
        age(class, now),
    ]
}

/// printCSIDriver: the flags with Kubernetes' defaults, the token audiences
/// ("<unset>" without a list) and the lifecycle modes.
fn csi_driver_cells(driver: &Value, now: OffsetDateTime) -> Vec<Value> {
    let spec = &driver["spec"];
    let flag = |field: &str, unset: bool| spec[field].as_bool().unwrap_or(unset);
    let token_requests = match spec["tokenRequests"].as_array() {
        Some(requests) => {
            let audiences = requests.iter().map(|request| text(&request["audience"]));
            audiences.collect::<Vec<_>>().join(",")
        }
        None => "<unset>".to_owned(),
    };
    let modes = list(&spec["volumeLifecycleModes"]);
    let modes: Vec<&str> = modes.iter().map(text).collect();
    let modes = modes.join(",");
    vec![
        name(driver),
        Value::from(flag("attachRequired", true)),
        Value::from(flag("podInfoOnMount", false)),
        Value::from(flag("storageCapacity", false)),
        Value::from(token_requests),
        Value::from(flag("requiresRepublish", false)),
        Value::from(or_none(&modes)),
        age(driver, now),
    ]
}

fn lease_cells(lease: &Value, now: OffsetDateTime) -> Vec<Value> {
    let holder = text(&lease["spec"]["holderIdentity"]);
    vec![name(lease), Value::from(holder), age(lease, now)]
}

/// How many ports and endpoints listWithMoreString shows.
const SLICE_ITEMS_SHOWN: usize = 3;

/// printEndpointSlice: the ports (number, else name, else "*") and the
/// endpoints' addresses, three of each and how many more.
fn endpoint_slice_cells(slice: &Value, now: OffsetDateTime) -> Vec<Value> {
    let ports: Vec<String> = list(&slice["ports"]).iter().map(slice_port).collect();
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let addresses: Vec<&str> = list(&slice["endpoints"])
        .iter()
        .flat_map(|endpoint| list(&endpoint["addresses"]))
        .map(text)
        .collect();
    vec![
        name(slice),
        Value::from(text(&slice["addressType"])),
        Value::from(list_with_more(&ports)),
        Value::from(list_with_more(&addresses)),
        age(slice, now),
    ]
}

/// One port of an EndpointSlice: its number, else its name, else "*".
fn slice_port(port: &Value) -> String {
    match (port["port"].as_i64(), port["name"].as_str()) {
        (Some(number), _) => number.to_string(),
        (None, Some(port_name)) => port_name.to_owned(),
        (None, None) => "*".to_owned(),
    }
}

/// listWithMoreString: the first three items, then how many more there
/// are; "<unset>" for none.
fn list_with_more(items: &[&str]) -> String {
    let shown = items[..items.len().min(SLICE_ITEMS_SHOWN)].join(",");
    if items.len() > SLICE_ITEMS_SHOWN {
        let hidden = items.len() - SLICE_ITEMS_SHOWN;
        return format!("{shown} + {hidden} more...");
    }
    if shown.is_empty() {
        return "<unset>".to_owned();
    }
    shown
}

fn priority_class_cells(class: &Value, now: OffsetDateTime) -> Vec<Value> {
    vec![
        name(class),
        Value::from(number(&class["value"])),
        Value::from(class["globalDefault"].as_bool().unwrap_or(false)),
        age(class, now),
        Value::from(text(&class["preemptionPolicy"])),
    ]
}

/// printResourceQuota: `resource: used/hard` for each hard limit in the
/// status, by resource name; `limits.*` under LIMIT, the others under
/// REQUEST.
fn resource_quota_cells(quota: &Value, now: OffsetDateTime) -> Vec<Value> {
    let status = &quota["status"];
    let hard = status["hard"].as_object();
    let mut resources: Vec<(&String, &Value)> = hard.into_iter().flatten().collect();
    resources.sort_by_key(|(resource, _)| *resource);
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (resource, limit) in resources {
        let used = quantity_or(&status["used"][resource.as_str()], "0");
        let entry = format!("{resource}: {used}/{}", quantity_or(limit, "0"));
        if resource.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(quota),
        Value::from(requests.join(", ")),
        Value::from(limits.join(", ")),
        age(quota, now),
    ]
}

/// A quantity as the object holds it (the API server keeps quantities in
/// canonical form; a bare JSON number is read as written), or `missing`.
fn quantity_or(value: &Value, missing: &str) -> String {
    match value {
        Value::String(given) => given.clone(),
        Value::Number(given) => given.to_string(),
        _ => missing.to_owned(),
    }
}

/// A quantity known to be there (not null); anything but a string or a
/// number prints as "<invalid>".
fn quantity_text(value: &Value) -> String {
    quantity_or(value, "<invalid>")
}

/// Go's zero time, which the default table shows for an object without a
/// creation time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The default table's Created At: the creation time in UTC, RFC 3339.
fn created_at(object: &Value) -> Value {
    let stamp = &object["metadata"]["creationTimestamp"];
    let shown = match timestamp(stamp).and_then(rfc3339_utc) {
        Some(utc) => utc,
        None if text(stamp).is_empty() => ZERO_TIME.to_owned(),
        None => text(stamp).to_owned(),
    };
    Value::from(shown)
}

/// `at` in UTC, as Go's `time.RFC3339` writes it (whole seconds); None when
/// it is out of range in UTC.
fn rfc3339_utc(at: OffsetDateTime) -> Option<String> {
    let at = at.checked_to_offset(UtcOffset::UTC)?;
    let (year, month, day) = (at.year(), u8::from(at.month()), at.day());
    let (hour, minute, second) = (at.hour(), at.minute(), at.second());
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"
    ))
}

/// The object's name cell.
fn name(object: &Value) -> Value {
    Value::from(text(&object["metadata"]["name"]))
}

/// The object's AGE cell.
fn age(object: &Value, now: OffsetDateTime) -> Value {
    Value::from(since(&object["metadata"]["creationTimestamp"], now))
}

/// translateTimestampSince: the age of the timestamp at `value` seen at
/// `now`, or "<unknown>" when there is none.
fn since(value: &Value, now: OffsetDateTime) -> String {
    match timestamp(value) {
        Some(at) => human_since(at, now),
        None => "<unknown>".to_owned(),
    }
}

fn human_since(at: OffsetDateTime, now: OffsetDateTime) -> String {
    human_seconds((now - at).whole_seconds())
}

/// The RFC 3339 timestamp at `value`; None when missing or malformed.
fn timestamp(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()
}

/// The later of two optional times.
fn latest(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The first condition of type `kind` among `conditions`.
fn condition<'a>(conditions: &'a [Value], kind: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| text(&c["type"]) == kind)
}

fn is_true(condition: &Value) -> bool {
    text(&condition["status"]) == "True"
}

/// The string at `value`, or "" when it is missing or no string.
fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// The integer at `value`, or 0 when it is missing or no integer.
fn number(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// The array at `value`, or an empty one.
fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// How many keys the map at `value` has (0 when it is no map).
fn entries(value: &Value) -> usize {
    value.as_object().map_or(0, Map::len)
}

fn or_none(text: &str) -> &str {
    match text {
        "" => "<none>",
        text => text,
    }
}

/// The string at `value`, or "<unset>" when there is none (where
/// Kubernetes' type has a nil pointer).
fn or_unset(value: &Value) -> &str {
    value.as_str().unwrap_or("<unset>")
}

fn or_unknown(text: &str) -> &str {
    match text {
        "" => "<unknown>",
        text => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_objects::registry::KINDS;

    const NOW: &str = "2026-11-30T12:00:00Z";
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse(NOW, &Rfc3339).unwrap()
    }

    /// A row's cells keyed by their column names.
    fn named_row(kind: &str, object: &Value) -> Value {
        let row = cells(kind, object, now());
        assert_eq!(row.len(), columns(kind).len(), "{kind}");
        let names = columns(kind).iter().map(|c| c.name.to_owned());
        Value::Object(names.zip(row).collect())
    }

    /// A kind's headers of one priority, comma-separated.
    fn headers(kind: &str, priority: i32) -> String {
        let shown = columns(kind).iter().filter(|c| c.priority == priority);
        shown.map(|c| c.name).collect::<Vec<_>>().join(",")
    }

    fn assert_headers(kind: &str, plain: &str, wide: &str) {
        assert_eq!(headers(kind, 0), plain, "{kind}");
        assert_eq!(headers(kind, 1), wide, "{kind}");
    }

    #[test]
    fn a_table_written_row_by_row_is_the_table() {
        let pods = [crash_looping_pod(), finished_pod()];
        let refs: Vec<&Value> = pods.iter().collect();
        let mut expected = table("Pod", &refs, "42", true, now());
        expected["metadata"]["continue"] = json!("token");
        let metadata = json!({"resourceVersion": "42", "continue": "token"});
        let mut out = Vec::new();
        write_table(&mut out, "Pod", pods.iter().cloned(), &metadata, now());
        let written: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(written, expected);
        assert_eq!(written["rows"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            written["rows"][0]["object"]["metadata"],
            pods[0]["metadata"]
        );
    }

    /// Two containers, the second crash-looping after 3 restarts, the last
    /// one 2 minutes ago.
    fn crash_looping_pod() -> Value {
        json!({
            "metadata": {
                "name": "web",
                "namespace": "default",
                "creationTimestamp": "2026-11-30T11:55:00Z"
            },
            "spec": {
                "nodeName": "node-a",
                "containers": [
                    {"name": "app", "image": "nginx"},
                    {"name": "log", "image": "busybox"}
                ]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.5",
                "podIPs": [{"ip": "10.42.0.5"}],
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "app",
                        "ready": true,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-11-30T11:55:10Z"}}
                    },
                    {
                        "name": "log",
                        "ready": false,
                        "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {"exitCode": 1, "finishedAt": "2026-11-30T11:58:00Z"}
                        }
                    }
                ]
            }
        })
    }

    /// One ready container, running for an hour.
    fn running_pod() -> Value {
        json!({
            "metadata": {"name": "api", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "api", "image": "api:1"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "api", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        })
    }

    /// A pod whose only container finished well, being deleted.
    fn finished_pod() -> Value {
        json!({
            "metadata": {"name": "job-x", "deletionTimestamp": "2026-11-30T11:59:00Z"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "main",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
                    }
                ]
            }
        })
    }

    /// A pod with two init containers whose statuses are `init_statuses`.
    fn initializing_pod(init_statuses: Value) -> Value {
        json!({
            "metadata": {"name": "db"},
            "spec": {
                "initContainers": [{"name": "migrate"}, {"name": "seed"}],
                "containers": [{"name": "db"}]
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": init_statuses,
                "containerStatuses": [
                    {"name": "db", "state": {"waiting": {"reason": "PodInitializing"}}}
                ]
            }
        })
    }

    fn init_status(init_statuses: Value) -> Value {
        named_row("Pod", &initializing_pod(init_statuses))["Status"].clone()
    }

    /// The status of the init container "migrate" in state `state`.
    fn migrate(state: Value) -> Value {
        json!({"name": "migrate", "state": state})
    }

    /// The STATUS of a running pod whose one container is in state `state`.
    fn container_status(state: Value) -> Value {
        let pod = json!({
            "metadata": {"name": "one"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "main", "state": state}]}
        });
        named_row("Pod", &pod)["Status"].clone()
    }

    /// A finished job container beside a running server, in a pod whose
    /// Ready condition is `pod_ready`.
    fn job_beside_server(pod_ready: &str) -> Value {
        json!({
            "metadata": {"name": "mixed"},
            "spec": {"containers": [{"name": "job"}, {"name": "server"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": pod_ready}],
                "containerStatuses": [
                    {
                        "name": "job",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
                    },
                    {"name": "server", "ready": true, "state": {"running": {}}}
                ]
            }
        })
    }

    /// A cordoned control-plane node, ready for 10 days.
    fn node() -> Value {
        json!({
            "metadata": {
                "name": "node-a",
                "creationTimestamp": "2026-11-20T12:00:00Z",
                "labels": {
                    "kubernetes.io/hostname": "node-a",
                    "node-role.kubernetes.io/master": "",
                    "node-role.kubernetes.io/control-plane": "",
                    "node-role.kubernetes.io/": "ignored",
                    "kubernetes.io/role": "etcd"
                }
            },
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True"}
                ],
                "addresses": [
                    {"type": "Hostname", "address": "node-a"},
                    {"type": "InternalIP", "address": "192.168.1.10"}
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.34.0+skiff",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0-28-amd64",
                    "containerRuntimeVersion": "containerd://1.7.24"
                }
            }
        })
    }

    fn namespace() -> Value {
        json!({
            "metadata": {"name": "default", "creationTimestamp": "2026-11-30T11:59:00Z"},
            "status": {"phase": "Active"}
        })
    }

    /// A NodePort service, three hours old.
    fn service() -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-30T09:00:00Z"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.43.0.20",
                "clusterIPs": ["10.43.0.20"],
                "selector": {"tier": "front", "app": "web"},
                "ports": [
                    {"port": 80, "nodePort": 30080, "protocol": "TCP", "targetPort": 8080},
                    {"port": 53, "protocol": "UDP"}
                ]
            }
        })
    }

    fn endpoints(subsets: Value) -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-30T11:58:00Z"},
            "subsets": subsets
        })
    }

    fn ready_endpoints() -> Value {
        endpoints(json!([{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80}]}]))
    }

    fn endpoints_cell(subsets: Value) -> Value {
        named_row("Endpoints", &endpoints(subsets))["Endpoints"].clone()
    }

    /// Three replicas, two ready, selected with labels and expressions.
    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-30T11:50:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [
                        {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                        {"key": "canary", "operator": "DoesNotExist"}
                    ]
                },
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "nginx", "image": "nginx:1.27"},
                            {"name": "log", "image": "busybox"}
                        ]
                    }
                }
            },
            "status": {
                "replicas": 3,
                "readyReplicas": 2,
                "updatedReplicas": 3,
                "availableReplicas": 2
            }
        })
    }

    fn replica_set() -> Value {
        json!({
            "metadata": {"name": "web-5d4f", "creationTimestamp": "2026-11-30T11:59:15Z"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"pod-template-hash": "5d4f", "app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}
            },
            "status": {"replicas": 3, "readyReplicas": 1}
        })
    }

    fn secret() -> Value {
        json!({
            "metadata": {"name": "creds", "creationTimestamp": "2026-11-29T12:00:00Z"},
            "type": "Opaque",
            "data": {"user": "YWRtaW4=", "password": "c2VjcmV0"}
        })
    }

    fn config_map() -> Value {
        json!({
            "metadata": {"name": "settings", "creationTimestamp": "2025-11-30T12:00:00Z"},
            "data": {"a": "1", "b": "2"},
            "binaryData": {"c": "Aw=="}
        })
    }

    fn service_account() -> Value {
        json!({
            "metadata": {"name": "builder", "creationTimestamp": "2024-11-29T12:00:00Z"},
            "secrets": [{"name": "builder-token"}]
        })
    }

    /// A repeated kubelet warning about a pod's container.
    fn event() -> Value {
        json!({
            "metadata": {"name": "web.17f3a", "namespace": "default"},
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "involvedObject": {
                "kind": "Pod",
                "name": "web",
                "namespace": "default",
                "fieldPath": "spec.containers{log}"
            },
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2026-11-30T11:55:00Z",
            "lastTimestamp": "2026-11-30T11:59:30Z",
            "count": 4
        })
    }

    /// A Role: Kubernetes has no printer for it.
    fn role() -> Value {
        json!({
            "metadata": {"name": "pod-reader", "creationTimestamp": "2026-11-30T13:00:00+01:00"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
        })
    }

    fn custom_resource_definition() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com", "creationTimestamp": "2026-11-30T12:00:00Z"},
            "spec": {"group": "example.com", "names": {"plural": "widgets", "kind": "Widget"}}
        })
    }

    fn limit_range() -> Value {
        json!({
            "metadata": {"name": "defaults", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {
                "limits": [
                    {"type": "Container", "default": {"cpu": "500m"}, "max": {"cpu": "2"}}
                ]
            }
        })
    }

    /// A finished one-pod Job that took 98 seconds.
    fn job() -> Value {
        json!({
            "metadata": {"name": "migrate", "creationTimestamp": "2026-11-30T11:50:00Z"},
            "spec": {
                "completions": 1,
                "parallelism": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "8c1f"}},
                "template": {
                    "spec": {"containers": [{"name": "migrate", "image": "migrate:2"}]}
                }
            },
            "status": {
                "succeeded": 1,
                "startTime": "2026-11-30T11:50:02Z",
                "completionTime": "2026-11-30T11:51:40Z",
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"}
                ]
            }
        })
    }

    /// A nightly CronJob with one job running.
    fn cron_job() -> Value {
        json!({
            "metadata": {"name": "backup", "creationTimestamp": "2026-11-28T12:00:00Z"},
            "spec": {
                "schedule": "0 2 * * *",
                "timeZone": "Europe/Paris",
                "suspend": false,
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {"containers": [{"name": "dump", "image": "postgres:17"}]}
                        }
                    }
                }
            },
            "status": {
                "active": [{"kind": "Job", "name": "backup-29412", "namespace": "default"}],
                "lastScheduleTime": "2026-11-30T02:00:00Z"
            }
        })
    }

    /// A log shipper on three Linux nodes, two of them ready.
    fn daemon_set() -> Value {
        json!({
            "metadata": {"name": "fluent-bit", "creationTimestamp": "2026-11-23T12:00:00Z"},
            "spec": {
                "selector": {"matchLabels": {"app": "fluent-bit"}},
                "template": {
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [{"name": "fluent-bit", "image": "fluent/fluent-bit:3.2"}]
                    }
                }
            },
            "status": {
                "desiredNumberScheduled": 3,
                "currentNumberScheduled": 3,
                "numberReady": 2,
                "updatedNumberScheduled": 3,
                "numberAvailable": 2
            }
        })
    }

    fn stateful_set() -> Value {
        json!({
            "metadata": {"name": "db", "creationTimestamp": "2026-11-30T09:30:00Z"},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "postgres", "image": "postgres:17"},
                            {"name": "exporter", "image": "postgres-exporter:0.15"}
                        ]
                    }
                }
            },
            "status": {"replicas": 3, "readyReplicas": 2}
        })
    }

    /// A DaemonSet's revision: its first owner reference is no controller.
    fn controller_revision() -> Value {
        json!({
            "metadata": {
                "name": "fluent-bit-6d8f",
                "creationTimestamp": "2026-11-23T12:00:00Z",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "fluent-bit"},
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": "fluent-bit",
                        "controller": true
                    }
                ]
            },
            "data": {},
            "revision": 2
        })
    }

    /// A claim bound to a larger volume than it asked for.
    fn persistent_volume_claim() -> Value {
        json!({
            "metadata": {"name": "data-db-0", "creationTimestamp": "2026-11-30T09:30:00Z"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-path",
                "volumeName": "pvc-3f1c",
                "volumeMode": "Filesystem",
                "resources": {"requests": {"storage": "5Gi"}}
            },
            "status": {
                "phase": "Bound",
                "capacity": {"storage": "8Gi"},
                "accessModes": ["ReadWriteOncePod", "ReadWriteOnce"]
            }
        })
    }

    fn persistent_volume() -> Value {
        json!({
            "metadata": {"name": "pvc-3f1c", "creationTimestamp": "2026-11-30T09:30:05Z"},
            "spec": {
                "capacity": {"storage": "8Gi"},
                "accessModes": ["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "namespace": "db",
                    "name": "data-db-0"
                },
                "storageClassName": "local-path",
                "volumeAttributesClassName": "gold",
                "volumeMode": "Block",
                "hostPath": {"path": "/var/lib/volumes/pvc-3f1c"}
            },
            "status": {"phase": "Bound"}
        })
    }

    /// Five rules (one without a host), TLS, two load balancer addresses.
    fn ingress() -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {
                "ingressClassName": "traefik",
                "tls": [{"hosts": ["web.example.com"], "secretName": "web-tls"}],
                "rules": [
                    {"host": "web.example.com"},
                    {"host": "api.example.com"},
                    {"http": {"paths": []}},
                    {"host": "admin.example.com"},
                    {"host": "docs.example.com"}
                ]
            },
            "status": {
                "loadBalancer": {"ingress": [{"ip": "192.168.1.11"}, {"ip": "192.168.1.10"}]}
            }
        })
    }

    fn ingress_class() -> Value {
        json!({
            "metadata": {"name": "traefik", "creationTimestamp": "2026-11-20T12:00:00Z"},
            "spec": {
                "controller": "traefik.io/ingress-controller",
                "parameters": {
                    "apiGroup": "k8s.example.com",
                    "kind": "IngressParameters",
                    "name": "external-lb"
                }
            }
        })
    }

    fn network_policy() -> Value {
        json!({
            "metadata": {"name": "db-ingress", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "db"}},
                "policyTypes": ["Ingress"]
            }
        })
    }

    /// Users, a group, a service account and a kind Kubernetes leaves out.
    fn role_binding() -> Value {
        json!({
            "metadata": {
                "name": "read-pods",
                "namespace": "default",
                "creationTimestamp": "2026-11-30T11:59:00Z"
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader"
            },
            "subjects": [
                {"kind": "User", "name": "jane"},
                {"kind": "ServiceAccount", "name": "builder", "namespace": "ci"},
                {"kind": "Group", "name": "devs"},
                {"kind": "User", "name": "joe"},
                {"kind": "Robot", "name": "r2"}
            ]
        })
    }

    fn cluster_role_binding() -> Value {
        json!({
            "metadata": {"name": "admins", "creationTimestamp": "2026-11-20T12:00:00Z"},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "Group", "name": "system:masters"}]
        })
    }

    fn pod_disruption_budget() -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2}
        })
    }

    /// Three metrics, only the first one measured yet.
    fn autoscaler() -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 10,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80}
                        }
                    },
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "memory",
                            "target": {"type": "AverageValue", "averageValue": "500Mi"}
                        }
                    },
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "requests_per_second"},
                            "target": {"type": "AverageValue", "averageValue": "1k"}
                        }
                    }
                ]
            },
            "status": {
                "currentReplicas": 3,
                "desiredReplicas": 3,
                "currentMetrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "current": {"averageUtilization": 65, "averageValue": "130m"}
                        }
                    }
                ]
            }
        })
    }

    /// The default class.
    fn storage_class() -> Value {
        json!({
            "metadata": {
                "name": "local-path",
                "creationTimestamp": "2026-11-20T12:00:00Z",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}
            },
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": true
        })
    }

    fn csi_driver() -> Value {
        json!({
            "metadata": {"name": "csi.example.com", "creationTimestamp": "2026-11-20T12:00:00Z"},
            "spec": {
                "attachRequired": false,
                "podInfoOnMount": true,
                "tokenRequests": [
                    {"audience": "vault"},
                    {"audience": "gcp", "expirationSeconds": 3600}
                ],
                "volumeLifecycleModes": ["Persistent", "Ephemeral"]
            }
        })
    }

    fn lease() -> Value {
        json!({
            "metadata": {"name": "skiff-leader", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {"holderIdentity": "master-1", "leaseDurationSeconds": 15}
        })
    }

    /// Four ports (one by name only, one with neither) and four addresses.
    fn endpoint_slice() -> Value {
        json!({
            "metadata": {"name": "web-abc12", "creationTimestamp": "2026-11-30T11:58:00Z"},
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "metrics"},
                {},
                {"port": 9090}
            ],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.42.1.7", "10.42.2.9"]},
                {"addresses": ["10.42.3.4"]}
            ]
        })
    }

    fn priority_class() -> Value {
        json!({
            "metadata": {"name": "high-priority", "creationTimestamp": "2026-11-20T12:00:00Z"},
            "value": 1000000,
            "globalDefault": false,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": "For the services users see."
        })
    }

    /// Hard limits on requests, limits and pods; one not used yet.
    fn resource_quota() -> Value {
        json!({
            "metadata": {"name": "compute", "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {"hard": {"requests.cpu": "1", "pods": "10"}},
            "status": {
                "hard": {
                    "requests.cpu": "1",
                    "limits.memory": "2Gi",
                    "pods": "10",
                    "limits.cpu": "2",
                    "requests.memory": "1Gi"
                },
                "used": {
                    "requests.cpu": "500m",
                    "limits.memory": "512Mi",
                    "pods": "3",
                    "limits.cpu": "1"
                }
            }
        })
    }

    /// Fields of the wrong JSON types wherever the printers look.
    fn mistyped() -> Value {
        json!({
            "metadata": {
                "name": ["x"],
                "creationTimestamp": 5,
                "deletionTimestamp": {},
                "annotations": [],
                "ownerReferences": [7, {"controller": true, "apiVersion": "a/b/c"}]
            },
            "spec": {
                "replicas": "3",
                "completions": "all",
                "selector": {"matchLabels": {"a": 1}, "matchExpressions": "x"},
                "podSelector": [],
                "template": {"spec": {"containers": [1, {"name": 2}], "nodeSelector": 3}},
                "jobTemplate": [],
                "rules": [1, {"host": 2}],
                "tls": "yes",
                "metrics": [7, {"type": "Resource"}, {"type": "Pods", "pods": 1}],
                "claimRef": 3,
                "parameters": "x",
                "tokenRequests": [2],
                "capacity": {"storage": true},
                "accessModes": "RWO",
                "minAvailable": [],
                "scaleTargetRef": "web"
            },
            "status": {
                "conditions": 9,
                "hard": {"cpu": []},
                "used": 4,
                "capacity": [],
                "currentMetrics": [{"resource": 1}],
                "loadBalancer": {"ingress": [1, {"ip": 2}]},
                "active": {}
            },
            "subjects": [1, {"kind": 2}],
            "roleRef": 1,
            "ports": [{"port": "x"}, 1],
            "endpoints": [{"addresses": "x"}, 1, {"addresses": [1]}],
            "value": "high",
            "provisioner": []
        })
    }

    /// A realistic object of each kind with a printer, and of one without.
    fn examples() -> Vec<(&'static str, Value)> {
        vec![
            ("Pod", crash_looping_pod()),
            ("Node", node()),
            ("Namespace", namespace()),
            ("Service", service()),
            ("Endpoints", ready_endpoints()),
            ("Deployment", deployment()),
            ("ReplicaSet", replica_set()),
            ("Secret", secret()),
            ("ConfigMap", config_map()),
            ("ServiceAccount", service_account()),
            ("Event", event()),
            ("Job", job()),
            ("CronJob", cron_job()),
            ("DaemonSet", daemon_set()),
            ("StatefulSet", stateful_set()),
            ("ControllerRevision", controller_revision()),
            ("PersistentVolumeClaim", persistent_volume_claim()),
            ("PersistentVolume", persistent_volume()),
            ("Ingress", ingress()),
            ("IngressClass", ingress_class()),
            ("NetworkPolicy", network_policy()),
            ("RoleBinding", role_binding()),
            ("ClusterRoleBinding", cluster_role_binding()),
            ("PodDisruptionBudget", pod_disruption_budget()),
            ("HorizontalPodAutoscaler", autoscaler()),
            ("StorageClass", storage_class()),
            ("CSIDriver", csi_driver()),
            ("Lease", lease()),
            ("EndpointSlice", endpoint_slice()),
            ("PriorityClass", priority_class()),
            ("ResourceQuota", resource_quota()),
            ("Role", role()),
            ("ClusterRole", role()),
            ("LimitRange", limit_range()),
            ("CustomResourceDefinition", custom_resource_definition()),
        ]
    }

    #[test]
    fn human_duration_follows_kubernetes_in_every_branch() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * HOUR - 1, "179m"),
            (3 * HOUR, "3h"),
            (3 * HOUR + 60, "3h1m"),
            (8 * HOUR - 1, "7h59m"),
            (8 * HOUR, "8h"),
            (48 * HOUR - 1, "47h"),
            (48 * HOUR, "2d"),
            (49 * HOUR, "2d1h"),
            (8 * DAY - 1, "7d23h"),
            (8 * DAY, "8d"),
            (2 * YEAR - 1, "729d"),
            (2 * YEAR, "2y"),
            (2 * YEAR + DAY, "2y1d"),
            (8 * YEAR - 1, "7y364d"),
            (8 * YEAR, "8y"),
            (8 * YEAR + DAY, "8y"),
            (100 * YEAR, "100y"),
            (u64::MAX, "292471208677y"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(human_duration(Duration::from_secs(*seconds)), *shown);
        }
    }

    #[test]
    fn ages_allow_a_second_of_clock_skew_and_need_a_time() {
        let age_of = |created: Value| {
            let object = json!({"metadata": {"name": "n", "creationTimestamp": created}});
            named_row("Namespace", &object)["Age"].clone()
        };
        assert_eq!(age_of(json!("2026-11-30T11:57:59Z")), "2m1s");
        assert_eq!(age_of(json!("2026-11-30T12:30:00+01:00")), "30m");
        assert_eq!(age_of(json!("2026-11-30T11:59:59.5Z")), "0s");
        assert_eq!(age_of(json!("2026-11-30T12:00:01Z")), "0s");
        assert_eq!(age_of(json!("2026-11-30T12:00:05Z")), "<invalid>");
        assert_eq!(age_of(json!("yesterday")), "<unknown>");
        assert_eq!(age_of(Value::Null), "<unknown>");
    }

    #[test]
    fn columns_are_those_of_kubernetes() {
        assert_headers(
            "Pod",
            "Name,Ready,Status,Restarts,Age",
            "IP,Node,Nominated Node,Readiness Gates",
        );
        assert_headers(
            "Node",
            "Name,Status,Roles,Age,Version",
            "Internal-IP,External-IP,OS-Image,Kernel-Version,Container-Runtime",
        );
        assert_headers("Namespace", "Name,Status,Age", "");
        assert_headers(
            "Service",
            "Name,Type,Cluster-IP,External-IP,Port(s),Age",
            "Selector",
        );
        assert_headers("Endpoints", "Name,Endpoints,Age", "");
        assert_headers(
            "Deployment",
            "Name,Ready,Up-to-date,Available,Age",
            "Containers,Images,Selector",
        );
        assert_headers(
            "ReplicaSet",
            "Name,Desired,Current,Ready,Age",
            "Containers,Images,Selector",
        );
        assert_headers("Secret", "Name,Type,Data,Age", "");
        assert_headers("ConfigMap", "Name,Data,Age", "");
        assert_headers("ServiceAccount", "Name,Secrets,Age", "");
        assert_headers(
            "Event",
            "Last Seen,Type,Reason,Object,Message",
            "Subobject,Source,First Seen,Count,Name",
        );
        assert_headers(
            "Job",
            "Name,Status,Completions,Duration,Age",
            "Containers,Images,Selector",
        );
        assert_headers(
            "CronJob",
            "Name,Schedule,Timezone,Suspend,Active,Last Schedule,Age",
            "Containers,Images,Selector",
        );
        assert_headers(
            "DaemonSet",
            "Name,Desired,Current,Ready,Up-to-date,Available,Node Selector,Age",
            "Containers,Images,Selector",
        );
        assert_headers("StatefulSet", "Name,Ready,Age", "Containers,Images");
        assert_headers("ControllerRevision", "Name,Controller,Revision,Age", "");
        assert_headers(
            "PersistentVolumeClaim",
            "Name,Status,Volume,Capacity,Access Modes,StorageClass,VolumeAttributesClass,Age",
            "VolumeMode",
        );
        assert_headers(
            "PersistentVolume",
            "Name,Capacity,Access Modes,Reclaim Policy,Status,Claim,StorageClass,\
             VolumeAttributesClass,Reason,Age",
            "VolumeMode",
        );
        assert_headers("Ingress", "Name,Class,Hosts,Address,Ports,Age", "");
        assert_headers("IngressClass", "Name,Controller,Parameters,Age", "");
        assert_headers("NetworkPolicy", "Name,Pod-Selector,Age", "");
        for binding in ["RoleBinding", "ClusterRoleBinding"] {
            assert_headers(binding, "Name,Role,Age", "Users,Groups,ServiceAccounts");
        }
        assert_headers(
            "PodDisruptionBudget",
            "Name,Min Available,Max Unavailable,Allowed Disruptions,Age",
            "",
        );
        assert_headers(
            "HorizontalPodAutoscaler",
            "Name,Reference,Targets,MinPods,MaxPods,Replicas,Age",
            "",
        );
        assert_headers(
            "StorageClass",
            "Name,Provisioner,ReclaimPolicy,VolumeBindingMode,AllowVolumeExpansion,Age",
            "",
        );
        assert_headers(
            "CSIDriver",
            "Name,AttachRequired,PodInfoOnMount,StorageCapacity,TokenRequests,\
             RequiresRepublish,Modes,Age",
            "",
        );
        assert_headers("Lease", "Name,Holder,Age", "");
        assert_headers("EndpointSlice", "Name,AddressType,Ports,Endpoints,Age", "");
        assert_headers(
            "PriorityClass",
            "Name,Value,Global-Default,Age,PreemptionPolicy",
            "",
        );
        assert_headers("ResourceQuota", "Name,Request,Limit,Age", "");
        for kind in ["Role", "ClusterRole", "LimitRange"] {
            assert_headers(kind, "Name,Created At", "");
            assert_eq!(columns(kind)[1].value_type, "date");
        }
        fn types(kind: &str) -> Vec<&'static str> {
            columns(kind).iter().map(|c| c.value_type).collect()
        }
        assert_eq!(types("CronJob")[3..5], ["boolean", "integer"]);
        assert_eq!(types("CSIDriver")[1..4], ["boolean", "boolean", "boolean"]);
        assert_eq!(types("PriorityClass")[1..3], ["integer", "boolean"]);
        assert_eq!(types("DaemonSet")[1..6], ["integer"; 5]);
    }

    #[test]
    fn each_kind_has_one_name_column() {
        for (kind, _) in examples() {
            let named = columns(kind).iter().filter(|c| c.format == "name");
            let named: Vec<&str> = named.map(|c| c.name).collect();
            assert_eq!(named, ["Name"], "{kind}");
        }
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        let odd = json!({"metadata": 7, "spec": [], "status": "x"});
        for (kind, example) in examples() {
            let width = columns(kind).len();
            for object in [example, json!({}), json!(null), odd.clone(), mistyped()] {
                assert_eq!(cells(kind, &object, now()).len(), width, "{kind}");
            }
        }
    }

    #[test]
    fn every_stored_kind_has_its_kubernetes_printer() {
        // The reviews are answered, never listed: they have no printer.
        let stored = || KINDS.iter().filter(|i| i.is_stored());
        let mut defaulted = Vec::new();
        for info in stored() {
            let kind = info.name;
            let width = columns(kind).len();
            for object in [json!({}), json!(null), mistyped()] {
                assert_eq!(cells(kind, &object, now()).len(), width, "{kind}");
            }
            if columns(kind) == DEFAULT_COLUMNS {
                defaulted.push(kind);
            }
        }
        // The kinds Kubernetes has no printer for either.
        assert_eq!(
            defaulted,
            [
                "LimitRange",
                "Role",
                "ClusterRole",
                "CustomResourceDefinition"
            ]
        );
        let realistic = examples();
        for info in stored() {
            let shown = realistic.iter().any(|(kind, _)| *kind == info.name);
            assert!(shown, "no example of {}", info.name);
        }
    }

    #[test]
    fn cells_are_strings_integers_or_booleans_as_kubernetes_sends_them() {
        for (kind, example) in examples() {
            for (column, cell) in columns(kind).iter().zip(cells(kind, &example, now())) {
                let integer = column.value_type == "integer";
                assert!(!integer || cell.is_i64(), "{kind}: {cell}");
                let scalar = cell.is_string() || cell.is_i64() || cell.is_boolean();
                assert!(scalar, "{kind}: {cell}");
            }
        }
    }

    #[test]
    fn pod_row_reports_a_crash_looping_container() {
        assert_eq!(
            named_row("Pod", &crash_looping_pod()),
            json!({
                "Name": "web",
                "Ready": "1/2",
                "Status": "CrashLoopBackOff",
                "Restarts": "3 (2m ago)",
                "Age": "5m",
                "IP": "10.42.0.5",
                "Node": "node-a",
                "Nominated Node": "<none>",
                "Readiness Gates": "<none>"
            })
        );
    }

    #[test]
    fn pod_row_of_a_pending_pod_without_statuses() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let mut pending = pod.clone();
        pending["status"] = json!({"phase": "Pending"});
        assert_eq!(
            named_row("Pod", &pending),
            json!({
                "Name": "p",
                "Ready": "0/1",
                "Status": "Pending",
                "Restarts": "0",
                "Age": "<unknown>",
                "IP": "<none>",
                "Node": "<none>",
                "Nominated Node": "<none>",
                "Readiness Gates": "<none>"
            })
        );
        let mut gated = pod;
        gated["status"] = json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
        });
        assert_eq!(named_row("Pod", &gated)["Status"], "SchedulingGated");
    }

    #[test]
    fn a_pod_being_deleted_is_terminating_unless_finished() {
        let mut pod = running_pod();
        assert_eq!(named_row("Pod", &pod)["Status"], "Running");
        assert_eq!(named_row("Pod", &pod)["Age"], "60m");
        pod["metadata"]["deletionTimestamp"] = json!("2026-11-30T11:59:00Z");
        assert_eq!(named_row("Pod", &pod)["Status"], "Terminating");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(named_row("Pod", &pod)["Status"], "Unknown");

        let finished = named_row("Pod", &finished_pod());
        assert_eq!(finished["Status"], "Completed");
        assert_eq!(finished["Ready"], "0/1");
    }

    #[test]
    fn pod_status_shows_init_container_progress_and_failures() {
        let migrated = migrate(json!({"terminated": {"exitCode": 0}}));
        let seeding = json!({"name": "seed", "state": {"running": {}}});
        assert_eq!(init_status(json!([migrated, seeding])), "Init:1/2");
        let waiting = migrate(json!({"waiting": {"reason": "PodInitializing"}}));
        assert_eq!(init_status(json!([waiting])), "Init:0/2");
        let crashing = migrate(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
        assert_eq!(init_status(json!([crashing])), "Init:CrashLoopBackOff");
        let failed = migrate(json!({"terminated": {"exitCode": 1}}));
        assert_eq!(init_status(json!([failed])), "Init:ExitCode:1");
        let killed = migrate(json!({"terminated": {"exitCode": 137, "signal": 9}}));
        assert_eq!(init_status(json!([killed])), "Init:Signal:9");
        let oom = migrate(json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}));
        assert_eq!(init_status(json!([oom])), "Init:OOMKilled");
    }

    #[test]
    fn restarts_of_a_failing_init_container_are_counted() {
        let restarted = json!({
            "name": "migrate",
            "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-30T11:59:30Z"}}
        });
        let row = named_row("Pod", &initializing_pod(json!([restarted])));
        assert_eq!(row["Restarts"], "2 (30s ago)");
        assert_eq!(row["Ready"], "0/1");
    }

    #[test]
    fn pod_status_shows_why_a_container_stopped_or_waits() {
        let exited = json!({"terminated": {"exitCode": 2}});
        assert_eq!(container_status(exited), "ExitCode:2");
        let signalled = json!({"terminated": {"exitCode": 143, "signal": 15}});
        assert_eq!(container_status(signalled), "Signal:15");
        let errored = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(container_status(errored), "Error");
        let pulling = json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(container_status(pulling), "ImagePullBackOff");
        let creating = json!({"waiting": {"reason": "ContainerCreating"}});
        assert_eq!(container_status(creating), "ContainerCreating");
        let started = json!({"running": {}});
        assert_eq!(container_status(started), "Running");
    }

    #[test]
    fn a_completed_container_beside_a_running_one_leaves_the_pod_running() {
        let ready = named_row("Pod", &job_beside_server("True"));
        assert_eq!(ready["Status"], "Running");
        assert_eq!(ready["Ready"], "1/2");
        let not_ready = named_row("Pod", &job_beside_server("False"));
        assert_eq!(not_ready["Status"], "NotReady");
    }

    #[test]
    fn started_sidecars_count_as_ready_containers() {
        let pod = json!({
            "metadata": {"name": "meshed"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"}
                ],
                "initContainerStatuses": [
                    {
                        "name": "proxy",
                        "started": true,
                        "ready": true,
                        "restartCount": 1,
                        "state": {"running": {}}
                    }
                ],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        });
        let row = named_row("Pod", &pod);
        assert_eq!(row["Ready"], "2/2");
        assert_eq!(row["Status"], "Running");
        assert_eq!(row["Restarts"], "1");
    }

    #[test]
    fn pod_wide_cells_show_ips_nominations_and_readiness_gates() {
        let pod = json!({
            "metadata": {"name": "gates"},
            "spec": {
                "containers": [{"name": "a"}],
                "readinessGates": [
                    {"conditionType": "example.com/lb"},
                    {"conditionType": "example.com/dns"}
                ]
            },
            "status": {
                "phase": "Pending",
                "nominatedNodeName": "node-b",
                "podIPs": [{"ip": "fd00::7"}, {"ip": "10.42.0.9"}],
                "conditions": [
                    {"type": "example.com/lb", "status": "True"},
                    {"type": "example.com/dns", "status": "False"}
                ]
            }
        });
        let row = named_row("Pod", &pod);
        assert_eq!(row["IP"], "fd00::7");
        assert_eq!(row["Nominated Node"], "node-b");
        assert_eq!(row["Readiness Gates"], "1/2");
    }

    #[test]
    fn node_row_shows_readiness_cordon_and_sorted_roles() {
        assert_eq!(
            named_row("Node", &node()),
            json!({
                "Name": "node-a",
                "Status": "Ready,SchedulingDisabled",
                "Roles": "control-plane,etcd,master",
                "Age": "10d",
                "Version": "v1.34.0+skiff",
                "Internal-IP": "192.168.1.10",
                "External-IP": "<none>",
                "OS-Image": "Debian GNU/Linux 12 (bookworm)",
                "Kernel-Version": "6.1.0-28-amd64",
                "Container-Runtime": "containerd://1.7.24"
            })
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(named_row("Node", &not_ready)["Status"], "NotReady");
        let unknown = named_row("Node", &json!({"metadata": {"name": "new"}}));
        assert_eq!(unknown["Status"], "Unknown");
        assert_eq!(unknown["Roles"], "<none>");
        assert_eq!(unknown["OS-Image"], "<unknown>");
        assert_eq!(unknown["Internal-IP"], "<none>");
    }

    #[test]
    fn service_row_shows_node_ports_and_sorted_selector() {
        assert_eq!(
            named_row("Service", &service()),
            json!({
                "Name": "web",
                "Type": "NodePort",
                "Cluster-IP": "10.43.0.20",
                "External-IP": "<none>",
                "Port(s)": "80:30080/TCP,53/UDP",
                "Age": "3h",
                "Selector": "app=web,tier=front"
            })
        );
        let headless = json!({"spec": {"type": "ClusterIP", "clusterIP": "None"}});
        let headless = named_row("Service", &headless);
        assert_eq!(headless["Cluster-IP"], "None");
        assert_eq!(headless["Port(s)"], "<none>");
        assert_eq!(headless["Selector"], "<none>");
    }

    #[test]
    fn service_external_ip_depends_on_the_type() {
        let external_ip = |spec: Value, status: Value| {
            let service = json!({"spec": spec, "status": status});
            named_row("Service", &service)["External-IP"].clone()
        };
        let pending = json!({"type": "LoadBalancer"});
        assert_eq!(external_ip(pending, json!({})), "<pending>");
        let balanced = json!({"type": "LoadBalancer", "externalIPs": ["198.51.100.1"]});
        let ingress = json!({
            "loadBalancer": {
                "ingress": [
                    {"ip": "203.0.113.9"},
                    {"hostname": "lb.example.com"},
                    {"ip": "203.0.113.2"}
                ]
            }
        });
        let shown = "203.0.113.2,203.0.113.9,lb.example.com,198.51.100.1";
        assert_eq!(external_ip(balanced, ingress), shown);
        let external = json!({"type": "ClusterIP", "externalIPs": ["192.0.2.1", "192.0.2.2"]});
        assert_eq!(external_ip(external, json!({})), "192.0.2.1,192.0.2.2");
        let alias = json!({"type": "ExternalName", "externalName": "db.example.com"});
        assert_eq!(external_ip(alias, json!({})), "db.example.com");
        assert_eq!(external_ip(json!({}), json!({})), "<unknown>");
    }

    #[test]
    fn endpoints_show_the_first_three_and_how_many_more() {
        let five = json!([{
            "addresses": [
                {"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}, {"ip": "10.42.0.7"},
                {"ip": "10.42.0.8"}, {"ip": "10.42.0.9"}
            ],
            "ports": [{"port": 80}]
        }]);
        let first_three = "10.42.0.5:80,10.42.0.6:80,10.42.0.7:80 + 2 more...";
        assert_eq!(endpoints_cell(five), first_three);
        let two_ports = json!([{
            "addresses": [{"ip": "10.42.0.5"}, {"ip": "fd00::6"}],
            "ports": [{"port": 80}, {"port": 443}]
        }]);
        let both_ports = "10.42.0.5:80,[fd00::6]:80,10.42.0.5:443 + 1 more...";
        assert_eq!(endpoints_cell(two_ports), both_ports);
        let headless = json!([{"addresses": [{"ip": "10.42.0.5"}]}]);
        assert_eq!(endpoints_cell(headless), "10.42.0.5");
        assert_eq!(endpoints_cell(json!([])), "<none>");
        let aged = named_row("Endpoints", &endpoints(json!([])));
        assert_eq!(aged["Age"], "2m");
    }

    #[test]
    fn deployment_row_shows_replicas_containers_and_selector() {
        assert_eq!(
            named_row("Deployment", &deployment()),
            json!({
                "Name": "web",
                "Ready": "2/3",
                "Up-to-date": 3,
                "Available": 2,
                "Age": "10m",
                "Containers": "nginx,log",
                "Images": "nginx:1.27,busybox",
                "Selector": "app=web,!canary,tier in (edge,front)"
            })
        );
    }

    #[test]
    fn replica_set_row_shows_replica_counts() {
        assert_eq!(
            named_row("ReplicaSet", &replica_set()),
            json!({
                "Name": "web-5d4f",
                "Desired": 3,
                "Current": 3,
                "Ready": 1,
                "Age": "45s",
                "Containers": "nginx",
                "Images": "nginx:1.27",
                "Selector": "app=web,pod-template-hash=5d4f"
            })
        );
    }

    #[test]
    fn selectors_are_written_as_kubernetes_writes_them() {
        let shown = |kind: &str, selector: Value| {
            let object = json!({"metadata": {"name": "s"}, "spec": {"selector": selector}});
            named_row(kind, &object)["Selector"].clone()
        };
        let expressions = json!({
            "matchExpressions": [
                {"key": "gpu", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["test", "dev"]}
            ]
        });
        let sorted = "env notin (dev,test),gpu";
        assert_eq!(shown("ReplicaSet", expressions), sorted);
        let near = json!({
            "matchExpressions": [{"key": "zone", "operator": "Near", "values": ["a"]}]
        });
        assert_eq!(shown("Deployment", near.clone()), "<invalid>");
        assert_eq!(shown("ReplicaSet", near), "<error>");
        let valued = json!({
            "matchExpressions": [{"key": "gpu", "operator": "Exists", "values": ["x"]}]
        });
        assert_eq!(shown("Deployment", valued), "<invalid>");
        let empty_in = json!({"matchExpressions": [{"key": "gpu", "operator": "In"}]});
        assert_eq!(shown("Deployment", empty_in), "<invalid>");
        assert_eq!(shown("Deployment", json!({})), "");
        assert_eq!(shown("ReplicaSet", json!({})), "<none>");
        assert_eq!(shown("ReplicaSet", Value::Null), "<none>");
    }

    #[test]
    fn data_and_secrets_are_counted() {
        assert_eq!(
            named_row("Secret", &secret()),
            json!({"Name": "creds", "Type": "Opaque", "Data": 2, "Age": "24h"})
        );
        assert_eq!(
            named_row("ConfigMap", &config_map()),
            json!({"Name": "settings", "Data": 3, "Age": "365d"})
        );
        assert_eq!(
            named_row("ServiceAccount", &service_account()),
            json!({"Name": "builder", "Secrets": 1, "Age": "2y1d"})
        );
        assert_eq!(
            named_row("Namespace", &namespace()),
            json!({"Name": "default", "Status": "Active", "Age": "60s"})
        );
    }

    #[test]
    fn event_row_shows_when_what_and_who() {
        assert_eq!(
            named_row("Event", &event()),
            json!({
                "Last Seen": "30s",
                "Type": "Warning",
                "Reason": "BackOff",
                "Object": "pod/web",
                "Subobject": "spec.containers{log}",
                "Source": "kubelet, node-a",
                "Message": "Back-off restarting failed container",
                "First Seen": "5m",
                "Count": 4,
                "Name": "web.17f3a"
            })
        );
    }

    #[test]
    fn event_of_the_new_api_reads_event_time_and_series() {
        let event = json!({
            "metadata": {"name": "e2"},
            "type": "Normal",
            "reason": "Scheduled",
            "involvedObject": {"kind": "Node"},
            "reportingComponent": "default-scheduler",
            "eventTime": "2026-11-30T11:58:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2026-11-30T11:59:50.000000Z"}
        });
        let row = named_row("Event", &event);
        assert_eq!(row["Last Seen"], "10s");
        assert_eq!(row["First Seen"], "2m");
        assert_eq!(row["Object"], "node");
        assert_eq!(row["Source"], "default-scheduler");
        assert_eq!(row["Count"], 7);

        let single = json!({"metadata": {"name": "e3"}, "eventTime": "2026-11-30T11:59:00Z"});
        let row = named_row("Event", &single);
        assert_eq!(row["Last Seen"], "60s");
        assert_eq!(row["Count"], 1);
    }

    #[test]
    fn an_events_k8s_io_event_prints_as_the_same_core_event() {
        let mut v1 = event().as_object().cloned().unwrap_or_default();
        crate::events::convert::to_events_v1(&mut v1);
        assert!(v1.get("involvedObject").is_none());
        assert_eq!(
            named_row("Event", &Value::Object(v1)),
            named_row("Event", &event())
        );
    }

    #[test]
    fn other_kinds_get_name_and_created_at() {
        assert_eq!(
            named_row("Role", &role()),
            json!({"Name": "pod-reader", "Created At": "2026-11-30T12:00:00Z"})
        );
        let never = named_row("LimitRange", &json!({"metadata": {"name": "x"}}));
        assert_eq!(never["Created At"], ZERO_TIME);
        let odd = json!({"metadata": {"name": "x", "creationTimestamp": "yesterday"}});
        assert_eq!(named_row("ClusterRole", &odd)["Created At"], "yesterday");
    }

    #[test]
    fn job_row_shows_status_completions_and_duration() {
        assert_eq!(
            named_row("Job", &job()),
            json!({
                "Name": "migrate",
                "Status": "Complete",
                "Completions": "1/1",
                "Duration": "98s",
                "Age": "10m",
                "Containers": "migrate",
                "Images": "migrate:2",
                "Selector": "batch.kubernetes.io/controller-uid=8c1f"
            })
        );
        let running = json!({
            "metadata": {"name": "work-queue"},
            "spec": {"parallelism": 3},
            "status": {"succeeded": 2, "startTime": "2026-11-30T11:57:30Z"}
        });
        let row = named_row("Job", &running);
        assert_eq!(row["Status"], "Running");
        assert_eq!(row["Completions"], "2/1 of 3");
        assert_eq!(row["Duration"], "2m30s");
        assert_eq!(row["Selector"], "<none>");
        let unstarted = json!({"metadata": {"name": "one"}, "spec": {"parallelism": 1}});
        let row = named_row("Job", &unstarted);
        assert_eq!(row["Completions"], "0/1");
        assert_eq!(row["Duration"], "");
        let indexed = json!({
            "metadata": {"name": "shards"},
            "spec": {"completions": 5, "parallelism": 2},
            "status": {"succeeded": 3}
        });
        assert_eq!(named_row("Job", &indexed)["Completions"], "3/5");
    }

    #[test]
    fn job_status_is_the_first_state_that_holds() {
        let status_of = |conditions: Value, deleting: bool| {
            let mut object = job();
            object["status"]["conditions"] = conditions;
            if deleting {
                object["metadata"]["deletionTimestamp"] = json!("2026-11-30T11:59:00Z");
            }
            named_row("Job", &object)["Status"].clone()
        };
        let complete = json!([{"type": "Complete", "status": "True"}]);
        assert_eq!(status_of(complete, true), "Complete");
        let failed = json!([{"type": "Failed", "status": "True"}]);
        assert_eq!(status_of(failed, true), "Failed");
        assert_eq!(status_of(json!([]), true), "Terminating");
        let suspended = json!([{"type": "Suspended", "status": "True"}]);
        assert_eq!(status_of(suspended, false), "Suspended");
        let failing = json!([{"type": "FailureTarget", "status": "True"}]);
        assert_eq!(status_of(failing, false), "FailureTarget");
        // The first condition of a type decides, as hasJobCondition reads.
        let flapping = json!([
            {"type": "Failed", "status": "False"},
            {"type": "Failed", "status": "True"}
        ]);
        assert_eq!(status_of(flapping, false), "Running");
        let succeeding = json!([{"type": "SuccessCriteriaMet", "status": "True"}]);
        assert_eq!(status_of(succeeding, false), "Running");
    }

    #[test]
    fn cron_job_row_shows_schedule_and_last_run() {
        assert_eq!(
            named_row("CronJob", &cron_job()),
            json!({
                "Name": "backup",
                "Schedule": "0 2 * * *",
                "Timezone": "Europe/Paris",
                "Suspend": "False",
                "Active": 1,
                "Last Schedule": "10h",
                "Age": "2d",
                "Containers": "dump",
                "Images": "postgres:17",
                "Selector": "<none>"
            })
        );
        let suspended = json!({"spec": {"schedule": "@hourly", "suspend": true}});
        let row = named_row("CronJob", &suspended);
        assert_eq!(row["Suspend"], "True");
        assert_eq!(row["Timezone"], "<none>");
        assert_eq!(row["Active"], 0);
        assert_eq!(row["Last Schedule"], "<none>");
        let bare = named_row("CronJob", &json!({"spec": {"schedule": "@daily"}}));
        assert_eq!(bare["Suspend"], "<unset>");
    }

    #[test]
    fn daemon_set_row_shows_scheduling_counts_and_node_selector() {
        assert_eq!(
            named_row("DaemonSet", &daemon_set()),
            json!({
                "Name": "fluent-bit",
                "Desired": 3,
                "Current": 3,
                "Ready": 2,
                "Up-to-date": 3,
                "Available": 2,
                "Node Selector": "kubernetes.io/os=linux",
                "Age": "7d",
                "Containers": "fluent-bit",
                "Images": "fluent/fluent-bit:3.2",
                "Selector": "app=fluent-bit"
            })
        );
        let everywhere = named_row("DaemonSet", &json!({"metadata": {"name": "d"}}));
        assert_eq!(everywhere["Node Selector"], "<none>");
        assert_eq!(everywhere["Desired"], 0);
    }

    #[test]
    fn stateful_set_row_shows_ready_out_of_desired() {
        assert_eq!(
            named_row("StatefulSet", &stateful_set()),
            json!({
                "Name": "db",
                "Ready": "2/3",
                "Age": "150m",
                "Containers": "postgres,exporter",
                "Images": "postgres:17,postgres-exporter:0.15"
            })
        );
    }

    #[test]
    fn controller_revision_names_its_controller_with_group_and_kind() {
        assert_eq!(
            named_row("ControllerRevision", &controller_revision()),
            json!({
                "Name": "fluent-bit-6d8f",
                "Controller": "daemonset.apps/fluent-bit",
                "Revision": 2,
                "Age": "7d"
            })
        );
        let controller = |owners: Value| {
            let revision = json!({"metadata": {"name": "r", "ownerReferences": owners}});
            named_row("ControllerRevision", &revision)["Controller"].clone()
        };
        let core = json!([
            {"apiVersion": "v1", "kind": "ReplicationController", "name": "web", "controller": true}
        ]);
        assert_eq!(controller(core), "replicationcontroller/web");
        let kindless = json!([{"apiVersion": "v1", "name": "bare", "controller": true}]);
        assert_eq!(controller(kindless), "bare");
        let odd = json!([{"apiVersion": "a/b/c", "kind": "X", "name": "x", "controller": true}]);
        assert_eq!(controller(odd), "<invalid>");
        let owned = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}]);
        assert_eq!(controller(owned), "<none>");
        assert_eq!(controller(Value::Null), "<none>");
    }

    #[test]
    fn bound_claim_shows_its_volume_capacity_and_access_modes() {
        assert_eq!(
            named_row("PersistentVolumeClaim", &persistent_volume_claim()),
            json!({
                "Name": "data-db-0",
                "Status": "Bound",
                "Volume": "pvc-3f1c",
                "Capacity": "8Gi",
                "Access Modes": "RWO,RWOP",
                "StorageClass": "local-path",
                "VolumeAttributesClass": "<unset>",
                "Age": "150m",
                "VolumeMode": "Filesystem"
            })
        );
        let mut sizeless = persistent_volume_claim();
        sizeless["status"] = json!({"phase": "Bound"});
        let row = named_row("PersistentVolumeClaim", &sizeless);
        assert_eq!(row["Capacity"], "0");
    }

    #[test]
    fn unbound_claim_being_deleted_shows_no_capacity() {
        let claim = json!({
            "metadata": {
                "name": "scratch",
                "deletionTimestamp": "2026-11-30T11:59:00Z",
                "annotations": {"volume.beta.kubernetes.io/storage-class": "slow"}
            },
            "spec": {
                "storageClassName": "fast",
                "volumeAttributesClassName": "silver",
                "resources": {"requests": {"storage": "1Gi"}}
            },
            "status": {
                "phase": "Pending",
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"]
            }
        });
        assert_eq!(
            named_row("PersistentVolumeClaim", &claim),
            json!({
                "Name": "scratch",
                "Status": "Terminating",
                "Volume": "",
                "Capacity": "",
                "Access Modes": "",
                "StorageClass": "slow",
                "VolumeAttributesClass": "silver",
                "Age": "<unknown>",
                "VolumeMode": "<unset>"
            })
        );
    }

    #[test]
    fn volume_row_shows_capacity_policy_and_claim() {
        assert_eq!(
            named_row("PersistentVolume", &persistent_volume()),
            json!({
                "Name": "pvc-3f1c",
                "Capacity": "8Gi",
                "Access Modes": "RWO,ROX,RWX",
                "Reclaim Policy": "Retain",
                "Status": "Bound",
                "Claim": "db/data-db-0",
                "StorageClass": "local-path",
                "VolumeAttributesClass": "gold",
                "Reason": "",
                "Age": "149m",
                "VolumeMode": "Block"
            })
        );
        let released = json!({
            "metadata": {"name": "old"},
            "spec": {"capacity": {"storage": 1073741824}},
            "status": {"phase": "Released", "reason": "Reclaiming"}
        });
        let row = named_row("PersistentVolume", &released);
        assert_eq!(row["Capacity"], "1073741824");
        assert_eq!(row["Status"], "Released");
        assert_eq!(row["Reason"], "Reclaiming");
        assert_eq!(row["Claim"], "");
        let bare = named_row("PersistentVolume", &json!({"metadata": {"name": "bare"}}));
        assert_eq!(bare["Capacity"], "0");
        assert_eq!(bare["VolumeAttributesClass"], "<unset>");
        assert_eq!(bare["VolumeMode"], "<unset>");
    }

    #[test]
    fn ingress_row_shows_class_hosts_addresses_and_ports() {
        assert_eq!(
            named_row("Ingress", &ingress()),
            json!({
                "Name": "web",
                "Class": "traefik",
                "Hosts": "web.example.com,api.example.com,admin.example.com + 2 more...",
                "Address": "192.168.1.10,192.168.1.11",
                "Ports": "80, 443",
                "Age": "60m"
            })
        );
        let catch_all = json!({
            "metadata": {"name": "catch-all"},
            "spec": {"rules": [{"http": {"paths": []}}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
        });
        let row = named_row("Ingress", &catch_all);
        assert_eq!(row["Class"], "<none>");
        assert_eq!(row["Hosts"], "*");
        assert_eq!(row["Address"], "lb.example.com");
        assert_eq!(row["Ports"], "80");
        assert_eq!(named_row("Ingress", &json!({}))["Address"], "");
    }

    #[test]
    fn ingress_hosts_count_the_rules_beyond_the_third_host() {
        fn rules(hosts: &[&str]) -> Vec<Value> {
            hosts.iter().map(|host| json!({"host": host})).collect()
        }
        assert_eq!(ingress_hosts(&rules(&["a", "b", "c"])), "a,b,c");
        // As formatHosts counts: rules, hostless ones too.
        assert_eq!(
            ingress_hosts(&rules(&["a", "b", "c", ""])),
            "a,b,c + 1 more..."
        );
        assert_eq!(ingress_hosts(&rules(&["", "a", ""])), "a");
        assert_eq!(ingress_hosts(&[]), "*");
    }

    #[test]
    fn ingress_class_row_shows_controller_and_parameters() {
        assert_eq!(
            named_row("IngressClass", &ingress_class()),
            json!({
                "Name": "traefik",
                "Controller": "traefik.io/ingress-controller",
                "Parameters": "IngressParameters.k8s.example.com/external-lb",
                "Age": "10d"
            })
        );
        let parameters = |parameters: Value| {
            let class = json!({"spec": {"controller": "c", "parameters": parameters}});
            named_row("IngressClass", &class)["Parameters"].clone()
        };
        let core = json!({"kind": "ConfigMap", "name": "lb-settings"});
        assert_eq!(parameters(core), "ConfigMap/lb-settings");
        assert_eq!(parameters(Value::Null), "<none>");
    }

    #[test]
    fn network_policy_row_shows_its_pod_selector() {
        assert_eq!(
            named_row("NetworkPolicy", &network_policy()),
            json!({"Name": "db-ingress", "Pod-Selector": "role=db", "Age": "60m"})
        );
        let all_pods = json!({"metadata": {"name": "deny-all"}, "spec": {"podSelector": {}}});
        let row = named_row("NetworkPolicy", &all_pods);
        assert_eq!(row["Pod-Selector"], "<none>");
    }

    #[test]
    fn role_bindings_show_role_and_subjects_by_kind() {
        assert_eq!(
            named_row("RoleBinding", &role_binding()),
            json!({
                "Name": "read-pods",
                "Role": "Role/pod-reader",
                "Age": "60s",
                "Users": "jane, joe",
                "Groups": "devs",
                "ServiceAccounts": "ci/builder"
            })
        );
        assert_eq!(
            named_row("ClusterRoleBinding", &cluster_role_binding()),
            json!({
                "Name": "admins",
                "Role": "ClusterRole/cluster-admin",
                "Age": "10d",
                "Users": "",
                "Groups": "system:masters",
                "ServiceAccounts": ""
            })
        );
        let users = &columns("ClusterRoleBinding")[3];
        assert_eq!(users.description, "Users in the clusterRoleBinding");
    }

    #[test]
    fn disruption_budget_row_shows_its_bounds() {
        assert_eq!(
            named_row("PodDisruptionBudget", &pod_disruption_budget()),
            json!({
                "Name": "web",
                "Min Available": "2",
                "Max Unavailable": "N/A",
                "Allowed Disruptions": 1,
                "Age": "60m"
            })
        );
        let share = json!({"metadata": {"name": "db"}, "spec": {"maxUnavailable": "25%"}});
        let row = named_row("PodDisruptionBudget", &share);
        assert_eq!(row["Min Available"], "N/A");
        assert_eq!(row["Max Unavailable"], "25%");
        assert_eq!(row["Allowed Disruptions"], 0);
    }

    #[test]
    fn autoscaler_row_shows_targets_and_replica_bounds() {
        assert_eq!(
            named_row("HorizontalPodAutoscaler", &autoscaler()),
            json!({
                "Name": "web",
                "Reference": "Deployment/web",
                "Targets": "cpu: 65%/80%, memory: <unknown>/500Mi + 1 more...",
                "MinPods": "2",
                "MaxPods": 10,
                "Replicas": 3,
                "Age": "60m"
            })
        );
        let unmeasured = json!({
            "metadata": {"name": "db"},
            "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 4}
        });
        let row = named_row("HorizontalPodAutoscaler", &unmeasured);
        assert_eq!(row["Reference"], "StatefulSet/db");
        assert_eq!(row["Targets"], "<none>");
        assert_eq!(row["MinPods"], "<unset>");
        assert_eq!(row["MaxPods"], 4);
        assert_eq!(row["Replicas"], 0);
    }

    #[test]
    fn autoscaler_metrics_are_written_by_their_source() {
        let shown = |metric: Value, status: Value| metric_target(&metric, Some(&status));
        let object = json!({
            "type": "Object",
            "object": {"metric": {"name": "hits"}, "target": {"type": "Value", "value": "10k"}}
        });
        let counted = json!({"type": "Object", "object": {"current": {"value": "8k"}}});
        assert_eq!(shown(object.clone(), counted), "8k/10k");
        assert_eq!(metric_target(&object, None), "<unknown>/10k");
        let external = json!({
            "type": "External",
            "external": {"metric": {"name": "queue"}, "target": {"averageValue": "30"}}
        });
        let queued = json!({"type": "External", "external": {"current": {"averageValue": "12"}}});
        assert_eq!(shown(external.clone(), queued), "12/30 (avg)");
        // A status of another source is no measurement of this metric.
        let other = json!({"type": "Resource", "resource": {"current": {"averageValue": "12"}}});
        assert_eq!(shown(external, other), "<unknown>/30 (avg)");
        let pods = json!({"type": "Pods", "pods": {"target": {"averageValue": "1k"}}});
        let served = json!({"type": "Pods", "pods": {"current": {"averageValue": "250"}}});
        assert_eq!(shown(pods, served), "250/1k");
        let container = json!({
            "type": "ContainerResource",
            "containerResource": {"name": "cpu", "container": "app", "target": {}}
        });
        assert_eq!(metric_target(&container, None), "cpu: <unknown>/<auto>");
        let memory = json!({
            "type": "Resource",
            "resource": {"name": "memory", "target": {"averageValue": "500Mi"}}
        });
        let utilized = json!({"resource": {"current": {"averageUtilization": 40}}});
        assert_eq!(shown(memory, utilized), "memory: <nil>/500Mi");
        let custom = json!({"type": "Custom"});
        assert_eq!(metric_target(&custom, None), "<unknown type>");
        let two = [custom.clone(), custom];
        let both = "<unknown type>, <unknown type>";
        assert_eq!(autoscaler_targets(&two, &[]), both);
    }

    #[test]
    fn storage_class_row_marks_the_default_and_fills_in_defaults() {
        assert_eq!(
            named_row("StorageClass", &storage_class()),
            json!({
                "Name": "local-path (default)",
                "Provisioner": "rancher.io/local-path",
                "ReclaimPolicy": "Delete",
                "VolumeBindingMode": "WaitForFirstConsumer",
                "AllowVolumeExpansion": true,
                "Age": "10d"
            })
        );
        let beta = json!({
            "metadata": {
                "name": "nfs",
                "annotations": {"storageclass.beta.kubernetes.io/is-default-class": "true"}
            },
            "provisioner": "example.com/nfs"
        });
        let row = named_row("StorageClass", &beta);
        assert_eq!(row["Name"], "nfs (default)");
        assert_eq!(row["ReclaimPolicy"], "Delete");
        assert_eq!(row["VolumeBindingMode"], "Immediate");
        assert_eq!(row["AllowVolumeExpansion"], false);
        let declined = json!({
            "metadata": {
                "name": "slow",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "false"}
            },
            "reclaimPolicy": "Retain"
        });
        let row = named_row("StorageClass", &declined);
        assert_eq!(row["Name"], "slow");
        assert_eq!(row["ReclaimPolicy"], "Retain");
    }

    #[test]
    fn csi_driver_row_shows_flags_with_kubernetes_defaults() {
        assert_eq!(
            named_row("CSIDriver", &csi_driver()),
            json!({
                "Name": "csi.example.com",
                "AttachRequired": false,
                "PodInfoOnMount": true,
                "StorageCapacity": false,
                "TokenRequests": "vault,gcp",
                "RequiresRepublish": false,
                "Modes": "Persistent,Ephemeral",
                "Age": "10d"
            })
        );
        let bare = named_row("CSIDriver", &json!({"metadata": {"name": "d"}}));
        assert_eq!(bare["AttachRequired"], true);
        assert_eq!(bare["TokenRequests"], "<unset>");
        assert_eq!(bare["Modes"], "<none>");
        let no_tokens = json!({"spec": {"tokenRequests": []}});
        assert_eq!(named_row("CSIDriver", &no_tokens)["TokenRequests"], "");
    }

    #[test]
    fn lease_slice_and_priority_class_rows() {
        assert_eq!(
            named_row("Lease", &lease()),
            json!({"Name": "skiff-leader", "Holder": "master-1", "Age": "60m"})
        );
        assert_eq!(named_row("Lease", &json!({}))["Holder"], "");
        assert_eq!(
            named_row("EndpointSlice", &endpoint_slice()),
            json!({
                "Name": "web-abc12",
                "AddressType": "IPv4",
                "Ports": "80,metrics,* + 1 more...",
                "Endpoints": "10.42.0.5,10.42.1.7,10.42.2.9 + 1 more...",
                "Age": "2m"
            })
        );
        let portless = json!({"addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"]}]});
        let row = named_row("EndpointSlice", &portless);
        assert_eq!(row["Ports"], "<unset>");
        assert_eq!(row["Endpoints"], "fd00::1");
        assert_eq!(
            named_row("PriorityClass", &priority_class()),
            json!({
                "Name": "high-priority",
                "Value": 1000000,
                "Global-Default": false,
                "Age": "10d",
                "PreemptionPolicy": "PreemptLowerPriority"
            })
        );
    }

    #[test]
    fn resource_quota_splits_requests_from_limits() {
        assert_eq!(
            named_row("ResourceQuota", &resource_quota()),
            json!({
                "Name": "compute",
                "Request": "pods: 3/10, requests.cpu: 500m/1, requests.memory: 0/1Gi",
                "Limit": "limits.cpu: 1/2, limits.memory: 512Mi/2Gi",
                "Age": "60m"
            })
        );
        let fresh = named_row("ResourceQuota", &json!({"metadata": {"name": "new"}}));
        assert_eq!(fresh["Request"], "");
        assert_eq!(fresh["Limit"], "");
    }

    #[test]
    fn table_holds_columns_rows_and_partial_metadata() {
        let pods = [crash_looping_pod(), finished_pod()];
        let objects: Vec<&Value> = pods.iter().collect();
        let listed = table("Pod", &objects, "42", true, now());
        assert_eq!(listed["kind"], "Table");
        assert_eq!(listed["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(listed["metadata"], json!({"resourceVersion": "42"}));

        let definitions = listed["columnDefinitions"].as_array().unwrap();
        assert_eq!(definitions.len(), POD_COLUMNS.len());
        assert_eq!(
            definitions[0],
            json!({
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": NAME_DOC,
                "priority": 0
            })
        );
        assert_eq!(definitions[5]["name"], "IP");
        assert_eq!(definitions[5]["format"], "");
        assert_eq!(definitions[5]["priority"], 1);

        let rows = listed["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let first = Value::Array(cells("Pod", &pods[0], now()));
        assert_eq!(rows[0]["cells"], first);
        let partial = json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": pods[0]["metadata"]
        });
        assert_eq!(rows[0]["object"], partial);
        assert!(rows[0].get("conditions").is_none());
        assert_eq!(rows[1]["conditions"][0]["type"], "Completed");
        assert_eq!(rows[1]["conditions"][0]["reason"], "Succeeded");
        assert_eq!(rows[1]["object"]["metadata"]["name"], "job-x");
    }

    #[test]
    fn a_watch_event_table_can_leave_out_the_columns() {
        let pod = running_pod();
        let event = table("Pod", &[&pod], "43", false, now());
        assert!(event.get("columnDefinitions").is_none());
        assert_eq!(event["metadata"]["resourceVersion"], "43");
        assert_eq!(event["rows"][0]["cells"][0], "api");

        let empty = table("Node", &[], "", true, now());
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["metadata"], json!({}));
        let last = &empty["columnDefinitions"][9];
        assert_eq!(last["name"], "Container-Runtime");

        let bare = json!({"spec": {}});
        let role = table("Role", &[&bare], "1", true, now());
        assert_eq!(role["columnDefinitions"][1]["type"], "date");
        assert_eq!(role["rows"][0]["object"]["metadata"], json!({}));
    }
}
