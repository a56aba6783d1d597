//! Hostile and broken input gets a clear error frame, never a crash, and the server keeps
//! serving everyone else. Over both QUIC and TLS-TCP.

use std::time::Duration;

use prost::Message;
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::{encode_frame, Body, Frame};
use tern_tests::*;

const LONG: Duration = Duration::from_secs(5);

/// After each abuse, a fresh client can still log in, send, and be delivered to.
async fn server_still_serves(server: &TestServer, t: Transport, tag: &str) {
    let a = format!("ok-{tag}-{t}");
    let b = format!("okb-{tag}-{t}");
    let mut alice = server.user(t, &a, "d").await;
    let mut bob = server.user(t, &b, "d").await;
    let ack = ack_of(&alice.send_text(&b, "fine", "still fine").await);
    assert_eq!(ack.seq, 1);
    assert_eq!(
        bob.next_push(LONG)
            .await
            .unwrap()
            .message
            .unwrap()
            .client_msg_id,
        "fine"
    );
}

fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[tokio::test]
async fn oversized_length_prefix_gets_error_and_close() {
    let server = TestServer::start_with(|c| c.session.max_frame_bytes = 4096).await;
    for t in BOTH {
        for prefix in [u32::MAX, 4097] {
            let mut c = server.client(t).await;
            c.conn.send_raw(&prefix.to_be_bytes()).await.unwrap();
            let f = c.next_unsolicited(LONG).await.expect("an error frame");
            let msg = expect_error(&f, ErrorCode::FrameTooLarge);
            assert!(msg.contains("4096"), "says the limit: {msg}");
            c.expect_closed(LONG, CloseReason::ProtocolError).await;
        }
        server_still_serves(&server, t, "big").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn undecodable_protobuf_gets_malformed_and_connection_lives() {
    let server = TestServer::start().await;
    for t in BOTH {
        let mut c = server.client(t).await;
        c.conn
            .send_raw(&raw_frame(&[0xff, 0xff, 0xff, 0xff, 0x0f]))
            .await
            .unwrap();
        let f = c.next_unsolicited(LONG).await.unwrap();
        expect_error(&f, ErrorCode::MalformedFrame);
        assert_eq!(f.req_id, 0);
        // The stream is still in sync: the next good frame works.
        let pong = c.request(Body::Ping(pb::Ping { client_time_ms: 3 })).await;
        assert!(matches!(pong.body, Some(Body::Pong(p)) if p.client_time_ms == 3));
        server_still_serves(&server, t, "garbage").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_and_misdirected_bodies_get_unknown_request() {
    let server = TestServer::start().await;
    for t in BOTH {
        let mut c = server.client(t).await;
        // An empty frame: no body at all.
        c.conn.send_raw(&raw_frame(&[])).await.unwrap();
        expect_error(
            &c.next_unsolicited(LONG).await.unwrap(),
            ErrorCode::UnknownRequest,
        );
        // A body kind from a newer protocol (field 999): decodes with no known body.
        let mut payload = Frame {
            req_id: 77,
            body: None,
        }
        .encode_to_vec();
        payload.extend_from_slice(&[0xba, 0x3e, 0x00]); // field 999, length-delimited, empty
        c.conn.send_raw(&raw_frame(&payload)).await.unwrap();
        expect_error(&c.response(77).await, ErrorCode::UnknownRequest);
        // A response kind sent as a request.
        let f = c.request(Body::SendAck(pb::SendAck::default())).await;
        expect_error(&f, ErrorCode::UnknownRequest);
        server_still_serves(&server, t, "unknown").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn requests_before_auth_are_refused_and_versions_checked() {
    let server = TestServer::start().await;
    for t in BOTH {
        let mut c = server.client(t).await;
        let f = c.send_text("someone", "m", "hi").await;
        expect_error(&f, ErrorCode::Unauthenticated);
        let f = c.request(Body::Sync(pb::Sync::default())).await;
        expect_error(&f, ErrorCode::Unauthenticated);
        // Still open: a bad token gets its own error.
        expect_error(
            &c.resume("bm90IGEgdG9rZW4.c2ln").await,
            ErrorCode::InvalidToken,
        );
        // A wrong protocol version closes the connection with a reason.
        let f = c
            .request(Body::Login(pb::Login {
                protocol_version: 99,
                username: "x".into(),
                password: "y".into(),
                device: "d".into(),
            }))
            .await;
        let msg = expect_error(&f, ErrorCode::UnsupportedVersion);
        assert!(msg.contains("99"));
        c.expect_closed(LONG, CloseReason::ProtocolError).await;
        // Missing version (0) is unsupported too.
        let mut c = server.client(t).await;
        let f = c
            .request(Body::Register(pb::Register {
                protocol_version: 0,
                username: "x".into(),
                password: "y".into(),
            }))
            .await;
        expect_error(&f, ErrorCode::UnsupportedVersion);
        server_still_serves(&server, t, "preauth").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn missing_and_invalid_fields_get_invalid_argument() {
    let server = TestServer::start().await;
    for t in BOTH {
        let u = name("fields", t);
        let mut c = server.user(t, &u, "d").await;
        let peer = name("fpeer", t);
        let _p = server.user(t, &peer, "d").await;
        let bad_sends = [
            pb::Send {
                client_msg_id: String::new(),
                peer: peer.clone(),
                ..Default::default()
            },
            pb::Send {
                client_msg_id: "x".repeat(65),
                peer: peer.clone(),
                ..Default::default()
            },
            pb::Send {
                client_msg_id: "a".into(),
                ..Default::default()
            },
            pb::Send {
                client_msg_id: "b".into(),
                peer: peer.clone(),
                conversation: "g:0000000000000001".into(),
                ..Default::default()
            },
            pb::Send {
                client_msg_id: "c".into(),
                peer: "Not A Name".into(),
                ..Default::default()
            },
            pb::Send {
                client_msg_id: "d".into(),
                conversation: "x:y".into(),
                ..Default::default()
            },
            pb::Send {
                client_msg_id: "e".into(),
                conversation: format!("d:{u}:{peer}x\0"),
                ..Default::default()
            },
        ];
        for s in bad_sends {
            let f = c.request(Body::Send(s.clone())).await;
            expect_error(&f, ErrorCode::InvalidArgument);
        }
        let mut r = server.client(t).await;
        for (user, pw) in [("", PASSWORD), ("UPPER", PASSWORD), ("ok-name", "short")] {
            let f = r
                .request(Body::Register(pb::Register {
                    protocol_version: 1,
                    username: user.into(),
                    password: pw.into(),
                }))
                .await;
            expect_error(&f, ErrorCode::InvalidArgument);
        }
        let f = c
            .request(Body::CreateGroup(pb::CreateGroup {
                name: String::new(),
                members: vec![],
                ..Default::default()
            }))
            .await;
        expect_error(&f, ErrorCode::InvalidArgument);
        let f = c.request(Body::Login(pb::Login::default())).await;
        expect_error(&f, ErrorCode::AlreadyAuthenticated);
        // Nothing was stored by any of it.
        let f = c
            .request(Body::ListConversations(pb::ListConversations::default()))
            .await;
        let l = expect_body!(f, ConversationList);
        assert!(l.conversations.is_empty());
        server_still_serves(&server, t, "fields").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn truncated_frame_and_abrupt_disconnects_do_not_hurt_others() {
    let server = TestServer::start().await;
    for t in BOTH {
        // Half a frame, then hang up.
        let mut c = server.client(t).await;
        let whole = encode_frame(&Frame {
            req_id: 1,
            body: Some(Body::Ping(pb::Ping { client_time_ms: 1 })),
        });
        c.conn.send_raw(&whole[..whole.len() - 2]).await.unwrap();
        c.close().await;
        // A logged-in user vanishing mid-stream of pipelined sends.
        let u = name("vanish", t);
        let p = name("vpeer", t);
        let _peer = server.user(t, &p, "d").await;
        let mut v = server.user(t, &u, "d").await;
        for i in 0..20 {
            v.send_text_nowait(&p, &format!("v{i}"), "bye").await;
        }
        drop(v);
        server_still_serves(&server, t, "trunc").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_garbage_connections_leaves_the_server_serving() {
    let server = TestServer::start().await;
    // Raw TCP that never speaks TLS, and TLS clients that send junk.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(server.tcp).await.unwrap());
    }
    for t in BOTH {
        for i in 0..10u8 {
            let mut c = server.client(t).await;
            let junk: Vec<u8> = (0..64).map(|k| k ^ i).collect();
            let _ = c.conn.send_raw(&junk).await;
            drop(c);
        }
        server_still_serves(&server, t, "flood").await;
    }
    drop(idle);
    server.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

/// The real server binary reads a length prefix of 2^32-1 with 64 MiB of bytes streaming
/// behind it: FRAME_TOO_LARGE and Closing{PROTOCOL_ERROR}, the connection closed under
/// the stream, its peak memory (VmHWM) up by less than 16 MiB, and others still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_length_prefix_with_bytes_streaming_behind_it_leaves_memory_flat() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BOUND_KIB: u64 = 16 * 1024;
    const STREAM: usize = 64 << 20;
    let data = tempfile::tempdir().unwrap();
    let server = ProcessServer::spawn(BIN, data.path());
    // Warm up first (a login hashes a password, which has its own peak), then measure the
    // peak from here.
    let mut warm = server.client(Tcp).await;
    warm.register("warm").await;
    warm.login("warm", "d").await;
    let (rss0, hwm0) = server.reset_peak_memory();

    let (mut r, mut w) = tokio::io::split(tls_connect(server.tcp, &server.ca).await);
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        if w.write_all(&u32::MAX.to_be_bytes()).await.is_err() {
            return sent;
        }
        let chunk = vec![0xa5u8; 256 * 1024];
        while sent < STREAM {
            if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    let sent = tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .expect("the writer stops")
        .unwrap();
    let (rss1, hwm1) = server.memory_kib();

    let mut bytes = bytes::BytesMut::from(&got[..]);
    let mut frames = Vec::new();
    while let Some(f) = tern_proto::codec::decode_frame(&mut bytes, 1 << 20).unwrap() {
        frames.push(f.expect("server frames decode"));
    }
    assert_eq!(frames.len(), 2, "{frames:?}");
    let msg = expect_error(&frames[0], ErrorCode::FrameTooLarge);
    assert!(msg.contains("4294967295"), "names the length: {msg}");
    let closing = expect_body!(frames[1], Closing);
    assert_eq!(closing.reason, CloseReason::ProtocolError as i32);
    assert!(sent < STREAM, "the server kept reading all {sent} bytes");

    // Others are served: two fresh users log in, send and are pushed to.
    let mut a = server.client(Tcp).await;
    a.register("after-a").await;
    a.login("after-a", "d").await;
    let mut b = server.client(Quic).await;
    b.register("after-b").await;
    b.login("after-b", "d").await;
    assert_eq!(ack_of(&a.send_text("after-b", "m1", "hi").await).seq, 1);
    let p = b.next_push(LONG).await.expect("a push");
    assert_eq!(p.message.unwrap().client_msg_id, "m1");
    eprintln!(
        "tcp 2^32-1 prefix + stream: {} frames back (FRAME_TOO_LARGE, Closing), closed after \
         {sent} of {STREAM} streamed bytes were written; server VmHWM {hwm0} -> {hwm1} KiB \
         (+{} KiB, bound {BOUND_KIB}), VmRSS {rss0} -> {rss1} KiB",
        frames.len(),
        hwm1 - hwm0
    );
    assert!(
        hwm1 - hwm0 < BOUND_KIB,
        "the server's peak memory grew by {} KiB",
        hwm1 - hwm0
    );
}

/// A zero-length frame (an empty Frame) and a protobuf nested past prost's recursion
/// limit (unknown groups inside groups) get clear errors; the stream stays usable.
#[tokio::test]
async fn empty_frames_and_deeply_nested_protobuf_get_errors_and_the_connection_lives() {
    let server = TestServer::start().await;
    for t in BOTH {
        let mut c = server.client(t).await;
        c.conn.send_raw(&0u32.to_be_bytes()).await.unwrap();
        let f = c
            .next_unsolicited(LONG)
            .await
            .expect("an answer to the empty frame");
        expect_error(&f, ErrorCode::UnknownRequest);

        // Field 2047, wire type 3 (start group), 5000 deep: 10 KB of nesting.
        let start_group = [0xfb, 0x7f];
        let nested: Vec<u8> = start_group.iter().copied().cycle().take(2 * 5000).collect();
        c.conn.send_raw(&raw_frame(&nested)).await.unwrap();
        let f = c
            .next_unsolicited(LONG)
            .await
            .expect("an answer to the nesting");
        expect_error(&f, ErrorCode::MalformedFrame);

        let pong = c.request(Body::Ping(pb::Ping { client_time_ms: 9 })).await;
        assert!(matches!(pong.body, Some(Body::Pong(p)) if p.client_time_ms == 9));
        server_still_serves(&server, t, "nested").await;
    }
    server.stop().await;
}

/// The frame in `bytes` (a 4-byte length, then the protobuf).
fn only_frame(bytes: &[u8]) -> Frame {
    assert!(bytes.len() > 4, "no frame: {bytes:?}");
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 4 + len, "exactly one frame");
    Frame::decode(&bytes[4..]).unwrap()
}

fn protocol_error_closing(f: &Frame, says: &str) {
    match &f.body {
        Some(Body::Closing(c)) => {
            assert_eq!(c.reason, CloseReason::ProtocolError as i32, "{c:?}");
            assert!(c.message.contains(says), "{c:?}");
        }
        other => panic!("not a Closing: {other:?}"),
    }
}

#[tokio::test]
async fn a_tls_client_that_offers_no_alpn_is_told_why_and_closed() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start().await;
    let mut cfg = tls::client_config(&server.ca);
    cfg.alpn_protocols.clear();
    let tcp = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("the handshake itself completes");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .expect("the server closes")
        .expect("a clean close");
    protocol_error_closing(&only_frame(&got), "ALPN");
    // A client that offers ALPN tern/1 still gets in.
    let mut c = server.client(Tcp).await;
    c.register("alpnok").await;
    server.stop().await;
}

#[tokio::test]
async fn a_second_quic_stream_is_answered_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(&server.ca)).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = endpoint
        .connect(server.quic, "localhost")
        .unwrap()
        .await
        .unwrap();
    let ping = |id| {
        encode_frame(&Frame {
            req_id: id,
            body: Some(Body::Ping(pb::Ping { client_time_ms: 1 })),
        })
    };
    async fn pong(r: &mut quinn::RecvStream) -> Frame {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut buf).await.unwrap();
        Frame::decode(&buf[..]).unwrap()
    }
    let (mut s1, mut r1) = conn.open_bi().await.unwrap();
    s1.write_all(&ping(1)).await.unwrap();
    assert!(matches!(pong(&mut r1).await.body, Some(Body::Pong(_))));
    for _ in 0..3 {
        let (mut s2, mut r2) = conn.open_bi().await.unwrap();
        s2.write_all(&ping(2)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), r2.read_to_end(1 << 16))
            .await
            .expect("answered at once")
            .unwrap();
        protocol_error_closing(&only_frame(&got), "one stream per connection");
    }
    s1.write_all(&ping(3)).await.unwrap();
    let f = pong(&mut r1).await;
    assert_eq!(f.req_id, 3, "the session's stream still works");
    conn.close(0u32.into(), b"done");
    server.stop().await;
}
