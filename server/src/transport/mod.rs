//! Transports: bytes <-> frames. They know sockets and TLS, never requests.
//!
//! - [`tls`]: certificates (the dev CA) and the rustls server config; the TLS accept
//!   every TLS listener uses.
//! - [`tcp`]: TLS over TCP. [`quic`]: QUIC, one bidirectional stream per session.
//! - [`ws`]: WebSocket messages as frames (the HTTP side is in `http::web`).
//!
//! Every listener accepts through [`accept_with`]: a connection slot (refused past
//! `max_connections`), the handshake within `handshake_timeout`, then the session, each
//! connection in its own task tracked for shutdown.

pub(crate) mod quic;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::services::Services;

/// First size of a connection's read buffer. Most connections are idle most of the time
/// and their frames are small; the buffer grows for bigger frames and bursts (and the
/// codec lets go of a big one once it is empty), so idle connections stay cheap.
pub(crate) const READ_BUFFER_START: usize = 256;

/// Where connections come from (a TCP listener, a QUIC endpoint).
pub(crate) trait Listener: Send + 'static {
    type Conn: Send + 'static;
    /// The next connection and its peer; None when the listener is gone.
    fn next(&mut self)
        -> impl Future<Output = Option<io::Result<(Self::Conn, SocketAddr)>>> + Send;
}

/// What a listener does with a connection: its handshake, then its session.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    type Conn: Send + 'static;
    /// A connection after its handshake.
    type Ready: Send + 'static;
    /// For log lines: "TCP", "QUIC", "WebSocket".
    const NAME: &'static str;

    /// Refuses a connection past the connection cap (dropping it, unless overridden).
    fn refuse(conn: Self::Conn) {
        drop(conn);
    }
    /// The handshake (TLS, QUIC), bounded by the handshake timeout.
    fn handshake(
        &self,
        conn: Self::Conn,
    ) -> impl Future<Output = Result<Self::Ready, String>> + Send;
    /// Serves the connection to its end.
    fn serve(&self, ready: Self::Ready, peer: SocketAddr) -> impl Future<Output = ()> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn next(&mut self) -> Option<io::Result<(Self::Conn, SocketAddr)>> {
        Some(self.accept().await.inspect(|(s, _)| {
            let _ = s.set_nodelay(true);
        }))
    }
}

/// Accepts until `stop`: the one accept loop of every listener.
pub(crate) async fn accept_with<L, H>(
    mut listener: L,
    handler: H,
    services: Arc<Services>,
    stop: CancellationToken,
    tracker: TaskTracker,
) where
    L: Listener,
    H: Handler<Conn = L::Conn>,
{
    let timeout = services.limits.handshake_timeout;
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.next() => match r {
                None => return,
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "{} accept failed", H::NAME);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Some(slot) = services.limiter.connection() else {
            tracing::warn!(%peer, "{} connection refused: max_connections reached", H::NAME);
            H::refuse(conn);
            continue;
        };
        let handler = handler.clone();
        tracker.spawn(async move {
            let _slot = slot;
            // Boxed: the handshake's state is freed once it is done instead of sizing
            // every connection's task for it.
            match tokio::time::timeout(timeout, Box::pin(handler.handshake(conn))).await {
                Ok(Ok(ready)) => handler.serve(ready, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "{} handshake failed", H::NAME),
                Err(_) => tracing::debug!(%peer, "{} handshake timed out", H::NAME),
            }
        });
    }
}
