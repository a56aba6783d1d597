//! Delivery promises over real QUIC and real TLS-TCP: durable ack, push, sync, dedup,
//! ordering, groups, authorization, sessions.

use std::time::Duration;

use tern_proto::pb::{self, CloseReason, ErrorCode};
use tern_proto::Body;
use tern_tests::*;

const SHORT: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(5);

#[tokio::test]
async fn send_is_acked_then_pushed_then_acked() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (a, b) = (name("alice", t), name("bob", t));
        let mut alice = server.user(t, &a, "phone").await;
        let mut bob = server.user(t, &b, "phone").await;

        let ack = ack_of(&alice.send_text(&b, "m-1", "hello bob").await);
        assert_eq!(ack.conversation, tern_proto::direct_conversation(&a, &b));
        assert_eq!(ack.seq, 1);
        assert!(!ack.duplicate);
        assert_eq!(
            ack.inbox_seq, 1,
            "the sender's own inbox gets the message too"
        );

        let push = bob.next_push(LONG).await.expect("bob gets the push");
        let m = push.message.unwrap();
        assert_eq!(
            (m.seq, m.sender.as_str(), text(&m).as_str()),
            (1, a.as_str(), "hello bob")
        );
        assert_eq!(m.client_msg_id, "m-1");
        assert_eq!(push.inbox_seq, 1);
        // The sending device sees its own message as a push as well (multi-device sync).
        let own = alice.next_push(LONG).await.expect("sender's push");
        assert_eq!(own.message.unwrap().client_msg_id, "m-1");

        expect_ok(&bob.ack(1).await);
        // The ack is the device's server-side cursor: a Sync from it finds nothing new.
        let page = bob.sync_page(None, 0).await;
        assert_eq!(
            (page.from_inbox_seq, page.items.len(), page.complete),
            (1, 0, true)
        );
        // Acks past the head are refused.
        expect_error(&bob.ack(99).await, ErrorCode::InvalidArgument);
    }
    server.stop().await;
}

#[tokio::test]
async fn offline_recipient_syncs_exactly_the_missed_messages_in_order() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (a, b) = (name("al", t), name("bo", t));
        let mut alice = server.user(t, &a, "phone").await;
        let mut reg = server.client(t).await;
        reg.register(&b).await;
        reg.close().await;

        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(
                alice
                    .send_text_nowait(&b, &format!("c{i}"), &format!("msg {i}"))
                    .await,
            );
        }
        for (i, id) in ids.into_iter().enumerate() {
            assert_eq!(ack_of(&alice.response(id).await).seq, i as u64 + 1);
        }

        let mut bob = server.client(t).await;
        let ok = bob.login(&b, "laptop").await;
        assert_eq!((ok.inbox_head, ok.acked_inbox_seq), (30, 0));
        assert!(!ok.store_epoch.is_empty());
        let items = bob.sync_all(0, 7).await;
        let got: Vec<(u64, u64, String)> = items
            .iter()
            .map(|i| {
                let m = i.message.as_ref().unwrap();
                (i.inbox_seq, m.seq, text(m))
            })
            .collect();
        let want: Vec<(u64, u64, String)> = (0..30)
            .map(|i| (i + 1, i + 1, format!("msg {i}")))
            .collect();
        assert_eq!(got, want);
        assert!(
            bob.next_push(SHORT).await.is_none(),
            "no push for old messages"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn resend_with_same_client_msg_id_returns_original_ack_and_delivers_once() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (a, b) = (name("ann", t), name("ben", t));
        let mut alice = server.user(t, &a, "phone").await;
        let mut bob = server.user(t, &b, "phone").await;
        let first = ack_of(&alice.send_text(&b, "same", "once").await);
        let again = ack_of(&alice.send_text(&b, "same", "once").await);
        assert!(again.duplicate && !first.duplicate);
        assert_eq!(
            (again.seq, again.server_time_ms, again.inbox_seq),
            (first.seq, first.server_time_ms, first.inbox_seq)
        );
        // Even from another device of the same user, in a fresh session.
        let mut alice2 = server.client(t).await;
        alice2.login(&a, "tablet").await;
        assert!(ack_of(&alice2.send_text(&b, "same", "once").await).duplicate);

        assert_eq!(bob.next_message(LONG).await.seq, 1);
        assert!(
            bob.next_push(SHORT).await.is_none(),
            "a retry must not be delivered again"
        );
        let conv = first.conversation.clone();
        let r = expect_pull(&bob.pull(&conv, 0, 0).await);
        assert_eq!(r.messages.len(), 1);
        assert_eq!((r.last_seq, r.complete), (1, true));
    }
    server.stop().await;
}

#[tokio::test]
async fn group_members_see_the_same_order_with_concurrent_senders() {
    let server = TestServer::start().await;
    for t in BOTH {
        let names: Vec<String> = (0..4).map(|i| name(&format!("g{i}"), t)).collect();
        let mut clients = Vec::new();
        for n in &names {
            clients.push(server.user(t, n, "d").await);
        }
        let others: Vec<&str> = names[1..].iter().map(|s| s.as_str()).collect();
        let g = clients[0].create_group("team", &others).await;
        assert_eq!(g.seq, 1, "the CREATED event is seq 1");
        const PER: usize = 25;
        let mut tasks = Vec::new();
        for (i, mut c) in clients.into_iter().enumerate() {
            let conv = g.conversation.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for k in 0..PER {
                    ids.push(
                        c.send_text_nowait(&conv, &format!("s{i}-{k}"), &format!("{i}:{k}"))
                            .await,
                    );
                }
                let mut acked = Vec::new();
                for id in ids {
                    acked.push(ack_of(&c.response(id).await).seq);
                }
                // Pipelined sends from one session keep their order.
                assert!(
                    acked.windows(2).all(|w| w[0] < w[1]),
                    "acks out of order: {acked:?}"
                );
                let mut seen = Vec::new();
                while seen.len() < 1 + 4 * PER {
                    let p = c.next_push(LONG).await.expect("push");
                    let m = p.message.unwrap();
                    seen.push((m.seq, p.inbox_seq, m.client_msg_id));
                }
                (seen, c)
            }));
        }
        let mut logs = Vec::new();
        for task in tasks {
            let (seen, c) = task.await.unwrap();
            let seqs: Vec<u64> = seen.iter().map(|s| s.0).collect();
            assert_eq!(
                seqs,
                (1..=(1 + 4 * PER) as u64).collect::<Vec<_>>(),
                "contiguous, in order"
            );
            let inbox: Vec<u64> = seen.iter().map(|s| s.1).collect();
            assert!(
                inbox.windows(2).all(|w| w[1] == w[0] + 1),
                "inbox seqs contiguous"
            );
            logs.push(seen.into_iter().map(|s| (s.0, s.2)).collect::<Vec<_>>());
            c.close().await;
        }
        assert!(
            logs.windows(2).all(|w| w[0] == w[1]),
            "every member sees the same order"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn non_members_are_refused() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (a, b, c) = (name("xa", t), name("xb", t), name("xc", t));
        let mut alice = server.user(t, &a, "d").await;
        let _bob = server.user(t, &b, "d").await;
        let mut carol = server.user(t, &c, "d").await;
        let g = alice.create_group("private", &[b.as_str()]).await;
        let direct = ack_of(&alice.send_text(&b, "x1", "secret").await).conversation;

        expect_error(
            &carol.send_text(&g.conversation, "c1", "let me in").await,
            ErrorCode::Forbidden,
        );
        expect_error(
            &carol.send_text(&direct, "c2", "hi").await,
            ErrorCode::Forbidden,
        );
        expect_error(
            &carol.pull(&g.conversation, 0, 0).await,
            ErrorCode::Forbidden,
        );
        expect_error(&carol.pull(&direct, 0, 0).await, ErrorCode::Forbidden);
        let members = carol.list_members(&g.conversation).await;
        expect_error(&members, ErrorCode::Forbidden);
        let online = carol.group_online(&g.conversation).await;
        expect_error(&online, ErrorCode::Forbidden);
        let add = carol
            .request(Body::AddMembers(pb::AddMembers {
                conversation: g.conversation.clone(),
                users: vec![c.clone()],
                role: 0,
            }))
            .await;
        expect_error(&add, ErrorCode::Forbidden);
        // A group that does not exist looks the same as one you are not in.
        expect_error(
            &carol.send_text("g:00000000000000ff", "c3", "?").await,
            ErrorCode::Forbidden,
        );
        // An unknown peer is NOT_FOUND.
        expect_error(
            &carol.send_text("nobody-here", "c4", "?").await,
            ErrorCode::NotFound,
        );
        // Nothing carol tried was stored.
        assert_eq!(
            expect_pull(&alice.pull(&g.conversation, 0, 0).await).last_seq,
            1
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn group_management_roles_and_removal() {
    let server = TestServer::start().await;
    let t = Tcp;
    let mut owner = server.user(t, "owner", "d").await;
    let mut adm = server.user(t, "adm", "d").await;
    let mut m1 = server.user(t, "m1", "d").await;
    let mut late = server.user(t, "late", "d").await;
    let g = owner.create_group("club", &["m1"]).await;
    let conv = g.conversation.clone();
    let add = |users: &[&str], role: pb::Role| {
        Body::AddMembers(pb::AddMembers {
            conversation: conv.clone(),
            users: users.iter().map(|s| s.to_string()).collect(),
            role: role as i32,
        })
    };
    expect_ok(&owner.request(add(&["adm"], pb::Role::Admin)).await);
    // Adding someone already in the group changes nothing.
    expect_ok(&owner.request(add(&["m1"], pb::Role::Member)).await);
    // A plain member may not add; an admin may not make admins.
    expect_error(
        &m1.request(add(&["late"], pb::Role::Member)).await,
        ErrorCode::Forbidden,
    );
    expect_error(
        &adm.request(add(&["late"], pb::Role::Admin)).await,
        ErrorCode::Forbidden,
    );
    expect_error(
        &owner.request(add(&["ghost"], pb::Role::Member)).await,
        ErrorCode::NotFound,
    );
    expect_ok(&adm.request(add(&["late"], pb::Role::Member)).await);

    // The new member gets the MEMBERS_ADDED event and can read history and send.
    let p = late.next_message(LONG).await;
    assert_eq!(p.kind, pb::MessageKind::System as i32);
    assert_eq!(p.event.as_ref().unwrap().users, vec!["late"]);
    assert_eq!(p.seq, 3);
    assert_eq!(ack_of(&late.send_text(&conv, "l1", "hi all").await).seq, 4);

    let members = expect_body!(owner.list_members(&conv).await, MemberList).members;
    let roles: Vec<(String, i32)> = members.into_iter().map(|m| (m.username, m.role)).collect();
    assert_eq!(
        roles,
        vec![
            ("adm".into(), pb::Role::Admin as i32),
            ("late".into(), pb::Role::Member as i32),
            ("m1".into(), pb::Role::Member as i32),
            ("owner".into(), pb::Role::Owner as i32),
        ]
    );

    // Removal takes effect at once on a live session.
    let rm = |u: &str| {
        Body::RemoveMembers(pb::RemoveMembers {
            conversation: conv.clone(),
            users: vec![u.into()],
        })
    };
    expect_error(&m1.request(rm("late")).await, ErrorCode::Forbidden);
    expect_ok(&owner.request(rm("late")).await);
    expect_error(
        &late.send_text(&conv, "l2", "still here?").await,
        ErrorCode::Forbidden,
    );
    expect_error(&late.pull(&conv, 0, 0).await, ErrorCode::Forbidden);
    expect_error(
        &owner.request(rm("owner")).await,
        ErrorCode::InvalidArgument,
    );

    // The owner leaves: ownership passes on, the group lives on.
    let leave = owner
        .request(Body::LeaveGroup(pb::LeaveGroup {
            conversation: conv.clone(),
        }))
        .await;
    expect_ok(&leave);
    let list = expect_body!(
        m1.request(Body::ListConversations(pb::ListConversations::default()))
            .await,
        ConversationList
    )
    .conversations;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].member_count), ("club", 2));
    let members = expect_body!(adm.list_members(&conv).await, MemberList).members;
    let owner_now: Vec<&str> = members
        .iter()
        .filter(|m| m.role == pb::Role::Owner as i32)
        .map(|m| m.username.as_str())
        .collect();
    assert_eq!(
        owner_now,
        vec!["adm"],
        "ownership passes to the first admin"
    );
    server.stop().await;
}

#[tokio::test]
async fn read_diffusion_groups_push_and_pull_without_inbox_copies() {
    let server = TestServer::start_with(|c| c.groups.group_fanout_threshold = 2).await;
    let t = Quic;
    let mut a = server.user(t, "ra", "d").await;
    let mut b = server.user(t, "rb", "d").await;
    let _c = server.user(t, "rc", "d").await;
    let g = a.create_group("big", &["rb", "rc"]).await;
    let ack = ack_of(&a.send_text(&g.conversation, "r1", "to many").await);
    assert_eq!((ack.seq, ack.inbox_seq), (2, 0));
    let mut got = Vec::new();
    while got.len() < 2 {
        let p = b.next_push(LONG).await.unwrap();
        assert_eq!(p.inbox_seq, 0, "no inbox copy in read diffusion");
        got.push(p.message.unwrap().seq);
    }
    assert_eq!(got, vec![1, 2]);
    let page = b.sync_page(Some(0), 0).await;
    assert!(page.items.is_empty() && page.complete);
    assert_eq!(
        page.read_diffusion,
        vec![pb::ConversationHead {
            conversation: g.conversation.clone(),
            last_seq: 2
        }]
    );
    let r = expect_pull(&b.pull(&g.conversation, 0, 0).await);
    assert_eq!(
        r.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    server.stop().await;
}

#[tokio::test]
async fn history_pages_backward_and_forward() {
    let server = TestServer::start().await;
    let t = Tcp;
    let mut a = server.user(t, "ha", "d").await;
    let _b = server.user(t, "hb", "d").await;
    let mut conv = String::new();
    for i in 1..=25 {
        conv = ack_of(&a.send_text("hb", &format!("h{i}"), &format!("{i}")).await).conversation;
    }
    // Newest first paging: before 26 limit 10 -> 16..=25, then 6..=15, then 1..=5.
    let mut before = 26;
    let mut pages = Vec::new();
    loop {
        let f = a
            .request(Body::Pull(pb::Pull {
                conversation: conv.clone(),
                before_seq: before,
                limit: 10,
                ..Default::default()
            }))
            .await;
        let r = expect_pull(&f);
        pages.push((r.from_seq, r.to_seq, r.messages.len()));
        if r.from_seq <= 1 {
            assert!(r.complete);
            break;
        }
        before = r.from_seq;
    }
    assert_eq!(pages, vec![(16, 25, 10), (6, 15, 10), (1, 5, 5)]);
    // Any position past the end asks for the newest page.
    let f = a
        .request(Body::Pull(pb::Pull {
            conversation: conv.clone(),
            before_seq: u64::MAX,
            limit: 10,
            ..Default::default()
        }))
        .await;
    let r = expect_pull(&f);
    assert_eq!((r.from_seq, r.to_seq, r.complete), (16, 25, true));
    // Gap repair: exactly the range asked for.
    let f = a
        .request(Body::Pull(pb::Pull {
            conversation: conv.clone(),
            after_seq: 10,
            until_seq: 13,
            ..Default::default()
        }))
        .await;
    let r = expect_pull(&f);
    assert_eq!(
        (r.from_seq, r.to_seq, r.complete, r.last_seq),
        (11, 13, true, 25)
    );
    // A forward page that stops early says so.
    let r = expect_pull(&a.pull(&conv, 0, 10).await);
    assert_eq!((r.from_seq, r.to_seq, r.complete), (1, 10, false));
    server.stop().await;
}

#[tokio::test]
async fn multi_device_second_login_replaces_same_device() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (a, b) = (name("md", t), name("mdp", t));
        let mut phone = server.user(t, &a, "phone").await;
        let mut laptop = server.client(t).await;
        laptop.login(&a, "laptop").await;
        let mut peer = server.user(t, &b, "d").await;
        // A message sent from the phone reaches the laptop too.
        ack_of(&phone.send_text(&b, "p1", "from phone").await);
        assert_eq!(laptop.next_message(LONG).await.client_msg_id, "p1");
        assert_eq!(peer.next_message(LONG).await.client_msg_id, "p1");
        let p = expect_body!(peer.presence(&[a.as_str()]).await, PresenceResult);
        assert_eq!(p.users[0].online_devices, vec!["laptop", "phone"]);

        // The phone logs in again elsewhere: the old session is told why and closed.
        let mut phone2 = server.client(t).await;
        phone2.login(&a, "phone").await;
        phone.expect_closed(LONG, CloseReason::Replaced).await;
        // Only the new session gets pushes for the phone.
        ack_of(&peer.send_text(&a, "p2", "to you").await);
        assert_eq!(phone2.next_message(LONG).await.client_msg_id, "p2");
    }
    server.stop().await;
}

#[tokio::test]
async fn tokens_resume_logout_and_revoke() {
    let server = TestServer::start().await;
    for t in BOTH {
        let a = name("tok", t);
        let mut c = server.user(t, &a, "phone").await;
        let token = c.login.clone().unwrap().token;
        let mut r = server.client(t).await;
        let ok = expect_body!(r.resume(&token).await, LoginOk);
        assert_eq!(
            (ok.username.as_str(), ok.device.as_str()),
            (a.as_str(), "phone")
        );
        c.expect_closed(LONG, CloseReason::Replaced).await;

        // Logout revokes this device's tokens.
        let f = r.request(Body::Logout(pb::Logout {})).await;
        expect_ok(&f);
        r.expect_closed(LONG, CloseReason::LoggedOut).await;
        let mut again = server.client(t).await;
        expect_error(&again.resume(&token).await, ErrorCode::TokenRevoked);
        expect_error(&again.resume(&ok.token).await, ErrorCode::TokenRevoked);
        expect_error(&again.resume("not-a-token").await, ErrorCode::InvalidToken);

        // Revoke all: every device is logged out, live sessions are closed.
        let mut laptop = server.client(t).await;
        let lt = laptop.login(&a, "laptop").await.token;
        let mut tablet = server.client(t).await;
        tablet.login(&a, "tablet").await;
        let f = tablet
            .request(Body::Revoke(pb::Revoke {
                device: String::new(),
            }))
            .await;
        expect_ok(&f);
        laptop.expect_closed(LONG, CloseReason::Revoked).await;
        tablet.expect_closed(LONG, CloseReason::Revoked).await;
        expect_error(&again.resume(&lt).await, ErrorCode::TokenRevoked);
        // Logging in with the password still works.
        again.login(&a, "laptop").await;

        // Wrong password and unknown user look the same.
        let mut x = server.client(t).await;
        let bad = x
            .request(Body::Login(pb::Login {
                protocol_version: 1,
                username: a.clone(),
                password: "wrong password".into(),
                device: "d".into(),
            }))
            .await;
        expect_error(&bad, ErrorCode::InvalidCredentials);
        let bad = x
            .request(Body::Login(pb::Login {
                protocol_version: 1,
                username: "nobody".into(),
                password: PASSWORD.into(),
                device: "d".into(),
            }))
            .await;
        expect_error(&bad, ErrorCode::InvalidCredentials);
        let dup = x
            .request(Body::Register(pb::Register {
                protocol_version: 1,
                username: a.clone(),
                password: PASSWORD.into(),
            }))
            .await;
        expect_error(&dup, ErrorCode::UserExists);
    }
    server.stop().await;
}

#[tokio::test]
async fn heartbeat_and_auth_timeouts_close_with_a_reason() {
    let server = TestServer::start_with(|c| {
        c.session.heartbeat_secs = 1;
        c.session.auth_timeout_secs = 1;
    })
    .await;
    for t in BOTH {
        let mut silent = server.client(t).await;
        // A ping keeps nothing alive before login: the auth deadline still applies.
        expect_body!(
            silent
                .request(Body::Ping(pb::Ping { client_time_ms: 5 }))
                .await,
            Pong
        );
        silent.expect_closed(LONG, CloseReason::AuthTimeout).await;

        let mut c = server.user(t, &name("hb", t), "d").await;
        assert_eq!(c.login.as_ref().unwrap().heartbeat_secs, 1);
        // Pinging keeps the session alive past 3 heartbeats...
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            expect_body!(c.request(Body::Ping(pb::Ping::default())).await, Pong);
        }
        // ...and silence ends it.
        c.expect_closed(LONG, CloseReason::HeartbeatTimeout).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn group_online_count_and_presence() {
    let server = TestServer::start().await;
    let t = Quic;
    let mut a = server.user(t, "pa", "d").await;
    let b = server.user(t, "pb", "d").await;
    let mut reg = server.client(t).await;
    reg.register("pc").await;
    let g = a.create_group("p", &["pb", "pc"]).await;
    let r = expect_body!(a.group_online(&g.conversation).await, GroupOnlineResult);
    assert_eq!((r.members, r.online_members), (3, 2));
    b.close().await;
    // Going offline shows within a moment.
    let mut offline = false;
    for _ in 0..50 {
        let p = expect_body!(a.presence(&["pb"]).await, PresenceResult);
        if p.users[0].online_devices.is_empty() {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(offline, "pb still online after closing");
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_and_keeps_acked_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let cfg = {
        let data = data.clone();
        move |c: &mut tern_server::Config| c.store.data_dir = data.clone()
    };
    let server = TestServer::start_with(cfg.clone()).await;
    let mut a = server.user(Tcp, "sa", "d").await;
    let mut b = server.user(Quic, "sb", "d").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(a.send_text_nowait("sb", &format!("s{i}"), "x").await);
    }
    // Stop while sends may still be in flight: every send the server took in is acked
    // before the Closing; sends it never read get no answer (the client resends them).
    let stop = tokio::spawn(server.stop());
    a.expect_closed(LONG, CloseReason::Shutdown).await;
    b.expect_closed(LONG, CloseReason::Shutdown).await;
    let mut acked = 0;
    let mut answered = true;
    for id in ids {
        match a.try_response(id) {
            Some(f) => {
                assert!(answered, "answers stop at one point; none after a gap");
                ack_of(&f);
                acked += 1;
            }
            None => answered = false,
        }
    }
    stop.await.unwrap();

    let server = TestServer::start_with(cfg).await;
    let mut b = server.client(Tcp).await;
    b.login("sb", "d").await;
    let items = b.sync_all(0, 0).await;
    assert_eq!(
        items.len(),
        acked,
        "every acked message is there after a restart"
    );
    server.stop().await;
}

#[tokio::test]
async fn big_messages_fit_in_frames_and_pages_shrink_to_fit() {
    use prost::Message as _;
    let server = TestServer::start_with(|c| c.session.max_frame_bytes = 16 * 1024).await;
    let t = Tcp;
    let mut a = server.user(t, "big-a", "d").await;
    let mut b = server.user(t, "big-b", "d").await;
    let too_big = "x".repeat(16 * 1024 - 4096 + 1);
    expect_error(
        &a.send_text("big-b", "too-big", &too_big).await,
        ErrorCode::InvalidArgument,
    );
    let body = "y".repeat(12_000);
    for i in 0..5 {
        ack_of(&a.send_text("big-b", &format!("big{i}"), &body).await);
    }
    let mut cursor = 0;
    let mut pages = 0;
    loop {
        let page = b.sync_page(Some(cursor), 100).await;
        let frame_len = tern_proto::Frame {
            req_id: 1,
            body: Some(Body::SyncResult(page.clone())),
        }
        .encoded_len();
        assert!(
            frame_len <= 16 * 1024,
            "a page of {frame_len} bytes is over the frame limit"
        );
        assert!(!page.items.is_empty() || page.complete);
        cursor = page.to_inbox_seq;
        pages += 1;
        if page.complete {
            break;
        }
    }
    assert_eq!((cursor, pages), (5, 5), "one 12 kB message per 16 kB page");
    let conv = tern_proto::direct_conversation("big-a", "big-b");
    let r = expect_pull(&b.pull(&conv, 0, 100).await);
    assert_eq!((r.from_seq, r.to_seq, r.complete), (1, 1, false));
    server.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_not_waited_for_and_loses_nothing() {
    let server = TestServer::start_with(|c| c.session.outbound_queue = 64).await;
    slow_consumer_loses_nothing(&server, "").await;
    server.stop().await;
}

/// The byte bound alone: far more frames allowed than are ever pushed, but 1 MiB of
/// queued 64 KiB messages is the limit, so the session still goes instead of buffering
/// the ~19 MB. (The sender, which reads, keeps well under it: at most 10 sends and
/// their own pushes are in flight.)
#[tokio::test]
async fn a_slow_consumer_is_disconnected_by_the_byte_limit_too() {
    let server = TestServer::start_with(|c| {
        c.session.outbound_queue = 100_000;
        c.session.outbound_queue_bytes = 1 << 20;
    })
    .await;
    slow_consumer_loses_nothing(&server, "b").await;
    server.stop().await;
}

async fn slow_consumer_loses_nothing(server: &TestServer, tag: &str) {
    for t in BOTH {
        let (a, s) = (
            name(&format!("fast{tag}"), t),
            name(&format!("slow{tag}"), t),
        );
        let mut sender = server.user(t, &a, "d").await;
        let slow = server.user(t, &s, "d").await;
        let token = slow.login.clone().unwrap().token;
        // The slow device never reads while ~19 MB are pushed to it.
        let body = "z".repeat(64 * 1024);
        // The sender (which reads its own acks and pushes) is never held up by the slow
        // reader: every send is acked.
        for batch in 0..30 {
            let mut ids = Vec::new();
            for i in 0..10 {
                ids.push(
                    sender
                        .send_text_nowait(&s, &format!("f{batch}-{i}"), &body)
                        .await,
                );
            }
            for id in ids {
                ack_of(&sender.response(id).await);
            }
            sender.pushes().clear();
        }
        // The server gave up on the slow session instead of buffering without bound.
        let mut gone = false;
        for _ in 0..100 {
            let p = expect_body!(sender.presence(&[s.as_str()]).await, PresenceResult);
            if p.users[0].online_devices.is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "slow session still registered");
        drop(slow);
        // It resumes and syncs: nothing was lost.
        let mut back = server.client(t).await;
        let f = back.resume(&token).await;
        expect_body!(f, LoginOk);
        let items = back.sync_all(0, 0).await;
        assert_eq!(items.len(), 300);
        assert!(items
            .iter()
            .enumerate()
            .all(|(i, it)| it.message.as_ref().unwrap().seq == i as u64 + 1));
    }
}
