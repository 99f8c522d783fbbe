//! `skiff check-config`, in the manner of `k3s check-config`: checks the
//! machine skiff is about to run on, prints one line per finding (ok,
//! warning or fail, with the reason and the fix) and the counts, and exits
//! non-zero when anything fails. It looks at the kernel features the agent
//! uses ([`kernel`]), the memory cgroup that holds pods to their memory
//! limits ([`memory_cgroup`]), the programs the agent runs ([`programs`]),
//! the free space at the data dir ([`disk`]), the clock ([`clock`]), and
//! whether it runs as root.
//!
//! It only reads: no module is loaded, nothing is written. The kernel's
//! files are read under [`HostFiles`] (`/proc`, `/sys`, `/lib/modules` and
//! `/boot`, each movable so that tests read fixture trees); everything
//! else it asks of the machine goes through the narrow [`Machine`] trait,
//! which [`RealMachine`] answers here and a fake answers in tests.

pub mod clock;
pub mod disk;
pub mod host_files;
pub mod kernel;
pub mod machine;
pub mod memory_cgroup;
pub mod programs;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub use host_files::HostFiles;
pub use machine::{Machine, RealMachine};

use crate::DEFAULT_DATA_DIR;

/// Flags of `skiff check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The data dir whose free space is checked.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The socket of a running containerd the agent is to use (its
    /// --containerd-socket); without it, the agent runs its own containerd.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// Read /proc from this directory instead (for tests).
    #[arg(long, env = "SKIFF_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Read /sys from this directory instead (for tests).
    #[arg(long, env = "SKIFF_SYS_ROOT", default_value = "/sys")]
    pub sys_root: PathBuf,
    /// Read /lib/modules from this directory instead (for tests).
    #[arg(long, env = "SKIFF_MODULES_ROOT", default_value = "/lib/modules")]
    pub modules_root: PathBuf,
    /// Read /boot from this directory instead (for tests).
    #[arg(long, env = "SKIFF_BOOT_ROOT", default_value = "/boot")]
    pub boot_root: PathBuf,
}

/// What `skiff check-config` looks at.
#[derive(Debug, Clone)]
pub struct CheckScope {
    /// Where the kernel's files are read.
    pub files: HostFiles,
    /// The data dir whose free space counts.
    pub data_dir: PathBuf,
    /// A running containerd's socket, for the agent to use instead of its own.
    pub containerd_socket: Option<PathBuf>,
}

impl From<CheckConfigArgs> for CheckScope {
    fn from(args: CheckConfigArgs) -> CheckScope {
        CheckScope {
            files: HostFiles {
                proc_root: args.proc_root,
                sys_root: args.sys_root,
                modules_root: args.modules_root,
                boot_root: args.boot_root,
            },
            data_dir: args.data_dir,
            containerd_socket: args.containerd_socket,
        }
    }
}

/// How a finding bears on running skiff here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// What skiff needs is there.
    Ok,
    /// skiff can run, but something may go wrong, or this could not be told.
    Warning,
    /// skiff will not run properly until this is fixed.
    Fail,
}

impl Level {
    /// The word that starts the finding's line.
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What was checked: `kernel vxlan`, `memory cgroup`, `containerd`, ...
    pub check: String,
    /// What was found and, when it is not ok, why that matters.
    pub detail: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(Level::Ok, check.into(), detail.into())
    }

    pub fn warning(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(Level::Warning, check.into(), detail.into())
    }

    pub fn fail(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(Level::Fail, check.into(), detail.into())
    }

    /// The same finding, naming what to do about it.
    pub fn with_fix(self, fix: impl Into<String>) -> Finding {
        Finding {
            fix: Some(fix.into()),
            ..self
        }
    }

    fn new(level: Level, check: String, detail: String) -> Finding {
        Finding {
            level,
            check,
            detail,
            fix: None,
        }
    }
}

/// `<level>  <check>: <detail>[; fix: <fix>]`, the level padded so that
/// the checks line up.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = self.level.label();
        write!(f, "{level:<7}  {}: {}", self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// How many findings there are of each level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub ok: usize,
    pub warnings: usize,
    pub failures: usize,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Summary {
        let mut summary = Summary::default();
        for finding in findings {
            match finding.level {
                Level::Ok => summary.ok += 1,
                Level::Warning => summary.warnings += 1,
                Level::Fail => summary.failures += 1,
            }
        }
        summary
    }
}

/// Runs `skiff check-config`: the report on stdout; exit 0 when nothing
/// failed, 1 otherwise.
pub fn run(args: CheckConfigArgs) -> ExitCode {
    let findings = check(&CheckScope::from(args), &RealMachine);
    match write_report(&findings, &mut std::io::stdout().lock()) {
        Ok(summary) if summary.failures == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            crate::print_error(format_args!("writing the report: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Every finding on the machine, in report order.
pub fn check(scope: &CheckScope, machine: &dyn Machine) -> Vec<Finding> {
    let mut findings = kernel::check(&scope.files);
    findings.push(memory_cgroup::check(&scope.files));
    let socket = scope.containerd_socket.as_deref();
    findings.extend(programs::check(machine, socket));
    findings.push(disk::check(machine, &scope.data_dir));
    findings.extend(clock::check(&machine.clock()));
    findings.push(privileges(machine.is_root()));
    findings
}

/// Writes a line per finding, then the counts, which it returns.
pub fn write_report(findings: &[Finding], out: &mut impl Write) -> std::io::Result<Summary> {
    for finding in findings {
        writeln!(out, "{finding}")?;
    }
    let summary = Summary::of(findings);
    writeln!(
        out,
        "{} ok, {} warnings, {} failures",
        summary.ok, summary.warnings, summary.failures
    )?;
    if summary.failures > 0 {
        writeln!(out, "fix the failures above before running skiff here")?;
    }
    Ok(summary)
}

/// Whether we run as root, as `skiff server` and `skiff agent` must: they
/// make network devices, nftables rules and mounts, and run containerd.
fn privileges(is_root: bool) -> Finding {
    const CHECK: &str = "privileges";
    if is_root {
        return Finding::ok(CHECK, "running as root");
    }
    let detail = "not root, which skiff server and skiff agent must be (skiff master need not)";
    let fix = "run skiff server and skiff agent as root, as the systemd units do";
    Finding::warning(CHECK, detail).with_fix(fix)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::clock::{ClockFacts, TimeSync};
    use super::disk::DiskSpace;
    use super::*;

    const RELEASE: &str = "6.6.51+rpt-rpi-2712";
    const MODEL: &str = "Raspberry Pi 5 Model B Rev 1.0\0";
    const CMDLINE: &str = "console=tty1 root=PARTUUID=4e639091-02 rootwait cgroup_disable=memory\n";
    const CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";
    const LOADED: &str = "\
vxlan 106496 0 - Live 0x0000000000000000
nf_tables 270336 4 nft_ct, Live 0x0000000000000000
";
    const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\tproc\nnodev\tcgroup2\nnodev\toverlay\n\text4\n";
    const BUILTIN: &str = "kernel/net/bridge/bridge.ko\nkernel/drivers/net/veth.ko\n";
    const INSTALLED: &str = "\
kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz
kernel/net/netfilter/nf_tables.ko.xz: kernel/lib/libcrc32c.ko.xz
kernel/net/netfilter/nft_nat.ko.xz: kernel/net/netfilter/nf_nat.ko.xz
kernel/net/netfilter/nft_masq.ko.xz: kernel/net/netfilter/nf_nat.ko.xz
kernel/net/netfilter/nft_ct.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz
kernel/net/netfilter/nft-numgen.ko.xz: kernel/net/netfilter/nf_tables.ko.xz
kernel/net/ipv4/netfilter/nft_reject_ipv4.ko.xz: kernel/net/netfilter/nf_tables.ko.xz
kernel/net/ipv4/netfilter/nft_fib_ipv4.ko.xz: kernel/net/netfilter/nft_fib.ko.xz
";

    /// A Raspberry Pi 5 whose kernel has all skiff needs, told through each
    /// of the files that can say so.
    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn healthy() -> Host {
            let host = Host {
                dir: tempfile::tempdir().unwrap(),
            };
            host.write("proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
            host.write("proc/modules", LOADED);
            host.write("proc/filesystems", FILESYSTEMS);
            host.write("proc/cmdline", CMDLINE);
            host.write("proc/device-tree/model", MODEL);
            host.write("sys/fs/cgroup/cgroup.controllers", CONTROLLERS);
            host.write(&modules_file("modules.builtin"), BUILTIN);
            host.write(&modules_file("modules.dep"), INSTALLED);
            host.write("boot/firmware/cmdline.txt", CMDLINE);
            host
        }

        fn files(&self) -> HostFiles {
            let root = self.dir.path();
            HostFiles {
                proc_root: root.join("proc"),
                sys_root: root.join("sys"),
                modules_root: root.join("lib/modules"),
                boot_root: root.join("boot"),
            }
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn write_gzip(&self, path: &str, text: &str) {
            let file = std::fs::File::create(self.dir.path().join(path)).unwrap();
            let mut gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            gzip.write_all(text.as_bytes()).unwrap();
            gzip.finish().unwrap();
        }

        fn remove(&self, path: &str) {
            let path = self.dir.path().join(path);
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    fn modules_file(name: &str) -> String {
        format!("lib/modules/{RELEASE}/{name}")
    }

    /// A machine with every program installed, room on disk, a right and
    /// synchronized clock, running as root; tests spoil what they need.
    struct FakeMachine {
        missing: BTreeSet<&'static str>,
        root: bool,
        now: SystemTime,
        sync: TimeSync,
        available: u64,
    }

    impl FakeMachine {
        fn healthy() -> FakeMachine {
            FakeMachine {
                missing: BTreeSet::new(),
                root: true,
                // 2026-01-02T02:54:05Z
                now: UNIX_EPOCH + Duration::from_secs(1_767_322_445),
                sync: TimeSync::Kernel,
                available: 20 << 30,
            }
        }
    }

    impl Machine for FakeMachine {
        fn find_program(&self, program: &str) -> Option<PathBuf> {
            if self.missing.contains(program) {
                return None;
            }
            Some(Path::new("/usr/bin").join(program))
        }

        fn version(&self, program: &Path) -> Option<String> {
            let name = program.file_name()?.to_string_lossy();
            Some(format!("{name} version 1.7.0"))
        }

        fn socket_exists(&self, _: &Path) -> bool {
            true
        }

        fn disk_space(&self, dir: &Path) -> nix::Result<DiskSpace> {
            Ok(DiskSpace {
                measured: dir.to_owned(),
                available: self.available,
                total: 64 << 30,
            })
        }

        fn clock(&self) -> ClockFacts {
            ClockFacts {
                now: self.now,
                sync: self.sync,
            }
        }

        fn is_root(&self) -> bool {
            self.root
        }
    }

    fn run_checks(host: &Host, machine: &FakeMachine) -> Vec<Finding> {
        let scope = CheckScope {
            files: host.files(),
            data_dir: PathBuf::from("/var/lib/skiff"),
            containerd_socket: None,
        };
        check(&scope, machine)
    }

    fn finding<'a>(findings: &'a [Finding], name: &str) -> &'a Finding {
        let found = findings.iter().find(|finding| finding.check == name);
        found.unwrap_or_else(|| panic!("no {name:?} finding in {findings:#?}"))
    }

    #[test]
    fn a_healthy_machine_passes() {
        let host = Host::healthy();
        let findings = run_checks(&host, &FakeMachine::healthy());
        assert_eq!(Summary::of(&findings).ok, findings.len(), "{findings:#?}");
        for feature in &kernel::FEATURES {
            finding(&findings, &format!("kernel {}", feature.module));
        }
        let memory = finding(&findings, memory_cgroup::CHECK);
        let line = memory.to_string();
        assert_eq!(line, "ok       memory cgroup: enabled (cgroup v2)");
        let mut report = Vec::new();
        let summary = write_report(&findings, &mut report).unwrap();
        assert_eq!(summary.ok, findings.len());
        let report = String::from_utf8(report).unwrap();
        assert_eq!(report.lines().count(), findings.len() + 1, "{report}");
        assert!(report.ends_with("0 warnings, 0 failures\n"), "{report}");
    }

    #[test]
    fn no_memory_cgroup_fails_with_the_raspberry_pi_fix() {
        let host = Host::healthy();
        host.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n");
        let findings = run_checks(&host, &FakeMachine::healthy());
        let memory = finding(&findings, memory_cgroup::CHECK);
        assert_eq!(memory.level, Level::Fail, "{memory}");
        assert!(memory.detail.contains("cgroup_disable=memory"), "{memory}");
        let fix = memory.fix.as_deref().unwrap_or_default();
        assert!(fix.contains("this is a Raspberry Pi"), "{fix}");
        assert!(fix.contains(memory_cgroup::KERNEL_ARGS), "{fix}");
        assert!(fix.contains("/boot/firmware/cmdline.txt"), "{fix}");
        assert_eq!(Summary::of(&findings).failures, 1, "{findings:#?}");
    }

    #[test]
    fn cgroup_v1_is_read_from_proc_cgroups() {
        let host = Host::healthy();
        host.remove("sys/fs/cgroup/cgroup.controllers");
        host.remove("proc/device-tree");
        let header = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t80\t1\n";
        host.write("proc/cgroups", &format!("{header}memory\t4\t90\t1\n"));
        let findings = run_checks(&host, &FakeMachine::healthy());
        let memory = finding(&findings, memory_cgroup::CHECK);
        assert_eq!(memory.detail, "enabled (cgroup v1)");
        host.write("proc/cgroups", &format!("{header}memory\t0\t90\t0\n"));
        let findings = run_checks(&host, &FakeMachine::healthy());
        let memory = finding(&findings, memory_cgroup::CHECK);
        assert_eq!(memory.level, Level::Fail, "{memory}");
        // Not a Pi: the general fix, which still names Raspberry Pi OS's file.
        let fix = memory.fix.as_deref().unwrap_or_default();
        assert!(fix.starts_with("add cgroup_memory=1"), "{fix}");
        assert!(fix.contains("/boot/firmware/cmdline.txt"), "{fix}");
    }

    #[test]
    fn a_kernel_without_vxlan_fails_naming_it() {
        let host = Host::healthy();
        host.write("proc/modules", "nf_tables 270336 4 nft_ct, Live 0x0\n");
        let installed = INSTALLED.replace("vxlan", "ipip");
        host.write(&modules_file("modules.dep"), &installed);
        let findings = run_checks(&host, &FakeMachine::healthy());
        let vxlan = finding(&findings, "kernel vxlan");
        assert_eq!(vxlan.level, Level::Fail, "{vxlan}");
        assert!(vxlan.detail.contains("the VXLAN device"), "{vxlan}");
        let fix = vxlan.fix.as_deref().unwrap_or_default();
        assert!(fix.contains("vxlan module (CONFIG_VXLAN)"), "{fix}");
        assert_eq!(Summary::of(&findings).failures, 1, "{findings:#?}");
    }

    #[test]
    fn the_kernel_config_speaks_when_no_module_list_does() {
        let host = Host::healthy();
        host.remove("proc/modules");
        host.remove(&format!("lib/modules/{RELEASE}"));
        let config = "CONFIG_VXLAN=y\nCONFIG_BRIDGE=m\n# CONFIG_VETH is not set\n";
        host.write_gzip("proc/config.gz", config);
        let findings = run_checks(&host, &FakeMachine::healthy());
        assert_eq!(finding(&findings, "kernel vxlan").level, Level::Ok);
        // overlay is still a registered filesystem.
        assert_eq!(finding(&findings, "kernel overlay").level, Level::Ok);
        // A module, but no modules.dep to tell whether it is installed.
        assert_eq!(finding(&findings, "kernel bridge").level, Level::Warning);
        let veth = finding(&findings, "kernel veth");
        assert_eq!(veth.level, Level::Fail, "{veth}");
        assert!(veth.detail.contains("CONFIG_VETH is not set in"), "{veth}");

        // /boot/config-<release> when there is no /proc/config.gz.
        host.remove("proc/config.gz");
        host.write(&format!("boot/config-{RELEASE}"), "CONFIG_VETH=y\n");
        let findings = run_checks(&host, &FakeMachine::healthy());
        assert_eq!(finding(&findings, "kernel veth").level, Level::Ok);

        // Nothing to go on (a container without /lib/modules): a warning.
        host.remove(&format!("boot/config-{RELEASE}"));
        let findings = run_checks(&host, &FakeMachine::healthy());
        let vxlan = finding(&findings, "kernel vxlan");
        assert_eq!(vxlan.level, Level::Warning, "{vxlan}");
        assert!(vxlan.detail.starts_with("cannot tell"), "{vxlan}");
    }

    #[test]
    fn the_rest_of_the_machine_is_checked_too() {
        let host = Host::healthy();
        let machine = FakeMachine {
            missing: BTreeSet::from(["runc"]),
            root: false,
            now: UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            sync: TimeSync::Unsynchronized,
            available: 1 << 30,
        };
        let findings = run_checks(&host, &machine);
        let level = |name: &str| finding(&findings, name).level;
        assert_eq!(level("containerd"), Level::Ok);
        assert_eq!(level("containerd-shim-runc-v2"), Level::Ok);
        assert_eq!(level("runc"), Level::Fail);
        assert_eq!(level("nft"), Level::Ok);
        assert_eq!(level(disk::CHECK), Level::Warning);
        assert_eq!(level(clock::TIME_CHECK), Level::Warning);
        assert_eq!(level(clock::SYNC_CHECK), Level::Warning);
        assert_eq!(level("privileges"), Level::Warning);
        let containerd = &finding(&findings, "containerd").detail;
        assert!(containerd.contains("version 1.7.0"), "{containerd}");
    }
}
