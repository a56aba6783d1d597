//! `tern search` (the real binary against a real server on port 0): hits printed as the
//! lines `tern history` prints, newest first, scoped with --with / --group / --from, in
//! English and Chinese; bad queries exit with code 2.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tern_tests::TestServer;

/// `tern --json search ARGS` until it prints `n` lines (the index commits in batches, a
/// message is searchable shortly after its ack); panics after a bounded time.
fn search_until(t: &Tern, user: &str, args: &[&str], n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = vec!["--json", "search"];
        all.extend_from_slice(args);
        let lines = t.run(user, &all).ok().json();
        if lines.len() == n {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "tern search {args:?} printed {lines:?}, not {n} lines"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_are_history_lines_newest_first_and_scoped() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for u in ["sea", "seb", "sec"] {
        t.account(u);
    }
    t.run("sea", &["send", "--to", "seb", "lunch at noon?"])
        .ok();
    t.run("seb", &["send", "--to", "sea", "午饭 OK, see you at lunch"])
        .ok();
    t.run("sec", &["send", "--to", "sea", "lunch with me instead"])
        .ok();
    let g = t
        .run("sea", &["group", "create", "team", "--members", "seb,sec"])
        .ok()
        .json();
    let gid = g[0]["group"].as_str().expect("a group id").to_string();
    t.run("sec", &["send", "--group", &gid, "team lunch friday"])
        .ok();

    let hits = search_until(&t, "sea", &["lunch"], 4);
    let texts: Vec<&str> = hits.iter().map(|h| h["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "team lunch friday",
            "lunch with me instead",
            "午饭 OK, see you at lunch",
            "lunch at noon?"
        ]
    );
    // The same line `tern history` prints for that message.
    let history = t
        .run("sea", &["--json", "history", "--remote", "--with", "seb"])
        .ok()
        .json();
    assert!(
        history.contains(&hits[2]),
        "{:?} not in {history:?}",
        hits[2]
    );
    assert_eq!(hits[2]["from"], json!("seb"));

    // Scoped: one 1:1, one group, one sender; and Chinese.
    let with = search_until(&t, "sea", &["lunch", "--with", "seb"], 2);
    assert!(with.iter().all(|h| h["conv"] == json!("d:sea:seb")));
    let group = search_until(&t, "sea", &["LUNCH", "--group", &gid], 1);
    assert_eq!(group[0]["text"], json!("team lunch friday"));
    let from = search_until(&t, "sea", &["lunch", "--from", "sec"], 2);
    assert!(from.iter().all(|h| h["from"] == json!("sec")));
    let zh = search_until(&t, "sea", &["午饭"], 1);
    assert_eq!(zh[0]["text"], json!("午饭 OK, see you at lunch"));
    assert_eq!(
        search_until(&t, "seb", &["lunch", "--limit", "1"], 1).len(),
        1
    );
    // seb is not in sea's chat with sec.
    assert_eq!(search_until(&t, "seb", &["instead"], 0).len(), 0);
    // Human output: one line per hit.
    let human = t.run("sea", &["search", "friday"]).ok();
    assert_eq!(human.stdout.lines().count(), 1, "{}", human.stdout);
    assert!(
        human.stdout.contains("team lunch friday"),
        "{}",
        human.stdout
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_exit_with_code_2() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("sed");
    for q in ["", "AND OR", "*&&"] {
        let out = t.run("sed", &["search", q]);
        assert_eq!(out.code, 2, "{q:?}: {}", out.stderr);
    }
    let out = t.run("sed", &["--json", "search", "*&&"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.code_of_error(), "INVALID_ARGUMENT");
    let long = "word ".repeat(60);
    assert_eq!(t.run("sed", &["search", &long]).code, 2);
    assert_eq!(t.run("sed", &["search", "x", "--limit", "0"]).code, 2);
    assert_eq!(t.run("sed", &["search", "x", "--with", "Bad Name"]).code, 2);
    // A group the user is not in: forbidden (exit code 5).
    assert_eq!(
        t.run("sed", &["search", "x", "--group", "g:0123456789abcdef"])
            .code,
        5
    );
    server.stop().await;
}
