//! The seccomp profile a container gets for `seccompProfile: RuntimeDefault`.
//! containerd's own default profile is an allow-list of some 350 system
//! calls; skiff's is the same policy written the other way round: every
//! call is allowed except those that profile refuses, each refused with
//! `EPERM` unless the container holds the capability that profile asks
//! for (`mount` with `CAP_SYS_ADMIN`, `reboot` with `CAP_SYS_BOOT`, ...).
//! `clone3` answers `ENOSYS` (so the C library falls back to `clone`),
//! `clone` with a flag that makes a namespace is refused without
//! `CAP_SYS_ADMIN`, and so are `AF_VSOCK` sockets. Two differences remain:
//! `personality` is not restricted to the default personalities, and calls
//! this list does not name (new ones) are allowed where containerd's
//! refuses them. runc skips the names the kernel does not know.

use serde_json::{json, Value};

/// Refused to every container.
const ALWAYS_REFUSED: &[&str] = &[
    "_sysctl",
    "add_key",
    "create_module",
    "get_kernel_syms",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "nfsservctl",
    "pivot_root",
    "query_module",
    "request_key",
    "swapoff",
    "swapon",
    "sysfs",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// Calls allowed only to a container holding the capability.
const NEED_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "move_pages",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// `clone` flags that make a new namespace.
const NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// `AF_VSOCK`, refused as containerd's profile refuses it.
const AF_VSOCK: u64 = 40;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The system call architectures a filter covers on this machine: the
/// native one and those its kernel also runs (32-bit x86 on x86-64, 32-bit
/// ARM on arm64), so a 32-bit call cannot go around the filter.
fn architectures() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "arm" => &["SCMP_ARCH_ARM"],
        "x86" => &["SCMP_ARCH_X86"],
        _ => &[],
    }
}

/// The calls refused to a container holding `capabilities` (`CAP_` names).
pub fn refused_calls(capabilities: &[String]) -> Vec<&'static str> {
    let holds = |cap: &str| capabilities.iter().any(|c| c == cap);
    let mut refused: Vec<&'static str> = ALWAYS_REFUSED.to_vec();
    for (_, calls) in NEED_CAPABILITY {
        for call in calls.iter().copied() {
            let allowed = NEED_CAPABILITY
                .iter()
                .any(|&(cap, allowing)| allowing.contains(&call) && holds(cap));
            if !allowed && !refused.contains(&call) {
                refused.push(call);
            }
        }
    }
    refused.sort_unstable();
    refused
}

/// The RuntimeDefault profile (`linux.seccomp` of the OCI runtime spec)
/// for a container holding `capabilities`.
pub fn runtime_default(capabilities: &[String]) -> Value {
    let errno = |names: Vec<&str>, code: u32| json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": code});
    let mut rules = vec![errno(refused_calls(capabilities), EPERM)];
    if !capabilities.iter().any(|c| c == "CAP_SYS_ADMIN") {
        rules.push(errno(vec!["clone3"], ENOSYS));
        for flag in NAMESPACE_FLAGS {
            rules.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [
                    {"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}
                ],
            }));
        }
    }
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": EPERM,
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}],
    }));
    let mut profile = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules});
    let arches = architectures();
    if !arches.is_empty() {
        profile["architectures"] = json!(arches);
    }
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn calls_are_refused_unless_the_container_holds_their_capability() {
        let none = refused_calls(&[]);
        for call in [
            "mount",
            "unshare",
            "reboot",
            "keyctl",
            "kexec_load",
            "bpf",
            "syslog",
        ] {
            assert!(none.contains(&call), "{call} refused without capabilities");
        }
        assert!(!none.contains(&"read") && !none.contains(&"ptrace"));
        let admin = refused_calls(&caps(&["CAP_SYS_ADMIN"]));
        for call in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "syslog",
            "perf_event_open",
        ] {
            assert!(!admin.contains(&call), "{call} allowed with CAP_SYS_ADMIN");
        }
        assert!(admin.contains(&"reboot") && admin.contains(&"keyctl"));
        // Either capability allows a call two of them guard.
        let bpf = refused_calls(&caps(&["CAP_BPF", "CAP_SYSLOG"]));
        assert!(!bpf.contains(&"bpf") && !bpf.contains(&"syslog"));
        assert!(bpf.contains(&"mount"));
        let time = refused_calls(&caps(&["CAP_SYS_TIME"]));
        assert!(!time.contains(&"settimeofday"));
        // Each call once, sorted.
        let mut sorted = none.clone();
        sorted.dedup();
        assert_eq!(sorted, none);
    }

    #[test]
    fn the_profile_allows_by_default_and_guards_namespaces_without_sys_admin() {
        let profile = runtime_default(&caps(&["CAP_CHOWN"]));
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = profile["syscalls"].as_array().unwrap();
        assert_eq!(rules[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(rules[0]["errnoRet"], 1);
        let names: Vec<&str> = rules[0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(names.contains(&"mount"), "{names:?}");
        assert_eq!(rules[1]["names"][0], "clone3");
        assert_eq!(rules[1]["errnoRet"], 38);
        let clones: Vec<&Value> = rules.iter().filter(|r| r["names"][0] == "clone").collect();
        assert_eq!(clones.len(), 7);
        assert_eq!(clones[4]["args"][0]["value"], 0x1000_0000u64);
        assert_eq!(clones[4]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let vsock = rules.last().unwrap();
        assert_eq!(vsock["names"][0], "socket");
        assert_eq!(vsock["args"][0]["value"], 40);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(profile["architectures"][1], "SCMP_ARCH_X86");
        }

        let admin = runtime_default(&caps(&["CAP_SYS_ADMIN"]));
        let rules = admin["syscalls"].as_array().unwrap();
        assert!(rules.iter().all(|r| r["names"][0] != "clone"));
        assert!(rules.iter().all(|r| r["names"][0] != "clone3"));
    }
}
