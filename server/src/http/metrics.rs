//! The `--metrics-listen` endpoint: the process-wide metrics as Prometheus/OpenMetrics
//! text at `GET /metrics`.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::get;

/// Serves `GET /metrics` on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, stop: CancellationToken) {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                get().encode(),
            )
        }),
    );
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, "metrics endpoint");
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}
