//! The request handler hickory-server's [`Server`] calls for every query
//! on the agent's DNS listeners (UDP and TCP): refused unless it comes
//! from an allowed source (the pod network, loopback, the node itself:
//! never an open resolver), one
//! question per message, the cluster's zones answered from the index
//! ([`super::cluster_zone`]), an ExternalName's target looked up further,
//! and everything else forwarded ([`super::forwarder`]). Malformed
//! messages never reach it: the server answers them FORMERR, or drops
//! what has no header.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Message, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use skiff_values::Ipv4Net;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::cluster_zone::{ClusterZone, Outcome, ZoneAnswer};
use super::forwarder::Forwarder;
use super::index::{ClusterIndex, SharedIndex};
use super::DnsError;

/// A TCP client idle this long is hung up on.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Answers queued per TCP connection.
const TCP_QUEUE: usize = 8;

/// The reply to one message, before it is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub code: ResponseCode,
    /// Answered from the cluster's zones.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Reply {
    fn error(code: ResponseCode) -> Reply {
        Reply {
            code,
            ..Reply::default()
        }
    }

    fn from_zone(answer: ZoneAnswer) -> Reply {
        Reply {
            code: answer.code,
            authoritative: true,
            answers: answer.answers,
            authorities: answer.authorities,
            additionals: answer.additionals,
        }
    }

    fn from_upstream(message: Message) -> Reply {
        Reply {
            code: message.metadata.response_code,
            authoritative: false,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        }
    }
}

/// Cluster DNS: the zones, the index they answer from, the forwarder.
#[derive(Debug)]
pub struct ClusterDnsHandler {
    zone: ClusterZone,
    index: SharedIndex,
    forwarder: Forwarder,
    /// Where queries may come from.
    allowed: Vec<Ipv4Net>,
}

impl ClusterDnsHandler {
    /// Answers `zone` from `index`, forwards through `forwarder`, and
    /// takes queries from `allowed` sources (and IPv6 loopback) only.
    pub fn new(
        zone: ClusterZone,
        index: SharedIndex,
        forwarder: Forwarder,
        allowed: Vec<Ipv4Net>,
    ) -> ClusterDnsHandler {
        ClusterDnsHandler {
            zone,
            index,
            forwarder,
            allowed,
        }
    }

    fn allows(&self, source: IpAddr) -> bool {
        match source {
            IpAddr::V4(ip) => self.allowed.iter().any(|net| net.contains_addr(ip)),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => self.allowed.iter().any(|net| net.contains_addr(ip)),
                None => ip.is_loopback(),
            },
        }
    }

    /// The answers for `target` (an ExternalName's), from the zones or
    /// upstream; none when it cannot be found.
    async fn follow(
        &self,
        index: &ClusterIndex,
        target: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Vec<Record> {
        if let Outcome::Answer(further) = self.zone.answer(index, target, qtype) {
            return further.answers;
        }
        match self.forwarder.resolve(target, qtype, qclass).await {
            Ok(message) => message.answers,
            Err(e) => {
                tracing::debug!(name = %target, error = %e, "cannot follow an ExternalName");
                Vec::new()
            }
        }
    }

    /// The reply to a message from `source` with `op_code` and `queries`.
    pub async fn reply(&self, source: IpAddr, op_code: OpCode, queries: &[LowerQuery]) -> Reply {
        if !self.allows(source) {
            return Reply::error(ResponseCode::Refused);
        }
        if op_code != OpCode::Query {
            return Reply::error(ResponseCode::NotImp);
        }
        let [query] = queries else {
            return Reply::error(ResponseCode::FormErr);
        };
        let name = query.original().name();
        let qtype = query.query_type();
        let qclass = query.query_class();
        let index = self.index.current();
        match self.zone.answer(&index, name, qtype) {
            Outcome::Answer(_) if qclass != DNSClass::IN => Reply::error(ResponseCode::Refused),
            Outcome::Answer(answer) => {
                let alias_of = answer.alias_of.clone();
                let mut reply = Reply::from_zone(answer);
                if let Some(target) = alias_of {
                    // An ExternalName: what its CNAME names, one step (the
                    // upstream resolves any chain after that).
                    let further = self.follow(&index, &target, qtype, qclass).await;
                    reply.answers.extend(further);
                }
                reply
            }
            Outcome::Forward => match self.forwarder.resolve(name, qtype, qclass).await {
                Ok(message) => Reply::from_upstream(message),
                Err(e) => {
                    tracing::debug!(name = %name, error = %e, "not forwarded");
                    Reply::error(ResponseCode::ServFail)
                }
            },
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self
            .reply(
                request.src().ip(),
                request.metadata.op_code,
                request.queries.queries(),
            )
            .await;
        // The client's payload size (at least 512) bounds a UDP answer;
        // a bigger one is sent truncated and asked again over TCP.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty::<&Record>(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(client = %request.src(), error = %e, "cannot send a DNS answer");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Answers on `listen` (UDP and TCP) with `handler` until `shutdown`; an
/// error when a socket cannot be bound or the server stops by itself.
pub async fn serve(
    listen: SocketAddr,
    handler: ClusterDnsHandler,
    shutdown: &CancellationToken,
) -> Result<(), DnsError> {
    let bind = |source| DnsError::Bind {
        address: listen,
        source,
    };
    let udp = UdpSocket::bind(listen).await.map_err(bind)?;
    let tcp = TcpListener::bind(listen).await.map_err(bind)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, TCP_QUEUE);
    tracing::info!(address = %listen, "cluster DNS answering");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        done = server.block_until_done() => {
            return Err(DnsError::Stopped(match done {
                Ok(()) => "its listeners ended".to_owned(),
                Err(e) => e.to_string(),
            }));
        }
    }
    server
        .shutdown_gracefully()
        .await
        .map_err(|e| DnsError::Stopped(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use hickory_proto::op::Query;
    use hickory_server::net::xfer::Protocol;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::dns::cache::ResponseCache;
    use crate::dns::forwarder::question;
    use crate::dns::forwarder::tests::{resolv_conf, upstream};
    use crate::dns::index::tests::{endpoints, service};

    fn zone() -> ClusterZone {
        ClusterZone {
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            service_cidr: "10.43.0.0/16".parse().unwrap(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        }
    }

    /// A handler forwarding to a test upstream (returned with the count of
    /// questions it got), knowing a Service and an ExternalName.
    async fn handler(dir: &std::path::Path) -> (ClusterDnsHandler, Arc<AtomicUsize>) {
        let (upstream, asked) = upstream().await;
        let index = SharedIndex::default();
        index.replace(ClusterIndex::build(
            &[
                service("default", "web", "10.43.0.11", &[("http", "TCP", 80)]),
                service("default", "ext", "ext:db.example.com", &[]),
            ],
            &[endpoints(
                "default",
                "web",
                &[("10.42.1.5", "")],
                &[("http", "TCP", 80)],
            )],
            1,
        ));
        let forwarder = Forwarder::with_upstreams(
            resolv_conf(dir, &[]),
            vec![upstream],
            ResponseCache::default(),
        );
        let allowed = vec![
            "10.42.0.0/16".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ];
        (
            ClusterDnsHandler::new(zone(), index, forwarder, allowed),
            asked,
        )
    }

    fn query(name: &str, qtype: RecordType) -> Vec<LowerQuery> {
        let name = Name::from_ascii(name).unwrap();
        vec![LowerQuery::query(Query::query(name, qtype))]
    }

    const POD: &str = "10.42.3.4";

    async fn ask(h: &ClusterDnsHandler, name: &str, qtype: RecordType) -> Reply {
        h.reply(POD.parse().unwrap(), OpCode::Query, &query(name, qtype))
            .await
    }

    #[tokio::test]
    async fn cluster_names_are_answered_here_and_the_rest_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let (h, asked) = handler(dir.path()).await;
        let web = ask(&h, "web.default.svc.cluster.local.", RecordType::A).await;
        assert!(web.authoritative);
        assert_eq!(web.answers[0].data.to_string(), "10.43.0.11");
        let outside = ask(&h, "example.com.", RecordType::A).await;
        assert!(!outside.authoritative);
        assert_eq!(outside.code, ResponseCode::NoError);
        assert_eq!(outside.answers[0].data.to_string(), "192.0.2.1");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cluster_miss_is_never_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        let (h, asked) = handler(dir.path()).await;
        for name in [
            "example.com.default.svc.cluster.local.",
            "example.com.svc.cluster.local.",
            "example.com.cluster.local.",
            "nope.default.svc.cluster.local.",
        ] {
            let miss = ask(&h, name, RecordType::A).await;
            assert_eq!(miss.code, ResponseCode::NXDomain, "{name}");
            assert!(miss.authoritative);
            assert_eq!(miss.authorities[0].record_type(), RecordType::SOA);
        }
        let nodata = ask(&h, "web.default.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!(nodata.code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(asked.load(Ordering::SeqCst), 0, "nothing went upstream");
    }

    #[tokio::test]
    async fn an_external_name_is_followed_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let (h, asked) = handler(dir.path()).await;
        let ext = ask(&h, "ext.default.svc.cluster.local.", RecordType::A).await;
        let data: Vec<String> = ext.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(data, ["db.example.com.", "192.0.2.1"]);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn only_pods_and_loopback_are_answered_and_one_question_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (h, asked) = handler(dir.path()).await;
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let q = query("example.com.", RecordType::A);
        let refused = h.reply(lan, OpCode::Query, &q).await;
        assert_eq!(refused.code, ResponseCode::Refused);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let local = h.reply(loopback, OpCode::Query, &q).await;
        assert_eq!(local.code, ResponseCode::NoError);
        let v6 = h.reply("::1".parse().unwrap(), OpCode::Query, &q).await;
        assert_eq!(v6.code, ResponseCode::NoError);
        let two = [q.clone(), q.clone()].concat();
        let formerr = h.reply(POD.parse().unwrap(), OpCode::Query, &two).await;
        assert_eq!(formerr.code, ResponseCode::FormErr);
        let none = h.reply(POD.parse().unwrap(), OpCode::Query, &[]).await;
        assert_eq!(none.code, ResponseCode::FormErr);
        let update = h.reply(POD.parse().unwrap(), OpCode::Update, &q).await;
        assert_eq!(update.code, ResponseCode::NotImp);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "the cache answered ::1");
    }

    #[tokio::test]
    async fn random_and_mangled_messages_are_answered_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let index = SharedIndex::default();
        index.replace(ClusterIndex::build(
            &[service("default", "web", "None", &[("http", "TCP", 80)])],
            &[endpoints(
                "default",
                "web",
                &[("10.42.1.5", "w-0")],
                &[("http", "TCP", 80)],
            )],
            1,
        ));
        // No upstream: whatever is not the cluster's fails at once.
        let nowhere = resolv_conf(dir.path(), &[]);
        let forwarder = Forwarder::new(nowhere, vec![], ResponseCache::default());
        let allowed = vec!["10.42.0.0/16".parse().unwrap()];
        let h = ClusterDnsHandler::new(zone(), index, forwarder, allowed);
        let web = Name::from_ascii("_http._tcp.web.default.svc.cluster.local.").unwrap();
        let good = question(1, &web, RecordType::SRV, DNSClass::IN).unwrap();
        let source: SocketAddr = "10.42.3.4:5353".parse().unwrap();
        let mut answered = 0;
        for round in 0..4000usize {
            let bytes: Vec<u8> = if round % 2 == 0 {
                // A real question with a few bytes changed.
                let mut bytes = good.clone();
                for _ in 0..1 + round % 4 {
                    let at = rand::random_range(0..bytes.len());
                    bytes[at] = rand::random();
                }
                bytes
            } else {
                (0..round % 600).map(|_| rand::random::<u8>()).collect()
            };
            let Ok(request) = Request::from_bytes(bytes, source, Protocol::Udp) else {
                continue;
            };
            let queries = request.queries.queries();
            let reply = h
                .reply(source.ip(), request.metadata.op_code, queries)
                .await;
            answered += 1;
            if reply.code == ResponseCode::NoError && queries.len() == 1 {
                assert!(reply.authoritative, "nothing was forwarded: {reply:?}");
            }
        }
        assert!(answered > 100, "only {answered} messages were readable");
    }

    #[tokio::test]
    async fn the_server_answers_over_udp_and_tcp_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = handler(dir.path()).await;
        // A free port on loopback for both transports.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move { serve(listen, h, &stop).await });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(listen).await.unwrap();
        let web = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
        let web_question = |id| question(id, &web, RecordType::A, DNSClass::IN).unwrap();
        // Garbage first: too short for a header, then a header with
        // nothing after it, then random bytes.
        for junk in [&b"\x01"[..], &[0u8; 12][..], &[0xff; 300][..]] {
            client.send(junk).await.unwrap();
        }
        let mut buffer = vec![0u8; 4096];
        let mut answer = None;
        for _ in 0..10 {
            client.send(&web_question(77)).await.unwrap();
            let wait = Duration::from_secs(1);
            if let Ok(Ok(n)) = tokio::time::timeout(wait, client.recv(&mut buffer)).await {
                // Answers to the garbage (FORMERR) are not this one.
                let message = Message::from_vec(&buffer[..n]).unwrap();
                if message.metadata.id == 77 {
                    answer = Some(message);
                    break;
                }
            }
        }
        let answer = answer.expect("an answer over UDP");
        assert_eq!(answer.answers[0].data.to_string(), "10.43.0.11");
        assert!(answer.metadata.authoritative);

        let mut tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
        let q = web_question(78);
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).await.unwrap();
        let mut length = [0u8; 2];
        tcp.read_exact(&mut length).await.unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
        tcp.read_exact(&mut reply).await.unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 78);
        assert_eq!(reply.answers[0].data.to_string(), "10.43.0.11");

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
