//! The kernel features the agent uses, and whether this kernel has them:
//! the devices of the pod network (the bridge `skiff0` holding the pods'
//! gateway address, a routed veth pair per pod, the VXLAN device
//! `skiff.1`), overlayfs for containerd's `overlayfs`
//! snapshotter, and nf_tables with the expressions of the agent's `ip
//! skiff` table (NAT, masquerade, conntrack, random numbers, reject, fib).
//! `br_netfilter` is not among them: pods are routed, not bridged, so
//! every packet between two pods of a node meets the `ip` hooks.
//!
//! A feature is there when its module is loaded (`/proc/modules`), it is a
//! registered filesystem (`/proc/filesystems`), built in
//! (`/lib/modules/<release>/modules.builtin`), a module that can be loaded
//! (`modules.dep`), or set in the kernel's build config (`/proc/config.gz`,
//! else `/boot/config-<release>`). It is missing when that config leaves
//! it out, or when there is no config but `modules.dep` does not name it.
//! With neither to go on (a container without `/lib/modules`), the finding
//! is a warning saying so. Nothing is ever loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::host_files::{self, read_gzip_optional, read_optional, HostFiles, ReadError};
use super::Finding;

/// A kernel feature the agent uses.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// The module that provides it; its name in the report (`kernel <module>`).
    pub module: &'static str,
    /// The build config symbol that puts it in the kernel.
    pub config: &'static str,
    /// Whether it registers a filesystem of the module's name.
    pub filesystem: bool,
    /// What the agent needs it for.
    pub used_for: &'static str,
}

/// What the agent needs of the kernel, in report order.
pub const FEATURES: [Feature; 11] = [
    Feature {
        module: "vxlan",
        config: "CONFIG_VXLAN",
        filesystem: false,
        used_for: "the VXLAN device between nodes (skiff.1)",
    },
    Feature {
        module: "bridge",
        config: "CONFIG_BRIDGE",
        filesystem: false,
        used_for: "the bridge holding the pods' gateway (skiff0)",
    },
    Feature {
        module: "veth",
        config: "CONFIG_VETH",
        filesystem: false,
        used_for: "a veth pair per pod",
    },
    Feature {
        module: "overlay",
        config: "CONFIG_OVERLAY_FS",
        filesystem: true,
        used_for: "containerd's overlayfs snapshotter (every container's filesystem)",
    },
    Feature {
        module: "nf_tables",
        config: "CONFIG_NF_TABLES",
        filesystem: false,
        used_for: "the agent's nftables table (ip skiff)",
    },
    Feature {
        module: "nft_nat",
        config: "CONFIG_NFT_NAT",
        filesystem: false,
        used_for: "sending Service clusterIPs and host ports to pods (DNAT)",
    },
    Feature {
        module: "nft_masq",
        config: "CONFIG_NFT_MASQ",
        filesystem: false,
        used_for: "masquerading pod traffic that leaves the cluster",
    },
    Feature {
        module: "nft_ct",
        config: "CONFIG_NFT_CT",
        filesystem: false,
        used_for: "conntrack matches (a pod reaching itself through its Service)",
    },
    Feature {
        module: "nft_numgen",
        config: "CONFIG_NFT_NUMGEN",
        filesystem: false,
        used_for: "picking a Service's endpoint at random",
    },
    Feature {
        module: "nft_reject_ipv4",
        config: "CONFIG_NFT_REJECT_IPV4",
        filesystem: false,
        used_for: "refusing connections to Service addresses nothing serves",
    },
    Feature {
        module: "nft_fib_ipv4",
        config: "CONFIG_NFT_FIB_IPV4",
        filesystem: false,
        used_for: "host ports on every local address",
    },
];

/// A module named in the kernel config but missing from `modules.dep`.
const MODULES_FIX: &str = "install this kernel's modules (Ubuntu: linux-modules-extra-$(uname -r))";

/// What the kernel says about itself; each part `None` when its file is
/// not there.
#[derive(Debug, Default)]
pub struct KernelFacts {
    /// `uname -r`, from `<proc>/sys/kernel/osrelease`.
    pub release: Option<String>,
    /// Loaded modules (`<proc>/modules`).
    pub loaded: Option<BTreeSet<String>>,
    /// Registered filesystems (`<proc>/filesystems`).
    pub filesystems: Option<BTreeSet<String>>,
    /// Modules built into the kernel (`modules.builtin`).
    pub builtin: Option<BTreeSet<String>>,
    /// Modules that can be loaded (`modules.dep`).
    pub installed: Option<BTreeSet<String>>,
    /// The kernel's build config.
    pub config: Option<KernelConfig>,
}

/// A kernel build config: `CONFIG_X=y`, `=m` or another value.
#[derive(Debug)]
pub struct KernelConfig {
    /// Where it was read.
    pub source: PathBuf,
    /// The symbols that are set; unset ones are absent.
    pub symbols: BTreeMap<String, String>,
}

impl KernelConfig {
    pub fn parse(source: PathBuf, text: &str) -> KernelConfig {
        let mut symbols = BTreeMap::new();
        for line in text.lines() {
            // `# CONFIG_X is not set` has no `=`.
            let Some((symbol, value)) = line.split_once('=') else {
                continue;
            };
            if symbol.starts_with("CONFIG_") {
                symbols.insert(symbol.to_owned(), value.trim().to_owned());
            }
        }
        KernelConfig { source, symbols }
    }
}

/// Reads files, keeping aside the errors of those that are there but
/// cannot be read.
#[derive(Debug, Default)]
struct Reader {
    problems: Vec<ReadError>,
}

impl Reader {
    fn text(&mut self, path: &Path) -> Option<String> {
        self.keep(read_optional(path))
    }

    fn gzip_text(&mut self, path: &Path) -> Option<String> {
        self.keep(read_gzip_optional(path))
    }

    fn keep(&mut self, result: host_files::Result<Option<String>>) -> Option<String> {
        match result {
            Ok(text) => text,
            Err(error) => {
                self.problems.push(error);
                None
            }
        }
    }
}

impl KernelFacts {
    /// Reads what is there; the files that are there but cannot be read
    /// come back beside it.
    pub fn read(files: &HostFiles) -> (KernelFacts, Vec<ReadError>) {
        let mut reader = Reader::default();
        let release = reader
            .text(&files.proc("sys/kernel/osrelease"))
            .map(|text| text.trim().to_owned())
            .filter(|release| !release.is_empty());
        let loaded = reader.text(&files.proc("modules"));
        let filesystems = reader.text(&files.proc("filesystems"));
        let proc_config = files.proc("config.gz");
        let mut config = reader
            .gzip_text(&proc_config)
            .map(|text| KernelConfig::parse(proc_config, &text));
        let mut builtin = None;
        let mut installed = None;
        if let Some(release) = &release {
            let dir = files.modules(release);
            builtin = reader.text(&dir.join("modules.builtin"));
            installed = reader.text(&dir.join("modules.dep"));
            let boot_config = files.boot(&format!("config-{release}"));
            if config.is_none() {
                config = reader
                    .text(&boot_config)
                    .map(|text| KernelConfig::parse(boot_config, &text));
            }
        }
        let facts = KernelFacts {
            release,
            loaded: loaded.as_deref().map(loaded_modules),
            filesystems: filesystems.as_deref().map(filesystem_names),
            builtin: builtin.as_deref().map(listed_modules),
            installed: installed.as_deref().map(listed_modules),
            config,
        };
        (facts, reader.problems)
    }
}

/// A warning for each kernel file that is there but cannot be read, then a
/// finding per feature.
pub fn check(files: &HostFiles) -> Vec<Finding> {
    let (facts, problems) = KernelFacts::read(files);
    let mut findings = Vec::new();
    for problem in problems {
        findings.push(Finding::warning("kernel", problem.to_string()));
    }
    for feature in &FEATURES {
        findings.push(judge(feature, &facts));
    }
    findings
}

/// Whether this kernel has `feature`, and how that is known.
pub fn judge(feature: &Feature, facts: &KernelFacts) -> Finding {
    let check = format!("kernel {}", feature.module);
    let module = feature.module;
    if holds(facts.loaded.as_ref(), module) {
        return Finding::ok(check, "loaded");
    }
    if feature.filesystem && holds(facts.filesystems.as_ref(), module) {
        return Finding::ok(check, "a registered filesystem");
    }
    if holds(facts.builtin.as_ref(), module) {
        return Finding::ok(check, "built in (modules.builtin)");
    }
    if holds(facts.installed.as_ref(), module) {
        return Finding::ok(check, "a module that can be loaded (modules.dep)");
    }
    let modules_listed = facts.installed.is_some();
    if let Some(config) = &facts.config {
        return by_config(feature, config, modules_listed, check);
    }
    let symbol = feature.config;
    let used_for = feature.used_for;
    if modules_listed {
        let detail = format!(
            "not loaded, not built in and not in modules.dep; the agent needs it for {used_for}"
        );
        let fix = format!("install or build the {module} module ({symbol})");
        return Finding::fail(check, detail).with_fix(fix);
    }
    let detail = format!(
        "cannot tell: not loaded, and no kernel config (/proc/config.gz, /boot/config-$(uname -r)) or module lists (/lib/modules/$(uname -r)) to look in; the agent needs it for {used_for}"
    );
    let fix = format!("make sure the kernel has {symbol} (or a {module} module)");
    Finding::warning(check, detail).with_fix(fix)
}

/// What the build config says of `feature`, which no module or filesystem
/// list named.
fn by_config(
    feature: &Feature,
    config: &KernelConfig,
    modules_listed: bool,
    check: String,
) -> Finding {
    let symbol = feature.config;
    let source = config.source.display();
    let used_for = feature.used_for;
    match config.symbols.get(symbol).map(String::as_str) {
        Some("y") => Finding::ok(check, format!("built in ({symbol}=y in {source})")),
        Some("m") if !modules_listed => {
            let detail = format!(
                "a module ({symbol}=m in {source}), but with no modules.dep to show it is installed; the agent needs it for {used_for}"
            );
            Finding::warning(check, detail).with_fix(MODULES_FIX)
        }
        Some("m") => {
            let detail = format!(
                "a module ({symbol}=m in {source}) that is not installed (not in modules.dep); the agent needs it for {used_for}"
            );
            Finding::fail(check, detail).with_fix(MODULES_FIX)
        }
        _ => {
            let detail = format!(
                "not in this kernel ({symbol} is not set in {source}); the agent needs it for {used_for}"
            );
            let fix = format!("use a kernel built with {symbol}, as Debian's and Pi OS's are");
            Finding::fail(check, detail).with_fix(fix)
        }
    }
}

/// Whether `names` is known and holds `name`.
fn holds(names: Option<&BTreeSet<String>>, name: &str) -> bool {
    names.is_some_and(|names| names.contains(name))
}

/// Module names in `/proc/modules`: the first word of each line.
fn loaded_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.split_whitespace().next() {
            names.insert(module_name(name));
        }
    }
    names
}

/// Filesystem names in `/proc/filesystems` (`nodev\tproc`, `\text4`): the
/// last word of each line.
fn filesystem_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.split_whitespace().next_back() {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Module names in `modules.builtin` or `modules.dep`, whose lines start
/// with the module's path (`kernel/drivers/net/vxlan/vxlan.ko.xz: ...`).
fn listed_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let path = line.split(':').next().unwrap_or_default();
        let file = path.trim().rsplit('/').next().unwrap_or_default();
        let name = file.split(".ko").next().unwrap_or_default();
        if !name.is_empty() {
            names.insert(module_name(name));
        }
    }
    names
}

/// A module name as the kernel compares them: `-` and `_` are the same.
fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_lists_name_modules_as_the_kernel_does() {
        let text = "kernel/net/netfilter/nft-numgen.ko.zst: kernel/a.ko\n\nkernel/fs/overlay.ko\n";
        let names: Vec<String> = listed_modules(text).into_iter().collect();
        assert_eq!(names, ["nft_numgen", "overlay"]);
        let loaded = loaded_modules("nf_tables 270336 3 nft_ct, Live 0x0\n");
        assert!(loaded.contains("nf_tables"));
        let filesystems = filesystem_names("nodev\tsysfs\n\text4\nnodev\toverlay\n");
        assert!(filesystems.contains("overlay") && !filesystems.contains("nodev"));
    }

    #[test]
    fn a_config_names_what_is_built_in_and_what_is_a_module() {
        let text = "# comment\nCONFIG_VXLAN=y\nCONFIG_BRIDGE=m\n# CONFIG_VETH is not set\n";
        let config = KernelConfig::parse(PathBuf::from("/boot/config-6.1.0"), text);
        assert_eq!(value(&config, "CONFIG_VXLAN"), Some("y"));
        assert_eq!(value(&config, "CONFIG_BRIDGE"), Some("m"));
        assert_eq!(value(&config, "CONFIG_VETH"), None);
    }

    fn value<'a>(config: &'a KernelConfig, symbol: &str) -> Option<&'a str> {
        config.symbols.get(symbol).map(String::as_str)
    }
}
