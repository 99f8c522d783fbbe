//! `skiff check-config` as a user runs it: on this machine, which has all
//! skiff's tests need, it passes with a line for every check; on a fake
//! `/proc` and `/sys` of a Raspberry Pi without the memory cgroup it fails,
//! naming the fix.

use std::path::Path;
use std::process::{Command, Output};

use skiff_e2e::host_fixture::HostFixture;
use skiff_e2e::{e2e_prerequisites, skiff_bin};

/// Every check's name, as its line has it after the level.
const CHECKS: [&str; 20] = [
    "kernel vxlan",
    "kernel bridge",
    "kernel veth",
    "kernel overlay",
    "kernel nf_tables",
    "kernel nft_nat",
    "kernel nft_masq",
    "kernel nft_ct",
    "kernel nft_numgen",
    "kernel nft_reject_ipv4",
    "kernel nft_fib_ipv4",
    "memory cgroup",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "nft",
    "disk space",
    "clock",
    "time sync",
    "privileges",
];

/// `skiff check-config <args>`, reading this machine unless `args` say
/// otherwise.
fn check_config(args: &[String]) -> Output {
    let mut command = Command::new(skiff_bin());
    command.arg("check-config").args(args);
    for variable in [
        "SKIFF_PROC_ROOT",
        "SKIFF_SYS_ROOT",
        "SKIFF_MODULES_ROOT",
        "SKIFF_BOOT_ROOT",
    ] {
        command.env_remove(variable);
    }
    command.output().expect("run skiff check-config")
}

/// A path as a command-line argument.
fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// The line of the check named `check`: `<level>  <check>: ...`.
fn line_of<'a>(report: &'a str, check: &str) -> Option<&'a str> {
    let prefix = format!("{check}: ");
    report.lines().find(|line| {
        let after_level = line.split_once(' ').map(|(_, rest)| rest.trim_start());
        after_level.is_some_and(|rest| rest.starts_with(&prefix))
    })
}

#[test]
fn this_machine_passes_with_a_line_per_check() {
    if !e2e_prerequisites(&["containerd", "containerd-shim-runc-v2", "runc", "nft"]) {
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let out = check_config(&["--data-dir".to_owned(), arg(data_dir.path())]);
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}{stderr}");
    for check in CHECKS {
        let line = line_of(&report, check);
        let line = line.unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"));
        assert!(!line.starts_with("fail"), "{line}");
    }
    let privileges = line_of(&report, "privileges").unwrap_or_default();
    assert!(privileges.starts_with("ok"), "run as root: {privileges}");
    let last = report.lines().next_back().unwrap_or_default();
    assert!(last.ends_with(" 0 failures"), "{report}");
}

#[test]
fn a_pi_without_the_memory_cgroup_fails_naming_the_fix() {
    let host = HostFixture::without_memory_cgroup().unwrap();
    let out = check_config(&[
        "--proc-root".to_owned(),
        arg(&host.proc_root()),
        "--sys-root".to_owned(),
        arg(&host.sys_root()),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let memory = line_of(&report, "memory cgroup").unwrap_or_default();
    assert!(memory.starts_with("fail"), "{report}");
    for needed in [
        "cgroup_disable=memory",
        "fix: this is a Raspberry Pi",
        "cgroup_memory=1 cgroup_enable=memory",
        "cmdline.txt",
        "reboot",
    ] {
        assert!(memory.contains(needed), "{needed:?} not in {memory}");
    }
}
