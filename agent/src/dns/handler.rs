//! How the agent's DNS listeners answer: refused unless a query comes
//! from an allowed source (the pod network, loopback, the node itself:
//! never an open resolver), one question per message, the cluster's
//! zones answered from the index ([`super::cluster_zone`]), an
//! ExternalName's target looked up further, and everything else
//! forwarded ([`super::forwarder`]).
//!
//! - UDP, where pods ask, is read, answered and sent on a thread of its
//!   own that sleeps in `recvfrom` ([`serve_udp`]): a name of the
//!   cluster's is answered before the next datagram is read, with no
//!   poller, task or channel in between (through hickory-server's
//!   [`Server`], each query was a task of its own and its answer went
//!   through a channel to the socket's task); a question asked before
//!   is answered from the thread's [`AnswerCache`]; what must go upstream
//!   gets a task of its own on the DNS runtime. Messages are read and written
//!   with hickory's types. What cannot be read past its header is
//!   answered FORMERR; what has no header, or is an answer, is dropped.
//! - TCP (answers too big for UDP, tools that ask over TCP) is
//!   hickory-server's [`Server`], calling [`TcpAnswers`].

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_proto::ProtoError;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use hickory_server::Server;
use skiff_objects::Ipv4Net;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::answer_cache::AnswerCache;
use super::cluster_zone::{ClusterZone, Outcome, ZoneAnswer};
use super::forwarder::Forwarder;
use super::index::SharedIndex;
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

    /// The reply to a message from `source` with `op_code` and `queries`,
    /// when it can be given at once (the cluster's zones); otherwise what
    /// must be asked upstream first ([`ClusterDnsHandler::resolve`]).
    pub fn answer(&self, source: IpAddr, op_code: OpCode, queries: &[LowerQuery]) -> Answer {
        if !self.allows(source) {
            return Answer::Ready(Reply::error(ResponseCode::Refused));
        }
        if op_code != OpCode::Query {
            return Answer::Ready(Reply::error(ResponseCode::NotImp));
        }
        let [query] = queries else {
            return Answer::Ready(Reply::error(ResponseCode::FormErr));
        };
        let name = query.original().name();
        let qtype = query.query_type();
        let qclass = query.query_class();
        let index = self.index.current();
        match self.zone.answer(&index, name, qtype) {
            Outcome::Answer(_) if qclass != DNSClass::IN => {
                Answer::Ready(Reply::error(ResponseCode::Refused))
            }
            Outcome::Answer(answer) => {
                let alias_of = answer.alias_of.clone();
                let mut reply = Reply::from_zone(answer);
                let Some(target) = alias_of else {
                    return Answer::Ready(reply);
                };
                // An ExternalName: what its CNAME names, one step (the
                // upstream resolves any chain after that).
                match self.zone.answer(&index, &target, qtype) {
                    Outcome::Answer(further) => {
                        reply.answers.extend(further.answers);
                        Answer::Ready(reply)
                    }
                    Outcome::Forward => Answer::Upstream(Upstream {
                        name: target,
                        qtype,
                        qclass,
                        alias: Some(reply),
                    }),
                }
            }
            Outcome::Forward => Answer::Upstream(Upstream {
                name: name.clone(),
                qtype,
                qclass,
                alias: None,
            }),
        }
    }

    /// The reply to what [`ClusterDnsHandler::answer`] sent upstream.
    pub async fn resolve(&self, upstream: Upstream) -> Reply {
        let Upstream {
            name,
            qtype,
            qclass,
            alias,
        } = upstream;
        let resolved = self.forwarder.resolve(&name, qtype, qclass).await;
        match (alias, resolved) {
            (None, Ok(message)) => Reply::from_upstream(message),
            (None, Err(e)) => {
                tracing::debug!(name = %name, error = %e, "not forwarded");
                Reply::error(ResponseCode::ServFail)
            }
            (Some(mut reply), Ok(message)) => {
                reply.answers.extend(message.answers);
                reply
            }
            (Some(reply), Err(e)) => {
                tracing::debug!(name = %name, error = %e, "cannot follow an ExternalName");
                reply
            }
        }
    }

    /// The reply to a message from `source` with `op_code` and `queries`.
    pub async fn reply(&self, source: IpAddr, op_code: OpCode, queries: &[LowerQuery]) -> Reply {
        match self.answer(source, op_code, queries) {
            Answer::Ready(reply) => reply,
            Answer::Upstream(upstream) => self.resolve(upstream).await,
        }
    }
}

/// What a message needs, as [`ClusterDnsHandler::answer`] finds it.
#[derive(Debug)]
pub enum Answer {
    /// Its reply, answered here.
    Ready(Reply),
    /// A question for the upstream resolvers first.
    Upstream(Upstream),
}

/// A question for the upstream resolvers: a name outside the cluster's
/// zones, or the target of an ExternalName Service.
#[derive(Debug)]
pub struct Upstream {
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    /// An ExternalName's CNAME answer, which what its target resolves to
    /// is added to (or which is given alone if the target is not found).
    alias: Option<Reply>,
}

/// The EDNS of an answer to `request`: the client's payload size (at
/// least 512) bounds a UDP answer; a bigger one is sent truncated and
/// asked again over TCP.
fn answer_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().max(512));
        edns
    })
}

/// The header of `reply`, an answer to a message with `asked`.
fn answer_metadata(asked: &Metadata, reply: &Reply) -> Metadata {
    let mut metadata = Metadata::response_from_request(asked);
    metadata.response_code = reply.code;
    metadata.authoritative = reply.authoritative;
    metadata.recursion_available = true;
    metadata
}

/// TCP, through hickory-server's [`Server`], which calls this for every
/// message read off a connection. (UDP is answered by [`serve_udp`].)
#[derive(Debug, Clone)]
struct TcpAnswers(Arc<ClusterDnsHandler>);

#[async_trait::async_trait]
impl RequestHandler for TcpAnswers {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self
            .0
            .reply(
                request.src().ip(),
                request.metadata.op_code,
                request.queries.queries(),
            )
            .await;
        let edns = answer_edns(request);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            answer_metadata(&request.metadata, &reply),
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

/// The largest UDP message read; a bigger one is cut there and answered
/// FORMERR.
const UDP_MAX: usize = 4096;

/// `reply` to `request`, encoded for UDP: no bigger than the client's
/// payload size (512 without EDNS), cut at a whole record with the TC bit
/// set when it does not fit, so that the client asks again over TCP.
fn encode_udp(request: &Request, reply: &Reply) -> Vec<u8> {
    let edns = answer_edns(request);
    let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
    let response = builder.build(
        answer_metadata(&request.metadata, reply),
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty::<&Record>(),
        reply.additionals.iter(),
    );
    let limit = edns.as_ref().map_or(512, Edns::max_payload);
    match encode(limit, |encoder| response.destructive_emit(encoder)) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(client = %request.src(), error = %e, "cannot encode a DNS answer");
            error_message(&request.metadata, &request.queries, ResponseCode::ServFail)
                .unwrap_or_default()
        }
    }
}

/// What `emit` writes, at most `limit` bytes.
fn encode(
    limit: u16,
    emit: impl FnOnce(&mut BinEncoder<'_>) -> Result<ResponseInfo, ProtoError>,
) -> Result<Vec<u8>, ProtoError> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(limit);
    emit(&mut encoder)?;
    Ok(bytes)
}

/// An answer with only a header, `code` and the asked `queries`.
fn error_message(
    asked: &Metadata,
    queries: &Queries,
    code: ResponseCode,
) -> Result<Vec<u8>, ProtoError> {
    let response = MessageResponseBuilder::new(queries, None).error_msg(asked, code);
    encode(512, |encoder| response.destructive_emit(encoder))
}

/// What a UDP datagram from `source` is: a request, or (when it cannot be
/// read past its header) the bytes of its FORMERR answer (REFUSED for a
/// source that is not answered); `None` for what gets no answer at all
/// (no whole header, or an answer itself: never reflected).
fn read_udp(
    handler: &ClusterDnsHandler,
    bytes: &[u8],
    source: SocketAddr,
) -> Option<Result<Request, Vec<u8>>> {
    match Request::from_bytes(bytes.to_vec(), source, Protocol::Udp) {
        Ok(request) if request.metadata.message_type == MessageType::Response => None,
        Ok(request) => Some(Ok(request)),
        Err(_) => {
            let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
            if header.metadata.message_type == MessageType::Response {
                return None;
            }
            let code = if handler.allows(source.ip()) {
                ResponseCode::FormErr
            } else {
                ResponseCode::Refused
            };
            let none = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            error_message(&header.metadata, &none, code).ok().map(Err)
        }
    }
}

/// Answers UDP on `socket` (in blocking mode) on the calling thread until
/// `stop`: each datagram is read, answered and sent here when the
/// cluster's zones answer it (no task, channel or poller between the
/// socket and the answer: the thread sleeps in `recvfrom` itself, as
/// dnsmasq sleeps in `poll`); what must go upstream is answered from a
/// task on `upstream`, so that a slow upstream never holds up the
/// cluster's names. [`UdpThread`] wakes it to stop.
fn serve_udp(
    socket: &Arc<std::net::UdpSocket>,
    handler: &Arc<ClusterDnsHandler>,
    upstream: &tokio::runtime::Handle,
    stop: &CancellationToken,
) -> Result<(), DnsError> {
    let mut buffer = vec![0u8; UDP_MAX];
    let mut cache = AnswerCache::default();
    let mut answer = Vec::with_capacity(512);
    loop {
        let received = socket.recv_from(&mut buffer);
        if stop.is_cancelled() {
            return Ok(());
        }
        let (length, source) = match received {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotConnected | ErrorKind::ConnectionAborted
                ) =>
            {
                return Err(DnsError::Stopped(format!("its UDP socket failed: {e}")));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a DNS query");
                continue;
            }
        };
        match take_datagram(handler, &mut cache, &buffer[..length], source, &mut answer) {
            Datagram::Ignored => {}
            Datagram::Answered => send_udp(socket, &answer, source),
            Datagram::Upstream(request, question) => {
                let (handler, socket) = (handler.clone(), socket.clone());
                upstream.spawn(async move {
                    let reply = handler.resolve(question).await;
                    // A UDP send does not wait (a full send buffer drops).
                    send_udp(&socket, &encode_udp(&request, &reply), source);
                });
            }
        }
    }
}

/// What one datagram needs, as [`take_datagram`] finds it.
#[derive(Debug)]
enum Datagram {
    /// No answer: no whole header, an answer itself, or from port 0.
    Ignored,
    /// Its answer is written out, to be sent.
    Answered,
    /// A question for the upstream resolvers first.
    Upstream(Box<Request>, Upstream),
}

/// Reads `query` from `source` and, unless it must go upstream, writes
/// its answer to `out`: from `cache` when the same bytes asked before
/// (from an allowed source, with the index unchanged), else from the
/// zones (then kept in `cache`); FORMERR for what cannot be read past its
/// header, REFUSED for a source that is not answered.
fn take_datagram(
    handler: &ClusterDnsHandler,
    cache: &mut AnswerCache,
    query: &[u8],
    source: SocketAddr,
    out: &mut Vec<u8>,
) -> Datagram {
    if source.port() == 0 || source.ip().is_unspecified() {
        return Datagram::Ignored;
    }
    let allowed = handler.allows(source.ip());
    let generation = handler.index.generation();
    if allowed && cache.answer(generation, query, out) {
        return Datagram::Answered;
    }
    let request = match read_udp(handler, query, source) {
        None => return Datagram::Ignored,
        Some(Err(error_answer)) => {
            *out = error_answer;
            return Datagram::Answered;
        }
        Some(Ok(request)) => request,
    };
    let answer = handler.answer(
        source.ip(),
        request.metadata.op_code,
        request.queries.queries(),
    );
    match answer {
        Answer::Ready(reply) => {
            *out = encode_udp(&request, &reply);
            // The zones' answer, from the index of `generation`.
            if allowed && reply.authoritative && handler.index.generation() == generation {
                cache.insert(generation, query, out);
            }
            Datagram::Answered
        }
        Answer::Upstream(question) => Datagram::Upstream(Box::new(request), question),
    }
}

/// Sends `bytes` to `client`; a failure is the client's loss (it asks
/// again), logged.
fn send_udp(socket: &std::net::UdpSocket, bytes: &[u8], client: SocketAddr) {
    // Nothing could be encoded (not even SERVFAIL): no empty datagram.
    if bytes.is_empty() {
        return;
    }
    if let Err(e) = socket.send_to(bytes, client) {
        tracing::debug!(client = %client, error = %e, "cannot send a DNS answer");
    }
}

/// The thread answering UDP ([`serve_udp`]); dropping it stops the thread
/// (shutting its socket down for reading wakes the `recvfrom` it sleeps
/// in), whatever ended the server.
struct UdpThread {
    socket: Arc<std::net::UdpSocket>,
    stop: CancellationToken,
    ended: tokio::sync::oneshot::Receiver<Result<(), DnsError>>,
}

impl UdpThread {
    fn start(
        socket: std::net::UdpSocket,
        handler: Arc<ClusterDnsHandler>,
    ) -> Result<UdpThread, DnsError> {
        let socket = Arc::new(socket);
        let stop = CancellationToken::new();
        let (done, ended) = tokio::sync::oneshot::channel();
        let upstream = tokio::runtime::Handle::current();
        let (thread_socket, thread_stop) = (socket.clone(), stop.clone());
        std::thread::Builder::new()
            .name("cluster-dns-udp".into())
            .spawn(move || {
                let _ = done.send(serve_udp(&thread_socket, &handler, &upstream, &thread_stop));
            })
            .map_err(|e| DnsError::Stopped(format!("no thread for UDP: {e}")))?;
        Ok(UdpThread {
            socket,
            stop,
            ended,
        })
    }
}

impl Drop for UdpThread {
    fn drop(&mut self) {
        self.stop.cancel();
        // Linux wakes a reader of a UDP socket shut down for reading (the
        // call itself answers ENOTCONN for an unconnected one).
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read);
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
    let udp = std::net::UdpSocket::bind(listen).map_err(bind)?;
    let tcp = TcpListener::bind(listen).await.map_err(bind)?;
    serve_bound(udp, tcp, handler, shutdown).await
}

/// [`serve`] on sockets already bound to one address (a test's, bound to
/// a free port of its own).
pub async fn serve_bound(
    udp: std::net::UdpSocket,
    tcp: TcpListener,
    handler: ClusterDnsHandler,
    shutdown: &CancellationToken,
) -> Result<(), DnsError> {
    let listen = tcp.local_addr().ok();
    let handler = Arc::new(handler);
    let mut udp = UdpThread::start(udp, handler.clone())?;
    let mut server = Server::new(TcpAnswers(handler));
    server.register_listener(tcp, TCP_IDLE, TCP_QUEUE);
    if let Some(listen) = listen {
        tracing::info!(address = %listen, "cluster DNS answering");
    }
    tokio::select! {
        _ = shutdown.cancelled() => {}
        done = &mut udp.ended => {
            return Err(match done {
                Ok(Err(e)) => e,
                _ => DnsError::Stopped("its UDP thread ended".to_owned()),
            });
        }
        done = server.block_until_done() => {
            return Err(DnsError::Stopped(match done {
                Ok(()) => "its TCP listener ended".to_owned(),
                Err(e) => e.to_string(),
            }));
        }
    }
    drop(udp);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UdpSocket;

    use super::*;
    use crate::dns::cache::ResponseCache;
    use crate::dns::forwarder::question;
    use crate::dns::forwarder::tests::{resolv_conf, upstream};
    use crate::dns::index::tests::{endpoints, service};
    use crate::dns::index::ClusterIndex;

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
        let mut cache = AnswerCache::default();
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
            // As the UDP thread takes it, twice: the second time the same
            // bytes may be answered from the cache, and must be answered
            // the same.
            let mut answers = Vec::new();
            for _ in 0..2 {
                let mut out = Vec::new();
                match take_datagram(&h, &mut cache, &bytes, source, &mut out) {
                    Datagram::Ignored => {}
                    Datagram::Answered => answers.push(out),
                    Datagram::Upstream(request, question) => {
                        let reply = h.resolve(question).await;
                        assert_eq!(reply.code, ResponseCode::ServFail, "no upstream");
                        answers.push(encode_udp(&request, &reply));
                    }
                }
            }
            let [first, second] = answers.as_slice() else {
                assert!(answers.is_empty(), "answered once of twice");
                continue;
            };
            assert_eq!(first, second, "the same bytes, answered otherwise");
            let answer = Message::from_vec(first).expect("an answer that reads back");
            assert_eq!(answer.metadata.id.to_be_bytes(), bytes[..2]);
            assert!(first.len() <= 4096, "{} bytes", first.len());
            answered += 1;
            if answer.metadata.response_code == ResponseCode::NoError && answer.queries.len() == 1 {
                assert!(
                    answer.metadata.authoritative,
                    "nothing was forwarded: {answer:?}"
                );
            }
        }
        assert!(answered > 100, "only {answered} messages were readable");
    }

    #[tokio::test]
    async fn the_server_answers_over_udp_and_tcp_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = handler(dir.path()).await;
        let (listen, shutdown, server) = serve_on_loopback(h);
        let web = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
        let web_question = |id| question(id, &web, RecordType::A, DNSClass::IN).unwrap();
        // The server is up once UDP answers: before, the port is closed,
        // and a connected socket's next send fails with the ICMP error.
        assert!(first_answer(listen, &web_question(76)).await.is_some());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(listen).await.unwrap();
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
        tcp.write_all(&framed(&web_question(78))).await.unwrap();
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

    /// Serves `h` on a free loopback port (UDP and TCP) until the token is
    /// cancelled; the port, the token and the server's task.
    fn serve_on_loopback(
        h: ClusterDnsHandler,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), DnsError>>,
    ) {
        // Both sockets bound here, on one free port: a port probed and let
        // go could be taken (by another test's connection) before the
        // server bound it, and the server would never answer.
        let (udp, tcp) = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let listen = udp.local_addr().unwrap();
            if let Ok(tcp) = std::net::TcpListener::bind(listen) {
                break (udp, tcp);
            }
        };
        let listen = udp.local_addr().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let tcp = TcpListener::from_std(tcp).unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move { serve_bound(udp, tcp, h, &stop).await });
        (listen, shutdown, server)
    }

    /// Writes `frames` on a new TCP connection to `server`, shuts the
    /// writing side, and reads what comes back until the server closes,
    /// which must be within 3 s: the answers, each checked to be a
    /// readable DNS message.
    async fn tcp_exchange(server: SocketAddr, frames: &[u8]) -> Vec<Message> {
        let mut tcp = tokio::net::TcpStream::connect(server).await.unwrap();
        // The server may hang up before reading all (a frame it cannot
        // take): a failed write is part of what is tested.
        let _ = tcp.write_all(frames).await;
        let _ = tcp.shutdown().await;
        let mut answers = Vec::new();
        let read_all = async {
            loop {
                let mut length = [0u8; 2];
                if tcp.read_exact(&mut length).await.is_err() {
                    break;
                }
                let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
                if tcp.read_exact(&mut answer).await.is_err() {
                    panic!("an answer cut short");
                }
                answers.push(Message::from_vec(&answer).expect("an answer that reads back"));
            }
        };
        tokio::time::timeout(Duration::from_secs(3), read_all)
            .await
            .expect("the server hangs up once the client has sent all");
        answers
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(message.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    #[tokio::test]
    async fn tcp_survives_mangled_truncated_oversized_and_idle_connections() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = handler(dir.path()).await;
        let (listen, shutdown, server) = serve_on_loopback(h);
        let web = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
        let good = |id| question(id, &web, RecordType::A, DNSClass::IN).unwrap();
        // The server is up once UDP answers.
        assert!(first_answer(listen, &good(1)).await.is_some());
        // Idle connections held open all along (each a task on the
        // server) do not stop others being answered.
        let mut idle = Vec::new();
        for _ in 0..64 {
            idle.push(tokio::net::TcpStream::connect(listen).await.unwrap());
        }
        let mut answered = 0;
        for round in 0..600usize {
            let id = (round % 60_000) as u16 + 2;
            let bytes: Vec<u8> = match round % 6 {
                // A real question with a few bytes changed, framed.
                0 => {
                    let mut q = good(id);
                    for _ in 0..1 + round % 4 {
                        let at = rand::random_range(2..q.len());
                        q[at] = rand::random();
                    }
                    framed(&q)
                }
                // Random bytes, framed.
                1 => framed(
                    &(0..round % 700)
                        .map(|_| rand::random::<u8>())
                        .collect::<Vec<_>>(),
                ),
                // A frame that says more than it carries.
                2 => {
                    let q = good(id);
                    let mut f = framed(&q);
                    f.truncate(2 + rand::random_range(0..q.len()));
                    f[..2].copy_from_slice(&u16::try_from(q.len() + 40).unwrap().to_be_bytes());
                    f
                }
                // The largest frame, of random bytes.
                3 => framed(
                    &(0..65_535)
                        .map(|_| rand::random::<u8>())
                        .collect::<Vec<_>>(),
                ),
                // An empty frame, or half a length.
                4 => {
                    if round % 12 == 4 {
                        vec![0, 0]
                    } else {
                        vec![0x01]
                    }
                }
                // Junk frames, then a good one on the same connection.
                _ => {
                    let mut f = framed(&[0xff; 30]);
                    f.extend(framed(&[0u8; 12]));
                    f.extend(framed(&good(id)));
                    f
                }
            };
            let answers = tcp_exchange(listen, &bytes).await;
            for answer in &answers {
                assert!(answer.metadata.message_type == MessageType::Response);
            }
            if round % 6 == 5 {
                let ours = answers.iter().find(|a| a.metadata.id == id);
                let ours = ours.unwrap_or_else(|| {
                    panic!("no answer to the good frame after junk: {answers:?}")
                });
                assert_eq!(ours.answers[0].data.to_string(), "10.43.0.11");
            }
            answered += answers.len();
        }
        assert!(answered > 100, "only {answered} answers");
        // Still answering, over both transports.
        let answers = tcp_exchange(listen, &framed(&good(9))).await;
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].answers[0].data.to_string(), "10.43.0.11");
        assert!(ask_udp(listen, &good(10)).await.is_some());
        // The idle ones were open all along (hung up only after TCP_IDLE).
        for connection in &idle {
            let mut byte = [0u8; 1];
            let read = connection.try_read(&mut byte);
            assert!(
                matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "an idle connection was closed or sent something: {read:?}"
            );
        }
        drop(idle);
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    /// Sends `message` to `server` over UDP and waits a second for an
    /// answer with its id.
    async fn ask_udp(server: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(message, server).await.unwrap();
        let mut buffer = vec![0u8; 65536];
        let wait = Duration::from_secs(1);
        match tokio::time::timeout(wait, client.recv(&mut buffer)).await {
            Ok(Ok(n)) => Some(buffer[..n].to_vec()),
            _ => None,
        }
    }

    /// [`ask_udp`] until the server (just started) answers, ten times at
    /// most.
    async fn first_answer(server: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
        for _ in 0..10 {
            if let Some(answer) = ask_udp(server, message).await {
                return Some(answer);
            }
        }
        None
    }

    #[tokio::test]
    async fn a_name_asked_again_follows_the_index_and_is_never_given_to_a_refused_source() {
        let dir = tempfile::tempdir().unwrap();
        let index = SharedIndex::default();
        let web_at = |ip: &str| {
            ClusterIndex::build(
                &[service("default", "web", ip, &[("http", "TCP", 80)])],
                &[],
                1,
            )
        };
        index.replace(web_at("10.43.0.11"));
        let forwarder = Forwarder::new(
            resolv_conf(dir.path(), &[]),
            vec![],
            ResponseCache::default(),
        );
        let allowed = vec!["127.0.0.0/8".parse().unwrap()];
        let h = ClusterDnsHandler::new(zone(), index.clone(), forwarder, allowed);
        let (listen, shutdown, server) = serve_on_loopback(h);
        let web = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
        let asked = question(9, &web, RecordType::A, DNSClass::IN).unwrap();
        let address = |answer: Vec<u8>| {
            let answer = Message::from_vec(&answer).unwrap();
            assert_eq!(answer.metadata.id, 9);
            answer.answers[0].data.to_string()
        };
        let first = first_answer(listen, &asked).await;
        assert_eq!(address(first.expect("an answer")), "10.43.0.11");
        // The same bytes again: the kept answer, the same address.
        let again = ask_udp(listen, &asked).await.expect("an answer");
        assert_eq!(address(again), "10.43.0.11");
        // The Service moved: the next answer says where it is now.
        index.replace(web_at("10.43.0.99"));
        let moved = ask_udp(listen, &asked).await.expect("an answer");
        assert_eq!(address(moved), "10.43.0.99");

        shutdown.cancel();
        server.await.unwrap().unwrap();
        // The UDP thread let go of its socket: the address is free again.
        let mut rebound = None;
        for _ in 0..50 {
            rebound = std::net::UdpSocket::bind(listen).ok();
            if rebound.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            rebound.is_some(),
            "{listen} is still bound after the server stopped"
        );

        // An answer kept for one source is never given to a source that is
        // not answered.
        let index = SharedIndex::default();
        index.replace(web_at("10.43.0.11"));
        let forwarder = Forwarder::new(
            resolv_conf(dir.path(), &[]),
            vec![],
            ResponseCache::default(),
        );
        let only_one = vec!["127.0.0.1/32".parse().unwrap()];
        let h = ClusterDnsHandler::new(zone(), index, forwarder, only_one);
        drop(rebound);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move { serve(listen, h, &stop).await });
        let kept = first_answer(listen, &asked).await;
        assert_eq!(address(kept.expect("an answer")), "10.43.0.11");
        assert_eq!(
            address(ask_udp(listen, &asked).await.expect("an answer")),
            "10.43.0.11"
        );
        let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        other.send_to(&asked, listen).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let wait = Duration::from_secs(2);
        let n = tokio::time::timeout(wait, other.recv(&mut buffer))
            .await
            .expect("an answer to 127.0.0.2")
            .unwrap();
        let refused = Message::from_vec(&buffer[..n]).unwrap();
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert!(refused.answers.is_empty());
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn udp_answers_fit_the_client_forwarded_ones_too_and_answers_are_never_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, asked) = upstream().await;
        // A headless Service with more addresses than 512 bytes hold.
        let addresses: Vec<String> = (1..=60).map(|i| format!("10.42.2.{i}")).collect();
        let endpoint_list: Vec<(&str, &str)> = addresses.iter().map(|a| (a.as_str(), "")).collect();
        let index = SharedIndex::default();
        index.replace(ClusterIndex::build(
            &[service("default", "many", "None", &[("http", "TCP", 80)])],
            &[endpoints(
                "default",
                "many",
                &endpoint_list,
                &[("http", "TCP", 80)],
            )],
            1,
        ));
        let forwarder = Forwarder::with_upstreams(
            resolv_conf(dir.path(), &[]),
            vec![upstream],
            ResponseCache::default(),
        );
        let allowed = vec!["127.0.0.0/8".parse().unwrap()];
        let h = ClusterDnsHandler::new(zone(), index, forwarder, allowed);
        let (listen, shutdown, server) = serve_on_loopback(h);
        let many = Name::from_ascii("many.default.svc.cluster.local.").unwrap();

        // Without EDNS: at most 512 bytes, cut, and marked so.
        let mut plain =
            Message::from_vec(&question(1, &many, RecordType::A, DNSClass::IN).unwrap()).unwrap();
        plain.edns = None;
        let plain = plain.to_vec().unwrap();
        let cut = first_answer(listen, &plain).await;
        let cut = cut.expect("an answer over UDP");
        assert!(cut.len() <= 512, "{} bytes", cut.len());
        let cut = Message::from_vec(&cut).unwrap();
        assert!(cut.metadata.truncation, "the TC bit is set");
        assert!(cut.answers.len() < 60, "{} answers", cut.answers.len());

        // With EDNS and 4096 bytes: all 60.
        let mut big = Message::from_vec(&plain).unwrap();
        big.metadata.id = 2;
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        big.edns = Some(edns);
        let whole = ask_udp(listen, &big.to_vec().unwrap())
            .await
            .expect("an answer");
        let whole = Message::from_vec(&whole).unwrap();
        assert!(!whole.metadata.truncation);
        assert_eq!(whole.answers.len(), 60);

        // A name outside the cluster, answered from upstream on its own task.
        let outside = Name::from_ascii("example.com.").unwrap();
        let forwarded = question(3, &outside, RecordType::A, DNSClass::IN).unwrap();
        let forwarded = ask_udp(listen, &forwarded)
            .await
            .expect("a forwarded answer");
        let forwarded = Message::from_vec(&forwarded).unwrap();
        assert_eq!(forwarded.metadata.id, 3);
        assert_eq!(forwarded.answers[0].data.to_string(), "192.0.2.1");
        assert_eq!(asked.load(Ordering::SeqCst), 1);

        // A message that is itself an answer gets nothing back (no
        // reflection), and one cut after its header gets FORMERR.
        let mut reflected = Message::from_vec(&plain).unwrap();
        reflected.metadata.message_type = MessageType::Response;
        assert_eq!(ask_udp(listen, &reflected.to_vec().unwrap()).await, None);
        let header_only = ask_udp(listen, &plain[..14]).await.expect("FORMERR");
        let header_only = Message::from_vec(&header_only).unwrap();
        assert_eq!(header_only.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(header_only.metadata.id, 1);

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
