//! Contacts over real sockets (issue 14): friend requests reach every device of an
//! offline user by Sync; accept, decline, cancel and remove update both users' lists and
//! devices; blocks refuse direct messages with BLOCKED and hide presence; the
//! `direct_messages = friends` policy; bad input gets its documented error.

use std::time::Duration;

use tern_proto::pb::{self, ContactEventKind as Ev, ContactState as S, ErrorCode, MessageKind};
use tern_proto::{direct_conversation, Body};
use tern_tests::*;

const WAIT: Duration = Duration::from_secs(5);

fn request(user: &str, message: &str) -> Body {
    Body::SendFriendRequest(pb::SendFriendRequest {
        user: user.into(),
        message: message.into(),
    })
}

fn accept(user: &str) -> Body {
    Body::AcceptFriendRequest(pb::AcceptFriendRequest { user: user.into() })
}

fn decline(user: &str) -> Body {
    Body::DeclineFriendRequest(pb::DeclineFriendRequest { user: user.into() })
}

fn cancel(user: &str) -> Body {
    Body::CancelFriendRequest(pb::CancelFriendRequest { user: user.into() })
}

fn remove(user: &str) -> Body {
    Body::RemoveFriend(pb::RemoveFriend { user: user.into() })
}

fn block(user: &str) -> Body {
    Body::BlockUser(pb::BlockUser { user: user.into() })
}

fn unblock(user: &str) -> Body {
    Body::UnblockUser(pb::UnblockUser { user: user.into() })
}

/// The caller's contacts as (user, state, message).
async fn contacts(c: &mut Client) -> Vec<(String, S, String)> {
    let l = expect_body!(
        c.request(Body::ListContacts(pb::ListContacts {})).await,
        ContactList
    );
    l.contacts
        .into_iter()
        .map(|c| (c.user, S::try_from(c.state).unwrap(), c.message))
        .collect()
}

/// The contact event a message carries: (kind, actor, user, message).
fn event(m: &pb::Message) -> (Ev, String, String, String) {
    assert_eq!(m.kind, MessageKind::System as i32, "{m:?}");
    let e = m.contact.clone().expect("a contact event");
    (Ev::try_from(e.kind).unwrap(), e.actor, e.user, e.message)
}

fn ev(kind: Ev, actor: &str, user: &str, message: &str) -> (Ev, String, String, String) {
    (kind, actor.into(), user.into(), message.into())
}

/// The next contact event pushed to `c` that `actor` caused (a user's own changes reach
/// their devices too, the one that made them included).
async fn next_event_by(c: &mut Client, actor: &str) -> (Ev, String, String, String) {
    let m = c
        .next_where(WAIT, |body| match body {
            Body::Push(p) => p
                .message
                .filter(|m| m.contact.as_ref().is_some_and(|e| e.actor == actor)),
            _ => None,
        })
        .await;
    event(&m)
}

async fn ok(c: &mut Client, body: Body) {
    expect_ok(&c.request(body).await);
}

#[tokio::test]
async fn a_request_reaches_every_device_of_an_offline_user_and_accepting_makes_friends() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (ann, bob) = (name("cra", t), name("crb", t));
        let mut reg = server.client(t).await;
        reg.register(&bob).await;
        let mut a = server.user(t, &ann, "phone").await;
        // bob has never been online: the request waits in his inbox.
        ok(&mut a, request(&bob, "hi, it's ann")).await;
        assert_eq!(
            contacts(&mut a).await,
            [(bob.clone(), S::Outgoing, "hi, it's ann".into())]
        );
        let mut b1 = server.client(t).await;
        b1.login(&bob, "phone").await;
        let mut b2 = server.client(t).await;
        b2.login(&bob, "laptop").await;
        for b in [&mut b1, &mut b2] {
            let items = b.sync_all(0, 10).await;
            assert_eq!(items.len(), 1, "{items:?}");
            let m = items[0].message.as_ref().unwrap();
            assert_eq!(m.conversation, direct_conversation(&ann, &bob));
            assert_eq!(event(m), ev(Ev::Requested, &ann, &bob, "hi, it's ann"));
            assert_eq!(
                contacts(b).await,
                [(ann.clone(), S::Incoming, "hi, it's ann".into())]
            );
        }
        // Accepted on one device: the other device and ann hear it live.
        ok(&mut b1, accept(&ann)).await;
        let accepted = ev(Ev::Accepted, &bob, &ann, "");
        assert_eq!(next_event_by(&mut b2, &bob).await, accepted);
        assert_eq!(next_event_by(&mut a, &bob).await, accepted);
        assert_eq!(
            contacts(&mut a).await,
            [(bob.clone(), S::Friend, "".into())]
        );
        assert_eq!(
            contacts(&mut b2).await,
            [(ann.clone(), S::Friend, "".into())]
        );
        // Friends chat in the same conversation.
        ack_of(&a.send_text(&bob, "m1", "hello friend").await);
        assert_eq!(text(&b2.next_message(WAIT).await), "hello friend");
    }
    server.stop().await;
}

#[tokio::test]
async fn decline_cancel_and_remove_update_both_sides() {
    let server = TestServer::start().await;
    let t = Tcp;
    let (ann, bob) = ("cda", "cdb");
    let mut a = server.user(t, ann, "d").await;
    let mut b = server.user(t, bob, "d").await;

    ok(&mut a, request(bob, "")).await;
    assert_eq!(next_event_by(&mut b, ann).await.0, Ev::Requested);
    ok(&mut b, decline(ann)).await;
    assert_eq!(
        next_event_by(&mut a, bob).await,
        ev(Ev::Declined, bob, ann, "")
    );
    assert!(contacts(&mut a).await.is_empty());
    assert!(contacts(&mut b).await.is_empty());

    // Asked again (allowed after a decline), then withdrawn.
    ok(&mut a, request(bob, "again")).await;
    assert_eq!(next_event_by(&mut b, ann).await.3, "again");
    ok(&mut a, cancel(bob)).await;
    assert_eq!(
        next_event_by(&mut b, ann).await,
        ev(Ev::Canceled, ann, bob, "")
    );
    assert!(contacts(&mut b).await.is_empty());
    expect_error(&b.request(accept(ann)).await, ErrorCode::NotFound);

    // Asking back accepts a pending request.
    ok(&mut a, request(bob, "")).await;
    next_event_by(&mut b, ann).await;
    ok(&mut b, request(ann, "")).await;
    assert_eq!(
        next_event_by(&mut a, bob).await,
        ev(Ev::Accepted, bob, ann, "")
    );
    assert_eq!(contacts(&mut b).await, [(ann.into(), S::Friend, "".into())]);

    ok(&mut b, remove(ann)).await;
    assert_eq!(
        next_event_by(&mut a, bob).await,
        ev(Ev::Removed, bob, ann, "")
    );
    assert!(contacts(&mut a).await.is_empty());
    assert!(contacts(&mut b).await.is_empty());
    expect_error(&a.request(remove(bob)).await, ErrorCode::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn bad_contact_requests_get_their_documented_errors() {
    let server = TestServer::start().await;
    let t = Quic;
    let mut a = server.user(t, "cba", "d").await;
    let mut reg = server.client(t).await;
    reg.register("cbb").await;
    let unknown = expect_error(&a.request(request("nosuch", "")).await, ErrorCode::NotFound);
    assert!(unknown.contains("no user nosuch"), "{unknown}");
    expect_error(
        &a.request(request("cba", "")).await,
        ErrorCode::InvalidArgument,
    );
    expect_error(
        &a.request(request("Not A Name", "")).await,
        ErrorCode::InvalidArgument,
    );
    let long = "x".repeat(257);
    expect_error(
        &a.request(request("cbb", &long)).await,
        ErrorCode::InvalidArgument,
    );
    ok(&mut a, request("cbb", "")).await;
    expect_error(
        &a.request(request("cbb", "")).await,
        ErrorCode::InvalidArgument,
    );
    expect_error(&a.request(accept("cbb")).await, ErrorCode::NotFound);
    expect_error(&a.request(decline("cbb")).await, ErrorCode::NotFound);
    expect_error(&a.request(accept("nosuch")).await, ErrorCode::NotFound);
    expect_error(&a.request(cancel("nosuch")).await, ErrorCode::NotFound);
    expect_error(&a.request(remove("cbb")).await, ErrorCode::NotFound);
    expect_error(&a.request(block("cba")).await, ErrorCode::InvalidArgument);
    expect_error(&a.request(block("nosuch")).await, ErrorCode::NotFound);
    expect_error(&a.request(unblock("cbb")).await, ErrorCode::NotFound);
    // Nothing of the refused requests was written.
    assert_eq!(
        contacts(&mut a).await,
        [("cbb".into(), S::Outgoing, "".into())]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_block_refuses_direct_messages_both_ways_and_hides_presence() {
    let server = TestServer::start_with(|c| c.messages.presence_settle_ms = 100).await;
    let t = Tcp;
    let (ann, bob, cat) = ("bka", "bkb", "bkc");
    let mut a = server.user(t, ann, "d").await;
    let mut b = server.user(t, bob, "d").await;
    let mut c = server.user(t, cat, "d").await;
    ok(&mut a, request(bob, "")).await;
    ok(&mut b, accept(ann)).await;
    assert_eq!(next_event_by(&mut a, bob).await.0, Ev::Accepted);
    ack_of(&a.send_text(bob, "m1", "before").await);
    ack_of(&c.send_text(bob, "m1", "hi bob").await);
    let g = c.create_group("g", &[ann, bob]).await;

    ok(&mut b, block(ann)).await;
    // ann sees an ordinary removal, and bob (online all along) going offline.
    let (mut removed, mut offline) = (None, false);
    while removed.is_none() || !offline {
        let got = a
            .next_where(WAIT, |body| match body {
                Body::Push(p) => p
                    .message
                    .filter(|m| m.contact.as_ref().is_some_and(|e| e.actor == bob))
                    .map(Some),
                Body::PresenceEvent(p) if p.user == bob && !p.online => Some(None),
                _ => None,
            })
            .await;
        match got {
            Some(m) => removed = Some(event(&m)),
            None => offline = true,
        }
    }
    assert_eq!(removed.unwrap(), ev(Ev::Removed, bob, ann, ""));
    assert_eq!(
        contacts(&mut b).await,
        [(ann.into(), S::BlockedUser, "".into())]
    );
    assert!(contacts(&mut a).await.is_empty());

    // Direct messages are refused both ways, with the same answer.
    let from_ann = expect_error(&a.send_text(bob, "m2", "hello?").await, ErrorCode::Blocked);
    expect_error(&b.send_text(ann, "m2", "hello?").await, ErrorCode::Blocked);
    let conv = direct_conversation(ann, bob);
    expect_error(&a.send_text(&conv, "m3", "by id").await, ErrorCode::Blocked);
    assert!(!from_ann.contains("online"), "{from_ann}");
    // A friend request from the blocked user gets the answer an unknown user gets.
    let e = expect_error(&a.request(request(bob, "")).await, ErrorCode::NotFound);
    assert_eq!(e, format!("no user {bob}"));
    expect_error(&b.request(request(ann, "")).await, ErrorCode::Forbidden);
    // Group messages still pass.
    ack_of(&a.send_text(&g.conversation, "m4", "in the group").await);

    // Presence: bob is online, but not to ann; cat sees him; bob still sees ann.
    let devices = |f: tern_proto::Frame| {
        expect_body!(f, PresenceResult).users[0]
            .online_devices
            .len()
    };
    assert_eq!(devices(a.presence(&[bob]).await), 0);
    assert_eq!(devices(c.presence(&[bob]).await), 1);
    assert_eq!(devices(b.presence(&[ann]).await), 1);
    let online = |f: tern_proto::Frame| expect_body!(f, GroupOnlineResult).online_members;
    assert_eq!(online(a.group_online(&g.conversation).await), 2, "ann, cat");
    assert_eq!(online(c.group_online(&g.conversation).await), 3);
    // bob goes offline and comes back: cat hears it, ann does not. (What came before is
    // read up to a ping's answer and dropped.) bob's coming online must have settled and
    // been announced first: gone within the settle time of logging in, nothing would be
    // announced at all (this test can reach here in less than the 100 ms settle time).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for x in [&mut a, &mut c] {
        let _ = x.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
        x.pushes().clear();
    }
    b.close().await;
    let presence = |body: Body| match body {
        Body::PresenceEvent(p) if p.user == bob => Some(p.online),
        _ => None,
    };
    assert!(!c.next_where(WAIT, presence).await);
    let mut b = server.client(t).await;
    b.login(bob, "d").await;
    assert!(c.next_where(WAIT, presence).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = a.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
    let heard: Vec<_> = a
        .pushes()
        .drain(..)
        .filter_map(|f| f.body.and_then(presence))
        .collect();
    assert!(heard.is_empty(), "{heard:?}");

    // Unblocked: messages pass again (they are no longer friends).
    ok(&mut b, unblock(ann)).await;
    // ann sees bob online again at once.
    assert!(a.next_where(WAIT, presence).await);
    assert!(contacts(&mut b).await.is_empty());
    ack_of(&a.send_text(bob, "m5", "hello again").await);
    assert_eq!(devices(a.presence(&[bob]).await), 1);
    server.stop().await;
}

#[tokio::test]
async fn friends_only_policy_refuses_direct_messages_to_non_friends() {
    let server = TestServer::start_with(|c| c.messages.direct_messages = "friends".into()).await;
    let t = Quic;
    let mut a = server.user(t, "fpa", "d").await;
    let mut b = server.user(t, "fpb", "d").await;
    let e = expect_error(&a.send_text("fpb", "m1", "hi").await, ErrorCode::Forbidden);
    assert!(e.contains("friends"), "{e}");
    ok(&mut a, request("fpb", "may I?")).await;
    // A pending request is not a friendship.
    expect_error(&a.send_text("fpb", "m2", "hi").await, ErrorCode::Forbidden);
    ok(&mut b, accept("fpa")).await;
    ack_of(&a.send_text("fpb", "m3", "hi").await);
    ack_of(&b.send_text("fpa", "m4", "hi back").await);
    ok(&mut a, remove("fpb")).await;
    expect_error(&b.send_text("fpa", "m5", "?").await, ErrorCode::Forbidden);
    server.stop().await;
}
