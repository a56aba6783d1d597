//! The server as a whole: open the store, build the services, bind QUIC, TLS-TCP, the
//! web and metrics listeners, accept connections into sessions, and shut everything down
//! in order.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::durability::Durability;
use crate::http::web::{Web, WsSettings};
use crate::services::Services;
use crate::store::watermark::Watermark;
use crate::store::{SledStore, Store};
use crate::transport::quic::{bind_udp, Quic};
use crate::transport::tcp::{bind as bind_tcp, TlsTcp};
use crate::transport::{accept_with, tls};

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
    ws: Option<(TcpListener, Arc<WsSettings>)>,
    metrics: Option<TcpListener>,
    admin: Option<crate::http::admin::AdminListener>,
    watermark: Arc<Watermark>,
    dev_ca: Option<PathBuf>,
    data_dir: PathBuf,
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
        if config.push_gateway()?.is_some() {
            // A bad push_gateway_ca stops the start, not the first notification.
            crate::push::gateway::client(config.push.push_gateway_ca.as_deref())
                .context("the push gateway's TLS settings")?;
        }
        std::fs::create_dir_all(&config.store.data_dir)
            .with_context(|| format!("creating data dir {}", config.store.data_dir.display()))?;
        let store_dir = config.store.data_dir.join("store");
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(&store_dir, config.store.store_cache_mb << 20)
                .with_context(|| format!("opening the store in {}", store_dir.display()))?,
        );
        let watermark = Watermark::new(&store_dir, &store.store_epoch());
        watermark.check(store.commit_count()?)?;
        let tls_material = tls::load_or_create(&config)?;
        let tls_config = Arc::new(tls::server_tls_config(&tls_material)?);

        let (services, durability) = Services::new(&config, store.clone());
        let search_dir = config.store.data_dir.join("search");
        services
            .search
            .open_dir(&search_dir)
            .with_context(|| format!("opening the search index in {}", search_dir.display()))?;

        let (udp, tcp) = bind_both(config.quic_addr(), config.tcp_addr())?;
        let quic = crate::transport::quic::endpoint(
            udp,
            tls_config.clone(),
            services.limits.heartbeat,
            store.signing_key(),
        )?;
        let ws = match config.ws_addr()? {
            None => None,
            Some(addr) => {
                let l = bind_tcp(addr).with_context(|| format!("binding WebSocket {addr}"))?;
                let tls = config.network.ws_tls.then(|| {
                    let mut c = (*tls_config).clone();
                    c.alpn_protocols = vec![b"http/1.1".to_vec()];
                    tokio_rustls::TlsAcceptor::from(Arc::new(c))
                });
                let settings = WsSettings {
                    allowed_origins: config.network.ws_allowed_origins.clone(),
                    web_root: config.network.web_root.clone(),
                    tls,
                };
                Some((l, Arc::new(settings)))
            }
        };
        let metrics = match config.network.metrics_listen {
            None => None,
            Some(addr) => Some(bind_tcp(addr).with_context(|| format!("binding metrics {addr}"))?),
        };
        let admin = match config.network.admin_listen {
            None => None,
            Some(addr) => {
                let (token, token_file) = crate::http::admin::load_or_create_token(
                    config.network.admin_token_file.as_deref(),
                    &config.store.data_dir,
                )?;
                let listener =
                    bind_tcp(addr).with_context(|| format!("binding the admin API {addr}"))?;
                Some(crate::http::admin::AdminListener {
                    listener,
                    token,
                    token_file,
                })
            }
        };
        Ok(Self {
            ws,
            metrics,
            admin,
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
            data_dir: config.store.data_dir,
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
    /// The admin API address, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|a| a.listener.local_addr().ok())
    }
    /// The file holding the admin API's token, when the admin API is on.
    pub fn admin_token_file(&self) -> Option<&PathBuf> {
        self.admin.as_ref().map(|a| &a.token_file)
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
        let presence_task = {
            let services = self.services.clone();
            let stop = flusher_stop.clone();
            tokio::spawn(async move { services.presence.run_announcer(stop).await })
        };
        let expiry_task = {
            let services = self.services.clone();
            let stop = flusher_stop.clone();
            tokio::spawn(async move { services.messages.run_expiry_sweeper(stop).await })
        };
        let push_task = tokio::spawn(self.services.push.clone().run_worker(flusher_stop.clone()));
        let blob_collector = tokio::spawn(
            self.services
                .blobs
                .clone()
                .run_collector(flusher_stop.clone()),
        );
        let search_indexer = self.services.search.run_indexer();
        let retention_task = tokio::spawn(
            self.services
                .messages
                .clone()
                .run_retention_sweeper(self.services.retention.clone(), flusher_stop.clone()),
        );
        let accept_stop = CancellationToken::new();
        let tracker = TaskTracker::new();

        let tcp_task = tokio::spawn(accept_with(
            self.tcp,
            TlsTcp {
                tls: self.tls,
                services: self.services.clone(),
            },
            self.services.clone(),
            accept_stop.clone(),
            tracker.clone(),
        ));
        let quic_task = tokio::spawn(accept_with(
            self.quic.clone(),
            Quic {
                services: self.services.clone(),
            },
            self.services.clone(),
            accept_stop.clone(),
            tracker.clone(),
        ));
        let ws_task = self.ws.map(|(listener, settings)| {
            tokio::spawn(accept_with(
                listener,
                Web::new(self.services.clone(), settings),
                self.services.clone(),
                accept_stop.clone(),
                tracker.clone(),
            ))
        });

        let admin_task = self.admin.map(|l| {
            tokio::spawn(crate::http::admin::serve(
                l,
                self.services.clone(),
                self.data_dir.clone(),
                accept_stop.clone(),
            ))
        });

        let metrics_task = self
            .metrics
            .map(|l| tokio::spawn(crate::http::metrics::serve(l, flusher_stop.clone())));

        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        accept_stop.cancel();
        let _ = tcp_task.await;
        let _ = quic_task.await;
        if let Some(t) = ws_task {
            let _ = t.await;
        }
        if let Some(t) = admin_task {
            // In-flight admin requests finish while the flusher still runs.
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.services.shutdown.cancel();
        tracker.close();
        let grace = self.services.limits.shutdown_grace + Duration::from_secs(5);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("some sessions did not end within the grace period");
        }
        flusher_stop.cancel();
        self.services.search.stop();
        if let Some(t) = search_indexer {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let _ = presence_task.await;
        let _ = expiry_task.await;
        let _ = retention_task.await;
        let _ = push_task.await;
        let _ = blob_collector.await;
        let _ = flusher.await;
        let _ = watermark_task.await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        if self.durability.failed() {
            // No final flush: after a failed one, a success would prove nothing, and the
            // watermark must not count commits that may not be on disk.
            anyhow::bail!(
                "stopped after a failed store flush: writes since then were not acknowledged; \
                 fix the disk, then start the server again (it recovers what is on disk)"
            );
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
    watermark: Arc<Watermark>,
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
