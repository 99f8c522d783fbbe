//! The programs the agent runs. `containerd`: given no
//! `--containerd-socket`, the agent starts its own private containerd from
//! `PATH` (config, root, state and socket under `<data-dir>/containerd`),
//! as k3s does, whether or not another containerd runs on the machine.
//! `containerd-shim-runc-v2` and `runc`: containerd runs every container
//! through them. `nft`: the agent writes its nftables table (pod network,
//! host ports, Services) through libnftables, which the `nftables` package
//! brings with `nft`, and with `nft -j -f -` when the library cannot be
//! loaded. Each is looked for on `PATH` and in systemd's default `PATH`,
//! which the units run with.

use std::path::Path;

use super::{Finding, Machine};

const CONTAINERD: &str = "containerd";
const SHIM: &str = "containerd-shim-runc-v2";
const RUNC: &str = "runc";
const NFT: &str = "nft";

/// A finding per program, containerd's first.
pub fn check(machine: &dyn Machine, containerd_socket: Option<&Path>) -> Vec<Finding> {
    vec![
        containerd(machine, containerd_socket),
        shim(machine, containerd_socket.is_some()),
        runc(machine),
        nft(machine),
    ]
}

/// The containerd the agent will use: the one at `socket`, or its own.
fn containerd(machine: &dyn Machine, socket: Option<&Path>) -> Finding {
    if let Some(socket) = socket {
        let shown = socket.display();
        if machine.socket_exists(socket) {
            let detail = format!("the agent is to use the one at {shown}");
            return Finding::ok(CONTAINERD, detail);
        }
        let detail = format!("no socket at {shown}, where the agent is to find containerd");
        let fix = "start that containerd, or drop --containerd-socket so the agent runs its own";
        return Finding::fail(CONTAINERD, detail).with_fix(fix);
    }
    let Some(path) = machine.find_program(CONTAINERD) else {
        let detail = "not installed: the agent starts its own containerd from PATH";
        let fix = "apt-get install containerd (or give the agent --containerd-socket)";
        return Finding::fail(CONTAINERD, detail).with_fix(fix);
    };
    let location = found(machine, &path);
    let detail = format!("{location}; the agent runs its own private containerd with it");
    Finding::ok(CONTAINERD, detail)
}

/// containerd's runc shim. A containerd the agent did not start looks for
/// it on its own `PATH`, which may not be ours, so there it is a warning.
fn shim(machine: &dyn Machine, containerd_given: bool) -> Finding {
    if let Some(path) = machine.find_program(SHIM) {
        return Finding::ok(SHIM, path.display().to_string());
    }
    let detail = "not installed: containerd runs every container through it";
    let fix = "apt-get install containerd";
    if containerd_given {
        return Finding::warning(SHIM, detail).with_fix(fix);
    }
    Finding::fail(SHIM, detail).with_fix(fix)
}

fn runc(machine: &dyn Machine) -> Finding {
    match machine.find_program(RUNC) {
        Some(path) => Finding::ok(RUNC, found(machine, &path)),
        None => {
            let detail = "not installed: containerd's shim runs every container with it";
            Finding::fail(RUNC, detail).with_fix("apt-get install runc")
        }
    }
}

fn nft(machine: &dyn Machine) -> Finding {
    match machine.find_program(NFT) {
        Some(path) => Finding::ok(NFT, found(machine, &path)),
        None => {
            let detail = "not installed: the agent writes its nftables rules with it";
            Finding::fail(NFT, detail).with_fix("apt-get install nftables")
        }
    }
}

/// Where a program is, and its version when it tells.
fn found(machine: &dyn Machine, path: &Path) -> String {
    match machine.version(path) {
        Some(version) => format!("{} ({version})", path.display()),
        None => path.display().to_string(),
    }
}
