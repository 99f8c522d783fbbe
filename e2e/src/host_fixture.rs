//! A fake `/proc` and `/sys` for `skiff check-config --proc-root/--sys-root`
//! (or `SKIFF_PROC_ROOT`/`SKIFF_SYS_ROOT`): a Raspberry Pi whose kernel was
//! booted without the memory cgroup, as Raspberry Pi OS boots by default,
//! so the check fails whatever the machine running the test is like.

use std::path::PathBuf;

/// cgroup v2 without `memory` among the root's controllers, `/proc/cgroups`
/// saying it is disabled, `cgroup_disable=memory` on the kernel command
/// line, and a Raspberry Pi 4's device-tree model. Removed on drop.
pub struct HostFixture {
    dir: tempfile::TempDir,
}

const CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t80\t1
cpu\t0\t80\t1
memory\t0\t80\t0
pids\t0\t80\t1
";
const CMDLINE: &str = "console=tty1 root=PARTUUID=738a4d67-02 rootwait cgroup_disable=memory\n";
const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\tproc\nnodev\tcgroup2\nnodev\toverlay\n\text4\n";

impl HostFixture {
    pub fn without_memory_cgroup() -> std::io::Result<HostFixture> {
        let fixture = HostFixture {
            dir: tempfile::tempdir()?,
        };
        fixture.write("proc/sys/kernel/osrelease", "6.6.51+rpt-rpi-v8\n")?;
        fixture.write("proc/cgroups", CGROUPS)?;
        fixture.write("proc/cmdline", CMDLINE)?;
        fixture.write("proc/filesystems", FILESYSTEMS)?;
        fixture.write("proc/device-tree/model", "Raspberry Pi 4 Model B\0")?;
        fixture.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n")?;
        Ok(fixture)
    }

    /// What `--proc-root` takes.
    pub fn proc_root(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    /// What `--sys-root` takes.
    pub fn sys_root(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn write(&self, path: &str, text: &str) -> std::io::Result<()> {
        let path = self.dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)
    }
}
