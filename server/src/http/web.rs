//! The web listener: `GET /ws` upgrades to the WebSocket transport (see
//! `transport::ws`), and `/` serves the web chat page (built into the binary, see
//! [`super::assets`]; or the files of `--web-root`).
//!
//! A browser user and a CLI user are the same to the chat logic: the upgraded socket runs
//! the same session as QUIC and TCP. The Origin header is checked against an allow-list
//! (default: same origin or localhost); a refused origin gets HTTP 403 and no session.
//! Auth is by token in the first frame (Login/Resume), never by cookie.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::services::Services;
use crate::session::run_session;
use crate::transport::{ws, Handler};

/// What the bridge needs besides the shared services.
#[derive(Clone)]
pub(crate) struct WsSettings {
    /// Extra allowed origins (e.g. `https://chat.example.com`); same-origin and
    /// localhost are always allowed.
    pub allowed_origins: Vec<String>,
    /// Serve the page from this directory instead of the built-in copy (developing web/).
    pub web_root: Option<PathBuf>,
    /// TLS for `wss://` (the server's certificate); None for plain `ws://`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

#[derive(Clone)]
struct AppState {
    services: Arc<Services>,
    settings: Arc<WsSettings>,
}

fn router(state: AppState) -> Router {
    let files = super::assets::router(state.settings.web_root.clone());
    Router::new()
        .route("/ws", get(ws_handler))
        .route(
            "/blob/{id}",
            get(
                |State(state): State<AppState>, path, query, req| async move {
                    super::blob::get_blob(state.services, path, query, req).await
                },
            ),
        )
        .fallback_service(files)
        // A new server's (or web root's) page must not be served from a stale browser
        // cache; and a file is only what its Content-Type says.
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-cache"),
                );
                r.headers_mut().insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    header::HeaderValue::from_static("nosniff"),
                );
                r
            },
        ))
        .with_state(state)
}

/// Same origin, localhost, or listed.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Not a browser (browsers always send Origin on WebSocket upgrades).
        return true;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let host_part = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let host_only = if let Some(rest) = host_part.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_part.split(':').next().unwrap_or("")
    };
    if matches!(host_only, "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    host.is_some_and(|h| h == host_part)
}

/// The TCP peer of the HTTP connection, for login throttling.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

async fn ws_handler(
    State(state): State<AppState>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.settings.allowed_origins) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let max = state.services.limits.max_frame_bytes as usize;
    // The WebSocket layer refuses anything far above the frame limit before buffering it;
    // between the two limits our codec answers FRAME_TOO_LARGE.
    let ws_cap = max + 64 * 1024;
    ws.max_message_size(ws_cap)
        .max_frame_size(ws_cap)
        .on_upgrade(move |socket| serve_socket(state.services, socket, peer))
}

async fn serve_socket(services: Arc<Services>, socket: WebSocket, peer: SocketAddr) {
    let max = services.limits.max_frame_bytes as usize;
    let (sink, stream) = socket.split();
    run_session(
        services,
        ws::frames(stream, max),
        ws::WsWriter::new(sink),
        "ws",
        Some(peer.ip()),
    )
    .await;
}

/// The web listener's connections: optional TLS, then HTTP (the page, or an upgrade
/// into a session).
#[derive(Clone)]
pub(crate) struct Web {
    app: Router,
    services: Arc<Services>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Web {
    pub(crate) fn new(services: Arc<Services>, settings: Arc<WsSettings>) -> Self {
        Self {
            app: router(AppState {
                services: services.clone(),
                settings: settings.clone(),
            }),
            tls: settings.tls.clone(),
            services,
        }
    }
}

impl Handler for Web {
    type Conn = TcpStream;
    type Ready = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;
    const NAME: &'static str = "WebSocket";

    async fn handshake(&self, conn: TcpStream) -> Result<Self::Ready, String> {
        match &self.tls {
            None => Ok(Either::Left(conn)),
            Some(acceptor) => crate::transport::tls::accept(acceptor, conn)
                .await
                .map(Either::Right)
                .map_err(|e| e.to_string()),
        }
    }

    async fn serve(&self, io: Self::Ready, peer: SocketAddr) {
        let app = self.app.clone().layer(axum::Extension(Peer(peer)));
        super::serve_http(
            io,
            app,
            self.services.limits.handshake_timeout,
            peer,
            self.services.shutdown.clone(),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(
            origin_allowed(&headers(None, "x:1"), &none),
            "non-browser clients"
        );
        assert!(origin_allowed(
            &headers(Some("http://localhost:5173"), "x:1"),
            &none
        ));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:7480"), "x:1"),
            &none
        ));
        assert!(origin_allowed(
            &headers(Some("http://[::1]:7480"), "x:1"),
            &none
        ));
        assert!(
            origin_allowed(
                &headers(Some("https://chat.example.com"), "chat.example.com"),
                &none
            ),
            "same origin"
        );
        assert!(!origin_allowed(
            &headers(Some("https://evil.example"), "chat.example.com"),
            &none
        ));
        assert!(!origin_allowed(
            &headers(Some("http://localhost.evil.example"), "x"),
            &none
        ));
        let listed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(
            &headers(Some("https://app.example.com"), "api.example.com"),
            &listed
        ));
    }
}
