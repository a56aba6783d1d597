//! `tern profile set|get` and `tern users search` (the real binary against a real
//! server on port 0): JSON lines, errors and their exit codes (avatars: files.rs).

mod common;

use common::*;
use serde_json::json;
use tern_tests::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn profiles_are_set_shown_and_users_found() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    for u in ["pia", "pib"] {
        t.account(u);
    }
    let set = t
        .run(
            "pia",
            &[
                "--json",
                "profile",
                "set",
                "--name",
                "Pia Tester",
                "--status",
                "on call",
            ],
        )
        .ok()
        .json();
    let want = json!({"user": "pia", "name": "Pia Tester", "status": "on call", "avatar": null});
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0], want);

    let got = t
        .run("pib", &["--json", "profile", "get", "pia", "pib", "nosuch"])
        .ok()
        .json();
    assert_eq!(
        got,
        [
            want,
            json!({"user": "pib", "name": null, "status": null, "avatar": null})
        ]
    );
    // Only the status changes; "" clears it.
    t.run("pia", &["profile", "set", "--status", ""]).ok();
    let got = t
        .run("pib", &["--json", "profile", "get", "pia"])
        .ok()
        .json();
    assert_eq!(
        (&got[0]["name"], &got[0]["status"]),
        (&json!("Pia Tester"), &json!(null))
    );

    // By user name and by display name, case-insensitively.
    let found = t
        .run("pib", &["--json", "users", "search", "pi"])
        .ok()
        .json();
    assert_eq!(
        found,
        [
            json!({"user": "pia", "name": "Pia Tester"}),
            json!({"user": "pib", "name": null})
        ]
    );
    let found = t
        .run("pib", &["--json", "users", "search", "PIA T"])
        .ok()
        .json();
    assert_eq!(found, [json!({"user": "pia", "name": "Pia Tester"})]);
    let human = t.run("pib", &["users", "search", "pia"]).ok();
    assert_eq!(human.stdout, "pia (Pia Tester)\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_avatar_file_and_bad_input_are_refused_with_exit_code_2() {
    let server = TestServer::start().await;
    let t = Tern::new(&server);
    t.account("pic");
    let out = t.run("pic", &["profile", "set", "--avatar", "me.png"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot read me.png"), "{}", out.stderr);
    assert_eq!(t.run("pic", &["profile", "set"]).code, 2, "nothing to set");
    assert_eq!(
        t.run("pic", &["users", "search", "p"]).code,
        2,
        "short prefix"
    );
    let long = "x".repeat(65);
    let out = t.run("pic", &["profile", "set", "--name", &long]);
    assert_eq!(out.code, 2, "the server's INVALID_ARGUMENT: {}", out.stderr);
    let out = t.run("pic", &["profile", "set", "--name", "two\nlines"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(t.run("pic", &["profile", "get", "Bad Name"]).code, 2);
    // Nothing was set by the refused commands.
    let got = t
        .run("pic", &["--json", "profile", "get", "pic"])
        .ok()
        .json();
    assert_eq!(got[0]["name"], json!(null));
    server.stop().await;
}
