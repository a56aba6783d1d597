//! Every HTTP listener: one axum `Router` each, served by one hyper setup.
//!
//! - [`web`]: the web chat page (built in: [`assets`]) and the WebSocket upgrade at `/ws`;
//!   [`blob`]: blobs by signed URL at `/blob/<id>` on the same listener.
//! - [`metrics`]: Prometheus/OpenMetrics text at `/metrics`.
//! - [`admin`]: the admin API at `/admin/v1/` (its own listener, bearer token).

pub(crate) mod admin;
pub(crate) mod assets;
pub(crate) mod blob;
pub(crate) mod metrics;
pub(crate) mod web;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends or `shutdown` fires.
pub(crate) async fn serve_http<I>(
    io: I,
    app: Router,
    header_timeout: Duration,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // An upgrade (or any request) whose headers dribble in is dropped.
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        // Upgraded WebSocket sessions watch the shutdown themselves; this ends plain
        // HTTP keep-alive connections.
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
