//! Wiring: open the store, start the flusher, bind QUIC and TLS-TCP, accept connections
//! into sessions, and shut everything down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tern_proto::FrameCodec;
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Accounts;
use crate::certs;
use crate::chat::{Chat, ChatLimits};
use crate::config::Config;
use crate::durability::Durability;
use crate::hub::Hub;
use crate::session::run_session;
use crate::store::{SledStore, Store};

/// Per-session limits, from the config.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub heartbeat: Duration,
    pub auth_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_frame_bytes: u32,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub max_pending: u32,
    pub shutdown_grace: Duration,
}

/// What every session shares.
pub struct Services {
    pub chat: Chat,
    pub accounts: Accounts,
    pub hub: Arc<Hub>,
    pub limits: SessionLimits,
    pub store_epoch: String,
    /// Cancelled when the server stops: sessions close with reason SHUTDOWN.
    pub shutdown: CancellationToken,
    pub limiter: crate::limits::Limiter,
}

impl Services {
    /// Everything sessions share, over a store; no sockets (the fuzz target and tests use
    /// this to run sessions over in-memory streams). The returned [`Durability`] must be
    /// run (its flusher) for writes to be acknowledged.
    pub fn new(config: &Config, store: Arc<dyn Store>) -> (Arc<Services>, Arc<Durability>) {
        let durability = Durability::with_group_commit(store.clone(), config.group_commit);
        let hub = Arc::new(Hub::new());
        let limits = SessionLimits {
            heartbeat: Duration::from_secs(config.heartbeat_secs as u64),
            auth_timeout: Duration::from_secs(config.auth_timeout_secs as u64),
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs as u64),
            max_frame_bytes: config.max_frame_bytes,
            outbound_queue: config.outbound_queue,
            outbound_queue_bytes: config.outbound_queue_bytes,
            max_pending: config.max_pending,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs as u64),
        };
        let services = Arc::new(Services {
            chat: Chat::new(
                store.clone(),
                durability.clone(),
                hub.clone(),
                ChatLimits {
                    fanout_threshold: config.group_fanout_threshold as usize,
                    max_group_members: config.max_group_members as usize,
                    max_frame_bytes: config.max_frame_bytes as usize,
                },
            ),
            accounts: Accounts::new(
                store.clone(),
                durability.clone(),
                config.token_ttl_secs,
                crate::auth::HashCost {
                    memory_kib: config.password_hash_memory_kib,
                    iterations: config.password_hash_iterations,
                },
            ),
            hub,
            store_epoch: store.store_epoch(),
            shutdown: CancellationToken::new(),
            limits: limits.clone(),
            limiter: crate::limits::Limiter::new(crate::limits::LimitSettings {
                conn_rate: config.conn_rate_limit,
                conn_burst: config.conn_rate_burst,
                user_rate: config.user_rate_limit,
                user_burst: config.user_rate_burst,
                login_failures_per_user: config.login_failures_per_user,
                logins_per_address: config.logins_per_address,
                login_window: Duration::from_secs(config.login_window_secs as u64),
                max_connections: config.max_connections,
                max_sessions_per_user: config.max_sessions_per_user,
            }),
        });
        (services, durability)
    }
}

/// First size of a connection's read buffer. Most connections are idle most of the time
/// and their frames are small; the buffer grows for bigger frames and bursts (and the
/// codec lets go of a big one once it is empty), so idle connections stay cheap.
const READ_BUFFER_START: usize = 256;

/// A bound server, ready to [`Server::run`].
pub struct Server {
    services: Arc<Services>,
    store: Arc<dyn Store>,
    durability: Arc<Durability>,
    tcp: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    quic: quinn::Endpoint,
    quic_addr: SocketAddr,
    tcp_addr: SocketAddr,
    ws: Option<(TcpListener, Arc<crate::ws::WsSettings>)>,
    metrics: Option<TcpListener>,
    watermark: Arc<crate::watermark::Watermark>,
    dev_ca: Option<PathBuf>,
    data_dir: PathBuf,
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Pending connections the kernel may queue before accept. The std default (128) drops
/// SYNs when thousands of devices reconnect at once, and each dropped SYN costs its client
/// a 1 s, then 3 s, retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted server can bind while old connections linger.
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)
}

/// Binds UDP and TCP. When both ask for the same port 0, the TCP port is chosen to match
/// the UDP one, so QUIC and TLS share a port number as with the default config.
fn bind_both(
    quic: SocketAddr,
    tcp: SocketAddr,
) -> anyhow::Result<(std::net::UdpSocket, TcpListener)> {
    if quic == tcp && quic.port() == 0 {
        for _ in 0..20 {
            let udp = bind_udp(quic)?;
            let mut want = tcp;
            want.set_port(udp.local_addr()?.port());
            if let Ok(t) = bind_tcp(want) {
                return Ok((udp, t));
            }
        }
        anyhow::bail!(
            "could not find a port free for both UDP and TCP on {}",
            quic.ip()
        );
    }
    let udp = bind_udp(quic)?;
    let t = bind_tcp(tcp).with_context(|| format!("binding TCP {tcp}"))?;
    Ok((udp, t))
}

impl Server {
    /// Opens the data dir and binds the listeners; nothing is served until `run`.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store_dir = config.data_dir.join("store");
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(&store_dir, config.store_cache_mb << 20)
                .with_context(|| format!("opening the store in {}", store_dir.display()))?,
        );
        let watermark = crate::watermark::Watermark::new(&store_dir, &store.store_epoch());
        watermark.check(store.commit_count()?)?;
        let tls_material = certs::load_or_create(&config)?;
        let tls_config = Arc::new(certs::server_tls_config(&tls_material)?);

        let (services, durability) = Services::new(&config, store.clone());
        let limits = services.limits.clone();

        let (udp, tcp) = bind_both(config.quic_addr(), config.tcp_addr())?;
        let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls_config.clone())
            .context("QUIC needs TLS 1.3")?;
        let mut quic_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
        let mut transport = quinn::TransportConfig::default();
        // Idle timeout = 3 heartbeats (+ a little), aligned with the session's own check.
        let idle = limits.heartbeat * 3 + Duration::from_secs(2);
        transport.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle)?));
        transport.max_concurrent_bidi_streams(1u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        quic_config.transport_config(Arc::new(transport));
        // The stateless-reset key and the connection-id key come from the data dir's
        // secret, so a restarted server (even after kill -9) recognises the connection ids
        // it handed out before and answers them with a valid stateless reset: clients
        // learn at once that their connection is gone instead of waiting for the idle
        // timeout.
        let derive = |label: &[u8]| {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&store.signing_key())
                .expect("HMAC accepts any key length");
            mac.update(label);
            mac.finalize().into_bytes()
        };
        let reset_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &derive(b"tern quic stateless reset v1"),
        );
        let cid_key = u64::from_be_bytes(
            derive(b"tern quic connection id v1")[..8]
                .try_into()
                .unwrap(),
        );
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let quic = quinn::Endpoint::new(
            endpoint_config,
            Some(quic_config),
            udp,
            Arc::new(quinn::TokioRuntime),
        )?;
        let ws = match config.ws_addr()? {
            None => None,
            Some(addr) => {
                let l = bind_tcp(addr).with_context(|| format!("binding WebSocket {addr}"))?;
                let tls = config.ws_tls.then(|| {
                    let mut c = (*tls_config).clone();
                    c.alpn_protocols = vec![b"http/1.1".to_vec()];
                    tokio_rustls::TlsAcceptor::from(Arc::new(c))
                });
                let settings = crate::ws::WsSettings {
                    allowed_origins: config.ws_allowed_origins.clone(),
                    web_root: config.web_root.clone(),
                    tls,
                };
                Some((l, Arc::new(settings)))
            }
        };
        let metrics = match config.metrics_listen {
            None => None,
            Some(addr) => Some(bind_tcp(addr).with_context(|| format!("binding metrics {addr}"))?),
        };
        Ok(Self {
            ws,
            metrics,
            watermark: Arc::new(watermark),
            quic_addr: quic.local_addr()?,
            tcp_addr: tcp.local_addr()?,
            services,
            store,
            durability,
            tcp,
            tls: tokio_rustls::TlsAcceptor::from(tls_config),
            quic,
            dev_ca: tls_material.dev_ca,
            data_dir: config.data_dir,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }
    /// The WebSocket/HTTP address, when the bridge is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }
    /// The metrics address, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }
    pub fn ws_tls(&self) -> bool {
        self.ws.as_ref().is_some_and(|(_, s)| s.tls.is_some())
    }
    /// The dev CA clients must trust, when no certificate was configured.
    pub fn dev_ca(&self) -> Option<&PathBuf> {
        self.dev_ca.as_ref()
    }
    pub fn data_dir(&self) -> &PathBuf {
        &self.data_dir
    }
    pub fn store_epoch(&self) -> &str {
        &self.services.store_epoch
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish (up to the grace period), closes sessions with reason SHUTDOWN, and flushes
    /// the store.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let flusher_stop = CancellationToken::new();
        let flusher = tokio::spawn(self.durability.clone().run(flusher_stop.clone()));
        let watermark_task = tokio::spawn(keep_watermark(
            self.durability.clone(),
            self.watermark.clone(),
            flusher_stop.clone(),
        ));
        let accept_stop = CancellationToken::new();
        let tracker = TaskTracker::new();

        let tcp_task = tokio::spawn(accept_tcp(
            self.tcp,
            self.tls,
            self.services.clone(),
            accept_stop.clone(),
            tracker.clone(),
        ));
        let quic_task = tokio::spawn(accept_quic(
            self.quic.clone(),
            self.services.clone(),
            accept_stop.clone(),
            tracker.clone(),
        ));

        let ws_task = self.ws.map(|(listener, settings)| {
            tokio::spawn(crate::ws::accept_ws(
                listener,
                self.services.clone(),
                settings,
                accept_stop.clone(),
                tracker.clone(),
            ))
        });

        let metrics_task = self
            .metrics
            .map(|l| tokio::spawn(crate::metrics::serve(l, flusher_stop.clone())));

        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        accept_stop.cancel();
        let _ = tcp_task.await;
        let _ = quic_task.await;
        if let Some(t) = ws_task {
            let _ = t.await;
        }
        self.services.shutdown.cancel();
        tracker.close();
        let grace = self.services.limits.shutdown_grace + Duration::from_secs(5);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("some sessions did not end within the grace period");
        }
        flusher_stop.cancel();
        let _ = flusher.await;
        let _ = watermark_task.await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        let store = self.store.clone();
        let watermark = self.watermark.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let commits = store.commit_count()?;
            store.flush().context("final store flush")?;
            watermark.write(commits).context("writing the watermark")?;
            Ok(())
        })
        .await
        .context("final flush task")??;
        self.quic.close(0u32.into(), b"server shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.quic.wait_idle()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Rewrites the watermark at most once a second while commits become durable.
async fn keep_watermark(
    durability: Arc<Durability>,
    watermark: Arc<crate::watermark::Watermark>,
    stop: CancellationToken,
) {
    let mut written = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
        let now = durability.durable_commits();
        if now > written {
            let w = watermark.clone();
            match tokio::task::spawn_blocking(move || w.write(now)).await {
                Ok(Ok(())) => written = now,
                other => tracing::warn!(?other, "could not write the watermark"),
            }
        }
    }
}

async fn accept_tcp(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    services: Arc<Services>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let services = services.clone();
        tracker.spawn(async move {
            let Some(_slot) = services.limiter.connection() else {
                tracing::warn!(%peer, "connection refused: max_connections reached");
                return;
            };
            let hs = services.limits.handshake_timeout;
            // Boxed, like the QUIC setup below: the handshake's state is freed once it is
            // done instead of sizing every connection's task for it.
            let stream = match tokio::time::timeout(hs, Box::pin(tls.accept(stream))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let resumed =
                stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            crate::metrics::get().tls_handshake(resumed);
            let (r, w) = tokio::io::split(stream);
            let frames = FramedRead::with_capacity(
                r,
                FrameCodec::new(services.limits.max_frame_bytes as usize),
                READ_BUFFER_START,
            );
            run_session(services.clone(), frames, w, "tcp", Some(peer.ip())).await;
        });
    }
}

async fn accept_quic(
    endpoint: quinn::Endpoint,
    services: Arc<Services>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let services = services.clone();
        tracker.spawn(async move {
            let Some(_slot) = services.limiter.connection() else {
                tracing::warn!(peer = %incoming.remote_address(), "QUIC connection refused: max_connections reached");
                incoming.refuse();
                return;
            };
            let hs = services.limits.handshake_timeout;
            let peer = incoming.remote_address();
            let setup = async {
                let conn = incoming.await?;
                let (send, recv) = conn.accept_bi().await?;
                Ok::<_, quinn::ConnectionError>((conn, send, recv))
            };
            let (conn, send, recv) = match tokio::time::timeout(hs, Box::pin(setup)).await {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "QUIC connection setup failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "QUIC handshake timed out");
                    return;
                }
            };
            let frames = FramedRead::with_capacity(
                recv,
                FrameCodec::new(services.limits.max_frame_bytes as usize),
                READ_BUFFER_START,
            );
            run_session(services.clone(), frames, send, "quic", Some(peer.ip())).await;
            // The stream is finished; give the client a moment to read the last frames
            // and close, then close ourselves.
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
            conn.close(0u32.into(), b"session ended");
        });
    }
}
