//! Offline push (docs/PUSH.md) against a real HTTP gateway on 127.0.0.1:0 that records
//! what it is sent and answers as a test tells it: OK, 500, garbage, a hang, or pushkeys
//! rejected. The server under test is real (in-process, or the binary for kill -9).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{direct_conversation, Body};
use tern_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

/// How the gateway answers.
#[derive(Clone, Debug)]
enum Mode {
    Ok,
    Status500,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Reads the request and never answers.
    Hang,
    /// 200 with these pushkeys in `rejected`.
    Reject(Vec<String>),
}

#[derive(Default)]
struct Seen {
    /// Notifications answered with 200 + JSON (OK or Reject), in arrival order.
    taken: Vec<Value>,
    /// Every request received, however it was answered.
    attempts: usize,
}

/// A push gateway on 127.0.0.1:0 (HTTP/1, one request per connection).
struct Gateway {
    url: String,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// An https gateway with the certificate and key in `certs` (as made by
    /// `tern_server::certs::make_dev_certs`: valid for 127.0.0.1).
    async fn start_tls(certs: &std::path::Path) -> Self {
        let mut cfg = tern_tests::tls::server_config(certs);
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "{}://{}/_matrix/push/v1/notify",
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr().unwrap()
        );
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (m, s) = (mode.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (m, s, tls) = (m.clone(), s.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = match tls {
                        None => serve(conn, m, s).await,
                        Some(acceptor) => match acceptor.accept(conn).await {
                            Ok(conn) => serve(conn, m, s).await,
                            Err(_) => Ok(()),
                        },
                    };
                });
            }
        });
        Gateway {
            url,
            mode,
            seen,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn taken(&self) -> Vec<Value> {
        self.seen.lock().unwrap().taken.clone()
    }

    fn attempts(&self) -> usize {
        self.seen.lock().unwrap().attempts
    }

    /// Waits up to `within` for the `n`-th taken notification and returns it.
    async fn wait_taken(&self, n: usize, within: Duration) -> Value {
        let end = Instant::now() + within;
        loop {
            if let Some(v) = self.taken().get(n - 1) {
                return v["notification"].clone();
            }
            assert!(
                Instant::now() < end,
                "no notification #{n} within {within:?} (taken: {:?}, attempts: {})",
                self.taken(),
                self.attempts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asserts nothing more than `n` notifications arrive within `wait`.
    async fn assert_quiet(&self, n: usize, wait: Duration) {
        tokio::time::sleep(wait).await;
        assert_eq!(
            self.taken().len(),
            n,
            "unexpected notifications: {:?}",
            self.taken()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1 request (headers + Content-Length body) and answers it per `mode`.
async fn serve(
    mut conn: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_at = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_at]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < body_at + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(head.starts_with("post /_matrix/push/v1/notify "), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_slice(&buf[body_at..body_at + len]).expect("JSON body");
    let mode = mode.lock().unwrap().clone();
    seen.lock().unwrap().attempts += 1;
    let (status, answer) = match mode {
        Mode::Ok => {
            seen.lock().unwrap().taken.push(body);
            ("200 OK", r#"{"rejected":[]}"#.to_string())
        }
        Mode::Reject(keys) => {
            seen.lock().unwrap().taken.push(body);
            (
                "200 OK",
                serde_json::json!({ "rejected": keys }).to_string(),
            )
        }
        Mode::Status500 => ("500 Internal Server Error", "oops".to_string()),
        Mode::Garbage => ("200 OK", "<html>not json".to_string()),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

/// A server pushing to `gw`, retrying fast (tests must be quick).
async fn server(gw: &Gateway) -> TestServer {
    server_trusting(gw, None).await
}

/// Same, trusting `ca` (a PEM file) for an https gateway.
async fn server_trusting(gw: &Gateway, ca: Option<std::path::PathBuf>) -> TestServer {
    let url = gw.url.clone();
    TestServer::start_with(move |c| {
        c.push.push_gateway = Some(url);
        c.push.push_gateway_ca = ca;
        c.push.push_retry_min_ms = 50;
        c.push.push_retry_max_ms = 200;
        c.push.push_timeout_ms = 300;
        c.push.push_interval_ms = 300;
    })
    .await
}

async fn register_target(c: &mut Client, platform: &str, token: &str, preview: bool) {
    let f = c
        .request(Body::RegisterPushTarget(pb::RegisterPushTarget {
            platform: platform.into(),
            token: token.into(),
            include_preview: preview,
        }))
        .await;
    expect_ok(&f);
}

/// Logs `user` in on `device`, registers a target, and disconnects; returns once the
/// server has seen the device go (asked through `watcher`).
async fn offline_with_target(
    s: &TestServer,
    watcher: &mut Client,
    user: &str,
    device: &str,
    token: &str,
    preview: bool,
) {
    let mut c = s.client(Tcp).await;
    c.login(user, device).await;
    register_target(&mut c, "fcm", token, preview).await;
    c.close().await;
    wait_offline(watcher, user, device).await;
}

async fn wait_offline(watcher: &mut Client, user: &str, device: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let f = watcher.presence(&[user]).await;
        let Some(Body::PresenceResult(r)) = f.body else {
            panic!("presence: {f:?}")
        };
        if !r
            .users
            .iter()
            .any(|u| u.online_devices.iter().any(|d| d == device))
        {
            return;
        }
        assert!(Instant::now() < end, "{user}/{device} still online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn users(s: &TestServer, names: &[&str]) {
    let mut c = s.client(Tcp).await;
    for n in names {
        c.register(n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_a_push_within_a_second_with_text_only_if_it_asked() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    users(&s, &["alice", "bob", "carol"]).await;
    let mut alice = s.client(Tcp).await;
    alice.login("alice", "laptop").await;
    offline_with_target(&s, &mut alice, "bob", "phone", "tok-bob", false).await;
    offline_with_target(&s, &mut alice, "carol", "phone", "tok-carol", true).await;

    let sent = Instant::now();
    ack_of(&alice.send_text("bob", "m1", "the secret plan").await);
    let n = gw.wait_taken(1, Duration::from_secs(1)).await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(n["room_id"], direct_conversation("alice", "bob"));
    assert_eq!(
        n["event_id"],
        format!("{}/1", direct_conversation("alice", "bob"))
    );
    assert_eq!(n["sender"], "alice");
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["prio"], "high");
    assert_eq!(n["counts"]["unread"], 1);
    let devices = n["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["pushkey"], "tok-bob");
    assert_eq!(devices[0]["app_id"], "tern.fcm");
    assert!(n.get("content").is_none(), "no text without preview: {n}");
    assert!(!n.to_string().contains("secret"), "{n}");

    ack_of(&alice.send_text("carol", "m2", "hello carol").await);
    let n = gw.wait_taken(2, Duration::from_secs(1)).await;
    assert_eq!(n["devices"][0]["pushkey"], "tok-carol");
    assert_eq!(n["content"]["body"], "hello carol");
    // The sender's own devices never get a push: alice has no target, and nothing else
    // arrives.
    gw.assert_quiet(2, Duration::from_millis(500)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_device_gets_no_push_and_the_sender_is_never_pushed() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    users(&s, &["alice", "bob"]).await;
    let mut alice = s.client(Tcp).await;
    alice.login("alice", "laptop").await;
    // alice's own phone is offline with a target: her own message must not wake it.
    offline_with_target(&s, &mut alice, "alice", "phone", "tok-alice", false).await;
    let mut bob_phone = s.client(Tcp).await;
    bob_phone.login("bob", "phone").await;
    register_target(&mut bob_phone, "apns", "tok-bob-phone", false).await;
    offline_with_target(&s, &mut alice, "bob", "tablet", "tok-bob-tablet", false).await;

    ack_of(&alice.send_text("bob", "m1", "hi").await);
    let n = gw.wait_taken(1, Duration::from_secs(1)).await;
    assert_eq!(n["devices"][0]["pushkey"], "tok-bob-tablet", "{n}");
    bob_phone.next_message(Duration::from_secs(2)).await;
    gw.assert_quiet(1, Duration::from_millis(700)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_down_for_a_while_gets_every_queued_notification_once_coalesced() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    users(&s, &["alice", "bob"]).await;
    let mut alice = s.client(Tcp).await;
    alice.login("alice", "laptop").await;
    offline_with_target(&s, &mut alice, "bob", "phone", "tok-bob", false).await;

    gw.set(Mode::Status500);
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            alice
                .send_text_nowait("bob", &format!("m{i}"), &format!("text {i}"))
                .await,
        );
    }
    for id in ids {
        ack_of(&alice.response(id).await);
    }
    // Down in every way: errors, garbage, no answer at all (the request timeout).
    for mode in [Mode::Status500, Mode::Garbage, Mode::Hang] {
        let before = gw.attempts();
        gw.set(mode.clone());
        let end = Instant::now() + Duration::from_secs(5);
        while gw.attempts() < before + 2 {
            assert!(
                Instant::now() < end,
                "no retries while the gateway is {mode:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(gw.taken().is_empty());
    gw.set(Mode::Ok);
    let n = gw.wait_taken(1, Duration::from_secs(3)).await;
    assert_eq!(n["counts"]["unread"], 100, "{n}");
    assert_eq!(
        n["event_id"],
        format!("{}/100", direct_conversation("alice", "bob"))
    );
    gw.assert_quiet(1, Duration::from_millis(800)).await;

    // Back to normal: a burst while the gateway is up gives a few notifications (one per
    // push interval), the last one with the latest count.
    let mut ids = Vec::new();
    for i in 100..200 {
        ids.push(alice.send_text_nowait("bob", &format!("m{i}"), "x").await);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for id in ids {
        ack_of(&alice.response(id).await);
    }
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let taken = gw.taken();
        let last = &taken.last().unwrap()["notification"];
        if last["counts"]["unread"] == 200 {
            assert!(
                taken.len() <= 8,
                "{} notifications for 100 messages",
                taken.len()
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "no notification with 200 unread: {taken:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_queued_notifications_delivers_them_after_the_restart() {
    let gw = Gateway::start().await;
    gw.set(Mode::Status500);
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("TERN_PUSH_GATEWAY", gw.url.as_str()),
        ("TERN_PUSH_RETRY_MIN_MS", "50"),
        ("TERN_PUSH_RETRY_MAX_MS", "200"),
        ("TERN_PUSH_TIMEOUT_MS", "300"),
    ];
    let mut server = ProcessServer::try_spawn_with(BIN, data.path(), "127.0.0.1:0", &env).unwrap();
    let mut alice = server.client(Tcp).await;
    alice.register("alice").await;
    alice.register("bob").await;
    alice.login("alice", "laptop").await;
    {
        let mut bob = server.client(Tcp).await;
        bob.login("bob", "phone").await;
        register_target(&mut bob, "fcm", "tok-bob", false).await;
        bob.close().await;
    }
    wait_offline(&mut alice, "bob", "phone").await;
    for i in 0..5 {
        ack_of(&alice.send_text("bob", &format!("m{i}"), "hi").await);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while gw.attempts() == 0 {
        assert!(Instant::now() < end, "the gateway was never tried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    assert!(gw.taken().is_empty());
    gw.set(Mode::Ok);
    let _server = ProcessServer::try_spawn_with(BIN, data.path(), "127.0.0.1:0", &env).unwrap();
    let n = gw.wait_taken(1, Duration::from_secs(5)).await;
    assert_eq!(n["devices"][0]["pushkey"], "tok-bob");
    assert_eq!(n["counts"]["unread"], 5, "{n}");
    gw.assert_quiet(1, Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_conversation_does_not_push_except_a_mention() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    users(&s, &["alice", "bob"]).await;
    let mut alice = s.client(Tcp).await;
    alice.login("alice", "laptop").await;
    let conv = direct_conversation("alice", "bob");
    {
        let mut bob = s.client(Tcp).await;
        bob.login("bob", "phone").await;
        register_target(&mut bob, "fcm", "tok-bob", false).await;
        // The conversation exists once a message is in it (bob is online: no push).
        ack_of(&alice.send_text("bob", "m0", "first").await);
        let f = bob
            .request(Body::SetConversationSettings(pb::SetConversationSettings {
                conversation: conv.clone(),
                muted: Some(true),
                pinned: None,
            }))
            .await;
        assert!(
            matches!(f.body, Some(Body::ConversationSettings(_))),
            "{f:?}"
        );
        bob.close().await;
    }
    wait_offline(&mut alice, "bob", "phone").await;
    ack_of(&alice.send_text("bob", "m1", "muted").await);
    gw.assert_quiet(0, Duration::from_millis(800)).await;
    let mut mention = send_body(&conv, "m2", "@bob look");
    mention.mentions = vec!["bob".into()];
    ack_of(&alice.request(Body::Send(mention)).await);
    let n = gw.wait_taken(1, Duration::from_secs(1)).await;
    assert_eq!(n["event_id"], format!("{conv}/3"));
    assert_eq!(n["prio"], "high");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_pushkey_is_removed_and_gets_no_more_pushes() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    users(&s, &["alice", "bob"]).await;
    let mut alice = s.client(Tcp).await;
    alice.login("alice", "laptop").await;
    offline_with_target(&s, &mut alice, "bob", "phone", "tok-gone", false).await;
    gw.set(Mode::Reject(vec!["tok-gone".into()]));
    ack_of(&alice.send_text("bob", "m1", "hi").await);
    gw.wait_taken(1, Duration::from_secs(1)).await;
    gw.set(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(400)).await;
    ack_of(&alice.send_text("bob", "m2", "again").await);
    gw.assert_quiet(1, Duration::from_millis(800)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_logout_and_revoke_stop_pushes() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    users(&s, &["alice", "bob"]).await;
    let mut alice = s.client(Tcp).await;
    alice.login("alice", "laptop").await;

    // Unregister.
    let mut bob = s.client(Tcp).await;
    bob.login("bob", "phone").await;
    register_target(&mut bob, "fcm", "tok-1", false).await;
    expect_ok(
        &bob.request(Body::UnregisterPushTarget(pb::UnregisterPushTarget {}))
            .await,
    );
    bob.close().await;
    wait_offline(&mut alice, "bob", "phone").await;
    ack_of(&alice.send_text("bob", "m1", "hi").await);
    gw.assert_quiet(0, Duration::from_millis(700)).await;

    // Logout.
    let mut bob = s.client(Tcp).await;
    bob.login("bob", "tablet").await;
    register_target(&mut bob, "fcm", "tok-2", false).await;
    expect_ok(&bob.request(Body::Logout(pb::Logout {})).await);
    wait_offline(&mut alice, "bob", "tablet").await;
    ack_of(&alice.send_text("bob", "m2", "hi").await);
    gw.assert_quiet(0, Duration::from_millis(700)).await;

    // Revoke of every device, from another device.
    offline_with_target(&s, &mut alice, "bob", "watch", "tok-3", false).await;
    let mut bob = s.client(Tcp).await;
    bob.login("bob", "desk").await;
    let f = bob
        .request(Body::Revoke(pb::Revoke {
            device: String::new(),
        }))
        .await;
    expect_ok(&f);
    wait_offline(&mut alice, "bob", "desk").await;
    ack_of(&alice.send_text("bob", "m3", "hi").await);
    gw.assert_quiet(0, Duration::from_millis(700)).await;

    // A target that still exists does get one (the checks above can fail).
    offline_with_target(&s, &mut alice, "bob", "phone2", "tok-4", false).await;
    ack_of(&alice.send_text("bob", "m4", "hi").await);
    let n = gw.wait_taken(1, Duration::from_secs(1)).await;
    assert_eq!(n["devices"][0]["pushkey"], "tok-4");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_push_targets_are_invalid_arguments() {
    let gw = Gateway::start().await;
    let s = server(&gw).await;
    let mut bob = s.user(Tcp, "bob", "phone").await;
    let long = "k".repeat(4097);
    for (platform, token) in [
        ("sms", "tok"),
        ("", "tok"),
        ("FCM", "tok"),
        ("fcm", ""),
        ("fcm", "has space"),
        ("fcm", "line\nbreak"),
        ("fcm", "tök"),
        ("webpush", long.as_str()),
    ] {
        let f = bob
            .request(Body::RegisterPushTarget(pb::RegisterPushTarget {
                platform: platform.into(),
                token: token.into(),
                include_preview: false,
            }))
            .await;
        expect_error(&f, ErrorCode::InvalidArgument);
    }
    // The longest token is fine, and the session is still usable.
    register_target(&mut bob, "webpush", &"k".repeat(4096), false).await;
    s.stop().await;
}

/// An https gateway: its certificate must chain to the system roots or to
/// `push_gateway_ca`. Trusted, the push arrives over TLS; with an unknown CA the server
/// sends nothing to it (the handshake fails and the notification stays queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gateway_is_reached_only_with_a_trusted_certificate() {
    let certs = tempfile::tempdir().unwrap();
    tern_server::certs::make_dev_certs(certs.path()).unwrap();
    for trusted in [true, false] {
        let gw = Gateway::start_tls(certs.path()).await;
        assert!(gw.url.starts_with("https://"));
        let ca = trusted.then(|| certs.path().join("ca.pem"));
        let s = server_trusting(&gw, ca).await;
        users(&s, &["alice", "bob"]).await;
        let mut alice = s.client(Tcp).await;
        alice.login("alice", "laptop").await;
        offline_with_target(&s, &mut alice, "bob", "phone", "tok-bob", false).await;
        ack_of(&alice.send_text("bob", "m1", "over tls").await);
        if trusted {
            let n = gw.wait_taken(1, Duration::from_secs(2)).await;
            assert_eq!(n["devices"][0]["pushkey"], "tok-bob");
        } else {
            gw.assert_quiet(0, Duration::from_millis(1500)).await;
            assert_eq!(gw.attempts(), 0, "no request reached an untrusted gateway");
        }
        s.stop().await;
    }
}
