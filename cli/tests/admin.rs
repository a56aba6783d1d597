//! `tern admin` (the real binary) against a real server with the admin API on: what an
//! operator sees, and what the users of the chat notice.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tern_tests::tern_proto::pb::CloseReason;
use tern_tests::{TestServer, Transport};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "tern failed: {self:?}");
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// `tern [--json] admin --url URL --token-file FILE ARGS` (off the runtime's threads: the
/// server runs in this process).
async fn admin(url: &str, token_file: &Path, json: bool, args: &[&str]) -> Out {
    let mut c = Command::new(TERN);
    c.env_remove("TERN_ADMIN_URL")
        .env_remove("TERN_ADMIN_TOKEN_FILE");
    if json {
        c.arg("--json");
    }
    c.arg("admin")
        .arg("--url")
        .arg(url)
        .arg("--token-file")
        .arg(token_file)
        .args(args);
    let out = tokio::task::spawn_blocking(move || c.output().expect("tern runs"))
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_see_who_is_online_and_disable_a_user_whose_session_closes() {
    let server =
        TestServer::start_with(|c| c.network.admin_listen = Some("127.0.0.1:0".parse().unwrap()))
            .await;
    let url = format!("http://{}/admin/v1/", server.admin.unwrap());
    let token = server.dir.path().join("admin.token");
    let mut bob = server.user(Transport::Tcp, "bob", "phone").await;
    let _amy = server.user(Transport::Quic, "amy", "laptop").await;

    let online = admin(&url, &token, true, &["online"]).await.json();
    assert_eq!(online["count"], 2, "{online}");
    assert_eq!(online["users"][0]["user"], "amy");
    assert_eq!(online["users"][1]["devices"][0], "phone");
    let human = admin(&url, &token, false, &["online"]).await;
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.starts_with("2 online"), "{human:?}");
    assert!(human.stdout.contains("bob: phone"), "{human:?}");

    let r = admin(&url, &token, true, &["user", "disable", "bob"])
        .await
        .json();
    assert_eq!(r["disabled"], true);
    assert_eq!(r["sessions_closed"], 1);
    bob.expect_closed(Duration::from_secs(2), CloseReason::Revoked)
        .await;
    let shown = admin(&url, &token, true, &["user", "show", "bob"])
        .await
        .json();
    assert_eq!(shown["disabled"], true);
    let r = admin(&url, &token, false, &["user", "enable", "bob"]).await;
    assert_eq!((r.code, r.stdout.trim()), (0, "bob: enabled"), "{r:?}");

    let r = admin(&url, &token, true, &["broadcast", "hello", "everyone"])
        .await
        .json();
    assert_eq!(r["sent"], 2);

    // Not found: exit 5; a wrong token: exit 3; nothing listening: exit 4; one stderr
    // line each, and the token never appears.
    let r = admin(&url, &token, false, &["user", "revoke", "nobody"]).await;
    assert_eq!(r.code, 5, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    let wrong = server.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-at-all\n").unwrap();
    let r = admin(&url, &wrong, true, &["online"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("\"code\":\"FORBIDDEN\""), "{r:?}");
    let secret = std::fs::read_to_string(&token).unwrap();
    assert!(!r.stderr.contains(secret.trim()) && !r.stdout.contains(secret.trim()));
    let r = admin("http://127.0.0.1:9", &token, false, &["online"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    let r = admin(&url, &token, false, &["user", "disable", "Not A Name"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    server.stop().await;
}
