//! Connections that speak raw frames, on the SDK's [`RawConnection`].
//!
//! - [`Connector`] opens a connection over TLS-TCP or QUIC: through the SDK's connect,
//!   or, when source addresses are given (many connections), with the client socket bound
//!   to `127.0.0.k` and, for QUIC, one client endpoint per source address carrying many
//!   connections.
//! - During setup a connection is a [`RawConnection`]: [`request`], [`register`],
//!   [`login`], [`resume`], with [`Fail`] naming what went wrong for the reports.
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
use rustls_pki_types::ServerName;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{encode_frame, Body, Frame, FrameCodec, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use tern_sdk::connect::{BoxRead, BoxWrite, FrameReader};
use tern_sdk::raw::{RawConnection, RawError, RawParts};
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
    /// An `Error` frame: its code name, message and `retry_after_ms`.
    Code(String, String, u64),
    /// The server closed the connection (`Closing` reason, or "EOF").
    Closed(String),
    Timeout,
    Io(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Code(c, m, _) => write!(f, "{c}: {m}"),
            Fail::Closed(r) => write!(f, "connection closed ({r})"),
            Fail::Timeout => write!(f, "timed out"),
            Fail::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Fail {}

impl From<RawError> for Fail {
    fn from(e: RawError) -> Self {
        match e {
            RawError::Server { code, message } => Fail::Code(code.as_str_name().into(), message, 0),
            RawError::Closed(c) => Fail::Closed(c.map_or("EOF".into(), |c| close_name(c.reason))),
            RawError::Timeout => Fail::Timeout,
            other => Fail::Io(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Io(e.to_string())
    }
}

impl Fail {
    /// An `Error` frame from the server.
    pub fn of(e: pb::Error) -> Self {
        Fail::Code(code_name(e.code), e.message, e.retry_after_ms)
    }

    pub fn name(&self) -> String {
        match self {
            Fail::Code(c, _, _) => c.clone(),
            Fail::Closed(r) => format!("closed:{r}"),
            Fail::Timeout => "timeout".into(),
            Fail::Io(_) => "io".into(),
        }
    }

    /// For RATE_LIMITED: the wait the server asked for (`retry_after_ms`, else 1 s).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Fail::Code(c, _, ms) if c == "RATE_LIMITED" => Some(Duration::from_millis(
                if *ms > 0 { *ms } else { 1000 }.min(60_000),
            )),
            _ => None,
        }
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

/// Keeps a QUIC connection opened here open; closes it when dropped.
struct QuicGuard(quinn::Connection);

impl Drop for QuicGuard {
    fn drop(&mut self) {
        self.0.close(0u32.into(), b"bench done");
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
        // The SDK's TLS settings (TLS 1.3, ALPN); `tls_of` gives each device its own
        // session cache.
        let tls = sdk.trust.client_config();
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
            tls,
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
    pub async fn connect(&self, i: usize) -> Result<RawConnection, Fail> {
        let io = |e: &dyn std::fmt::Display| Fail::Io(e.to_string());
        if self.sources.is_empty() {
            return RawConnection::connect(self.transport, self.addr, &self.sdk)
                .await
                .map_err(|e| io(&e));
        }
        let reader = |r: BoxRead| FramedRead::new(r, FrameCodec::new(DEFAULT_MAX_FRAME));
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
                    let w: BoxWrite = Box::pin(w);
                    Ok(RawConnection::from_parts(
                        Transport::Tcp,
                        reader(Box::pin(r)),
                        w,
                        (),
                    ))
                }
                Transport::Quic => {
                    let conn = self.quic[k]
                        .connect_with(self.quic_config_of(i)?, self.addr, "localhost")
                        .map_err(|e| io(&e))?
                        .await
                        .map_err(|e| io(&e))?;
                    let (send, recv) = conn.open_bi().await.map_err(|e| io(&e))?;
                    let w: BoxWrite = Box::pin(send);
                    Ok(RawConnection::from_parts(
                        Transport::Quic,
                        reader(Box::pin(recv)),
                        w,
                        QuicGuard(conn),
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

/// Sends a request and waits for its response body; an `Error` answer is
/// [`Fail::Code`] (with its `retry_after_ms`).
pub async fn request(conn: &mut RawConnection, body: Body) -> Result<Body, Fail> {
    match conn.request(body).await?.body {
        Some(Body::Error(e)) => Err(Fail::of(e)),
        Some(b) => Ok(b),
        None => Err(Fail::Io("empty response".into())),
    }
}

pub async fn register(conn: &mut RawConnection, user: &str) -> Result<(), Fail> {
    let r = request(
        conn,
        Body::Register(pb::Register {
            protocol_version: PROTOCOL_VERSION,
            username: user.into(),
            password: PASSWORD.into(),
        }),
    )
    .await;
    match r {
        Ok(_) => Ok(()),
        // A re-run against the same external server.
        Err(Fail::Code(c, ..)) if c == "USER_EXISTS" => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `LoginOk` answering `body` (a Login or a Resume).
async fn logged_in(conn: &mut RawConnection, body: Body) -> Result<pb::LoginOk, Fail> {
    match request(conn, body).await? {
        Body::LoginOk(ok) => Ok(ok),
        other => Err(Fail::Io(format!(
            "unexpected answer to a login: {}",
            tern_proto::body_name(&other)
        ))),
    }
}

pub async fn login(
    conn: &mut RawConnection,
    user: &str,
    device: &str,
) -> Result<pb::LoginOk, Fail> {
    let body = Body::Login(pb::Login {
        protocol_version: PROTOCOL_VERSION,
        username: user.into(),
        password: PASSWORD.into(),
        device: device.into(),
    });
    logged_in(conn, body).await
}

pub async fn resume(conn: &mut RawConnection, token: &str) -> Result<pb::LoginOk, Fail> {
    let body = Body::Resume(pb::Resume {
        protocol_version: PROTOCOL_VERSION,
        token: token.into(),
    });
    logged_in(conn, body).await
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
    /// Keeps the transport open (QUIC closes when it is dropped).
    _guard: Box<dyn std::any::Any + Send>,
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
    /// `MarkRead` up to the pushed message every this many pushes from others, as a
    /// client showing each message does (0: never).
    pub mark_read_every: u64,
}

impl Live {
    pub fn start(
        raw: RawConnection,
        user: String,
        opts: LiveOpts,
        handler: Arc<dyn Handler>,
        stats: Arc<Stats>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let RawParts {
            reader,
            writer,
            guard,
            next_req,
            ..
        } = raw.into_parts();
        let req = Arc::new(AtomicU64::new(next_req.max(1)));
        let alive = Arc::new(AtomicBool::new(true));
        let w = tokio::spawn(write_loop(writer, rx, opts.ping_every, req.clone()));
        let r = tokio::spawn(read_loop(
            reader,
            user,
            tx.clone(),
            req.clone(),
            (opts.ack_every, opts.mark_read_every),
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
    (ack_every, mark_read_every): (u64, u64),
    handler: Arc<dyn Handler>,
    stats: Arc<Stats>,
    alive: Arc<AtomicBool>,
) {
    let mut max_inbox = 0u64;
    let mut since_ack = 0u64;
    let mut since_read = 0u64;
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
                if let Some(m) = p.message.as_ref().filter(|m| m.sender != user) {
                    since_read += 1;
                    if mark_read_every > 0 && since_read >= mark_read_every {
                        since_read = 0;
                        let _ = tx.send(encode_frame(&Frame {
                            req_id: req.fetch_add(1, Ordering::Relaxed),
                            body: Some(Body::MarkRead(pb::MarkRead {
                                conversation: m.conversation.clone(),
                                seq: m.seq,
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
        let f = Fail::of(pb::Error {
            code: ErrorCode::RateLimited as i32,
            message: "too many login attempts; retry after 1500 ms".into(),
            retry_after_ms: 1500,
        });
        assert_eq!(f.name(), "RATE_LIMITED");
        assert_eq!(f.retry_after(), Some(Duration::from_millis(1500)));
        let f = Fail::Code("RATE_LIMITED".into(), "slow down".into(), 0);
        assert_eq!(f.retry_after(), Some(Duration::from_millis(1000)));
        let f = Fail::Code("FORBIDDEN".into(), "no".into(), 0);
        assert_eq!(f.retry_after(), None);
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
