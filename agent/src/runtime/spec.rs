//! The OCI runtime spec for one container, built from the pod spec and the
//! image config the way Kubernetes does: `command` replaces the image's
//! entrypoint, `args` its cmd (their `$(VAR)` references expanded by the
//! pod worker); the Services' variables are layered over the image's env,
//! and the container's environment (resolved by the pod worker) over both;
//! limits become cgroup
//! settings (memory limit, CPU quota over a 100 ms period), which runc
//! applies on cgroup v1 and v2 alike, read with the same quantity parser
//! the masters validate with. The pod's `/etc` files and its volumes are
//! bind mounts ([`ContainerMount`]: read-only or not, `rslave` for
//! HostToContainer propagation), the shallowest destinations first. The
//! container joins the pod's network namespace; everything else it gets on
//! its own, unless the pod shares the host's ([`HostNamespaces`]): in the
//! host's network (`hostNetwork`) it joins the node's network namespace
//! and keeps the node's hostname (no UTS namespace of its own, as
//! containerd's CRI plugin does it); with `hostIPC` it shares the node's
//! System V IPC and `/dev/shm`. Its PID namespace is one of Kubernetes'
//! three ([`PidNamespace`]): its own, the pod's (`shareProcessNamespace`:
//! joined by path, that of the pod's pause process, as containerd's CRI
//! plugin joins a sandbox's) or the node's (`hostPID`).
//!
//! How the process is confined comes resolved from the pod's and the
//! container's securityContext ([`ProcessSecurity`]): its user, group and
//! supplementary groups, its capabilities (bounding, effective and
//! permitted alike; never inheritable), `noNewPrivileges`, a read-only
//! root, the RuntimeDefault seccomp profile ([`super::seccomp`]). A
//! privileged container gets every capability and every host device
//! ([`super::host_devices`]), `/sys` and its cgroups writable, and no
//! masked or read-only `/proc` paths.

use std::path::Path;

use serde_json::{json, Value};
use skiff_objects::{Quantity, QuantityError};
use skiff_proto::v1;

use super::host_devices::HostDevice;
use super::oci::RunConfig;
use super::seccomp;

/// CFS period for CPU limits, as the kubelet uses.
const CPU_PERIOD_US: u64 = 100_000;

/// What the spec is built from besides the container itself.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container: &'a v1::Container,
    pub image: &'a RunConfig,
    pub hostname: &'a str,
    /// The network namespace it joins: the pod's, or the node's.
    pub netns_path: &'a str,
    /// The host namespaces the pod shares (its PID namespace apart).
    pub host: HostNamespaces,
    /// The PID namespace it is in.
    pub pid_namespace: &'a PidNamespace,
    pub cgroups_path: &'a str,
    /// Files bind-mounted over `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: &'a [(String, String)],
    /// The container's environment from the pod spec (`env`, `envFrom`),
    /// resolved, in order.
    pub env: &'a [(String, String)],
    /// The Services' environment variables (`KUBERNETES_SERVICE_HOST`, ...).
    pub service_env: &'a [(String, String)],
    /// The pod volumes bind-mounted into the container.
    pub mounts: &'a [ContainerMount],
    /// Who the process runs as and what it may do.
    pub security: &'a ProcessSecurity,
    /// The host's devices, given to a privileged container.
    pub host_devices: &'a [HostDevice],
}

/// Which of the node's network and IPC namespaces a pod's containers
/// share (`hostNetwork`, `hostIPC`); the network one is joined by
/// [`SpecInput::netns_path`]. The node's PID namespace (`hostPID`) is
/// [`PidNamespace::Node`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub network: bool,
    pub ipc: bool,
}

impl HostNamespaces {
    /// What `spec` asks for.
    pub fn of(spec: &v1::PodSpec) -> HostNamespaces {
        HostNamespaces {
            network: spec.host_network,
            ipc: spec.host_ipc,
        }
    }
}

/// The PID namespace a container is in: Kubernetes' three modes (CRI's
/// `NamespaceMode` CONTAINER, POD and NODE), picked as the kubelet picks
/// them: `hostPID` first, then `shareProcessNamespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PidNamespace {
    /// A new one of its own, where its command is PID 1.
    #[default]
    Container,
    /// The pod's (`shareProcessNamespace`), joined by this path (its pause
    /// process's, `/proc/<pid>/ns/pid`): the pod's containers see each
    /// other's processes, and PID 1 is the pause process.
    Pod(String),
    /// The node's (`hostPID`).
    Node,
}

/// The capabilities a container has unless its securityContext adds or
/// drops some (containerd's default set).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux has (through 6.x); runc leaves out those the
/// running kernel does not know.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The seccomp filter a container runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter (Kubernetes' default, and every privileged container's).
    Unconfined,
    /// [`seccomp::runtime_default`].
    RuntimeDefault,
}

/// Who a container's process runs as and what it may do, resolved from
/// the securityContexts and the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSecurity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one among them.
    pub additional_gids: Vec<u32>,
    /// `CAP_` names.
    pub capabilities: Vec<String>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub seccomp: Seccomp,
}

impl Default for ProcessSecurity {
    /// Root, with the default capabilities, unconfined.
    fn default() -> Self {
        ProcessSecurity {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            capabilities: Vec::from(DEFAULT_CAPABILITIES.map(str::to_owned)),
            read_only_root: false,
            no_new_privileges: false,
            privileged: false,
            seccomp: Seccomp::Unconfined,
        }
    }
}

/// A pod volume (or a path in one) bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    /// Where in the container.
    pub destination: String,
    /// The path on the host.
    pub source: String,
    pub read_only: bool,
    /// Mounts the host makes under `source` later show in the container
    /// (`mountPropagation: HostToContainer`, `rslave`).
    pub host_to_container: bool,
}

/// Errors building a spec.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("container {container}: nothing to run (no command in the pod spec and no entrypoint or cmd in the image)")]
    NoCommand { container: String },
    #[error("container {container}: resources.limits.{resource}: {source}")]
    BadQuantity {
        container: String,
        resource: &'static str,
        #[source]
        source: QuantityError,
    },
    #[error("container {container}: resources.limits.memory {limit:?} is below the 4Mi a container needs to start; raise it")]
    MemoryTooLow { container: String, limit: String },
    #[error("container {container}: resources.limits.cpu {limit:?} must be positive; raise it or leave the limit out")]
    CpuNotPositive { container: String, limit: String },
}

/// The process arguments, by Kubernetes' rules.
pub fn process_args(
    container: &v1::Container,
    image: &RunConfig,
) -> Result<Vec<String>, SpecError> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let args = match (container.command.is_empty(), container.args.is_empty()) {
        (true, true) => [entrypoint, cmd].concat(),
        (true, false) => [entrypoint, container.args.clone()].concat(),
        (false, _) => [container.command.clone(), container.args.clone()].concat(),
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            container: container.name.clone(),
        });
    }
    Ok(args)
}

/// Image env, then `HOSTNAME` and the Services' variables, with the
/// container's (`container_env`, resolved) over them, in order.
pub fn process_env(
    container_env: &[(String, String)],
    image: &RunConfig,
    hostname: &str,
    service_env: &[(String, String)],
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    // Where each name is in `env`: a namespace's thousand Services make
    // seven thousand variables, too many to search one by one.
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut set = |name: &str, value: &str| match at.get(name) {
        Some(&i) => env[i].1 = value.to_string(),
        None => {
            at.insert(name.to_string(), env.len());
            env.push((name.to_string(), value.to_string()));
        }
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for entry in image.env.iter().flatten() {
        let (n, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(n, v);
    }
    set("HOSTNAME", hostname);
    for (name, value) in service_env {
        set(name, value);
    }
    for (name, value) in container_env {
        set(name, value);
    }
    env.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The process spec of an exec in a container (probes, lifecycle hooks,
/// `kubectl exec`): the container's own `process` from `container_spec`
/// (user, environment, working directory, capabilities) with `args` and
/// `terminal` replaced, as containerd's CRI plugin runs one; root with a
/// default `PATH` when the container has no spec.
pub fn exec_process(container_spec: &Value, args: &[String], terminal: bool) -> Value {
    let mut process = container_spec
        .get("process")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| {
            json!({
                "user": {"uid": 0, "gid": 0},
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
            })
        });
    if let Some(p) = process.as_object_mut() {
        p.insert("args".into(), json!(args));
        p.insert("terminal".into(), json!(terminal));
        p.remove("consoleSize");
    }
    process
}

/// The smallest memory limit a container can start with.
const MEMORY_MIN: i64 = 4 << 20;

fn limit_quantity(
    container: &v1::Container,
    resource: &'static str,
    limit: &str,
) -> Result<Quantity, SpecError> {
    Quantity::parse(limit).map_err(|source| SpecError::BadQuantity {
        container: container.name.clone(),
        resource,
        source,
    })
}

fn resources(container: &v1::Container, privileged: bool) -> Result<Value, SpecError> {
    // Only a privileged container may open any device it finds.
    let mut out = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
    let limits = container
        .resources
        .as_ref()
        .map(|r| &r.limits)
        .cloned()
        .unwrap_or_default();
    if let Some(mem) = limits.get("memory") {
        // Whole bytes, rounded up, as the kubelet writes memory.max.
        let bytes = limit_quantity(container, "memory", mem)?.units_ceil();
        // The kernel needs a few pages to start anything at all.
        if bytes < MEMORY_MIN {
            return Err(SpecError::MemoryTooLow {
                container: container.name.clone(),
                limit: mem.clone(),
            });
        }
        out["memory"] = json!({"limit": bytes});
    }
    if let Some(cpu) = limits.get("cpu") {
        let milli = limit_quantity(container, "cpu", cpu)?.milli();
        if milli <= 0 {
            return Err(SpecError::CpuNotPositive {
                container: container.name.clone(),
                limit: cpu.clone(),
            });
        }
        let quota = ((milli as u64).saturating_mul(CPU_PERIOD_US) / 1000).max(1000);
        out["cpu"] = json!({"quota": quota, "period": CPU_PERIOD_US});
    }
    Ok(out)
}

/// A bind mount of `source` at `destination`.
fn bind(destination: &str, source: &str, options: [&str; 3]) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": options,
    })
}

/// The runtime spec as JSON, ready for containerd.
pub fn build(input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let args = process_args(input.container, input.image)?;
    let mut env = process_env(input.env, input.image, input.hostname, input.service_env);
    // As containerd's CRI plugin does for `tty: true`.
    if input.container.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    let cwd = if !input.container.working_dir.is_empty() {
        input.container.working_dir.clone()
    } else {
        input
            .image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let security = input.security;
    let host = input.host;
    let sys_access = if security.privileged { "rw" } else { "ro" };
    // The node's shared memory with its IPC namespace, else one's own.
    let shm = if host.ipc {
        bind("/dev/shm", "/dev/shm", ["rbind", "rprivate", "rw"])
    } else {
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        shm,
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_access]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_access]}),
    ];
    // The pod's own: its /etc files (unless a volume is mounted there) and
    // its volumes, a parent before what is mounted inside it.
    let mut binds: Vec<(&str, Value)> = Vec::new();
    for (dest, source) in input.etc_files {
        if input.mounts.iter().any(|m| m.destination == *dest) {
            continue;
        }
        let mount = bind(dest, source, ["rbind", "rprivate", "rw"]);
        binds.push((dest.as_str(), mount));
    }
    for m in input.mounts {
        let propagation = if m.host_to_container {
            "rslave"
        } else {
            "rprivate"
        };
        let access = if m.read_only { "ro" } else { "rw" };
        let mount = bind(&m.destination, &m.source, ["rbind", propagation, access]);
        binds.push((m.destination.as_str(), mount));
    }
    binds.sort_by_key(|(dest, _)| Path::new(dest).components().count());
    mounts.extend(binds.into_iter().map(|(_, mount)| mount));
    let caps = &security.capabilities;
    // A namespace of its own for each the pod does not share with the
    // node; the network one always by path (the pod's or the node's).
    let mut namespaces = Vec::new();
    match input.pid_namespace {
        PidNamespace::Container => namespaces.push(json!({"type": "pid"})),
        PidNamespace::Pod(path) => namespaces.push(json!({"type": "pid", "path": path})),
        PidNamespace::Node => {}
    }
    if !host.ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    if !host.network {
        namespaces.push(json!({"type": "uts"}));
    }
    namespaces.push(json!({"type": "mount"}));
    namespaces.push(json!({"type": "network", "path": input.netns_path}));
    let mut user = json!({"uid": security.uid, "gid": security.gid});
    if !security.additional_gids.is_empty() {
        user["additionalGids"] = json!(security.additional_gids);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": input.container.tty,
            "user": user,
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": security.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": security.read_only_root},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": input.cgroups_path,
            "resources": resources(input.container, security.privileged)?,
            "namespaces": namespaces,
        },
    });
    // Without a UTS namespace of its own the hostname is the node's; runc
    // refuses to set one.
    if !host.network {
        spec["hostname"] = json!(input.hostname);
    }
    if security.privileged {
        let devices: Vec<Value> = input
            .host_devices
            .iter()
            .map(|d| {
                json!({
                    "path": d.path,
                    "type": d.kind.to_string(),
                    "major": d.major,
                    "minor": d.minor,
                    "fileMode": d.mode,
                    "uid": d.uid,
                    "gid": d.gid,
                })
            })
            .collect();
        spec["linux"]["devices"] = json!(devices);
    } else {
        spec["linux"]["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi"
        ]);
        spec["linux"]["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
        if security.seccomp == Seccomp::RuntimeDefault {
            spec["linux"]["seccomp"] = seccomp::runtime_default(caps);
        }
    }
    // A slave mount needs the container's root to receive propagation too.
    if input.mounts.iter().any(|m| m.host_to_container) {
        spec["linux"]["rootfsPropagation"] = json!("rslave");
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(command: &[&str], args: &[&str]) -> v1::Container {
        v1::Container {
            name: "c".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn image() -> RunConfig {
        RunConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
            working_dir: Some("/work".into()),
            user: Some("1000:100".into()),
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        assert_eq!(
            process_args(&container(&[], &[]), &img).unwrap(),
            ["/entry", "default"]
        );
        assert_eq!(
            process_args(&container(&[], &["x"]), &img).unwrap(),
            ["/entry", "x"]
        );
        assert_eq!(
            process_args(&container(&["sh"], &[]), &img).unwrap(),
            ["sh"]
        );
        assert_eq!(
            process_args(&container(&["sh"], &["-c", "true"]), &img).unwrap(),
            ["sh", "-c", "true"]
        );
        let err = process_args(&container(&[], &[]), &RunConfig::default()).unwrap_err();
        assert!(err.to_string().contains("nothing to run"));
    }

    #[test]
    fn pod_env_overrides_image_env() {
        let pod_env = [
            ("A".to_owned(), "pod".to_owned()),
            ("B".to_owned(), "b".to_owned()),
        ];
        let env = process_env(&pod_env, &image(), "h", &[]);
        assert_eq!(env, ["PATH=/bin", "A=pod", "HOSTNAME=h", "B=b"]);
    }

    #[test]
    fn service_variables_come_before_the_containers_own_env() {
        let own = [("WEB_SERVICE_PORT".to_owned(), "mine".to_owned())];
        let services = [
            ("KUBERNETES_SERVICE_HOST".to_owned(), "10.43.0.1".to_owned()),
            ("WEB_SERVICE_PORT".to_owned(), "80".to_owned()),
        ];
        let env = process_env(&own, &RunConfig::default(), "h", &services);
        assert_eq!(
            env,
            [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOSTNAME=h",
                "KUBERNETES_SERVICE_HOST=10.43.0.1",
                "WEB_SERVICE_PORT=mine"
            ]
        );
    }

    #[test]
    fn limits_become_cgroup_settings() {
        let mut c = container(&["sh"], &[]);
        c.resources = Some(v1::ResourceRequirements {
            limits: [
                ("memory".to_string(), "64Mi".to_string()),
                ("cpu".to_string(), "250m".to_string()),
            ]
            .into_iter()
            .collect(),
            requests: Default::default(),
        });
        let img = image();
        let spec = build(&SpecInput {
            container: &c,
            image: &img,
            hostname: "p",
            netns_path: "/run/netns/x",
            host: HostNamespaces::default(),
            pid_namespace: &PidNamespace::Container,
            cgroups_path: "/skiff/p/c",
            etc_files: &[],
            env: &[],
            service_env: &[],
            mounts: &[],
            security: &ProcessSecurity::default(),
            host_devices: &[],
        })
        .unwrap();
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert_eq!(spec["process"]["cwd"], "/work");
        assert_eq!(spec["linux"]["namespaces"][4]["path"], "/run/netns/x");
    }

    #[test]
    fn a_tty_container_runs_on_a_terminal_with_term_set() {
        let spec_of = |c: &v1::Container, env: &[(String, String)]| {
            build(&SpecInput {
                container: c,
                image: &image(),
                hostname: "p",
                netns_path: "/run/netns/x",
                cgroups_path: "/skiff/p/c",
                etc_files: &[],
                env,
                service_env: &[],
                mounts: &[],
                security: &ProcessSecurity::default(),
                host_devices: &[],
                host: HostNamespaces::default(),
                pid_namespace: &PidNamespace::Container,
            })
            .unwrap()
        };
        let plain = spec_of(&container(&["sh"], &[]), &[]);
        assert_eq!(plain["process"]["terminal"], false);
        assert!(!plain["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
        let tty = v1::Container {
            tty: true,
            stdin: true,
            ..container(&["sh"], &[])
        };
        let spec = spec_of(&tty, &[]);
        assert_eq!(spec["process"]["terminal"], true);
        assert!(spec["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
        // The container's own TERM wins.
        let own = spec_of(&tty, &[("TERM".into(), "vt100".into())]);
        let env = own["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("TERM=vt100")));
        assert!(!env.contains(&json!("TERM=xterm")));
    }

    #[test]
    fn volumes_and_etc_files_are_bind_mounts_parents_first() {
        let c = container(&["sh"], &[]);
        let img = image();
        let etc = |dest: &str, source: &str| (dest.to_owned(), source.to_owned());
        let etc_files = [
            etc("/etc/hosts", "/pod/etc/hosts"),
            etc("/etc/resolv.conf", "/pod/etc/resolv.conf"),
        ];
        let mount =
            |destination: &str, source: &str, read_only, host_to_container| ContainerMount {
                destination: destination.into(),
                source: source.into(),
                read_only,
                host_to_container,
            };
        let mounts = [
            mount("/data/cache", "/pod/volumes/cache", false, false),
            mount("/etc", "/pod/volumes/config", true, false),
            mount("/etc/resolv.conf", "/host/resolv.conf", true, false),
            mount("/media", "/srv/media", false, true),
        ];
        let spec = build(&SpecInput {
            container: &c,
            image: &img,
            hostname: "p",
            netns_path: "/run/netns/x",
            host: HostNamespaces::default(),
            pid_namespace: &PidNamespace::Container,
            cgroups_path: "/skiff/p/c",
            etc_files: &etc_files,
            env: &[],
            service_env: &[],
            mounts: &mounts,
            security: &ProcessSecurity::default(),
            host_devices: &[],
        })
        .unwrap();
        let binds: Vec<(String, String, Vec<String>)> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .map(|m| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                let options = m["options"].as_array().unwrap().iter().map(text).collect();
                (text(&m["destination"]), text(&m["source"]), options)
            })
            .collect();
        // `options` after rbind: propagation and access.
        let bind = |dest: &str, source: &str, options: &str| {
            let mut all = vec!["rbind".to_owned()];
            all.extend(options.split(' ').map(str::to_owned));
            (dest.to_owned(), source.to_owned(), all)
        };
        assert_eq!(
            binds,
            [
                bind("/etc", "/pod/volumes/config", "rprivate ro"),
                bind("/media", "/srv/media", "rslave rw"),
                // After /etc, so it shows over the volume; resolv.conf is
                // the volume's.
                bind("/etc/hosts", "/pod/etc/hosts", "rprivate rw"),
                bind("/data/cache", "/pod/volumes/cache", "rprivate rw"),
                bind("/etc/resolv.conf", "/host/resolv.conf", "rprivate ro"),
            ]
        );
        assert_eq!(spec["linux"]["rootfsPropagation"], "rslave");
    }

    /// The spec of a plain container confined as `security` says, on a
    /// host whose devices are `/dev/sda` and `/dev/null`.
    fn confined(security: &ProcessSecurity) -> Value {
        let c = container(&["sh"], &[]);
        let img = image();
        let device = |path: &str, kind, major, minor| HostDevice {
            path: path.into(),
            kind,
            major,
            minor,
            mode: 0o660,
            uid: 0,
            gid: 6,
        };
        let devices = [
            device("/dev/sda", 'b', 8, 0),
            device("/dev/null", 'c', 1, 3),
        ];
        build(&SpecInput {
            container: &c,
            image: &img,
            hostname: "p",
            netns_path: "/run/netns/x",
            host: HostNamespaces::default(),
            pid_namespace: &PidNamespace::Container,
            cgroups_path: "/skiff/p/c",
            etc_files: &[],
            env: &[],
            service_env: &[],
            mounts: &[],
            security,
            host_devices: &devices,
        })
        .unwrap()
    }

    #[test]
    fn a_pod_sharing_the_hosts_namespaces_gets_none_of_its_own_for_them() {
        let c = container(&["sh"], &[]);
        let img = image();
        let spec_with = |host: HostNamespaces, pid: &PidNamespace, netns: &str| {
            build(&SpecInput {
                container: &c,
                image: &img,
                hostname: "node-a",
                netns_path: netns,
                host,
                pid_namespace: pid,
                cgroups_path: "/skiff/p/c",
                etc_files: &[],
                env: &[],
                service_env: &[],
                mounts: &[],
                security: &ProcessSecurity::default(),
                host_devices: &[],
            })
            .unwrap()
        };
        let kinds = |spec: &Value| -> Vec<String> {
            let list = spec["linux"]["namespaces"].as_array().unwrap();
            list.iter()
                .map(|n| n["type"].as_str().unwrap().to_owned())
                .collect()
        };
        let own = spec_with(
            HostNamespaces::default(),
            &PidNamespace::Container,
            "/run/netns/x",
        );
        assert_eq!(kinds(&own), ["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(own["hostname"], "node-a");
        assert_eq!(own["linux"]["namespaces"][4]["path"], "/run/netns/x");
        let shm = |spec: &Value| {
            let mounts = spec["mounts"].as_array().unwrap().clone();
            mounts
                .into_iter()
                .find(|m| m["destination"] == "/dev/shm")
                .unwrap()
        };
        assert_eq!(shm(&own)["type"], "tmpfs");

        let all = HostNamespaces {
            network: true,
            ipc: true,
        };
        let shared = spec_with(all, &PidNamespace::Node, "/proc/42/ns/net");
        // The node's network joined by path; its hostname kept (runc may
        // not set one without a UTS namespace of its own).
        assert_eq!(kinds(&shared), ["mount", "network"]);
        assert_eq!(shared["linux"]["namespaces"][1]["path"], "/proc/42/ns/net");
        assert!(shared.get("hostname").is_none(), "{shared}");
        // The node's /dev/shm with its IPC namespace.
        assert_eq!(shm(&shared)["source"], "/dev/shm");
        assert_eq!(shm(&shared)["type"], "bind");

        let none = HostNamespaces::default();
        let spec = spec_with(none, &PidNamespace::Node, "/run/netns/x");
        assert_eq!(kinds(&spec), ["ipc", "uts", "mount", "network"]);
        assert_eq!(
            HostNamespaces::of(&v1::PodSpec::default()),
            HostNamespaces::default()
        );
    }

    #[test]
    fn the_pid_namespace_is_the_containers_own_the_pods_or_the_nodes() {
        let c = container(&["sh"], &[]);
        let img = image();
        let pid_entries = |pid: &PidNamespace| -> Vec<Value> {
            let spec = build(&SpecInput {
                container: &c,
                image: &img,
                hostname: "p",
                netns_path: "/run/netns/x",
                host: HostNamespaces::default(),
                pid_namespace: pid,
                cgroups_path: "/skiff/p/c",
                etc_files: &[],
                env: &[],
                service_env: &[],
                mounts: &[],
                security: &ProcessSecurity::default(),
                host_devices: &[],
            })
            .unwrap();
            let namespaces = spec["linux"]["namespaces"].as_array().unwrap().clone();
            namespaces
                .into_iter()
                .filter(|n| n["type"] == "pid")
                .collect()
        };
        // Its own: a new namespace, no path.
        assert_eq!(
            pid_entries(&PidNamespace::Container),
            [json!({"type": "pid"})]
        );
        // The pod's: its pause process's, joined by path.
        let pod = PidNamespace::Pod("/proc/4000/ns/pid".into());
        assert_eq!(
            pid_entries(&pod),
            [json!({"type": "pid", "path": "/proc/4000/ns/pid"})]
        );
        // The node's: none of its own, so runc leaves it in the node's.
        assert!(pid_entries(&PidNamespace::Node).is_empty());
    }

    /// The options of the mount at `destination`.
    fn mount_options(spec: &Value, destination: &str) -> Vec<String> {
        let mounts = spec["mounts"].as_array().unwrap();
        let mount = mounts.iter().find(|m| m["destination"] == destination);
        let options = mount.and_then(|m| m["options"].as_array());
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        options
            .map(|o| o.iter().map(text).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_default_container_is_root_with_the_default_capabilities_and_no_filter() {
        let spec = confined(&ProcessSecurity::default());
        let process = &spec["process"];
        assert_eq!(process["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(
            process["capabilities"]["bounding"],
            json!(DEFAULT_CAPABILITIES)
        );
        assert_eq!(
            process["capabilities"]["effective"],
            json!(DEFAULT_CAPABILITIES)
        );
        assert!(process["capabilities"].get("inheritable").is_none());
        assert_eq!(process["noNewPrivileges"], false);
        assert_eq!(spec["root"]["readonly"], false);
        let linux = &spec["linux"];
        assert!(linux.get("seccomp").is_none());
        assert!(linux.get("devices").is_none());
        assert_eq!(linux["resources"]["devices"][0]["allow"], false);
        assert!(linux["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        assert!(linux["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
        assert!(mount_options(&spec, "/sys").contains(&"ro".to_owned()));
        assert!(mount_options(&spec, "/sys/fs/cgroup").contains(&"ro".to_owned()));
    }

    #[test]
    fn each_security_setting_reaches_the_spec() {
        let security = ProcessSecurity {
            uid: 1000,
            gid: 3000,
            additional_gids: vec![3000, 2000, 4000],
            capabilities: vec!["CAP_NET_BIND_SERVICE".into()],
            read_only_root: true,
            no_new_privileges: true,
            privileged: false,
            seccomp: Seccomp::RuntimeDefault,
        };
        let spec = confined(&security);
        let process = &spec["process"];
        assert_eq!(
            process["user"],
            json!({"uid": 1000, "gid": 3000, "additionalGids": [3000, 2000, 4000]})
        );
        let caps = json!(["CAP_NET_BIND_SERVICE"]);
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(process["capabilities"][set], caps, "{set}");
        }
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(spec["root"]["readonly"], true);
        let seccomp = &spec["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
        let refused = seccomp["syscalls"][0]["names"].as_array().unwrap();
        assert!(refused.contains(&json!("mount")), "{refused:?}");
    }

    #[test]
    fn a_privileged_container_gets_everything_and_no_filter() {
        let security = ProcessSecurity {
            capabilities: ALL_CAPABILITIES.map(str::to_owned).to_vec(),
            privileged: true,
            // Asked for, but a privileged container runs unconfined.
            seccomp: Seccomp::RuntimeDefault,
            ..ProcessSecurity::default()
        };
        let spec = confined(&security);
        let linux = &spec["linux"];
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            json!(ALL_CAPABILITIES.as_slice())
        );
        assert!(linux.get("seccomp").is_none());
        assert!(linux.get("maskedPaths").is_none());
        assert!(linux.get("readonlyPaths").is_none());
        assert_eq!(linux["resources"]["devices"][0]["allow"], true);
        assert_eq!(
            linux["devices"][0],
            json!({
                "path": "/dev/sda", "type": "b", "major": 8, "minor": 0,
                "fileMode": 0o660, "uid": 0, "gid": 6
            })
        );
        assert_eq!(linux["devices"][1]["type"], "c");
        assert!(mount_options(&spec, "/sys").contains(&"rw".to_owned()));
        assert!(mount_options(&spec, "/sys/fs/cgroup").contains(&"rw".to_owned()));
    }

    fn limited(resource: &str, limit: &str) -> Result<Value, SpecError> {
        let mut c = container(&["sh"], &[]);
        c.resources = Some(v1::ResourceRequirements {
            limits: [(resource.to_string(), limit.to_string())]
                .into_iter()
                .collect(),
            requests: Default::default(),
        });
        resources(&c, false)
    }

    #[test]
    fn memory_limits_are_exact_bytes() {
        for (limit, bytes) in [
            ("128Mi", 134_217_728i64),
            ("1Gi", 1 << 30),
            ("1.5Gi", 1_610_612_736),
            ("1G", 1_000_000_000),
            ("64M", 64_000_000),
            // Exact where floating point gave one byte more.
            ("1.07G", 1_070_000_000),
            ("5e6", 5_000_000),
            ("4194304", 4 << 20),
            ("4194303500m", 4 << 20),
        ] {
            assert_eq!(
                limited("memory", limit).unwrap()["memory"]["limit"],
                bytes,
                "{limit}"
            );
        }
        let err = limited("memory", "4194303").unwrap_err();
        assert!(matches!(err, SpecError::MemoryTooLow { .. }), "{err}");
        let err = limited("memory", "x").unwrap_err();
        assert!(matches!(err, SpecError::BadQuantity { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("resources.limits.memory: \"x\" is not a quantity"),
            "{message}"
        );
    }

    #[test]
    fn cpu_limits_become_a_quota_per_100ms() {
        for (limit, quota) in [
            ("500m", 50_000u64),
            ("100m", 10_000),
            ("250m", 25_000),
            ("1.5", 150_000),
            ("2", 200_000),
            ("0.1", 10_000),
            // Exact where floating point gave 2008 millicores.
            ("2.007", 200_700),
            ("1m", 1000),
            ("0.0001", 1000),
        ] {
            let spec = limited("cpu", limit).unwrap();
            assert_eq!(spec["cpu"]["quota"], quota, "{limit}");
            assert_eq!(spec["cpu"]["period"], CPU_PERIOD_US, "{limit}");
        }
        let err = limited("cpu", "0").unwrap_err();
        assert!(matches!(err, SpecError::CpuNotPositive { .. }), "{err}");
        let err = limited("cpu", "lots").unwrap_err();
        assert!(matches!(err, SpecError::BadQuantity { .. }), "{err}");
        assert!(err.to_string().contains("resources.limits.cpu"), "{err}");
    }
}
