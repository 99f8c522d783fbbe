//! Where a probe's or hook's action goes when it names no `host`: the
//! pod's own address, reached from inside the pod's network namespace (the
//! node's for a pod in the host's network), as the kubelet reaches the pod
//! IP from the node. Shared by the `tcpSocket` ([`super::tcp_socket`]) and
//! `httpGet` ([`super::http_get`]) actions.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use skiff_proto::v1;

/// A pod's own address, the host of an action that names none, and the
/// network namespace it is reached from.
#[derive(Debug, Clone)]
pub struct PodAddress {
    /// The pod's namespace, or the node's for a pod in the host's network.
    pub netns: PathBuf,
    /// The pod's address; loopback inside `netns` when it has none yet.
    pub ip: Option<Ipv4Addr>,
}

impl PodAddress {
    /// `pod`'s address (its status's `podIP`), reached from `netns`.
    pub fn of(netns: PathBuf, pod: &v1::Pod) -> PodAddress {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.parse::<Ipv4Addr>().ok());
        PodAddress { netns, ip }
    }

    /// The host an action without one is sent to: the pod's address, or
    /// loopback while it has none.
    pub fn host(&self) -> String {
        self.ip.unwrap_or(Ipv4Addr::LOCALHOST).to_string()
    }
}
