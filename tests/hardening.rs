//! Hostile load and hostile credentials: rate limits with an explicit RATE_LIMITED, login
//! throttling, connection and session caps, slowloris handshakes, and every kind of bad
//! token. Each limit is set low in the test's config so it is reached quickly.

use std::time::{Duration, Instant};

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, PROTOCOL_VERSION};
use tern_tests::*;
use tokio::io::AsyncReadExt;

const LONG: Duration = Duration::from_secs(5);

fn list() -> Body {
    Body::ListConversations(pb::ListConversations::default())
}

#[tokio::test]
async fn request_floods_get_rate_limited_and_others_are_unaffected() {
    let server = TestServer::start_with(|c| {
        c.limits.conn_rate_limit = 5;
        c.limits.conn_rate_burst = 5;
    })
    .await;
    let mut flooder = server.user(Tcp, "flood", "d").await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(flooder.send_req(list()).await);
    }
    let mut limited = 0;
    for id in ids {
        if let Some(Body::Error(e)) = flooder.response(id).await.body {
            assert_eq!(e.code, ErrorCode::RateLimited as i32);
            assert!(e.message.contains("retry after"), "{}", e.message);
            limited += 1;
        }
    }
    assert!(limited >= 20, "only {limited} of 30 were limited");
    // Acks and pings are never limited.
    expect_ok(&flooder.ack(0).await);
    expect_body!(flooder.request(Body::Ping(pb::Ping::default())).await, Pong);
    // Another user is served at once.
    let mut calm = server.user(Tcp, "calm", "d").await;
    let t0 = Instant::now();
    expect_body!(calm.request(list()).await, ConversationList);
    assert!(t0.elapsed() < Duration::from_secs(1));
    // The flooder recovers once the bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect_body!(flooder.request(list()).await, ConversationList);
    server.stop().await;
}

#[tokio::test]
async fn a_user_is_limited_over_all_devices() {
    let server = TestServer::start_with(|c| {
        c.limits.user_rate_limit = 3;
        c.limits.user_rate_burst = 6;
    })
    .await;
    let mut a = server.user(Quic, "multi", "one").await;
    let mut b = server.client(Tcp).await;
    b.login("multi", "two").await;
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        match c.request(list()).await.body {
            Some(Body::ConversationList(_)) => ok += 1,
            Some(Body::Error(e)) if e.code == ErrorCode::RateLimited as i32 => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(ok >= 6 && limited >= 3, "ok {ok}, limited {limited}");
    server.stop().await;
}

#[tokio::test]
async fn login_is_throttled_per_user_and_per_address() {
    let server = TestServer::start_with(|c| {
        c.limits.login_failures_per_user = 3;
        c.limits.logins_per_address = 12;
    })
    .await;
    let mut c = server.client(Tcp).await;
    c.register("target").await;
    c.register("bystander").await;
    let login = |user: &str, pw: &str| {
        Body::Login(pb::Login {
            protocol_version: PROTOCOL_VERSION,
            username: user.into(),
            password: pw.into(),
            device: "d".into(),
        })
    };
    for _ in 0..3 {
        expect_error(
            &c.request(login("target", "wrong password")).await,
            ErrorCode::InvalidCredentials,
        );
    }
    // Now even the right password waits: guessing is capped per user name.
    let msg = expect_error(
        &c.request(login("target", PASSWORD)).await,
        ErrorCode::RateLimited,
    );
    assert!(msg.contains("retry after"));
    // Other users are not locked out by it.
    expect_body!(c.request(login("bystander", PASSWORD)).await, LoginOk);
    // One address cannot try without end: 2 registers + 5 logins so far, 12 allowed.
    let mut d = server.client(Quic).await;
    let mut last = None;
    for _ in 0..6 {
        last = Some(d.request(login("nobody", "wrong password")).await);
    }
    expect_error(&last.unwrap(), ErrorCode::RateLimited);
    server.stop().await;
}

#[tokio::test]
async fn sessions_per_user_are_capped() {
    let server = TestServer::start_with(|c| c.limits.max_sessions_per_user = 2).await;
    let mut a = server.user(Tcp, "capped", "one").await;
    let mut b = server.client(Quic).await;
    b.login("capped", "two").await;
    let mut c = server.client(Tcp).await;
    let f = c
        .request(Body::Login(pb::Login {
            protocol_version: PROTOCOL_VERSION,
            username: "capped".into(),
            password: PASSWORD.into(),
            device: "three".into(),
        }))
        .await;
    expect_error(&f, ErrorCode::ResourceExhausted);
    // The same device logging in again replaces itself: not a new session.
    let mut a2 = server.client(Tcp).await;
    a2.login("capped", "one").await;
    assert!(a.until_closed(LONG).await.is_some());
    // Once a device goes offline another may come in.
    b.close().await;
    let mut ok = false;
    for _ in 0..50 {
        let mut d = server.client(Tcp).await;
        let f = d.request(login_body("capped", "three")).await;
        if matches!(f.body, Some(Body::LoginOk(_))) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a freed session slot is reusable");
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_slots_come_back() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 3).await;
    let a = server.client(Tcp).await;
    let _b = server.client(Quic).await;
    let _c = server.client(Tcp).await;
    let opts = tern_sdk::ConnectOptions::new(tern_sdk::Trust::from_pem_file(&server.ca).unwrap());
    assert!(
        tern_sdk::connect(Tcp, server.tcp, &opts).await.is_err(),
        "TCP past the cap"
    );
    let mut quick = opts.clone();
    quick.timeout = Duration::from_millis(800);
    assert!(
        tern_sdk::connect(Quic, server.quic, &quick).await.is_err(),
        "QUIC past the cap"
    );
    a.close().await;
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tern_sdk::connect(Tcp, server.tcp, &opts).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a freed slot is reusable");
    server.stop().await;
}

#[tokio::test]
async fn slowloris_handshakes_are_dropped_while_real_clients_get_in() {
    let server = TestServer::start_with(|c| c.session.handshake_timeout_secs = 1).await;
    // Many TCP connections that never send a ClientHello, and QUIC/WebSocket ones that
    // never finish.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(server.tcp).await.unwrap());
    }
    let mut ws_slow = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut ws_slow, b"GET /ws HT")
        .await
        .unwrap();
    // A real client logs in within a second meanwhile.
    let t0 = Instant::now();
    let mut c = server.client(Tcp).await;
    c.register("punctual").await;
    c.login("punctual", "d").await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "login took {took:?} under a slowloris"
    );
    // The idle ones are closed by the server after the handshake timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for s in idle.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) | Ok(Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "every stalled handshake was dropped");
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(LONG, ws_slow.read(&mut b))
        .await
        .expect("ws dropped");
    assert!(n
        .map(|n| n == 0 || b.starts_with(b"HTTP/1.1 408"))
        .unwrap_or(true));
    server.stop().await;
}

#[tokio::test]
async fn expired_tampered_foreign_and_revoked_tokens_are_refused() {
    let server = TestServer::start_with(|c| c.accounts.token_ttl_secs = 1).await;
    let other = TestServer::start().await;
    let a = server.user(Tcp, "tokens", "phone").await;
    let token = a.login.clone().unwrap().token;
    let mut x = server.client(Tcp).await;
    // Tampered: one character of the payload changed.
    let mut t = token.clone().into_bytes();
    t[5] = if t[5] == b'A' { b'B' } else { b'A' };
    expect_error(
        &x.resume(std::str::from_utf8(&t).unwrap()).await,
        ErrorCode::InvalidToken,
    );
    // Signed by another server (another data dir).
    let o = other.user(Tcp, "tokens", "phone").await;
    let foreign = o.login.clone().unwrap().token;
    expect_error(&x.resume(&foreign).await, ErrorCode::InvalidToken);
    // Expired.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_error(&x.resume(&token).await, ErrorCode::TokenExpired);
    // Revoked (per device), on a fresh token.
    let mut tablet = server.client(Tcp).await;
    let fresh = tablet.login("tokens", "tablet").await.token;
    let mut y = server.client(Tcp).await;
    y.login("tokens", "laptop").await;
    let f = y
        .request(Body::Revoke(pb::Revoke {
            device: "tablet".into(),
        }))
        .await;
    expect_ok(&f);
    expect_error(&x.resume(&fresh).await, ErrorCode::TokenRevoked);
    // Revoking a device of another user is not possible: Revoke only names own devices.
    let f = y
        .request(Body::Revoke(pb::Revoke {
            device: "no-such-device".into(),
        }))
        .await;
    expect_error(&f, ErrorCode::NotFound);
    let _ = o.close().await;
    server.stop().await;
    other.stop().await;
}

/// Every request kind that names a conversation, from a non-member, a removed member and
/// with another conversation's id: all refused, nothing stored. There is no sender field
/// to forge: the sender of a stored message is always the session's user.
#[tokio::test]
async fn authorization_matrix() {
    let server = TestServer::start().await;
    let mut owner = server.user(Tcp, "mowner", "d").await;
    let mut gone = server.user(Tcp, "mgone", "d").await;
    let mut outsider = server.user(Tcp, "mout", "d").await;
    let _peer = server.user(Tcp, "mpeer", "d").await;
    let g = owner.create_group("m", &["mgone"]).await.conversation;
    let rm = Body::RemoveMembers(pb::RemoveMembers {
        conversation: g.clone(),
        users: vec!["mgone".into()],
    });
    expect_ok(&owner.request(rm).await);
    // Someone else's 1:1 conversation id.
    let direct = ack_of(&owner.send_text("mpeer", "d1", "private").await).conversation;

    let requests = |conv: &str| -> Vec<Body> {
        vec![
            Body::Send(send_body(conv, "forged", "x")),
            Body::Pull(pb::Pull {
                conversation: conv.into(),
                ..Default::default()
            }),
            Body::ListMembers(pb::ListMembers {
                conversation: conv.into(),
            }),
            Body::GroupOnlineQuery(pb::GroupOnlineQuery {
                conversation: conv.into(),
                watch: true,
                unwatch: false,
            }),
            Body::AddMembers(pb::AddMembers {
                conversation: conv.into(),
                users: vec!["mout".into()],
                role: 0,
            }),
            Body::RemoveMembers(pb::RemoveMembers {
                conversation: conv.into(),
                users: vec!["mowner".into()],
            }),
            Body::LeaveGroup(pb::LeaveGroup {
                conversation: conv.into(),
            }),
        ]
    };
    for (who, client) in [("outsider", &mut outsider), ("removed member", &mut gone)] {
        for conv in [&g, &direct] {
            for body in requests(conv) {
                let name = tern_proto::body_name(&body);
                let f = client.request(body).await;
                match &f.body {
                    Some(Body::Error(e)) => assert!(
                        e.code == ErrorCode::Forbidden as i32
                            || e.code == ErrorCode::InvalidArgument as i32,
                        "{who} {name} on {conv}: {e:?}"
                    ),
                    other => panic!("{who} {name} on {conv} was allowed: {other:?}"),
                }
            }
        }
    }
    // Nothing changed: the group has its creation and removal events, the 1:1 its one
    // message, and every stored message's sender is the user who sent it.
    let r = expect_pull(&owner.pull(&g, 0, 0).await);
    assert_eq!(r.last_seq, 2);
    let r = expect_pull(&owner.pull(&direct, 0, 0).await);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].sender, "mowner");
    let l = expect_body!(owner.list_members(&g).await, MemberList);
    assert_eq!(
        l.members
            .iter()
            .map(|m| m.username.as_str())
            .collect::<Vec<_>>(),
        vec!["mowner"]
    );
    server.stop().await;
}

/// QUIC handshakes that never complete: a real client's first datagram (its Initial with
/// the ClientHello) is captured and replayed from 300 sockets that then stay silent. The
/// server answers each and waits; a legitimate QUIC client still logs in within 1 s, and
/// after the handshake timeout the server is still serving.
#[tokio::test]
async fn half_open_quic_handshakes_do_not_keep_real_clients_out() {
    let server = TestServer::start_with(|c| c.session.handshake_timeout_secs = 1).await;
    // Capture an Initial: a fake "server" socket receives the client's first datagram.
    let fake = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let ca = server.ca.clone();
    let attempt = tokio::spawn(async move { Client::connect(Quic, fake_addr, &ca).await });
    let mut initial = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), fake.recv_from(&mut initial))
        .await
        .expect("the client sent an Initial")
        .unwrap();
    initial.truncate(n);
    attempt.abort();
    assert!(
        initial.len() >= 1200,
        "QUIC Initials are padded to 1200 bytes"
    );

    let mut half_open = Vec::new();
    for _ in 0..300 {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&initial, server.quic).await.unwrap();
        half_open.push(s);
    }
    // The server does answer them (it is working on each handshake).
    let mut buf = [0u8; 2048];
    let answered = tokio::time::timeout(Duration::from_secs(2), half_open[0].recv_from(&mut buf))
        .await
        .is_ok();
    assert!(answered, "the server answered a replayed Initial");

    let t0 = Instant::now();
    let mut c = server.client(Quic).await;
    c.register("quic-punctual").await;
    c.login("quic-punctual", "d").await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "login took {took:?} beside 300 half-open handshakes"
    );
    println!("QUIC login beside 300 half-open handshakes took {took:?}");

    // Past the handshake timeout they are gone and the server serves as before.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut d = server.client(Quic).await;
    d.register("quic-later").await;
    d.login("quic-later", "d").await;
    let ack = ack_of(&c.send_text("quic-later", "m1", "hello").await);
    assert_eq!(ack.seq, 1);
    assert!(d.next_push(Duration::from_secs(5)).await.is_some());
    server.stop().await;
}

/// Token rotation (PROTOCOL.md 5.3), case 3: a Resume answers with a new token, and the
/// token it answered is taken again (its answer may have been lost) as long as no answer
/// to it has been used.
#[tokio::test]
async fn resume_rotates_and_the_answered_token_is_taken_again_until_an_answer_is_used() {
    let server = TestServer::start().await;
    let first = server.user(Tcp, "rotate", "phone").await;
    let login = first.login.clone().unwrap().token;
    first.close().await;

    let mut c1 = server.client(Tcp).await;
    let t1 = expect_body!(c1.resume(&login).await, LoginOk).token;
    assert_ne!(t1, login, "Resume answers with a new token");
    // Say t1 never reached the client: the login token works once more, on another
    // connection, and has another answer.
    let mut c2 = server.client(Quic).await;
    let t1b = expect_body!(c2.resume(&login).await, LoginOk).token;
    assert_ne!(t1b, t1);
    c1.expect_closed(LONG, pb::CloseReason::Replaced).await;
    // Either answer is good until one is used: the one this client kept goes on.
    let mut c3 = server.client(Tcp).await;
    let t2 = expect_body!(c3.resume(&t1b).await, LoginOk).token;
    c2.expect_closed(LONG, pb::CloseReason::Replaced).await;
    let mut c4 = server.client(Tcp).await;
    expect_body!(c4.resume(&t2).await, LoginOk);
    c3.expect_closed(LONG, pb::CloseReason::Replaced).await;
    expect_body!(c4.request(list()).await, ConversationList);
    server.stop().await;
}

/// Token rotation, reuse detection: once the answer was used, presenting the token it
/// replaced revokes the device: its live session is closed as revoked, its newest token
/// is refused too, and the user's other devices go on.
#[tokio::test]
async fn a_replaced_token_revokes_its_device_and_only_that_device() {
    let server = TestServer::start().await;
    let first = server.user(Tcp, "stolen", "phone").await;
    let login = first.login.clone().unwrap().token;
    first.close().await;
    let mut laptop = server.client(Quic).await;
    let laptop_token = laptop.login("stolen", "laptop").await.token;
    let mut peer = server.user(Tcp, "stolen-peer", "d").await;

    // The phone resumes three times: login -> t1 -> t2 -> t3. Its live session is the one
    // t2 opened, so t2 is the token it last resumed with, and t1 is replaced.
    let mut c1 = server.client(Tcp).await;
    let t1 = expect_body!(c1.resume(&login).await, LoginOk).token;
    let mut c2 = server.client(Tcp).await;
    let t2 = expect_body!(c2.resume(&t1).await, LoginOk).token;
    c1.expect_closed(LONG, pb::CloseReason::Replaced).await;
    let mut phone = server.client(Tcp).await;
    let t3 = expect_body!(phone.resume(&t2).await, LoginOk).token;
    c2.expect_closed(LONG, pb::CloseReason::Replaced).await;

    // A copy of t1 is presented.
    let mut thief = server.client(Quic).await;
    let msg = expect_error(&thief.resume(&t1).await, ErrorCode::TokenRevoked);
    assert!(msg.contains("replaced"), "{msg}");
    phone.expect_closed(LONG, pb::CloseReason::Revoked).await;
    // The thief's connection stays unauthenticated.
    expect_error(&thief.request(list()).await, ErrorCode::Unauthenticated);
    // Every token of the phone is dead now, the newest (never used) included.
    for t in [&t3, &t2, &t1, &login] {
        let mut x = server.client(Tcp).await;
        expect_error(&x.resume(t).await, ErrorCode::TokenRevoked);
    }

    // The laptop is untouched: its session goes on and receives; its token resumes.
    ack_of(&peer.send_text("stolen", "after", "after the alarm").await);
    assert_eq!(laptop.next_message(LONG).await.client_msg_id, "after");
    assert!(laptop.closing().is_none() && !laptop.eof());
    let mut laptop2 = server.client(Tcp).await;
    expect_body!(laptop2.resume(&laptop_token).await, LoginOk);
    // The phone comes back with the password.
    let mut again = server.client(Tcp).await;
    let fresh = again.login("stolen", "phone").await.token;
    again.close().await;
    let mut x = server.client(Tcp).await;
    expect_body!(x.resume(&fresh).await, LoginOk);
    server.stop().await;
}

/// The rotation is kept in the store, not in memory: after kill -9 and a restart, a token
/// replaced before the crash is still refused (and revokes the device). (That the flush
/// comes before LoginOk is not visible to kill -9, which keeps written pages; the
/// accounts code waits for the group-commit flush like every other durable answer.)
#[tokio::test]
async fn a_rotation_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tern-test-server");
    let mut server = ProcessServer::spawn(bin, dir.path());
    let mut c = server.client(Tcp).await;
    c.register("durable-rot").await;
    let login = c.login("durable-rot", "phone").await.token;
    c.close().await;
    let mut tokens = vec![login];
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = server.client(Tcp).await;
        let next = expect_body!(c.resume(tokens.last().unwrap()).await, LoginOk).token;
        tokens.push(next);
        open.push(c);
    }
    // Killed the moment the last LoginOk arrived.
    server.kill9();
    drop(open);
    let server = ProcessServer::spawn_at(bin, dir.path(), &server.tcp.to_string());
    // tokens[1] was answered by tokens[2], which was used: replaced before the crash.
    let mut c = server.client(Tcp).await;
    expect_error(&c.resume(&tokens[1]).await, ErrorCode::TokenRevoked);
    expect_error(&c.resume(&tokens[3]).await, ErrorCode::TokenRevoked);
}

/// The next Connected event of an SDK client; a panic on AuthLost.
async fn sdk_connected(events: &mut tern_sdk::Events) {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.next()).await {
            Ok(Some(tern_sdk::Event::Connected { .. })) => return,
            Ok(Some(tern_sdk::Event::AuthLost { message, .. })) => panic!("auth lost: {message}"),
            Ok(Some(_)) => {}
            other => panic!("no reconnect: {other:?}"),
        }
    }
}

/// The SDK saves every new token and resumes with the newest. The server here takes each
/// token exactly once (no grace), and the client has no password to fall back on: a
/// reconnect with any older token would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_resumes_with_the_newest_token_across_reconnects() {
    use tern_sdk::{
        Client as Sdk, ConnectOptions, Credentials, Event, MemoryStore, SavedState, StateStore,
        Target, TransportMode, Trust,
    };
    let server = TestServer::start_with(|c| c.accounts.token_rotation_grace_secs = 0).await;
    let proxy = tern_tests::fault::TcpFaultProxy::start(server.tcp).await;
    register_all(server.tcp, &server.ca, &["sdk-rot", "sdk-rot-peer"]).await;
    let mut peer = server.client(Tcp).await;
    peer.login("sdk-rot-peer", "d").await;
    let opts = ConnectOptions::new(Trust::from_pem_file(&server.ca).unwrap());
    let creds = Credentials {
        username: "sdk-rot".into(),
        password: Some(PASSWORD.into()),
        device: "phone".into(),
    };
    let login = tern_sdk::login(server.tcp, &opts, TransportMode::Tcp, &creds)
        .await
        .unwrap()
        .token;
    let mut store = MemoryStore::default();
    store
        .save(&SavedState {
            token: Some(login.clone()),
            ..Default::default()
        })
        .unwrap();
    let mut config = sdk_config(
        proxy.addr(),
        &server.ca,
        "sdk-rot",
        "phone",
        TransportMode::Tcp,
    );
    config.credentials.password = None;
    config.store = Box::new(store);
    config.max_backoff = Duration::from_millis(300);
    let (client, mut events) = Sdk::start(config);
    let mut connects = 0;
    for round in 0..6 {
        sdk_connected(&mut events).await;
        connects += 1;
        let body = format!("m{round}");
        let ack = tokio::time::timeout(
            LONG,
            client.send_text(Target::User("sdk-rot-peer".into()), &body),
        )
        .await
        .expect("acked in time")
        .expect("acked");
        assert!(!ack.duplicate);
        assert_eq!(text(&peer.next_message(LONG).await), body);
        proxy.cut_all();
    }
    sdk_connected(&mut events).await;
    // Rotated all along: the login token is long replaced, and presenting it revokes the
    // device, which ends the client's session.
    let mut x = server.client(Tcp).await;
    expect_error(&x.resume(&login).await, ErrorCode::TokenRevoked);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Event::AuthLost { .. })) => break,
            Ok(Some(_)) => {}
            other => panic!("the revoked client did not stop: {other:?}"),
        }
    }
    eprintln!("sdk rotation: {connects} connections, each resumed with the newest token");
    client.close().await;
    server.stop().await;
}
