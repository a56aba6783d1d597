//! The WebSocket bridge for browsers: `GET /ws` upgrades to a WebSocket where one binary
//! message carries one protobuf `Frame` (no length prefix), and `/` serves the web chat
//! page (prebuilt assets from `web/dist`).
//!
//! It is only a transport: messages are turned into the same frame stream and byte sink
//! the QUIC and TCP listeners give [`run_session`], so a browser user and a CLI user are
//! the same to the chat logic. The Origin header is checked against an allow-list
//! (default: same origin or localhost); a refused origin gets HTTP 403 and no session.
//! Auth is by token in the first frame (Login/Resume), never by cookie.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use prost::Message as _;
use tern_proto::codec::Decoded;
use tern_proto::{CodecError, Frame, LEN_PREFIX};
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::Services;
use crate::session::run_session;

/// What the bridge needs besides the shared services.
#[derive(Clone)]
pub struct WsSettings {
    /// Extra allowed origins (e.g. `https://chat.example.com`); same-origin and
    /// localhost are always allowed.
    pub allowed_origins: Vec<String>,
    /// Prebuilt web assets (`web/dist`).
    pub web_root: PathBuf,
    /// TLS for `wss://` (the server's certificate); None for plain `ws://`.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

#[derive(Clone)]
struct AppState {
    services: Arc<Services>,
    settings: Arc<WsSettings>,
}

/// The page shown when the web assets were not built.
const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>tern</title>\
<h1>tern</h1><p>The WebSocket bridge is running at <code>/ws</code>, but the web chat page \
has not been built. Build it once with:</p><pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build</pre>\
<p>then reload this page (the server serves <code>web/dist</code>; see <code>--web-root</code>).</p>";

fn router(state: AppState) -> Router {
    let root = state.settings.web_root.clone();
    // Looked up per request, so a page built after the server started is served.
    let not_built = axum::routing::any(|| async { (StatusCode::OK, Html(NOT_BUILT)) });
    let files = tower_http::services::ServeDir::new(root).fallback(not_built);
    Router::new()
        .route("/ws", get(ws_handler))
        .fallback_service(files)
        // Rebuilt assets must not be served from a stale browser cache.
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-cache"),
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
        frames(stream, max),
        WsWriter::new(sink),
        "ws",
        Some(peer.ip()),
    )
    .await;
}

/// WebSocket messages as decoded frames: one binary message = one Frame.
fn frames(
    stream: SplitStream<WebSocket>,
    max: usize,
) -> impl Stream<Item = Result<Decoded, CodecError>> + Unpin + Send {
    Box::pin(futures_util::stream::unfold(
        stream,
        move |mut s| async move {
            loop {
                let item = match s.next().await? {
                    Ok(Message::Binary(b)) => {
                        if b.len() > max {
                            Err(CodecError::FrameTooLarge { len: b.len(), max })
                        } else {
                            Ok(Frame::decode(b))
                        }
                    }
                    // Text is not a tern frame: let it fail decoding as garbage would.
                    Ok(Message::Text(t)) => Ok(Frame::decode(Bytes::copy_from_slice(t.as_bytes()))),
                    Ok(Message::Close(_)) => return None,
                    Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                    Err(e) => Err(CodecError::Io(io::Error::other(e))),
                };
                return Some((item, s));
            }
        },
    ))
}

/// Turns the session's length-prefixed byte output into one binary message per frame.
struct WsWriter {
    sink: SplitSink<WebSocket, Message>,
    buf: BytesMut,
    pending: VecDeque<Bytes>,
    close_sent: bool,
}

impl WsWriter {
    fn new(sink: SplitSink<WebSocket, Message>) -> Self {
        Self {
            sink,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            close_sent: false,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            ready!(Pin::new(&mut self.sink).poll_ready(cx)).map_err(io::Error::other)?;
            let frame = self.pending.pop_front().expect("not empty");
            Pin::new(&mut self.sink)
                .start_send(Message::Binary(frame))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.buf.extend_from_slice(data);
        while this.buf.len() >= LEN_PREFIX {
            let len =
                u32::from_be_bytes([this.buf[0], this.buf[1], this.buf[2], this.buf[3]]) as usize;
            if this.buf.len() < LEN_PREFIX + len {
                break;
            }
            this.buf.advance(LEN_PREFIX);
            this.pending.push_back(this.buf.split_to(len).freeze());
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.sink)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.close_sent {
            // A normal closure (1000); the reason is in the Closing frame before it.
            ready!(Pin::new(&mut this.sink).poll_ready(cx)).map_err(io::Error::other)?;
            Pin::new(&mut this.sink)
                .start_send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1000,
                    reason: "session ended".into(),
                })))
                .map_err(io::Error::other)?;
            this.close_sent = true;
        }
        Pin::new(&mut this.sink)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

/// Accepts HTTP connections (optionally TLS) and serves the bridge and the page.
pub async fn accept_ws(
    listener: TcpListener,
    services: Arc<Services>,
    settings: Arc<WsSettings>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let app = router(AppState {
        services: services.clone(),
        settings: settings.clone(),
    });
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "WebSocket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone().layer(axum::Extension(Peer(peer)));
        let tls = settings.tls.clone();
        let hs = services.limits.handshake_timeout;
        let shutdown = services.shutdown.clone();
        let limiter_services = services.clone();
        tracker.spawn(async move {
            let Some(_slot) = limiter_services.limiter.connection() else {
                tracing::warn!(%peer, "WebSocket connection refused: max_connections reached");
                return;
            };
            match tls {
                Some(acceptor) => match tokio::time::timeout(hs, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_http(s, app, hs, peer, shutdown).await,
                    _ => tracing::debug!(%peer, "WebSocket TLS handshake failed or timed out"),
                },
                None => serve_http(stream, app, hs, peer, shutdown).await,
            }
        });
    }
}

async fn serve_http<I>(
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
