//! Forwarding what is not the cluster's to the node's own resolvers: the
//! `nameserver`s of its resolv.conf (read again at most every
//! [`REREAD_AFTER`], so a new DHCP lease is followed), tried in order, each
//! over UDP with a timeout and over TCP when the UDP answer is truncated.
//! A loopback stub resolver such as systemd-resolved's 127.0.0.53 is fine:
//! the agent runs in the host's network namespace. What would loop (this
//! server's own addresses, the cluster DNS address, which leads here) is
//! never asked. Answers are cached ([`super::cache`]), and at most
//! [`MAX_IN_FLIGHT`] questions are upstream at once; past that, SERVFAIL
//! at once rather than a growing queue.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::cache::{CacheKey, ResponseCache};
use super::resolv_conf::ResolvConf;

/// How long one upstream has to answer, per transport.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The resolv.conf is read again after this long.
pub const REREAD_AFTER: Duration = Duration::from_secs(30);
/// Questions upstream at the same time.
pub const MAX_IN_FLIGHT: usize = 256;
/// The UDP payload upstreams are told this server takes (the DNS flag
/// day's size: no fragments).
const EDNS_PAYLOAD: u16 = 1232;
/// The largest UDP answer read.
const UDP_BUFFER: usize = 4096;

/// Why a question got no upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver: {path} names none this server may forward to")]
    NoUpstream { path: String },
    #[error("{MAX_IN_FLIGHT} questions are already upstream")]
    Busy,
    #[error("encoding the question: {0}")]
    Encode(String),
    #[error("no upstream answered ({last})")]
    Unanswered { last: String },
}

/// The upstreams as last read.
#[derive(Debug, Default)]
struct Upstreams {
    servers: Vec<SocketAddr>,
    read_at: Option<Instant>,
}

/// Asks the node's resolvers.
#[derive(Debug)]
pub struct Forwarder {
    resolv_conf: PathBuf,
    /// Never forwarded to: they lead back here.
    refused: Vec<IpAddr>,
    upstreams: Mutex<Upstreams>,
    cache: Mutex<ResponseCache>,
    in_flight: Semaphore,
}

impl Forwarder {
    /// Forwards to the nameservers of `resolv_conf` other than `refused`.
    pub fn new(resolv_conf: PathBuf, refused: Vec<IpAddr>, cache: ResponseCache) -> Forwarder {
        Forwarder {
            resolv_conf,
            refused,
            upstreams: Mutex::new(Upstreams::default()),
            cache: Mutex::new(cache),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Forwards to `servers` (for a while: until the resolv.conf is read
    /// again); for tests whose upstreams listen on ports other than 53.
    #[cfg(test)]
    pub(crate) fn with_upstreams(
        resolv_conf: PathBuf,
        servers: Vec<SocketAddr>,
        cache: ResponseCache,
    ) -> Forwarder {
        let forwarder = Forwarder::new(resolv_conf, Vec::new(), cache);
        *forwarder.upstreams() = Upstreams {
            servers,
            read_at: Some(Instant::now()),
        };
        forwarder
    }

    fn upstreams(&self) -> MutexGuard<'_, Upstreams> {
        self.upstreams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cache(&self) -> MutexGuard<'_, ResponseCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstreams to ask, read again when stale.
    fn servers(&self) -> Vec<SocketAddr> {
        let mut upstreams = self.upstreams();
        let fresh = upstreams
            .read_at
            .is_some_and(|at| at.elapsed() < REREAD_AFTER);
        if !fresh {
            let servers = ResolvConf::read(&self.resolv_conf).upstreams(&self.refused);
            if servers != upstreams.servers {
                tracing::info!(
                    resolv_conf = %self.resolv_conf.display(),
                    upstreams = ?servers,
                    "cluster DNS forwards to these resolvers"
                );
            }
            upstreams.servers = servers;
            upstreams.read_at = Some(Instant::now());
        }
        upstreams.servers.clone()
    }

    /// The answer to `name` `qtype` `qclass`: from the cache, else from
    /// the first upstream that answers.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Result<Message, ForwardError> {
        let key = CacheKey::new(name, qtype, qclass);
        let cached = self.cache().get(&key, Instant::now());
        if let Some(message) = cached {
            return Ok(message);
        }
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| ForwardError::Busy)?;
        let servers = self.servers();
        if servers.is_empty() {
            return Err(ForwardError::NoUpstream {
                path: self.resolv_conf.display().to_string(),
            });
        }
        let id: u16 = rand::random();
        let query = question(id, name, qtype, qclass)?;
        let mut last = String::new();
        for server in servers {
            match ask(server, &query, id, name, qtype).await {
                Ok((message, wire)) => {
                    self.cache().insert(key, &message, &wire, Instant::now());
                    return Ok(message);
                }
                Err(e) => {
                    tracing::debug!(
                        upstream = %server,
                        name = %name,
                        error = %e,
                        "upstream did not answer"
                    );
                    last = format!("{server}: {e}");
                }
            }
        }
        Err(ForwardError::Unanswered { last })
    }
}

/// The wire form of a recursive question with EDNS.
pub fn question(
    id: u16,
    name: &Name,
    qtype: RecordType,
    qclass: DNSClass,
) -> Result<Vec<u8>, ForwardError> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let mut query = Query::query(name.clone(), qtype);
    query.set_query_class(qclass);
    message.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    message
        .to_vec()
        .map_err(|e| ForwardError::Encode(e.to_string()))
}

/// Why one upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout,
    #[error("unreadable answer: {0}")]
    Decode(String),
    #[error("the answer is not to the question asked")]
    Mismatch,
}

/// Asks `server` over UDP, then over TCP if the answer was truncated.
async fn ask(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    qtype: RecordType,
) -> Result<(Message, Vec<u8>), AskError> {
    let wire = within(exchange_udp(server, query, id)).await?;
    let message = answer_to(&wire, id, name, qtype)?;
    if !message.metadata.truncation {
        return Ok((message, wire));
    }
    let wire = within(exchange_tcp(server, query)).await?;
    let message = answer_to(&wire, id, name, qtype)?;
    Ok((message, wire))
}

async fn within<T>(
    exchange: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, AskError> {
    match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(AskError::Timeout),
    }
}

/// `wire` read as the answer to question `id` about `name` `qtype`.
fn answer_to(wire: &[u8], id: u16, name: &Name, qtype: RecordType) -> Result<Message, AskError> {
    let message = Message::from_vec(wire).map_err(|e| AskError::Decode(e.to_string()))?;
    let asked = message
        .queries
        .first()
        .is_some_and(|q| q.query_type() == qtype && q.name() == name);
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response || !asked
    {
        return Err(AskError::Mismatch);
    }
    Ok(message)
}

async fn exchange_udp(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        let n = socket.recv(&mut buffer).await?;
        // Anything but the answer to this question (a late answer to an
        // earlier one) is dropped; the timeout bounds the wait.
        if n >= 2 && buffer[..2] == id.to_be_bytes() {
            buffer.truncate(n);
            return Ok(buffer);
        }
    }
}

async fn exchange_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};

    use super::*;

    /// A tiny upstream on loopback: answers every A question with
    /// `192.0.2.<n>` (n counting the questions it got) and a TTL of 60,
    /// over UDP; its address and the count.
    pub(crate) async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                let Ok(query) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let id = query.metadata.id;
                let mut reply = Message::new(id, MessageType::Response, OpCode::Query);
                reply.metadata.recursion_available = true;
                reply.add_queries(query.queries.clone());
                if let Some(q) = query.queries.first() {
                    let octet = u8::try_from(n).unwrap_or(255);
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, octet))),
                    ));
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        (address, asked)
    }

    /// A resolv.conf in a temp dir naming `servers`.
    pub(crate) fn resolv_conf(dir: &std::path::Path, servers: &[IpAddr]) -> PathBuf {
        let path = dir.join("resolv.conf");
        let text: String = servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    #[tokio::test]
    async fn answers_come_from_upstream_once_then_from_the_cache() {
        let (server, asked) = upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let conf = resolv_conf(dir.path(), &[server.ip()]);
        // The test upstream listens on a port of its own.
        let forwarder = Forwarder::with_upstreams(conf, vec![server], ResponseCache::default());
        let first = forwarder
            .resolve(&name("example.com."), RecordType::A, DNSClass::IN)
            .await
            .unwrap();
        assert_eq!(first.answers[0].data.to_string(), "192.0.2.1");
        let again = forwarder
            .resolve(&name("Example.COM."), RecordType::A, DNSClass::IN)
            .await
            .unwrap();
        assert_eq!(again.answers[0].data.to_string(), "192.0.2.1");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the second came from the cache"
        );
    }

    #[tokio::test]
    async fn without_an_upstream_it_says_so_and_never_asks_itself() {
        let dir = tempfile::tempdir().unwrap();
        let own: IpAddr = "10.42.0.1".parse().unwrap();
        let dns: IpAddr = "10.43.0.10".parse().unwrap();
        let conf = resolv_conf(dir.path(), &[own, dns]);
        let forwarder = Forwarder::new(conf, vec![own, dns], ResponseCache::default());
        let e = forwarder
            .resolve(&name("example.com."), RecordType::A, DNSClass::IN)
            .await
            .unwrap_err();
        assert!(matches!(e, ForwardError::NoUpstream { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_and_the_next_one_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (server, _) = upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let forwarder = Forwarder::with_upstreams(
            resolv_conf(dir.path(), &[]),
            vec![silent.local_addr().unwrap(), server],
            ResponseCache::default(),
        );
        let answer = forwarder
            .resolve(&name("example.org."), RecordType::A, DNSClass::IN)
            .await
            .unwrap();
        assert_eq!(answer.answers.len(), 1);
    }

    #[test]
    fn an_answer_to_another_question_is_refused() {
        let query = question(9, &name("a.example."), RecordType::A, DNSClass::IN).unwrap();
        let mut reply = Message::from_vec(&query).unwrap();
        reply.metadata.message_type = MessageType::Response;
        let wire = reply.to_vec().unwrap();
        answer_to(&wire, 9, &name("A.example."), RecordType::A).unwrap();
        assert!(matches!(
            answer_to(&wire, 10, &name("a.example."), RecordType::A),
            Err(AskError::Mismatch)
        ));
        assert!(matches!(
            answer_to(&wire, 9, &name("b.example."), RecordType::A),
            Err(AskError::Mismatch)
        ));
        assert!(matches!(
            answer_to(&wire[..5], 9, &name("a.example."), RecordType::A),
            Err(AskError::Decode(_))
        ));
    }
}
