//! The memory cgroup controller: the kernel enforces containers' memory
//! limits (and counts their OOM kills) through it, so skiff's pods need it.
//! With cgroup v2 it is there when the root's `cgroup.controllers` lists
//! `memory`; with v1 when its row in `/proc/cgroups` says enabled.
//! Raspberry Pi OS boots its kernels with it switched off
//! (`cgroup_disable=memory`); `cgroup_memory=1 cgroup_enable=memory` at
//! the end of the kernel command line (the one line of `cmdline.txt`)
//! switches it on, and the finding's fix says so, naming the file.

use super::host_files::{self, read_optional, HostFiles};
use super::Finding;

/// The check's name in the report.
pub const CHECK: &str = "memory cgroup";
/// What the kernel command line needs for the memory cgroup.
pub const KERNEL_ARGS: &str = "cgroup_memory=1 cgroup_enable=memory";
/// How Raspberry Pi OS switches it off.
const DISABLE_ARG: &str = "cgroup_disable=memory";

/// What the kernel says of its memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCgroup {
    /// Enabled, under cgroup v1 or v2.
    Enabled { version: u8 },
    /// The kernel has it, but it is switched off; what shows that.
    Disabled { evidence: String },
    /// The kernel was built without it; what shows that.
    NotBuilt { evidence: String },
    /// Neither cgroup v2's root nor `/proc/cgroups` is there.
    NoCgroups,
}

/// Ok when enabled; otherwise a failure naming the fix.
pub fn check(files: &HostFiles) -> Finding {
    let state = match read_state(files) {
        Ok(state) => state,
        Err(error) => return Finding::warning(CHECK, format!("cannot tell: {error}")),
    };
    match state {
        MemoryCgroup::Enabled { version } => {
            let detail = format!("enabled (cgroup v{version})");
            Finding::ok(CHECK, detail)
        }
        MemoryCgroup::Disabled { evidence } => {
            let detail = format!("not enabled: {evidence}; pods' memory limits need it");
            Finding::fail(CHECK, detail).with_fix(boot_fix(files))
        }
        MemoryCgroup::NotBuilt { evidence } => {
            let detail = format!("not in this kernel: {evidence}");
            let fix = "use a kernel built with CONFIG_MEMCG, as Debian's and Pi OS's are";
            Finding::fail(CHECK, detail).with_fix(fix)
        }
        MemoryCgroup::NoCgroups => {
            let detail = "no cgroups: neither /sys/fs/cgroup/cgroup.controllers nor /proc/cgroups";
            let fix = "mount cgroup2 on /sys/fs/cgroup (systemd does)";
            Finding::fail(CHECK, detail).with_fix(fix)
        }
    }
}

/// The memory cgroup's state: from cgroup v2's root when the unified
/// hierarchy is mounted there, else from v1's `/proc/cgroups`.
pub fn read_state(files: &HostFiles) -> host_files::Result<MemoryCgroup> {
    let controllers_path = files.sys("fs/cgroup/cgroup.controllers");
    if let Some(controllers) = read_optional(&controllers_path)? {
        if controllers.split_whitespace().any(|c| c == "memory") {
            return Ok(MemoryCgroup::Enabled { version: 2 });
        }
        let shown = controllers_path.display();
        let evidence = with_cmdline(files, format!("{shown} does not list it"))?;
        return Ok(MemoryCgroup::Disabled { evidence });
    }
    let cgroups_path = files.proc("cgroups");
    let Some(cgroups) = read_optional(&cgroups_path)? else {
        return Ok(MemoryCgroup::NoCgroups);
    };
    let shown = cgroups_path.display();
    // #subsys_name hierarchy num_cgroups enabled
    for line in cgroups.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"memory") {
            continue;
        }
        if fields.get(3) == Some(&"1") {
            return Ok(MemoryCgroup::Enabled { version: 1 });
        }
        let evidence = with_cmdline(files, format!("its row in {shown} says disabled"))?;
        return Ok(MemoryCgroup::Disabled { evidence });
    }
    let evidence = format!("{shown} has no memory row");
    Ok(MemoryCgroup::NotBuilt { evidence })
}

/// `evidence`, and that the kernel was booted with `cgroup_disable=memory`
/// if it was.
fn with_cmdline(files: &HostFiles, evidence: String) -> host_files::Result<String> {
    let cmdline = read_optional(&files.proc("cmdline"))?.unwrap_or_default();
    if cmdline.split_whitespace().any(|arg| arg == DISABLE_ARG) {
        return Ok(format!(
            "{evidence} (the kernel was booted with {DISABLE_ARG})"
        ));
    }
    Ok(evidence)
}

/// What to do when the memory cgroup is switched off: Raspberry Pi OS's
/// `cmdline.txt` on a Pi, the kernel command line in general elsewhere.
fn boot_fix(files: &HostFiles) -> String {
    let cmdline_txt = cmdline_txt(files);
    if is_raspberry_pi(files) {
        return format!(
            "this is a Raspberry Pi: add {KERNEL_ARGS} to the end of the one line in {cmdline_txt}, then reboot"
        );
    }
    format!(
        "add {KERNEL_ARGS} to the kernel command line and reboot (on Raspberry Pi OS: at the end of the one line in {cmdline_txt}; with GRUB: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)"
    )
}

/// Raspberry Pi OS's kernel command line file: `/boot/firmware/cmdline.txt`
/// since bookworm, `/boot/cmdline.txt` before.
fn cmdline_txt(files: &HostFiles) -> &'static str {
    if files.boot("firmware/cmdline.txt").exists() {
        return "/boot/firmware/cmdline.txt";
    }
    if files.boot("cmdline.txt").exists() {
        return "/boot/cmdline.txt";
    }
    "/boot/firmware/cmdline.txt (/boot/cmdline.txt before Raspberry Pi OS bookworm)"
}

/// Whether the device tree names a Raspberry Pi.
fn is_raspberry_pi(files: &HostFiles) -> bool {
    let models = [
        files.proc("device-tree/model"),
        files.sys("firmware/devicetree/base/model"),
    ];
    models.iter().any(|path| {
        let model = read_optional(path).ok().flatten().unwrap_or_default();
        model.contains("Raspberry Pi")
    })
}
