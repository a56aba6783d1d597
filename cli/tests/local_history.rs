//! `tern history` reads the local copy that `tern sync` keeps (SQLite beside the profile),
//! so it works with the server down; `--remote` asks the server. Edits and recalls that
//! `tern sync` received show in the local copy as they do on the server.

mod common;

use common::*;
use serde_json::Value;
use tern_tests::TestServer;

fn texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn history_reads_the_local_copy_offline_and_remote_asks_the_server() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("la");
    t.account("lb");
    for text in ["one", "two", "three", "four"] {
        t.run("lb", &["send", "--to", "la", text]).ok();
    }
    t.run("lb", &["edit", "--with", "la", "--seq", "2", "two, edited"])
        .ok();
    t.run("lb", &["recall", "--with", "la", "--seq", "3"]).ok();

    // Nothing received yet: the local copy is empty, and says how to fill it.
    let out = t.run("la", &["--json", "history", "--with", "lb"]).ok();
    assert!(out.stdout.is_empty(), "{:?}", out.stderr);
    assert!(out.stderr.contains("tern sync"), "{:?}", out.stderr);
    assert!(!t.dir().join("la.db").exists() || out.stdout.is_empty());

    t.run("la", &["sync"]).ok();
    assert!(
        t.dir().join("la.db").exists(),
        "the local copy beside la.json"
    );
    let remote = t
        .run("la", &["--json", "history", "--remote", "--with", "lb"])
        .ok()
        .json();
    let local = t
        .run("la", &["--json", "history", "--with", "lb"])
        .ok()
        .json();
    assert_eq!(texts(&local), texts(&remote));
    assert_eq!(local, remote, "the same lines, from the local copy");
    assert_eq!(local.len(), 4);
    assert_eq!(local[1]["text"], "two, edited");
    assert_eq!(local[1]["edited"], true);
    assert_eq!(local[2]["recalled"], true);

    // Deleted for herself: gone from both.
    t.run("la", &["delete", "--with", "lb", "--seq", "1"]).ok();
    let remote = t
        .run("la", &["--json", "history", "--remote", "--with", "lb"])
        .ok()
        .json();
    let local = t
        .run("la", &["--json", "history", "--with", "lb"])
        .ok()
        .json();
    assert_eq!(local, remote);
    assert_eq!(texts(&local), ["two, edited", "<none>", "four"]);

    // With the server gone, the local copy still answers, paged like the server.
    server.stop().await;
    let local = t
        .run("la", &["--json", "history", "--with", "lb"])
        .ok()
        .json();
    assert_eq!(local.len(), 3);
    let page = t
        .run("la", &["--json", "history", "--with", "lb", "--limit", "3"])
        .ok()
        .json();
    // The newest 3 entries are "four" and the EDIT and RECALL entries (shown in the
    // messages they change), as a page from the server would be.
    assert_eq!(texts(&page), ["four"]);
    let page = t
        .run(
            "la",
            &["--json", "history", "--with", "lb", "--before", "3"],
        )
        .ok()
        .json();
    assert_eq!(texts(&page), ["two, edited"]);
    let human = t.run("la", &["history", "--with", "lb"]).ok().stdout;
    assert!(human.contains("four"), "{human}");
}

/// profile.db holds the login too: a damaged one stops the commands that need it, with a
/// message that names it and says what to do, and is left as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_profile_db_is_reported_and_left_alone() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("da");
    t.account("db");
    t.run("db", &["send", "--to", "da", "hello"]).ok();
    let junk = b"not a database".repeat(200);
    std::fs::write(t.dir().join("da.db"), &junk).unwrap();
    let out = t.run("da", &["--json", "sync"]);
    assert_eq!(out.code, 1, "{:?}", out.stderr);
    assert!(out.stdout.contains("da.db"), "{:?}", out.stdout);
    assert!(out.stdout.contains("tern login"), "{:?}", out.stdout);
    let out = t.run("da", &["history", "--with", "db"]);
    assert_ne!(out.code, 0, "{:?}", out.stderr);
    assert!(out.stderr.contains("local copy"), "{:?}", out.stderr);
    assert_eq!(
        std::fs::read(t.dir().join("da.db")).unwrap(),
        junk,
        "left as it was"
    );
    // Moved aside, a new login starts afresh and gets the message.
    std::fs::rename(t.dir().join("da.db"), t.dir().join("da.db.bad")).unwrap();
    t.run("da", &["login", "da", "--password", PASSWORD]).ok();
    let out = t.run("da", &["--json", "sync"]).ok();
    assert_eq!(texts(&out.json()), ["hello"]);
}

/// A profile.json of a tern before profile.db held the state (token, cursors, outbox):
/// the first command moves it into profile.db and writes profile.json again without it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_profile_json_moves_its_state_into_profile_db() {
    use tern_sdk::{SqliteStore, StateStore};
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("ma");
    t.account("mb");
    t.run("mb", &["send", "--to", "ma", "one"]).ok();
    t.run("ma", &["sync"]).ok();
    t.run("mb", &["send", "--to", "ma", "two"]).ok();
    // Make ma's profile as an older tern kept it: the state in the JSON, none in the db.
    let (json, db) = (t.dir().join("ma.json"), t.dir().join("ma.db"));
    let state = SqliteStore::open(&db).unwrap().load().unwrap();
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    old["token"] = state.token.clone().unwrap().into();
    old["store_epoch"] = state.cursors.store_epoch.clone().into();
    old["inbox"] = state.cursors.inbox.into();
    old["conversations"] = serde_json::json!({});
    old["outbox"] = serde_json::json!([]);
    std::fs::write(&json, old.to_string()).unwrap();
    std::fs::remove_file(&db).unwrap();

    // Only what came after the old cursor, with the old token.
    let out = t.run("ma", &["--json", "sync"]).ok();
    assert_eq!(texts(&out.json()), ["two"]);
    let now: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in ["token", "store_epoch", "inbox", "conversations", "outbox"] {
        assert_eq!(now.get(key), None, "{key} left profile.json: {now}");
    }
    let moved = SqliteStore::open(&db).unwrap().load().unwrap();
    assert!(moved.cursors.inbox > state.cursors.inbox);
    assert_ne!(moved.token, None);
    t.run("ma", &["whoami"]).ok();
}
