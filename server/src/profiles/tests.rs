//! Profile rules on the in-memory store with a recording router: validation, the
//! display-name index, who is told of a change, the search bounds and its rate limit.

use std::time::{Duration, Instant};

use tern_proto::pb::ErrorCode;
use tern_proto::Body;

use super::*;
use crate::testkit::World;

fn profiles(w: &World) -> Profiles {
    Profiles::new(
        w.store.clone(),
        w.seq.clone(),
        w.convs.clone(),
        w.router.clone(),
        w.clock.clone(),
    )
}

fn told(w: &World) -> Vec<String> {
    let mut to: Vec<String> = w
        .router
        .bodies()
        .into_iter()
        .filter(|(_, b)| matches!(b, Body::ProfileChanged(_)))
        .map(|(u, _)| u)
        .collect();
    to.sort();
    to
}

#[tokio::test]
async fn a_change_is_stored_indexed_and_told_to_the_online_peers_only() {
    let w = World::new();
    w.users(&["pa", "pb", "pc", "px"]);
    w.send("pa", "pb", "m1").await.unwrap();
    *w.router.online.lock().unwrap() = vec!["pa".into(), "pb".into(), "px".into()];
    let p = profiles(&w);

    let got = p
        .set("pa", Some(" Ada L ".into()), None, None)
        .await
        .unwrap();
    assert_eq!(
        (got.display_name.as_str(), got.status.as_str()),
        ("Ada L", "")
    );
    assert_eq!(
        told(&w),
        ["pa", "pb"],
        "own devices and the 1:1 peer; px is a stranger"
    );

    // Status only: the name is kept; then the name is cleared and leaves the index.
    p.set("pa", None, Some("busy".into()), None).await.unwrap();
    assert_eq!(p.search("pc", "ada", 0).unwrap().users.len(), 1);
    let got = p.set("pa", Some(String::new()), None, None).await.unwrap();
    assert_eq!(
        (got.display_name.as_str(), got.status.as_str()),
        ("", "busy")
    );
    assert!(p.search("pc", "ada", 0).unwrap().users.is_empty());

    // Nothing changed: nothing pushed.
    let before = told(&w).len();
    p.set("pa", None, Some("busy".into()), None).await.unwrap();
    assert_eq!(told(&w).len(), before);

    let list = p
        .get(&["pb".into(), "pa".into(), "pa".into(), "nobody".into()])
        .await
        .unwrap();
    let users: Vec<_> = list.profiles.iter().map(|p| p.user.as_str()).collect();
    assert_eq!(
        users,
        ["pb", "pa"],
        "asked order, once each, unknown users left out"
    );
    w.stop().await;
}

#[tokio::test]
async fn bad_fields_are_invalid_and_change_nothing() {
    let w = World::new();
    w.users(&["pa"]);
    let p = profiles(&w);
    for (name, status) in [
        (Some("a\nb".to_string()), None),
        (Some("x".repeat(DISPLAY_NAME_MAX + 1)), None),
        (None, Some("s".repeat(STATUS_MAX + 1))),
        (Some("evil\u{202E}txt".into()), None),
        (Some("nul\0".into()), None),
    ] {
        let e = p.set("pa", name, status, None).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    }
    assert_eq!(w.store.profile("pa").unwrap(), None);
    let too_many: Vec<String> = (0..=MAX_GET).map(|i| format!("u{i}")).collect();
    assert_eq!(
        p.get(&too_many).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    w.stop().await;
}

#[tokio::test]
async fn searches_are_limited_per_user_and_refill() {
    let w = World::new();
    let p = profiles(&w);
    let t0 = Instant::now();
    for _ in 0..SEARCH_BURST {
        p.take_search("pa", t0).unwrap();
    }
    let e = p.take_search("pa", t0).unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 1000, "{e:?}");
    p.take_search("pb", t0)
        .expect("another user has their own budget");
    p.take_search("pa", t0 + Duration::from_secs(1))
        .expect("one more after a second");
    w.stop().await;
}

#[tokio::test]
async fn a_search_never_answers_more_than_the_cap() {
    let w = World::new();
    let names: Vec<String> = (0..MAX_SEARCH + 10).map(|i| format!("cap{i:02}")).collect();
    w.users(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let p = profiles(&w);
    assert_eq!(p.search("me", "cap", 1000).unwrap().users.len(), MAX_SEARCH);
    assert_eq!(
        p.search("me", "cap", 0).unwrap().users.len(),
        DEFAULT_SEARCH
    );
    assert_eq!(p.search("me", "CAP0", 3).unwrap().users.len(), 3);
    w.stop().await;
}
