//! The admin HTTP API (`--admin-listen`, docs/ADMIN_API.md) against a real server: the
//! auth matrix on every endpoint, what each endpoint does as a user of the chat sees it
//! (closed sessions, refused logins, notices that arrive by Sync), and bad input that must
//! get a 4xx problem, never a 5xx.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::Body;
use tern_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// A 4xx with an RFC 9457 problem that says `status`.
    fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{self:?}"
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{self:?}");
        assert_eq!(p["type"], "about:blank", "{self:?}");
        assert!(
            p["title"].is_string() && p["detail"].is_string(),
            "{self:?}"
        );
    }
}

/// A raw HTTP/1.1 request (Connection: close), so nothing between the test and the
/// server normalizes what it sends.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the admin API answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw(addr, req.into_bytes()).await
}

/// A server with the admin API on, its address and the bearer header.
async fn admin_server() -> (TestServer, SocketAddr, String) {
    let server =
        TestServer::start_with(|c| c.network.admin_listen = Some("127.0.0.1:0".parse().unwrap()))
            .await;
    let addr = server.admin.expect("admin API bound");
    let bearer = format!("Bearer {}", server.admin_token());
    (server, addr, bearer)
}

struct Api {
    addr: SocketAddr,
    bearer: String,
}

impl Api {
    async fn get(&self, path: &str) -> Answer {
        call(self.addr, "GET", path, Some(&self.bearer), None).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        let body = body.to_string();
        call(self.addr, "POST", path, Some(&self.bearer), Some(&body)).await
    }
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let text = body.map(|b| b.to_string());
        let a = call(self.addr, method, path, Some(&self.bearer), text.as_deref()).await;
        assert!((200..300).contains(&a.status), "{method} {path}: {a:?}");
        if a.body.is_empty() {
            Value::Null
        } else {
            a.json()
        }
    }
}

async fn api() -> (TestServer, Api) {
    let (server, addr, bearer) = admin_server().await;
    (server, Api { addr, bearer })
}

#[tokio::test]
async fn every_endpoint_needs_the_token_401_without_403_wrong_2xx_right() {
    let (server, api) = api().await;
    let mut alice = server.user(Tcp, "alice", "phone").await;
    server.user(Tcp, "bob", "phone").await;
    ack_of(&alice.send_text("bob", "m1", "hi").await);
    let g = alice.create_group("team", &["bob"]).await.conversation;
    let g2 = alice.create_group("doomed", &["bob"]).await.conversation;
    // (method, path, body) of every endpoint; each succeeds with the right token.
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/admin/v1/online".into(), None),
        ("GET", "/admin/v1/users?prefix=a".into(), None),
        (
            "POST",
            "/admin/v1/users".into(),
            Some(json!({"user": "carol", "password": "a long password"})),
        ),
        ("GET", "/admin/v1/users/alice".into(), None),
        (
            "POST",
            "/admin/v1/users/carol/disable".into(),
            Some(json!({})),
        ),
        (
            "POST",
            "/admin/v1/users/carol/enable".into(),
            Some(json!({})),
        ),
        (
            "POST",
            "/admin/v1/users/carol/revoke".into(),
            Some(json!({})),
        ),
        (
            "POST",
            "/admin/v1/users/carol/password".into(),
            Some(json!({"password": "another password"})),
        ),
        ("GET", "/admin/v1/users/bob/unread".into(), None),
        (
            "GET",
            "/admin/v1/conversations/d:alice:bob/messages?limit=10".into(),
            None,
        ),
        ("GET", "/admin/v1/groups?prefix=te".into(), None),
        ("GET", format!("/admin/v1/groups/{g}"), None),
        ("DELETE", format!("/admin/v1/groups/{g2}"), None),
        (
            "POST",
            "/admin/v1/messages".into(),
            Some(json!({"to_user": "bob", "text": "maintenance at 5"})),
        ),
        ("GET", "/admin/v1/stats".into(), None),
    ];
    for (method, path, body) in &endpoints {
        let text = body.as_ref().map(|b| b.to_string());
        let none = call(api.addr, method, path, None, text.as_deref()).await;
        none.assert_problem(401);
        assert!(
            none.head.contains("WWW-Authenticate: Bearer")
                || none.head.contains("www-authenticate: Bearer"),
            "{method} {path}: {none:?}"
        );
        for wrong in [
            "Bearer not-the-token",
            "Basic YWRtaW46YWRtaW4=",
            "Bearer",
            "",
        ] {
            let a = call(api.addr, method, path, Some(wrong), text.as_deref()).await;
            a.assert_problem(403);
        }
        // The right token with one character changed.
        let mut near = api.bearer.clone().into_bytes();
        let last = near.len() - 1;
        near[last] = if near[last] == b'A' { b'B' } else { b'A' };
        let near = String::from_utf8(near).unwrap();
        call(api.addr, method, path, Some(&near), text.as_deref())
            .await
            .assert_problem(403);
    }
    // Nothing happened without the token: carol does not exist yet.
    api.get("/admin/v1/users/carol").await.assert_problem(404);
    for (method, path, body) in endpoints {
        api.ok(method, &path, body).await;
    }
    // The document is public and names the scheme and every path.
    let doc = call(api.addr, "GET", "/admin/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200, "{doc:?}");
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for p in [
        "/admin/v1/online",
        "/admin/v1/users",
        "/admin/v1/users/{user}",
        "/admin/v1/users/{user}/disable",
        "/admin/v1/users/{user}/enable",
        "/admin/v1/users/{user}/revoke",
        "/admin/v1/users/{user}/password",
        "/admin/v1/users/{user}/unread",
        "/admin/v1/conversations/{conv}/messages",
        "/admin/v1/groups",
        "/admin/v1/groups/{gid}",
        "/admin/v1/messages",
        "/admin/v1/stats",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing from the document");
    }
    server.stop().await;
}

#[tokio::test]
async fn disable_closes_live_sessions_at_once_and_refuses_login_until_enabled() {
    let (server, api) = api().await;
    let mut phone = server.user(Tcp, "dave", "phone").await;
    let token = phone.login.clone().unwrap().token;
    let mut laptop = server.client(Quic).await;
    laptop.login("dave", "laptop").await;

    let online = api.ok("GET", "/admin/v1/online", None).await;
    assert_eq!(online["count"], 1);
    assert_eq!(online["users"][0]["user"], "dave");
    assert_eq!(online["users"][0]["devices"], json!(["laptop", "phone"]));

    let r = api
        .ok("POST", "/admin/v1/users/dave/disable", Some(json!({})))
        .await;
    assert_eq!(r["sessions_closed"], 2);
    assert_eq!(r["disabled"], true);
    // "At once": well within a heartbeat.
    phone
        .expect_closed(Duration::from_secs(2), CloseReason::Revoked)
        .await;
    laptop
        .expect_closed(Duration::from_secs(2), CloseReason::Revoked)
        .await;

    let mut again = server.client(Tcp).await;
    let f = again.request(login_body("dave", "phone")).await;
    expect_error(&f, ErrorCode::InvalidCredentials);
    let f = again.resume(&token).await;
    expect_error(&f, ErrorCode::TokenRevoked);
    let user = api.ok("GET", "/admin/v1/users/dave", None).await;
    assert_eq!(user["disabled"], true);
    assert_eq!(user["online"], false);
    assert!(
        !user.to_string().contains("argon2"),
        "no password data: {user}"
    );

    api.ok("POST", "/admin/v1/users/dave/enable", Some(json!({})))
        .await;
    let mut back = server.client(Tcp).await;
    back.login("dave", "phone").await;
    let user = api.ok("GET", "/admin/v1/users/dave", None).await;
    assert_eq!(user["disabled"], false);
    assert_eq!(user["online"], true);
    let devices: Vec<&str> = user["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["laptop", "phone"]);
    server.stop().await;
}

#[tokio::test]
async fn revoke_closes_every_session_and_every_token_stops_working() {
    let (server, api) = api().await;
    let mut phone = server.user(Tcp, "erin", "phone").await;
    let t1 = phone.login.clone().unwrap().token;
    let mut tablet = server.client(Tcp).await;
    let t2 = tablet.login("erin", "tablet").await.token;
    let r = api
        .ok("POST", "/admin/v1/users/erin/revoke", Some(json!({})))
        .await;
    assert_eq!(r["sessions_closed"], 2);
    phone
        .expect_closed(Duration::from_secs(2), CloseReason::Revoked)
        .await;
    tablet
        .expect_closed(Duration::from_secs(2), CloseReason::Revoked)
        .await;
    for t in [t1, t2] {
        let mut c = server.client(Tcp).await;
        expect_error(&c.resume(&t).await, ErrorCode::TokenRevoked);
    }
    // Not disabled: a password login works.
    server.client(Tcp).await.login("erin", "phone").await;
    api.post("/admin/v1/users/nobody/revoke", json!({}))
        .await
        .assert_problem(404);
    server.stop().await;
}

#[tokio::test]
async fn created_users_log_in_and_a_new_password_replaces_the_old() {
    let (server, api) = api().await;
    let created = api
        .post(
            "/admin/v1/users",
            json!({"user": "frank", "password": "first password"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json()["user"], "frank");
    api.post(
        "/admin/v1/users",
        json!({"user": "frank", "password": "first password"}),
    )
    .await
    .assert_problem(409);
    api.post(
        "/admin/v1/users",
        json!({"user": "system", "password": "reserved name"}),
    )
    .await
    .assert_problem(409);
    api.post(
        "/admin/v1/users",
        json!({"user": "Bad Name", "password": "whatever1"}),
    )
    .await
    .assert_problem(400);
    api.post(
        "/admin/v1/users",
        json!({"user": "shorty", "password": "short"}),
    )
    .await
    .assert_problem(400);

    let login = |pw: &str| {
        Body::Login(pb::Login {
            protocol_version: tern_proto::PROTOCOL_VERSION,
            username: "frank".into(),
            password: pw.into(),
            device: "d1".into(),
        })
    };
    let mut c = server.client(Tcp).await;
    assert!(matches!(
        c.request(login("first password")).await.body,
        Some(Body::LoginOk(_))
    ));

    let a = api
        .post(
            "/admin/v1/users/frank/password",
            json!({"password": "second password"}),
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    let mut c = server.client(Tcp).await;
    expect_error(
        &c.request(login("first password")).await,
        ErrorCode::InvalidCredentials,
    );
    let mut c = server.client(Tcp).await;
    assert!(matches!(
        c.request(login("second password")).await.body,
        Some(Body::LoginOk(_))
    ));

    let users = api.ok("GET", "/admin/v1/users?prefix=fr", None).await;
    assert_eq!(users["users"][0]["user"], "frank");
    assert_eq!(users["users"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn users_and_online_are_paged() {
    let (server, api) = api().await;
    let mut live = Vec::new();
    for u in ["pa", "pb", "pc", "pd", "pe"] {
        live.push(server.user(Tcp, u, "d").await);
    }
    let mut seen = Vec::new();
    let mut path = "/admin/v1/users?prefix=p&limit=2".to_string();
    loop {
        let page = api.ok("GET", &path, None).await;
        for u in page["users"].as_array().unwrap() {
            seen.push(u["user"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => path = format!("/admin/v1/users?prefix=p&limit=2&after={n}"),
            None => break,
        }
    }
    assert_eq!(seen, ["pa", "pb", "pc", "pd", "pe"]);

    let page = api.ok("GET", "/admin/v1/online?limit=3", None).await;
    assert_eq!(page["count"], 5);
    assert_eq!(page["users"].as_array().unwrap().len(), 3);
    assert_eq!(page["next"], "pc");
    let page = api
        .ok("GET", "/admin/v1/online?limit=3&after=pc", None)
        .await;
    assert_eq!(page["users"][0]["user"], "pd");
    assert!(page["next"].is_null());
    api.get("/admin/v1/users?limit=0").await.assert_problem(400);
    api.get("/admin/v1/users?limit=1001")
        .await
        .assert_problem(400);
    api.get("/admin/v1/online?limit=-1")
        .await
        .assert_problem(400);
    server.stop().await;
}

#[tokio::test]
async fn unread_counts_and_history_pages() {
    let (server, api) = api().await;
    let mut gina = server.user(Tcp, "gina", "d").await;
    server.user(Tcp, "hank", "d").await;
    for i in 0..25 {
        ack_of(
            &gina
                .send_text("hank", &format!("m{i}"), &format!("text {i}"))
                .await,
        );
    }
    let unread = api.ok("GET", "/admin/v1/users/hank/unread", None).await;
    assert_eq!(unread["total"], 25, "{unread}");
    assert_eq!(unread["conversations"][0]["conv"], "d:gina:hank");
    assert_eq!(unread["conversations"][0]["unread"], 25);
    let unread = api.ok("GET", "/admin/v1/users/gina/unread", None).await;
    assert_eq!(unread["total"], 0, "one's own messages are read");

    // Newest page first; `next_before` pages back to seq 1.
    let mut seqs = Vec::new();
    let mut path = "/admin/v1/conversations/d:gina:hank/messages?limit=10".to_string();
    let mut pages = 0;
    loop {
        let page = api.ok("GET", &path, None).await;
        pages += 1;
        let mut these: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert!(
            these.windows(2).all(|w| w[0] + 1 == w[1]),
            "oldest first: {these:?}"
        );
        these.extend(seqs);
        seqs = these;
        match page["next_before"].as_u64() {
            Some(b) => {
                path = format!("/admin/v1/conversations/d:gina:hank/messages?limit=10&before={b}")
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    let page = api
        .ok(
            "GET",
            "/admin/v1/conversations/d:gina:hank/messages?before=3",
            None,
        )
        .await;
    assert_eq!(page["messages"][0]["text"], "text 0");
    assert_eq!(page["messages"][1]["sender"], "gina");
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);

    api.get("/admin/v1/conversations/d:gina:zed/messages")
        .await
        .assert_problem(404);
    api.get("/admin/v1/conversations/nonsense/messages")
        .await
        .assert_problem(400);
    api.get("/admin/v1/users/nobody/unread")
        .await
        .assert_problem(404);
    server.stop().await;
}

#[tokio::test]
async fn groups_are_listed_shown_and_dissolved() {
    let (server, api) = api().await;
    let mut ivan = server.user(Tcp, "ivan", "d").await;
    let mut judy = server.user(Tcp, "judy", "d").await;
    let g1 = ivan.create_group("Rust club", &["judy"]).await.conversation;
    let g2 = ivan.create_group("rustaceans", &[]).await.conversation;
    let g3 = ivan.create_group("Go club", &["judy"]).await.conversation;

    let list = api.ok("GET", "/admin/v1/groups?prefix=RUST", None).await;
    let mut ids: Vec<&str> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![g1.as_str(), g2.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let all = api.ok("GET", "/admin/v1/groups?limit=2", None).await;
    assert_eq!(all["groups"].as_array().unwrap().len(), 2);
    let next = all["next"].as_str().expect("a third group").to_string();
    let rest = api
        .ok(
            "GET",
            &format!("/admin/v1/groups?limit=2&after={next}"),
            None,
        )
        .await;
    assert_eq!(rest["groups"].as_array().unwrap().len(), 1);

    let g = api.ok("GET", &format!("/admin/v1/groups/{g3}"), None).await;
    assert_eq!(g["name"], "Go club");
    let mut members: Vec<(String, String)> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            ("ivan".into(), "OWNER".into()),
            ("judy".into(), "MEMBER".into())
        ]
    );

    let a = call(
        api.addr,
        "DELETE",
        &format!("/admin/v1/groups/{g3}"),
        Some(&api.bearer),
        None,
    )
    .await;
    assert_eq!(a.status, 204, "{a:?}");
    // The members hear of it like of an owner's dissolve, with the actor "admin".
    let m = judy
        .next_where(Duration::from_secs(5), |b| match b {
            Body::Push(p) => p
                .message
                .filter(|m| m.conversation == g3 && m.event.is_some())
                .filter(|m| m.event.as_ref().unwrap().kind == pb::GroupEventKind::Dissolved as i32),
            _ => None,
        })
        .await;
    assert_eq!(m.event.unwrap().actor, "admin");
    let g = api.ok("GET", &format!("/admin/v1/groups/{g3}"), None).await;
    assert_eq!(g["dissolved"], true);
    call(
        api.addr,
        "DELETE",
        &format!("/admin/v1/groups/{g3}"),
        Some(&api.bearer),
        None,
    )
    .await
    .assert_problem(404);
    api.get("/admin/v1/groups/g:00000000000000ff")
        .await
        .assert_problem(404);
    api.get("/admin/v1/groups/d:ivan:judy")
        .await
        .assert_problem(400);
    drop(ivan);
    server.stop().await;
}

#[tokio::test]
async fn notices_reach_users_durably_online_and_by_sync() {
    let (server, api) = api().await;
    let mut kim = server.user(Tcp, "kim", "d").await;
    {
        let mut c = server.client(Tcp).await;
        c.register("leo").await;
    }
    let mut mia = server.user(Tcp, "mia", "d").await;
    let group = kim.create_group("ops", &["mia"]).await.conversation;

    // To one user, online: pushed.
    let r = api
        .ok(
            "POST",
            "/admin/v1/messages",
            Some(json!({"to_user": "kim", "text": "hello kim"})),
        )
        .await;
    assert_eq!(r["conversation"], "d:kim:system");
    let m = kim
        .next_where(Duration::from_secs(5), |b| match b {
            Body::Push(p) => p.message.filter(|m| m.conversation == "d:kim:system"),
            _ => None,
        })
        .await;
    assert_eq!(
        (m.sender.as_str(), text(&m).as_str()),
        ("system", "hello kim")
    );
    assert_eq!(m.kind, pb::MessageKind::System as i32);
    // Nobody reads `system`'s side: an answer is refused.
    let f = kim.send_text("d:kim:system", "re1", "thanks").await;
    expect_error(&f, ErrorCode::Forbidden);
    let f = kim.send_text("system", "re2", "thanks").await;
    expect_error(&f, ErrorCode::NotFound);

    // To a group: every member.
    api.ok(
        "POST",
        "/admin/v1/messages",
        Some(json!({"to_group": group, "text": "group notice"})),
    )
    .await;
    let m = mia
        .next_where(Duration::from_secs(5), |b| match b {
            Body::Push(p) => p.message.filter(|m| text(m) == "group notice"),
            _ => None,
        })
        .await;
    assert_eq!(m.conversation, group);

    // Broadcast: leo is offline and gets it by Sync after logging in.
    let r = api
        .ok(
            "POST",
            "/admin/v1/messages",
            Some(json!({"broadcast": true, "text": "server restarts at noon"})),
        )
        .await;
    assert_eq!(r["sent"], 3);
    let mut leo = server.client(Quic).await;
    leo.login("leo", "d").await;
    let items = leo.sync_all(0, 100).await;
    let got: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            let m = i.message.as_ref().unwrap();
            (m.conversation.clone(), text(m))
        })
        .collect();
    assert_eq!(
        got,
        [(
            "d:leo:system".to_string(),
            "server restarts at noon".to_string()
        )]
    );
    // The notice is history like any message.
    let h = api
        .ok("GET", "/admin/v1/conversations/d:kim:system/messages", None)
        .await;
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello kim", "server restarts at noon"]);
    assert_eq!(h["messages"][0]["kind"], "system");
    let unread = api.ok("GET", "/admin/v1/users/kim/unread", None).await;
    assert!(unread["total"].as_u64().unwrap() >= 2, "{unread}");

    let stats = api.ok("GET", "/admin/v1/stats", None).await;
    assert_eq!(stats["users"], 3, "{stats}");
    assert_eq!(stats["groups"], 1, "{stats}");
    assert!(stats["messages"].as_u64().unwrap() >= 6, "{stats}");
    assert!(stats["store_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["connections"]["tcp"].as_i64().unwrap() >= 2,
        "{stats}"
    );

    for bad in [
        json!({"text": "no target"}),
        json!({"to_user": "kim", "to_group": group, "text": "two"}),
        json!({"broadcast": false, "text": "not really"}),
        json!({"to_user": "kim", "text": "  "}),
    ] {
        api.post("/admin/v1/messages", bad)
            .await
            .assert_problem(400);
    }
    api.post(
        "/admin/v1/messages",
        json!({"to_user": "nobody", "text": "x"}),
    )
    .await
    .assert_problem(404);
    api.post(
        "/admin/v1/messages",
        json!({"to_group": "g:00000000000000ee", "text": "x"}),
    )
    .await
    .assert_problem(404);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_problem_never_a_5xx() {
    let (server, api) = api().await;
    server.user(Tcp, "nina", "d").await;
    let b = Some(api.bearer.as_str());
    // Malformed JSON, a wrong type, an unknown field, a missing field.
    for body in [
        "{",
        "[]",
        "{\"user\": 5, \"password\": \"long enough\"}",
        "{\"user\": \"olga\", \"password\": \"long enough\", \"admin\": true}",
        "{\"user\": \"olga\"}",
        "\u{0}\u{1}garbage",
    ] {
        call(api.addr, "POST", "/admin/v1/users", b, Some(body))
            .await
            .assert_problem(400);
    }
    // Not JSON at all.
    let req = format!(
        "POST /admin/v1/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        api.bearer
    );
    raw(api.addr, req.into_bytes()).await.assert_problem(415);
    // A huge body: refused by its length, before it is read.
    let huge = format!(
        "{{\"to_user\": \"nina\", \"text\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    call(api.addr, "POST", "/admin/v1/messages", b, Some(&huge))
        .await
        .assert_problem(413);
    // Odd path characters: NUL, non-UTF-8, separators, unicode, very long.
    for path in [
        "/admin/v1/users/%00",
        "/admin/v1/users/%ff%fe",
        "/admin/v1/users/..%2f..%2fetc",
        "/admin/v1/users/%E2%98%83",
        "/admin/v1/users/a%20b/unread",
        "/admin/v1/conversations/%00/messages",
        "/admin/v1/conversations/d:%ff:a/messages",
        "/admin/v1/groups/g:%ZZ",
    ] {
        let a = api.get(path).await;
        assert!((400..500).contains(&a.status), "{path}: {a:?}");
        a.assert_problem(a.status);
    }
    let long = format!("/admin/v1/users/{}", "a".repeat(5000));
    api.get(&long).await.assert_problem(400);
    // Query values of the wrong type.
    for path in [
        "/admin/v1/conversations/d:a:b/messages?before=-1",
        "/admin/v1/conversations/d:a:b/messages?limit=abc",
        "/admin/v1/users?limit=99999999999999999999",
    ] {
        api.get(path).await.assert_problem(400);
    }
    // Unknown paths and methods.
    api.get("/admin/v1/nope").await.assert_problem(404);
    api.get("/").await.assert_problem(404);
    call(api.addr, "PUT", "/admin/v1/stats", b, None)
        .await
        .assert_problem(405);
    // Still serving.
    api.ok("GET", "/admin/v1/stats", None).await;
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_is_off_by_default() {
    let server = TestServer::start().await;
    assert!(server.admin.is_none());
    assert!(!server.dir.path().join("admin.token").exists());
    server.stop().await;
}
