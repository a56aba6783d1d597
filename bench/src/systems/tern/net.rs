//! Connections that speak raw frames.
//!
//! - [`Connector`] opens a connection over TLS-TCP or QUIC: through `tern_sdk::connect`,
//!   or, when source addresses are given (many connections), with the client socket bound
//!   to `127.0.0.k` and, for QUIC, one client endpoint per source address carrying many
//!   connections.
//! - [`Raw`] is a connection during setup: request, wait for the response (Register,
//!   Login, CreateGroup, ...).
//! - [`Live`] is a connection during a run: a writer task that batches queued frames into
//!   one write per wakeup and sends a `Ping` every heartbeat, and a reader task that hands
//!   pushes and `SendAck`s to a [`Handler`], acks the inbox cumulatively every
//!   `ack_every` pushes, and counts errors and close reasons.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{
    encode_frame, Body, Frame, FrameCodec, ALPN, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tern_sdk::connect::{BoxRead, BoxWrite, ConnectionGuard, FrameReader};
use tern_sdk::{ConnectOptions, Transport, Trust};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::engine::clock;
use crate::engine::run::Stats;
use crate::engine::schedule::Nanos;

pub const PASSWORD: &str = "bench-password-1";

/// Why a request did not get its expected answer.
#[derive(Debug, Clone)]
pub enum Fail {
    /// An `Error` frame: its code name and message.
    Code(String, String),
    /// The server closed the connection (`Closing` reason, or "EOF").
    Closed(String),
    Timeout,
    Io(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Code(c, m) => write!(f, "{c}: {m}"),
            Fail::Closed(r) => write!(f, "connection closed ({r})"),
            Fail::Timeout => write!(f, "timed out"),
            Fail::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Fail {}

impl Fail {
    pub fn name(&self) -> String {
        match self {
            Fail::Code(c, _) => c.clone(),
            Fail::Closed(r) => format!("closed:{r}"),
            Fail::Timeout => "timeout".into(),
            Fail::Io(_) => "io".into(),
        }
    }

    /// For RATE_LIMITED: the wait the server asked for ("retry after N ms").
    pub fn retry_after(&self) -> Option<Duration> {
        let Fail::Code(c, m) = self else { return None };
        if c != "RATE_LIMITED" {
            return None;
        }
        let ms = m
            .split("retry after ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(1000);
        Some(Duration::from_millis(ms.min(60_000)))
    }
}

pub fn code_name(code: i32) -> String {
    ErrorCode::try_from(code)
        .map(|c| c.as_str_name().to_string())
        .unwrap_or_else(|_| format!("ERROR_{code}"))
}

pub fn close_name(reason: i32) -> String {
    CloseReason::try_from(reason)
        .map(|c| c.as_str_name().to_string())
        .unwrap_or_else(|_| format!("CLOSE_{reason}"))
}

/// Keeps the transport open; closes QUIC connections when dropped.
pub enum Guard {
    /// Held for its `Drop`, which closes the SDK's QUIC connection.
    #[allow(dead_code)]
    Sdk(ConnectionGuard),
    Quic(quinn::Connection),
    Tcp,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Quic(c) = self {
            c.close(0u32.into(), b"bench done");
        }
    }
}

/// Opens connections to the server.
pub struct Connector {
    pub transport: Transport,
    pub addr: SocketAddr,
    sdk: ConnectOptions,
    tls: Arc<rustls::ClientConfig>,
    /// Connection number -> its own TLS config, so each simulated device keeps its own
    /// session tickets and resumes on reconnect, as a device running the SDK does.
    device_tls: Mutex<std::collections::HashMap<usize, Arc<rustls::ClientConfig>>>,
    keep_alive: Duration,
    /// Empty: `tern_sdk::connect`. Else connection `i` binds to `sources[i % len]`.
    pub sources: Vec<Ipv4Addr>,
    quic: Vec<quinn::Endpoint>,
    timeout: Duration,
}

/// `127.0.0.1`, `127.0.0.2`, ... (`n` of them).
pub fn loopback_sources(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            let k = i as u32 + 1;
            Ipv4Addr::new(
                127,
                ((k >> 16) & 0xff) as u8,
                ((k >> 8) & 0xff) as u8,
                (k & 0xff) as u8,
            )
        })
        .collect()
}

fn client_tls(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

impl Connector {
    /// `sources` empty: every connection through `tern_sdk::connect`.
    pub fn new(
        transport: Transport,
        addr: SocketAddr,
        ca: &Path,
        sources: Vec<Ipv4Addr>,
        keep_alive: Duration,
    ) -> anyhow::Result<Self> {
        let mut sdk = ConnectOptions::new(Trust::from_pem_file(ca)?);
        sdk.timeout = Duration::from_secs(20);
        sdk.keep_alive = keep_alive;
        let tls = client_tls(ca)?;
        let mut quic = Vec::new();
        if transport == Transport::Quic {
            // One client endpoint (one UDP socket) per source address; each connection
            // brings its own config (see `quic_config_of`).
            for src in &sources {
                quic.push(quinn::Endpoint::client(SocketAddr::new((*src).into(), 0))?);
            }
        }
        Ok(Self {
            transport,
            addr,
            sdk,
            tls: Arc::new(tls),
            device_tls: Mutex::new(std::collections::HashMap::new()),
            keep_alive,
            sources,
            quic,
            timeout: Duration::from_secs(20),
        })
    }

    /// Connection `i`'s TLS config: its own session cache (shared by its reconnects).
    fn tls_of(&self, i: usize) -> Arc<rustls::ClientConfig> {
        let mut map = self.device_tls.lock().unwrap();
        map.entry(i)
            .or_insert_with(|| {
                let mut cfg = (*self.tls).clone();
                cfg.resumption = rustls::client::Resumption::in_memory_sessions(4);
                Arc::new(cfg)
            })
            .clone()
    }

    fn quic_config_of(&self, i: usize) -> Result<quinn::ClientConfig, Fail> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(self.tls_of(i))
            .map_err(|e| Fail::Io(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        client.transport_config(Arc::new(t));
        Ok(client)
    }

    /// Opens connection number `i` (which picks its source address).
    pub async fn connect(&self, i: usize) -> Result<Raw, Fail> {
        let io = |e: &dyn std::fmt::Display| Fail::Io(e.to_string());
        if self.sources.is_empty() {
            let conn = tern_sdk::connect(self.transport, self.addr, &self.sdk)
                .await
                .map_err(|e| io(&e))?;
            let (reader, writer, guard) = conn.into_split();
            return Ok(Raw::new(reader, writer, Guard::Sdk(guard)));
        }
        let k = i % self.sources.len();
        let work = async {
            match self.transport {
                Transport::Tcp => {
                    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| io(&e))?;
                    sock.bind(SocketAddr::new(self.sources[k].into(), 0))
                        .map_err(|e| io(&e))?;
                    let tcp = sock.connect(self.addr).await.map_err(|e| io(&e))?;
                    let _ = tcp.set_nodelay(true);
                    let name = ServerName::try_from("localhost").map_err(|e| io(&e))?;
                    let tls = tokio_rustls::TlsConnector::from(self.tls_of(i))
                        .connect(name, tcp)
                        .await
                        .map_err(|e| io(&e))?;
                    let (r, w) = tokio::io::split(tls);
                    Ok(Raw::new(
                        FramedRead::new(Box::pin(r) as BoxRead, FrameCodec::new(DEFAULT_MAX_FRAME)),
                        Box::pin(w),
                        Guard::Tcp,
                    ))
                }
                Transport::Quic => {
                    let conn = self.quic[k]
                        .connect_with(self.quic_config_of(i)?, self.addr, "localhost")
                        .map_err(|e| io(&e))?
                        .await
                        .map_err(|e| io(&e))?;
                    let (send, recv) = conn.open_bi().await.map_err(|e| io(&e))?;
                    Ok(Raw::new(
                        FramedRead::new(
                            Box::pin(recv) as BoxRead,
                            FrameCodec::new(DEFAULT_MAX_FRAME),
                        ),
                        Box::pin(send),
                        Guard::Quic(conn),
                    ))
                }
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Fail::Timeout),
        }
    }
}

/// A connection during setup.
pub struct Raw {
    pub reader: FrameReader,
    pub writer: BoxWrite,
    pub guard: Guard,
    pub next_req: u64,
}

pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

impl Raw {
    pub fn new(reader: FrameReader, writer: BoxWrite, guard: Guard) -> Self {
        Self {
            reader,
            writer,
            guard,
            next_req: 1,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| Fail::Io(e.to_string()))?;
        self.writer
            .flush()
            .await
            .map_err(|e| Fail::Io(e.to_string()))
    }

    /// Sends a request; returns its req_id.
    pub async fn send_req(&mut self, body: Body) -> Result<u64, Fail> {
        let req_id = self.next_req;
        self.next_req += 1;
        self.write(&encode_frame(&Frame {
            req_id,
            body: Some(body),
        }))
        .await?;
        Ok(req_id)
    }

    /// The next frame, whatever it is.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Frame, Fail> {
        match tokio::time::timeout(timeout, self.reader.next()).await {
            Err(_) => Err(Fail::Timeout),
            Ok(None) => Err(Fail::Closed("EOF".into())),
            Ok(Some(Err(e))) => Err(Fail::Io(e.to_string())),
            Ok(Some(Ok(Err(e)))) => Err(Fail::Io(format!("undecodable frame: {e}"))),
            Ok(Some(Ok(Ok(f)))) => Ok(f),
        }
    }

    /// Sends a request and waits for its response (pushes in between are dropped). An
    /// `Error` response comes back as `Fail::Code`.
    pub async fn request(&mut self, body: Body) -> Result<Body, Fail> {
        let id = self.send_req(body).await?;
        let deadline = tokio::time::Instant::now() + RPC_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next_frame(left).await?;
            match f.body {
                Some(Body::Closing(c)) => return Err(Fail::Closed(close_name(c.reason))),
                Some(Body::Error(e)) if f.req_id == id => {
                    return Err(Fail::Code(code_name(e.code), e.message))
                }
                Some(b) if f.req_id == id => return Ok(b),
                _ => {}
            }
        }
    }

    pub async fn register(&mut self, user: &str) -> Result<(), Fail> {
        match self
            .request(Body::Register(pb::Register {
                protocol_version: PROTOCOL_VERSION,
                username: user.into(),
                password: PASSWORD.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            // A re-run against the same external server.
            Err(Fail::Code(c, _)) if c == "USER_EXISTS" => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn login(&mut self, user: &str, device: &str) -> Result<pb::LoginOk, Fail> {
        match self
            .request(Body::Login(pb::Login {
                protocol_version: PROTOCOL_VERSION,
                username: user.into(),
                password: PASSWORD.into(),
                device: device.into(),
            }))
            .await?
        {
            Body::LoginOk(ok) => Ok(ok),
            other => Err(Fail::Io(format!(
                "unexpected answer to Login: {}",
                tern_proto::body_name(&other)
            ))),
        }
    }

    pub async fn resume(&mut self, token: &str) -> Result<pb::LoginOk, Fail> {
        match self
            .request(Body::Resume(pb::Resume {
                protocol_version: PROTOCOL_VERSION,
                token: token.into(),
            }))
            .await?
        {
            Body::LoginOk(ok) => Ok(ok),
            other => Err(Fail::Io(format!(
                "unexpected answer to Resume: {}",
                tern_proto::body_name(&other)
            ))),
        }
    }
}

/// Retries `op` while the server answers RATE_LIMITED (waiting as told) or the
/// connection fails to open, at most `tries` times.
pub async fn with_retries<T, F, Fut>(tries: u32, stats: &Stats, mut op: F) -> Result<T, Fail>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Fail>>,
{
    let mut last = Fail::Timeout;
    for _ in 0..tries {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                stats.add(&format!("setup {}", e.name()));
                let wait = e.retry_after().unwrap_or(Duration::from_millis(200));
                last = e;
                tokio::time::sleep(wait).await;
            }
        }
    }
    Err(last)
}

/// What a reader does with what the server pushes.
pub trait Handler: Send + Sync + 'static {
    fn push(&self, _me: &str, _p: &pb::MessagePush, _now: Nanos) {}
    fn send_ack(&self, _a: &pb::SendAck, _now: Nanos) {}
}

/// A connection during a run.
pub struct Live {
    tx: mpsc::UnboundedSender<Bytes>,
    req: Arc<AtomicU64>,
    pub alive: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _guard: Guard,
}

impl Drop for Live {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How a live connection behaves.
#[derive(Clone)]
pub struct LiveOpts {
    /// Ping every this often (the heartbeat from LoginOk), first at a random point in
    /// the first interval so that connections do not ping in step.
    pub ping_every: Option<Duration>,
    /// Cumulative Ack every this many inbox pushes.
    pub ack_every: u64,
}

impl Live {
    pub fn start(
        raw: Raw,
        user: String,
        opts: LiveOpts,
        handler: Arc<dyn Handler>,
        stats: Arc<Stats>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let req = Arc::new(AtomicU64::new(raw.next_req.max(1)));
        let alive = Arc::new(AtomicBool::new(true));
        let Raw {
            reader,
            writer,
            guard,
            ..
        } = raw;
        let w = tokio::spawn(write_loop(writer, rx, opts.ping_every, req.clone()));
        let r = tokio::spawn(read_loop(
            reader,
            user,
            tx.clone(),
            req.clone(),
            opts.ack_every,
            handler,
            stats,
            alive.clone(),
        ));
        Self {
            tx,
            req,
            alive,
            tasks: vec![w, r],
            _guard: guard,
        }
    }

    pub fn sender(&self) -> (mpsc::UnboundedSender<Bytes>, Arc<AtomicU64>) {
        (self.tx.clone(), self.req.clone())
    }
}

fn ping_frame(req: &AtomicU64) -> Bytes {
    encode_frame(&Frame {
        req_id: req.fetch_add(1, Ordering::Relaxed),
        body: Some(Body::Ping(pb::Ping {
            client_time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        })),
    })
}

const MAX_WRITE: usize = 256 * 1024;

async fn write_loop(
    mut w: BoxWrite,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    ping_every: Option<Duration>,
    req: Arc<AtomicU64>,
) {
    let mut ticker = ping_every.map(|every| {
        let phase = every.mul_f64(rand::random::<f64>());
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(b) => b,
                None => break,
            },
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => ping_frame(&req),
        };
        // One write for everything queued now.
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < MAX_WRITE {
            match rx.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            break;
        }
        if buf.capacity() > 4 * MAX_WRITE {
            buf = BytesMut::with_capacity(4096);
        }
    }
    let _ = w.shutdown().await;
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    mut r: FrameReader,
    user: String,
    tx: mpsc::UnboundedSender<Bytes>,
    req: Arc<AtomicU64>,
    ack_every: u64,
    handler: Arc<dyn Handler>,
    stats: Arc<Stats>,
    alive: Arc<AtomicBool>,
) {
    let mut max_inbox = 0u64;
    let mut since_ack = 0u64;
    loop {
        let item = r.next().await;
        let now = clock::now();
        let f = match item {
            None => {
                stats.add("EOF");
                break;
            }
            Some(Err(e)) => {
                stats.add(&format!("read error: {e}"));
                break;
            }
            Some(Ok(Err(_))) => {
                stats.add("undecodable frame");
                continue;
            }
            Some(Ok(Ok(f))) => f,
        };
        match f.body {
            Some(Body::Push(p)) => {
                if p.inbox_seq > 0 {
                    max_inbox = max_inbox.max(p.inbox_seq);
                    since_ack += 1;
                    if since_ack >= ack_every {
                        since_ack = 0;
                        let _ = tx.send(encode_frame(&Frame {
                            req_id: req.fetch_add(1, Ordering::Relaxed),
                            body: Some(Body::Ack(pb::Ack {
                                inbox_seq: max_inbox,
                            })),
                        }));
                    }
                }
                handler.push(&user, &p, now);
            }
            Some(Body::SendAck(a)) => handler.send_ack(&a, now),
            Some(Body::Error(e)) => stats.add(&code_name(e.code)),
            Some(Body::Closing(c)) => {
                stats.add(&format!("Closing:{}", close_name(c.reason)));
                break;
            }
            _ => {}
        }
    }
    alive.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_errors_say_how_long_to_wait() {
        let f = Fail::Code(
            "RATE_LIMITED".into(),
            "too many login attempts; retry after 1500 ms".into(),
        );
        assert_eq!(f.retry_after(), Some(Duration::from_millis(1500)));
        let f = Fail::Code("RATE_LIMITED".into(), "slow down".into());
        assert_eq!(f.retry_after(), Some(Duration::from_millis(1000)));
        assert_eq!(Fail::Timeout.retry_after(), None);
    }

    #[test]
    fn sources_walk_the_loopback_range() {
        let s = loopback_sources(300);
        assert_eq!(s[0], Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s[254], Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(s[255], Ipv4Addr::new(127, 0, 1, 0));
        assert!(s.iter().all(|a| a.is_loopback()));
    }
}
