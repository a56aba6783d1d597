//! The WebSocket bridge with a Rust WebSocket client: one binary message = one Frame,
//! the same session logic as QUIC/TCP, Origin checks, size limits, garbage.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{Body, Frame};
use tern_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct WsClient {
    ws: Ws,
    next: u64,
    pushes: VecDeque<Frame>,
    closed: bool,
}

async fn ws_connect(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<WsClient, tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(WsClient {
        ws,
        next: 1,
        pushes: VecDeque::new(),
        closed: false,
    })
}

/// Reads to the WebSocket close frame and returns its code (None: the connection ended
/// without one).
async fn close_code(c: &mut WsClient) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await {
            Ok(Some(Ok(Message::Close(cf)))) => return cf.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

impl WsClient {
    async fn send_bytes(&mut self, b: Vec<u8>) {
        self.ws.send(Message::Binary(b.into())).await.unwrap();
    }

    /// The next frame from the server (None on close or timeout).
    async fn frame(&mut self, timeout: Duration) -> Option<Frame> {
        loop {
            let m = tokio::time::timeout(timeout, self.ws.next()).await.ok()??;
            match m {
                Ok(Message::Binary(b)) => {
                    return Some(Frame::decode(b).expect("server frames decode"))
                }
                Ok(Message::Close(_)) | Err(_) => {
                    self.closed = true;
                    return None;
                }
                Ok(_) => continue,
            }
        }
    }

    async fn request(&mut self, body: Body) -> Frame {
        let req_id = self.next;
        self.next += 1;
        self.send_bytes(
            Frame {
                req_id,
                body: Some(body),
            }
            .encode_to_vec(),
        )
        .await;
        loop {
            let f = self
                .frame(Duration::from_secs(10))
                .await
                .expect("a response");
            if f.req_id == req_id {
                return f;
            }
            self.pushes.push_back(f);
        }
    }

    async fn next_unsolicited(&mut self) -> Frame {
        if let Some(f) = self.pushes.pop_front() {
            return f;
        }
        self.frame(Duration::from_secs(10)).await.expect("a frame")
    }

    async fn login(&mut self, user: &str) -> pb::LoginOk {
        expect_ok(&self.request(register_body(user)).await);
        expect_body!(self.request(login_body(user, "browser")).await, LoginOk)
    }
}

#[tokio::test]
async fn browser_and_native_users_chat_through_the_same_logic() {
    let server = TestServer::start().await;
    let mut web = ws_connect(server.ws, Some("http://localhost:7480"))
        .await
        .unwrap();
    web.login("webby").await;
    let mut native = server.user(Tcp, "native", "cli").await;

    // Browser -> native.
    let f = web
        .request(Body::Send(send_body("native", "w1", "from the browser")))
        .await;
    let ack = ack_of(&f);
    assert_eq!((ack.seq, ack.duplicate), (1, false));
    let p = native.next_push(Duration::from_secs(5)).await.unwrap();
    assert_eq!(text(p.message.as_ref().unwrap()), "from the browser");
    // Native -> browser, pushed over the WebSocket.
    ack_of(&native.send_text("webby", "n1", "from the cli").await);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let p = expect_body!(web.next_unsolicited().await, Push);
        seen.push(text(p.message.as_ref().unwrap()));
    }
    assert_eq!(seen, vec!["from the browser", "from the cli"]);
    // Same dedup rules.
    let again = ack_of(
        &web.request(Body::Send(send_body("native", "w1", "from the browser")))
            .await,
    );
    assert!(again.duplicate);
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_gets_403_and_no_session() {
    let server = TestServer::start().await;
    match ws_connect(server.ws, Some("https://evil.example")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        Err(e) => panic!("expected HTTP 403, got {e}"),
        Ok(_) => panic!("a foreign origin got a WebSocket"),
    }
    // Localhost origins and non-browser clients (no Origin) are fine.
    assert!(ws_connect(server.ws, Some("http://127.0.0.1:3000"))
        .await
        .is_ok());
    assert!(ws_connect(server.ws, None).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_garbage_messages_get_errors_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|c| c.session.max_frame_bytes = 16 * 1024).await;
    // Garbage: an error, and the connection still works.
    let mut c = ws_connect(server.ws, None).await.unwrap();
    c.send_bytes(vec![0xff; 10]).await;
    let f = c.next_unsolicited().await;
    expect_error(&f, ErrorCode::MalformedFrame);
    c.ws.send(Message::Text("hello?".into())).await.unwrap();
    expect_error(&c.next_unsolicited().await, ErrorCode::MalformedFrame);
    let f = c.request(Body::Ping(pb::Ping { client_time_ms: 9 })).await;
    assert!(matches!(f.body, Some(Body::Pong(_))));
    // Requests before login are refused like on every transport.
    expect_error(
        &c.request(Body::Sync(pb::Sync::default())).await,
        ErrorCode::Unauthenticated,
    );

    // Oversized: FRAME_TOO_LARGE, then Closing, then the socket closes.
    c.send_bytes(vec![0u8; 20 * 1024]).await;
    let f = c.next_unsolicited().await;
    expect_error(&f, ErrorCode::FrameTooLarge);
    let closing = expect_body!(c.next_unsolicited().await, Closing);
    assert_eq!(closing.reason, CloseReason::ProtocolError as i32);
    // The WebSocket close says it too: 1009, message too big.
    assert_eq!(close_code(&mut c).await, Some(1009));

    // Far beyond the cap: refused by the WebSocket layer before it is buffered, with the
    // same answer when the client can still read it (its own write may fail first).
    let mut big = ws_connect(server.ws, None).await.unwrap();
    let _ = big
        .ws
        .send(Message::Binary(vec![0u8; 4 * 1024 * 1024].into()))
        .await;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), big.ws.next()).await {
            Err(_) => panic!("the connection is still open: {seen:?}"),
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(Message::Binary(b)))) => {
                let f = Frame::decode(b).unwrap();
                seen.push(format!("{:?}", f.body));
                if let Some(Body::Error(e)) = &f.body {
                    assert_eq!(e.code, ErrorCode::FrameTooLarge as i32, "{e:?}");
                }
            }
            Ok(Some(Ok(Message::Close(Some(cf))))) => {
                assert_eq!(u16::from(cf.code), 1009, "{cf:?}");
                seen.push("close 1009".into());
            }
            Ok(Some(Ok(other))) => seen.push(format!("{other:?}")),
        }
    }

    // Everyone else is served as before.
    let mut ok = ws_connect(server.ws, None).await.unwrap();
    ok.login("still-fine").await;
    server.stop().await;
}

#[tokio::test]
async fn the_page_is_built_in_or_served_from_web_root() {
    let get = |addr, path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    // By default the page built into the binary, whatever the working directory holds.
    let server = TestServer::start().await;
    let out = get(server.ws, "/").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains(r#"<script type="module" src="app.js">"#),
        "{out}"
    );
    let head = out.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{out}");
    assert!(head.contains("cache-control: no-cache"), "{out}");
    assert!(head.contains("x-content-type-options: nosniff"), "{out}");
    let out = get(server.ws, "/wire.js").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{out}"
    );
    assert!(get(server.ws, "/missing.js")
        .await
        .starts_with("HTTP/1.1 404"));

    // With a web root, its files instead, read per request (a page edited after the
    // server started is served at once, and never cached stale).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let server2 = TestServer::start_with(move |c| c.network.web_root = Some(root)).await;
    assert!(get(server2.ws, "/").await.starts_with("HTTP/1.1 404"));
    std::fs::write(dir.path().join("index.html"), "<title>tern web</title>").unwrap();
    let out = get(server2.ws, "/").await;
    assert!(out.contains("<title>tern web</title>"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("cache-control: no-cache"),
        "{out}"
    );
    server.stop().await;
    server2.stop().await;
}

#[tokio::test]
async fn an_upgrade_that_never_completes_is_dropped() {
    let server = TestServer::start_with(|c| c.session.handshake_timeout_secs = 1).await;
    let mut s = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    // Half a request line, then nothing.
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: loc").await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server hangs up within the header timeout");
    // Either a 408 or a plain close.
    let got = String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).to_string();
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    server.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

/// The real server binary gets one 64 MiB binary message on /ws: it must refuse it without
/// buffering it (its peak memory, VmHWM, grows by less than 16 MiB), end that
/// connection promptly, and keep serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_is_refused_and_server_memory_stays_flat() {
    const BOUND_KIB: u64 = 16 * 1024;
    let data = tempfile::tempdir().unwrap();
    let server = ProcessServer::spawn(BIN, data.path());
    // Warm up first (a login hashes a password, which has its own peak), then measure the
    // peak from here.
    let mut warm = ws_connect(server.ws, None).await.unwrap();
    warm.login("warm").await;
    let (rss0, hwm0) = server.reset_peak_memory();

    let mut big = ws_connect(server.ws, None).await.unwrap();
    let payload = vec![0x5au8; 64 << 20];
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(
        Duration::from_secs(30),
        big.ws.send(Message::Binary(payload.into())),
    )
    .await
    .expect("the send ends (written or refused) in 30 s");
    // Whatever the server does, the connection ends, and never with a session frame.
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), big.ws.next()).await {
            Err(_) => panic!("the connection is still open 10 s after the message: {seen:?}"),
            Ok(None) => break,
            Ok(Some(Ok(Message::Close(c)))) => seen.push(format!("close frame {c:?}")),
            Ok(Some(Ok(Message::Binary(b)))) => {
                let f = Frame::decode(b).expect("server frames decode");
                match f.body {
                    Some(Body::Error(e)) => {
                        assert_eq!(e.code, ErrorCode::FrameTooLarge as i32, "{e:?}");
                        seen.push(format!("Error {}", e.message));
                    }
                    Some(Body::Closing(c)) => {
                        assert_eq!(c.reason, CloseReason::ProtocolError as i32, "{c:?}");
                        seen.push(format!("Closing {}", c.message));
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            Ok(Some(Ok(other))) => seen.push(format!("{other:?}")),
            Ok(Some(Err(e))) => {
                seen.push(format!("error: {e}"));
                break;
            }
        }
    }
    let took = started.elapsed();
    let (rss1, hwm1) = server.memory_kib();
    // Refused unread: 64 MiB do not fit in socket buffers, so the write fails.
    assert!(sent.is_err(), "the server read the whole 64 MiB message");
    assert!(
        seen.iter()
            .any(|s| s.starts_with("close frame") || s.starts_with("error")),
        "the connection was closed: {seen:?}"
    );

    // Everyone else is served as before: a new user logs in and sends, and is pushed to.
    let mut a = ws_connect(server.ws, None).await.unwrap();
    a.login("after-a").await;
    let mut b = ws_connect(server.ws, None).await.unwrap();
    b.login("after-b").await;
    let ack = ack_of(
        &a.request(Body::Send(send_body("after-b", "m1", "hello")))
            .await,
    );
    assert_eq!(ack.seq, 1);
    let p = expect_body!(b.next_unsolicited().await, Push);
    assert_eq!(text(p.message.as_ref().unwrap()), "hello");
    eprintln!(
        "ws 64 MiB message: send {}, connection ended after {took:?} ({seen:?}); server VmHWM \
         {hwm0} -> {hwm1} KiB (+{} KiB, bound {BOUND_KIB}), VmRSS {rss0} -> {rss1} KiB",
        match &sent {
            Ok(()) => "written".to_string(),
            Err(e) => format!("failed ({e})"),
        },
        hwm1 - hwm0
    );
    assert!(
        hwm1 - hwm0 < BOUND_KIB,
        "the server's peak memory grew by {} KiB",
        hwm1 - hwm0
    );
}
