//! Profiles and user search over real sockets (issue 14): SetProfile / GetProfiles, the
//! ProfileChanged push to the user's other devices, a 1:1 peer and a group member but
//! not to a stranger; SearchUsers by user name and display-name prefix, its bounds and
//! its per-user rate limit; bad input refused with INVALID_ARGUMENT.

use std::time::Duration;

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};
use tern_tests::*;

const WAIT: Duration = Duration::from_secs(5);

fn set(name: Option<&str>, status: Option<&str>) -> Body {
    Body::SetProfile(pb::SetProfile {
        display_name: name.map(str::to_string),
        status: status.map(str::to_string),
        avatar: None,
    })
}

fn get(users: &[&str]) -> Body {
    Body::GetProfiles(pb::GetProfiles {
        users: users.iter().map(|u| u.to_string()).collect(),
    })
}

fn search(prefix: &str, limit: u32) -> Body {
    Body::SearchUsers(pb::SearchUsers {
        prefix: prefix.into(),
        limit,
    })
}

fn found(f: &Frame) -> Vec<(String, String)> {
    expect_body!(f, UserSearchResult)
        .users
        .into_iter()
        .map(|u| (u.user, u.display_name))
        .collect()
}

async fn changed(c: &mut Client) -> pb::Profile {
    c.next_where(WAIT, |b| match b {
        Body::ProfileChanged(p) => p.profile,
        _ => None,
    })
    .await
}

/// No ProfileChanged reaches `c` within a short wait.
async fn none_changed(c: &mut Client) {
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match c.next_unsolicited(left).await {
            None => return,
            Some(Frame {
                body: Some(Body::ProfileChanged(p)),
                ..
            }) => panic!("a stranger was told of a profile change: {p:?}"),
            Some(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_profile_is_set_read_and_pushed_to_devices_peers_and_members_only() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (ann, bob, cat, dan) = (name("pa", t), name("pb", t), name("pc", t), name("pd", t));
        let mut a1 = server.user(t, &ann, "d1").await;
        let mut a2 = server.client(t).await;
        a2.login(&ann, "d2").await;
        let mut b = server.user(t, &bob, "d").await;
        let mut c = server.user(t, &cat, "d").await;
        let mut d = server.user(t, &dan, "d").await;
        ack_of(&a1.send_text(&bob, "m1", "hi").await);
        a1.create_group("g", &[&cat]).await;

        let f = a1
            .request(set(Some("  Ann Example "), Some("at lunch")))
            .await;
        let mine = expect_body!(f, ProfileList).profiles;
        assert_eq!(mine.len(), 1);
        let p = &mine[0];
        assert_eq!(
            (p.user.as_str(), p.display_name.as_str(), p.status.as_str()),
            (ann.as_str(), "Ann Example", "at lunch")
        );
        assert_eq!(p.avatar, "", "no avatars before blobs");
        assert!(p.updated_ms > 0);

        for who in [&mut a2, &mut b, &mut c] {
            let got = changed(who).await;
            assert_eq!(&got, p);
        }
        none_changed(&mut d).await;

        // Only the status: the name is kept. Everyone reads the same.
        let f = a2.request(set(None, Some(""))).await;
        assert_eq!(
            expect_body!(f, ProfileList).profiles[0].display_name,
            "Ann Example"
        );
        assert_eq!(changed(&mut b).await.status, "");

        let f = d.request(get(&[&ann, &bob, "ghost", &ann])).await;
        let list = expect_body!(f, ProfileList).profiles;
        let got: Vec<_> = list
            .iter()
            .map(|p| (p.user.as_str(), p.display_name.as_str(), p.status.as_str()))
            .collect();
        assert_eq!(
            got,
            [(ann.as_str(), "Ann Example", ""), (bob.as_str(), "", "")],
            "unknown users are left out, each user once"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn users_are_found_by_name_or_display_name_prefix_bounded() {
    let server = TestServer::start().await;
    let t = Transport::Tcp;
    let mut alice = server.user(t, "alice", "d").await;
    let _albert = server.user(t, "albert", "d").await;
    let mut zed = server.user(t, "zed", "d").await;
    let mut carol = server.user(t, "carol", "d").await;
    expect_body!(
        zed.request(set(Some("ALbatross Zed"), None)).await,
        ProfileList
    );
    expect_body!(
        alice.request(set(Some("Alice A."), None)).await,
        ProfileList
    );

    // User names, and display names case-insensitively; in user name order.
    let all = vec![
        ("albert".to_string(), String::new()),
        ("alice".to_string(), "Alice A.".to_string()),
        ("zed".to_string(), "ALbatross Zed".to_string()),
    ];
    assert_eq!(found(&carol.request(search("al", 0)).await), all);
    assert_eq!(found(&carol.request(search("AL", 0)).await), all);
    assert_eq!(
        found(&carol.request(search("albat", 0)).await),
        [("zed".to_string(), "ALbatross Zed".to_string())]
    );
    assert_eq!(found(&carol.request(search("al", 2)).await).len(), 2);
    assert!(found(&carol.request(search("nobody", 0)).await).is_empty());

    // A renamed user is found by the new name only.
    expect_body!(zed.request(set(Some("Zorro"), None)).await, ProfileList);
    assert_eq!(found(&carol.request(search("albat", 0)).await), []);
    assert_eq!(found(&carol.request(search("zor", 0)).await).len(), 1);

    // Too short a prefix, or none, never lists the user base.
    for p in ["", "a", " a ", "é"] {
        expect_error(
            &alice.request(search(p, 50)).await,
            ErrorCode::InvalidArgument,
        );
    }
    expect_error(
        &alice.request(search("a\u{7}", 50)).await,
        ErrorCode::InvalidArgument,
    );
    server.stop().await;
}

#[tokio::test]
async fn searching_is_rate_limited_per_user_with_a_retry_hint() {
    let server = TestServer::start().await;
    let t = Transport::Tcp;
    let mut a = server.user(t, "ra", "d").await;
    let mut b = server.user(t, "rb", "d").await;
    let mut limited = None;
    for i in 0..20 {
        let f = a.request(search("ra", 0)).await;
        if let Some(Body::Error(e)) = &f.body {
            limited = Some((i, e.clone()));
            break;
        }
        assert_eq!(found(&f).len(), 1);
    }
    let (at, e) = limited.expect("20 searches in a burst are refused at some point");
    assert!((5..=15).contains(&at), "refused after {at} searches");
    assert_eq!(e.code, ErrorCode::RateLimited as i32, "{e:?}");
    assert!(e.retry_after_ms > 0, "{e:?}");
    // Other requests and other users are not held back.
    expect_body!(a.request(get(&["rb"])).await, ProfileList);
    assert_eq!(found(&b.request(search("ra", 0)).await).len(), 1);
    // After the wait it answers again.
    tokio::time::sleep(Duration::from_millis(e.retry_after_ms + 50)).await;
    assert_eq!(found(&a.request(search("ra", 0)).await).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_profile_input_is_invalid_argument() {
    let server = TestServer::start().await;
    let t = Transport::Tcp;
    let mut a = server.user(t, "bada", "d").await;
    let long_name = "n".repeat(65);
    let long_status = "s".repeat(257);
    for body in [
        set(Some("two\nlines"), None),
        set(Some("tab\there"), None),
        set(Some(&long_name), None),
        set(None, Some(&long_status)),
        set(None, Some("bell\u{7}")),
    ] {
        expect_error(&a.request(body).await, ErrorCode::InvalidArgument);
    }
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    expect_error(&a.request(get(&many)).await, ErrorCode::InvalidArgument);
    expect_error(
        &a.request(get(&["Not A Name"])).await,
        ErrorCode::InvalidArgument,
    );
    // Nothing was stored by the refused requests; 100 names are fine.
    let f = a.request(get(&many[..100])).await;
    assert!(expect_body!(f, ProfileList).profiles.is_empty());
    let f = a.request(get(&["bada"])).await;
    let p = &expect_body!(f, ProfileList).profiles[0];
    assert_eq!((p.display_name.as_str(), p.status.as_str()), ("", ""));
    server.stop().await;
}
