//! `tern sync` across a retention trim (docs/PROTOCOL.md 8.11): the real binary against a
//! real server that keeps 3 inbox entries per user. After its inbox was trimmed past
//! the profile's cursor, `tern sync` still prints every message it had not printed,
//! once and in order, and none it printed before; the next sync prints only what is new.

mod common;

use std::time::Duration;

use common::*;
use tern_proto::pb::{self, ErrorCode};
use tern_proto::Body;
use tern_tests::{Client, Tcp, TestServer};

fn texts(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l["text"].as_str().map(str::to_string))
        .collect()
}

/// Waits until `user`'s inbox is trimmed so that a sync after `after` is refused with
/// CURSOR_TRIMMED naming a first retained inbox seq of at least `first`.
async fn until_trimmed(server: &TestServer, user: &str, after: u64, first: u64) {
    let mut c = Client::connect(Tcp, server.tcp, &server.ca).await;
    c.login(user, "watcher").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let f = c
            .request(Body::Sync(pb::Sync {
                after_inbox_seq: Some(after),
                limit: 1,
            }))
            .await;
        if let Some(Body::Error(e)) = &f.body {
            assert_eq!(e.code, ErrorCode::CursorTrimmed as i32, "{e:?}");
            let n = tern_sdk::engine::recovery::first_retained_inbox_seq(&e.message);
            if n.is_some_and(|n| n >= first) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never trimmed: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tern_sync_keeps_working_across_a_trimmed_inbox() {
    let server = TestServer::start_with(|c| {
        c.retention.retention_inbox_max_entries = 3;
        c.retention.retention_sweep_interval_ms = 50;
    })
    .await;
    let t = Tern::new(&server);
    t.account("ann");
    t.account("bob");
    for i in 1..=2 {
        t.run("ann", &["--json", "send", "--to", "bob", &format!("m{i}")])
            .ok();
    }
    let first = t.run("bob", &["--json", "sync"]).ok().json();
    assert_eq!(texts(&first), ["m1", "m2"]);
    for i in 3..=10 {
        t.run("ann", &["--json", "send", "--to", "bob", &format!("m{i}")])
            .ok();
    }
    // Bob's inbox keeps 8..10; his profile's cursor is at 2.
    until_trimmed(&server, "bob", 2, 8).await;
    let second = t.run("bob", &["--json", "sync"]).ok().json();
    let want: Vec<String> = (3..=10).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&second), want, "{second:?}");
    t.run("ann", &["--json", "send", "--to", "bob", "m11"]).ok();
    let third = t.run("bob", &["--json", "sync"]).ok().json();
    assert_eq!(texts(&third), ["m11"]);
}
