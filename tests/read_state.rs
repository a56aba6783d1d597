//! Read state over real sockets (issue 13): the server's unread counts, MarkRead from one
//! device clearing the badge on the user's other device at once (a ReadReceipt push), the
//! peer's read receipt, and read positions that survive kill -9 of the server.

use std::time::Duration;

use tern_proto::pb;
use tern_proto::{direct_conversation, Body};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");
const WAIT: Duration = Duration::from_secs(5);

async fn list(c: &mut Client) -> pb::ConversationList {
    expect_body!(
        c.request(Body::ListConversations(pb::ListConversations::default()))
            .await,
        ConversationList
    )
}

async fn mark_read(c: &mut Client, conv: &str, seq: u64) -> pb::ReadState {
    expect_body!(
        c.request(Body::MarkRead(pb::MarkRead {
            conversation: conv.into(),
            seq,
        }))
        .await,
        ReadState
    )
}

/// The next ReadReceipt push, skipping message pushes.
async fn next_receipt(c: &mut Client) -> pb::ReadReceipt {
    c.next_where(WAIT, |b| match b {
        Body::ReadReceipt(r) => Some(r),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_read_on_one_device_clears_the_badge_on_the_other_and_the_peer_sees_a_receipt() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (ann, bob) = (name("ann", t), name("bob", t));
        let mut a = server.user(t, &ann, "phone").await;
        let mut phone = server.user(t, &bob, "phone").await;
        let mut laptop = server.client(t).await;
        laptop.login(&bob, "laptop").await;
        for i in 1..=3 {
            ack_of(
                &a.send_text(&bob, &format!("m{i}"), &format!("hello {i}"))
                    .await,
            );
        }
        let conv = direct_conversation(&ann, &bob);

        let l = list(&mut laptop).await;
        assert_eq!((l.total, l.total_unread), (1, 3));
        let c = &l.conversations[0];
        assert_eq!(
            (
                c.conversation.as_str(),
                c.name.as_str(),
                c.unread,
                c.read_seq
            ),
            (conv.as_str(), ann.as_str(), 3, 0)
        );
        assert_eq!(
            (c.last_preview.as_str(), c.last_sender.as_str()),
            ("hello 3", ann.as_str())
        );
        assert_eq!(
            list(&mut a).await.total_unread,
            0,
            "one's own messages are read"
        );

        let st = mark_read(&mut phone, &conv, 2).await;
        assert_eq!((st.read_seq, st.unread), (2, 1));
        // The laptop hears at once (no polling) and its list agrees.
        let r = next_receipt(&mut laptop).await;
        assert_eq!(
            (r.conversation.as_str(), r.user.as_str(), r.read_seq),
            (conv.as_str(), bob.as_str(), 2)
        );
        assert_eq!(list(&mut laptop).await.total_unread, 1);
        // The peer gets the receipt.
        let r = next_receipt(&mut a).await;
        assert_eq!((r.user.as_str(), r.read_seq), (bob.as_str(), 2));

        // Going back is a no-op, not an error; past the head is refused.
        let st = mark_read(&mut laptop, &conv, 1).await;
        assert_eq!((st.read_seq, st.unread), (2, 1));
        let f = laptop
            .request(Body::MarkRead(pb::MarkRead {
                conversation: conv.clone(),
                seq: 9,
            }))
            .await;
        expect_error(&f, pb::ErrorCode::InvalidArgument);
        // 0 = everything.
        assert_eq!(mark_read(&mut laptop, &conv, 0).await.unread, 0);
        // Every device of the reader hears, the one that asked included.
        assert_eq!(next_receipt(&mut phone).await.read_seq, 2);
        assert_eq!(next_receipt(&mut phone).await.read_seq, 3);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_positions_and_unread_counts_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::spawn(BIN, data.path());
    let conv = direct_conversation("rann", "rbob");
    {
        let mut reg = server.client(Tcp).await;
        reg.register("rann").await;
        reg.register("rbob").await;
        let mut a = server.client(Tcp).await;
        a.login("rann", "d").await;
        for i in 1..=5 {
            ack_of(&a.send_text("rbob", &format!("k{i}"), "x").await);
        }
        let mut b = server.client(Quic).await;
        b.login("rbob", "d").await;
        assert_eq!(mark_read(&mut b, &conv, 4).await.unread, 1);
        // ReadState came back: the position is durable. Kill before anything else.
        server.kill9();
    }
    let server = ProcessServer::spawn(BIN, data.path());
    let mut b = server.client(Tcp).await;
    b.login("rbob", "d").await;
    let l = list(&mut b).await;
    assert_eq!(l.total_unread, 1);
    assert_eq!(
        (l.conversations[0].read_seq, l.conversations[0].unread),
        (4, 1)
    );
    let mut a = server.client(Tcp).await;
    a.login("rann", "d").await;
    assert_eq!(
        list(&mut a).await.conversations[0].read_seq,
        5,
        "the sender read what they sent"
    );
}

#[tokio::test]
async fn mute_and_pin_reach_every_device_and_shape_the_list() {
    let server = TestServer::start().await;
    let t = Tcp;
    let mut phone = server.user(t, "mp", "phone").await;
    let mut laptop = server.client(t).await;
    laptop.login("mp", "laptop").await;
    let mut x = server.user(t, "mpx", "d").await;
    let mut y = server.user(t, "mpy", "d").await;
    ack_of(&x.send_text("mp", "x1", "from x").await);
    ack_of(&y.send_text("mp", "y1", "from y").await);
    ack_of(&y.send_text("mp", "y2", "from y again").await);
    let (cx, cy) = (
        direct_conversation("mp", "mpx"),
        direct_conversation("mp", "mpy"),
    );
    let order = |l: &pb::ConversationList| -> Vec<String> {
        l.conversations
            .iter()
            .map(|c| c.conversation.clone())
            .collect()
    };
    let l = list(&mut phone).await;
    assert_eq!(
        (order(&l), l.total_unread),
        (vec![cy.clone(), cx.clone()], 3)
    );

    let set = |conv: &str, muted: Option<bool>, pinned: Option<bool>| {
        Body::SetConversationSettings(pb::SetConversationSettings {
            conversation: conv.into(),
            muted,
            pinned,
        })
    };
    let s = expect_body!(
        phone.request(set(&cx, None, Some(true))).await,
        ConversationSettings
    );
    assert!(s.pinned && !s.muted);
    let s = expect_body!(
        phone.request(set(&cy, Some(true), None)).await,
        ConversationSettings
    );
    assert!(s.muted && !s.pinned);
    // The laptop hears both changes, in order, without asking.
    for want in [(cx.clone(), false, true), (cy.clone(), true, false)] {
        let got = laptop
            .next_where(WAIT, |b| match b {
                Body::SettingsChanged(s) => Some(s),
                _ => None,
            })
            .await;
        assert_eq!((got.conversation, got.muted, got.pinned), want);
    }
    let l = list(&mut laptop).await;
    assert_eq!(order(&l), vec![cx.clone(), cy.clone()], "pinned first");
    assert_eq!(
        l.total_unread, 1,
        "the muted conversation is left out of the total"
    );
    assert!(l.conversations[1].muted && l.conversations[0].pinned);
    // Not a member: refused.
    let f = x.request(set(&cy, Some(true), None)).await;
    expect_error(&f, pb::ErrorCode::Forbidden);
    server.stop().await;
}

#[tokio::test]
async fn who_read_a_group_message_over_the_wire() {
    let server = TestServer::start().await;
    let t = Quic;
    let mut o = server.user(t, "wro", "d").await;
    let mut a = server.user(t, "wra", "d").await;
    let _b = server.user(t, "wrb", "d").await;
    let g = o.create_group("g", &["wra", "wrb"]).await;
    let f = o
        .request(Body::Send(pb::Send {
            client_msg_id: "q1".into(),
            conversation: g.conversation.clone(),
            body: b"question".to_vec().into(),
            ..Default::default()
        }))
        .await;
    let seq = ack_of(&f).seq;
    mark_read(&mut a, &g.conversation, 0).await;
    let r = expect_body!(
        o.request(Body::ReceiptsQuery(pb::ReceiptsQuery {
            conversation: g.conversation.clone(),
            seq,
        }))
        .await,
        ReceiptsResult
    );
    assert_eq!(
        (r.read_by, r.read_count, r.members),
        (vec!["wra".to_string()], 1, 2)
    );
    server.stop().await;
}
