//! The node's resolver settings, read from its `resolv.conf` as the
//! kubelet and glibc read it: `nameserver` lines in order, the last
//! `search` line (a `domain` line stands for a one-entry search list, as in
//! glibc, unless a `search` line follows), and every `options` word.
//! Comments (`#`, `;`) and unknown lines are skipped; nothing in the file
//! is an error, since the node's own resolver accepts it as it is.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Where the node's resolver settings are unless `--resolv-conf` says
/// otherwise.
pub const DEFAULT_PATH: &str = "/etc/resolv.conf";

/// What a `resolv.conf` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses, in order (ones that are not addresses are
    /// left out).
    pub nameservers: Vec<IpAddr>,
    /// Search domains, without trailing dots (`.` alone is left out).
    pub searches: Vec<String>,
    /// `options` words (`ndots:2`, `edns0`), in order.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads `text`, a resolv.conf.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A zone index (`fe80::1%eth0`) is not an address here.
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    conf.searches = words
                        .filter(|w| *w != ".")
                        .map(|w| w.trim_end_matches('.').to_owned())
                        .filter(|w| !w.is_empty())
                        .collect();
                }
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// Reads the file at `path`; a file that cannot be read says nothing
    /// (as glibc treats a missing resolv.conf).
    pub fn read(path: &Path) -> ResolvConf {
        match std::fs::read_to_string(path) {
            Ok(text) => ResolvConf::parse(&text),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot read resolv.conf");
                ResolvConf::default()
            }
        }
    }

    /// The upstream servers to forward to: every nameserver on port 53,
    /// except `refused` ones (this server's own addresses: forwarding
    /// there would loop).
    pub fn upstreams(&self, refused: &[IpAddr]) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .filter(|ip| !ip.is_unspecified() && !refused.contains(ip))
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }

    /// The file's text for these settings.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for server in &self.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_searches_and_options_are_read_as_glibc_reads_them() {
        let conf = ResolvConf::parse(
            "# written by hand\n\
             domain lan\n\
             nameserver 192.168.1.1 # the router\n\
             nameserver fe80::1%eth0\n\
             nameserver ::1\n\
             nameserver nonsense\n\
             search example.com. corp.example.com .\n\
             options ndots:2 edns0\n\
             options timeout:1\n\
             sortlist 10.0.0.0\n",
        );
        assert_eq!(
            conf.nameservers,
            [
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        // The last search (or domain) line wins.
        assert_eq!(conf.searches, ["example.com", "corp.example.com"]);
        assert_eq!(conf.options, ["ndots:2", "edns0", "timeout:1"]);
        assert_eq!(
            conf.render(),
            "nameserver 192.168.1.1\nnameserver ::1\nsearch example.com corp.example.com\n\
             options ndots:2 edns0 timeout:1\n"
        );
    }

    #[test]
    fn upstreams_leave_out_this_servers_own_addresses() {
        let conf = ResolvConf::parse(
            "nameserver 127.0.0.53\nnameserver 10.43.0.10\n\
             nameserver 0.0.0.0\nnameserver 10.42.0.1\n",
        );
        let own: Vec<IpAddr> = vec!["10.42.0.1".parse().unwrap(), "10.43.0.10".parse().unwrap()];
        // A loopback stub resolver is fine: the agent runs in the host's
        // network namespace, where it answers.
        assert_eq!(
            conf.upstreams(&own),
            ["127.0.0.53:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn a_missing_file_says_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ResolvConf::read(&dir.path().join("absent")),
            ResolvConf::default()
        );
    }
}
