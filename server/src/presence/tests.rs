//! Typing on the in-memory store, a manual clock and a recording router.

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{direct_conversation, Body};

use super::typing::{TYPING_MIN_GAP_MS, TYPING_TTL_MS};
use crate::testkit::World;

fn typing_events(w: &World) -> Vec<(String, pb::TypingEvent)> {
    w.router
        .bodies()
        .into_iter()
        .filter_map(|(to, body)| match body {
            Body::TypingEvent(e) => Some((to, e)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn typing_reaches_online_members_only_is_throttled_and_expires_by_the_clock() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    w.send("ann", "bob", "hi").await.unwrap();
    let conv = direct_conversation("ann", "bob");
    w.router.delivered.lock().unwrap().clear();

    // Bob offline: nothing is sent (and nothing stored), but the request is fine.
    assert!(w.presence.typing("ann", &conv, true).unwrap());
    assert!(typing_events(&w).is_empty());

    w.router
        .online
        .lock()
        .unwrap()
        .extend(["ann".to_string(), "bob".to_string()]);
    w.clock.advance(TYPING_MIN_GAP_MS);
    assert!(w.presence.typing("ann", &conv, true).unwrap());
    let now = w.clock.now();
    // A repeat within the gap is dropped; after it, forwarded again.
    w.clock.advance(TYPING_MIN_GAP_MS - 1);
    assert!(!w.presence.typing("ann", &conv, true).unwrap());
    w.clock.advance(1);
    assert!(w.presence.typing("ann", &conv, true).unwrap());
    // A stop always goes through.
    assert!(w.presence.typing("ann", &conv, false).unwrap());

    let got = typing_events(&w);
    let to: Vec<&str> = got.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(to, ["bob", "bob", "bob"], "not to the typist's own devices");
    assert_eq!(
        (got[0].1.user.as_str(), got[0].1.typing, got[0].1.expires_ms),
        ("ann", true, now + TYPING_TTL_MS)
    );
    assert!(!got[2].1.typing);
    assert!(
        w.store.commit_count().unwrap() <= 1,
        "typing writes nothing"
    );

    w.users(&["eve"]);
    let e = w.presence.typing("eve", &conv, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    w.stop().await;
}

fn presence_events(w: &World) -> Vec<(String, pb::PresenceEvent)> {
    w.router
        .bodies()
        .into_iter()
        .filter_map(|(to, body)| match body {
            Body::PresenceEvent(e) => Some((to, e)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn online_changes_reach_direct_peers_once_settled_and_flapping_announces_nothing() {
    use std::time::Duration;
    use tokio::time::Instant;

    let w = World::new();
    w.users(&["ann", "bob", "cat", "dan"]);
    w.send("ann", "bob", "hi").await.unwrap();
    w.send("ann", "cat", "hi").await.unwrap();
    w.router.delivered.lock().unwrap().clear();
    let listener = w.presence.presence_listener();
    let set_online = |users: &[&str]| {
        *w.router.online.lock().unwrap() = users.iter().map(|u| u.to_string()).collect();
    };
    // bob and dan are online; ann comes online.
    set_online(&["bob", "dan", "ann"]);
    let t0 = Instant::now();
    listener("ann");
    w.presence.announce_due(t0 + Duration::from_millis(1999));
    assert!(presence_events(&w).is_empty(), "not settled yet");
    w.presence.announce_due(t0 + Duration::from_secs(3));
    let got = presence_events(&w);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "bob", "cat is offline; dan shares no direct chat");
    assert_eq!((got[0].1.user.as_str(), got[0].1.online), ("ann", true));

    // A flap (offline and back) within the settle time: nothing to announce.
    w.router.delivered.lock().unwrap().clear();
    let t1 = Instant::now();
    set_online(&["bob", "dan"]);
    listener("ann");
    set_online(&["bob", "dan", "ann"]);
    listener("ann");
    w.presence.announce_due(t1 + Duration::from_secs(3));
    assert!(presence_events(&w).is_empty());

    // Really gone: announced once.
    let t2 = Instant::now();
    set_online(&["bob", "dan"]);
    listener("ann");
    w.presence.announce_due(t2 + Duration::from_secs(3));
    w.presence.announce_due(t2 + Duration::from_secs(6));
    let got = presence_events(&w);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1.online), ("bob", false));
    w.stop().await;
}

#[tokio::test]
async fn a_group_watch_reaches_the_watcher_only_while_they_are_a_member() {
    use std::time::Duration;
    use tokio::time::Instant;

    let w = World::new();
    w.users(&["own", "mem", "watcher"]);
    let conv = w
        .groups
        .create_group(
            "own",
            pb::CreateGroup {
                name: "g".into(),
                members: vec!["mem".into(), "watcher".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .conversation;
    let e = w
        .presence
        .group_online("mem", "g:0000000000000001", true, false);
    assert_eq!(e.unwrap_err().code, ErrorCode::Forbidden, "not a member");
    w.presence
        .group_online("watcher", &conv, true, false)
        .unwrap();
    let listener = w.presence.presence_listener();
    *w.router.online.lock().unwrap() = vec!["watcher".into(), "mem".into()];
    w.router.delivered.lock().unwrap().clear();
    listener("mem");
    w.presence
        .announce_due(Instant::now() + Duration::from_secs(3));
    let to: Vec<String> = presence_events(&w).into_iter().map(|(to, _)| to).collect();
    assert_eq!(to, ["watcher"]);

    // Removed from the group: the watch no longer reaches them.
    w.groups
        .remove_members(
            "own",
            pb::RemoveMembers {
                conversation: conv.clone(),
                users: vec!["watcher".into()],
            },
        )
        .await
        .unwrap();
    w.router.delivered.lock().unwrap().clear();
    *w.router.online.lock().unwrap() = vec!["watcher".into()];
    listener("mem");
    w.presence
        .announce_due(Instant::now() + Duration::from_secs(3));
    assert!(presence_events(&w).is_empty());
    w.stop().await;
}
