//! `tern friend ...`, `tern block` and `tern unblock` (the real binary against a real
//! server on port 0): JSON lines, the contact states on both sides, BLOCKED's exit code.

mod common;

use common::*;
use serde_json::json;
use tern_tests::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn friends_requests_lists_and_blocks_from_the_command_line() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    {
        t.account("ann");
        t.account("bob");
        let list = |who: &str| t.run(who, &["--json", "friend", "list"]).ok().json();
        t.run(
            "ann",
            &["--json", "friend", "request", "bob", "--message", "hi bob"],
        )
        .ok();
        assert_eq!(
            list("ann"),
            [json!({"user": "bob", "state": "outgoing", "message": "hi bob"})]
        );
        assert_eq!(
            list("bob"),
            [json!({"user": "ann", "state": "incoming", "message": "hi bob"})]
        );
        // bob's sync shows the request as a contact event line.
        let lines = t.run("bob", &["--json", "sync"]).ok().json();
        let requested: Vec<_> = lines.iter().filter(|l| !l["contact"].is_null()).collect();
        assert_eq!(requested.len(), 1, "{lines:?}");
        assert_eq!(
            requested[0]["contact"],
            json!({"kind": "REQUESTED", "actor": "ann", "user": "bob", "message": "hi bob"})
        );
        assert_eq!(requested[0]["conv"], "d:ann:bob");
        let out = t
            .run("bob", &["--json", "friend", "accept", "ann"])
            .ok()
            .json();
        assert_eq!(out, [json!({"user": "ann", "done": "accepted"})]);
        assert_eq!(list("ann"), [json!({"user": "bob", "state": "friend"})]);
        assert_eq!(list("bob"), [json!({"user": "ann", "state": "friend"})]);
        // Bad input: exit codes and error codes.
        let out = t.run("ann", &["--json", "friend", "accept", "nosuch"]);
        assert_eq!((out.code, out.code_of_error().as_str()), (5, "NOT_FOUND"));
        let out = t.run("ann", &["--json", "friend", "request", "bob"]);
        assert_eq!(
            (out.code, out.code_of_error().as_str()),
            (2, "INVALID_ARGUMENT")
        );
        // Blocked: direct messages refused both ways with BLOCKED (exit 5).
        t.run("ann", &["block", "bob"]).ok();
        assert_eq!(list("ann"), [json!({"user": "bob", "state": "blocked"})]);
        assert!(list("bob").is_empty());
        let out = t.run("bob", &["--json", "send", "--to", "ann", "hello?"]);
        assert_eq!((out.code, out.code_of_error().as_str()), (5, "BLOCKED"));
        t.run("ann", &["unblock", "bob"]).ok();
        t.run("bob", &["send", "--to", "ann", "hello again"]).ok();
        // Decline, cancel and remove.
        t.run("bob", &["friend", "request", "ann"]).ok();
        t.run("bob", &["friend", "cancel", "ann"]).ok();
        assert!(list("ann").is_empty());
        t.run("bob", &["friend", "request", "ann"]).ok();
        t.run("ann", &["friend", "decline", "bob"]).ok();
        assert!(list("bob").is_empty());
        t.run("bob", &["friend", "request", "ann"]).ok();
        t.run("ann", &["friend", "accept", "bob"]).ok();
        t.run("ann", &["friend", "remove", "bob"]).ok();
        assert!(list("bob").is_empty());
    }
    server.stop().await;
}
