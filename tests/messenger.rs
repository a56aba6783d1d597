//! Edit, recall, delete-for-me, expiring messages, presence pushes and the receipts
//! setting over real sockets (issue 13); a recall that survives kill -9 and leaves no
//! copy of the text in the store's trees; an old client that knows none of the new
//! pushes still syncs everything.

use std::time::Duration;

use prost::Message as _;
use tern_proto::pb::{self, ErrorCode, MessageKind};
use tern_proto::{direct_conversation, encode_frame, Body};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");
const WAIT: Duration = Duration::from_secs(5);

fn edit(conv: &str, seq: u64, text: &str, cmid: &str) -> Body {
    Body::Edit(pb::Edit {
        client_msg_id: cmid.into(),
        conversation: conv.into(),
        seq,
        body: text.as_bytes().to_vec().into(),
        content_type: String::new(),
    })
}

fn recall(conv: &str, seq: u64, cmid: &str) -> Body {
    Body::Recall(pb::Recall {
        client_msg_id: cmid.into(),
        conversation: conv.into(),
        seq,
    })
}

async fn history(c: &mut Client, conv: &str) -> Vec<pb::Message> {
    expect_pull(&c.pull(conv, 0, 100).await).messages
}

#[tokio::test]
async fn edits_and_recalls_reach_the_peer_and_history_converges() {
    let server = TestServer::start().await;
    for t in BOTH {
        let (ann, bob) = (name("ea", t), name("eb", t));
        let mut a = server.user(t, &ann, "d").await;
        let mut b = server.user(t, &bob, "d").await;
        let conv = direct_conversation(&ann, &bob);
        ack_of(&a.send_text(&bob, "m1", "helo").await);
        assert_eq!(text(&b.next_message(WAIT).await), "helo");

        let ack = ack_of(&a.request(edit(&conv, 1, "hello", "e1")).await);
        assert_eq!(ack.seq, 2);
        let m = b.next_message(WAIT).await;
        assert_eq!(
            (m.kind, m.target_seq, text(&m).as_str()),
            (MessageKind::Edit as i32, 1, "hello")
        );
        // Someone else's message, or a seq that does not exist: refused.
        expect_error(
            &b.request(edit(&conv, 1, "mine now", "x1")).await,
            ErrorCode::Forbidden,
        );
        expect_error(
            &a.request(edit(&conv, 9, "?", "x2")).await,
            ErrorCode::NotFound,
        );

        let h = history(&mut b, &conv).await;
        assert_eq!(text(&h[0]), "hello");
        assert!(h[0].edited);

        let ack = ack_of(&a.request(recall(&conv, 1, "r1")).await);
        assert_eq!(ack.seq, 3);
        let m = b.next_message(WAIT).await;
        assert_eq!((m.kind, m.target_seq), (MessageKind::Recall as i32, 1));
        let h = history(&mut b, &conv).await;
        assert_eq!(h.len(), 3);
        for m in &h[..2] {
            assert!(m.recalled && m.body.is_empty(), "{m:?}");
        }
        let l = expect_body!(
            b.request(Body::ListConversations(pb::ListConversations::default()))
                .await,
            ConversationList
        );
        assert_eq!(l.total_unread, 0, "a recalled message is not unread");
    }
    server.stop().await;
}

/// Every value of every tree in the sled store at `dir`.
fn all_values(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let db = sled::open(dir.join("store")).unwrap();
    let mut out = Vec::new();
    for name in db.tree_names() {
        for kv in db.open_tree(name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            out.push(k.to_vec());
            out.push(v.to_vec());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_survives_kill_9_and_no_tree_keeps_the_text() {
    let data = tempfile::tempdir().unwrap();
    let first = b"first-draft-7f3a";
    let second = b"second-draft-9c1e";
    let conv = direct_conversation("rcx", "rcy");
    {
        let mut server = ProcessServer::spawn(BIN, data.path());
        let mut reg = server.client(Tcp).await;
        reg.register("rcx").await;
        reg.register("rcy").await;
        let mut a = server.client(Tcp).await;
        a.login("rcx", "d").await;
        ack_of(
            &a.send_text("rcy", "k1", std::str::from_utf8(first).unwrap())
                .await,
        );
        ack_of(
            &a.request(edit(&conv, 1, std::str::from_utf8(second).unwrap(), "k2"))
                .await,
        );
        ack_of(&a.send_text("rcy", "k3", "stays").await);
        ack_of(&a.request(recall(&conv, 1, "k4")).await);
        // The RecallAck came back: durable. Kill before anything else.
        server.kill9();
    }
    let values = all_values(data.path());
    assert!(
        values.iter().any(|v| contains(v, b"stays")),
        "the scan sees the store"
    );
    for marker in [&first[..], &second[..]] {
        assert!(
            !values.iter().any(|v| contains(v, marker)),
            "{} is still in a tree",
            String::from_utf8_lossy(marker)
        );
    }
    let server = ProcessServer::spawn(BIN, data.path());
    let mut b = server.client(Quic).await;
    b.login("rcy", "d").await;
    let h = history(&mut b, &conv).await;
    assert_eq!(
        h.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "contiguous after the restart"
    );
    assert!(h[0].recalled && h[1].recalled && h[0].body.is_empty());
    assert_eq!(text(&h[2]), "stays");
    assert_eq!(h[3].kind, MessageKind::Recall as i32);
}

#[tokio::test]
async fn delete_for_me_reaches_the_other_device_and_nobody_else() {
    let server = TestServer::start().await;
    let t = Quic;
    let mut a = server.user(t, "dfa", "d").await;
    let mut phone = server.user(t, "dfb", "phone").await;
    let mut laptop = server.client(t).await;
    laptop.login("dfb", "laptop").await;
    let conv = direct_conversation("dfa", "dfb");
    ack_of(&a.send_text("dfb", "m1", "embarrassing").await);
    ack_of(&a.send_text("dfb", "m2", "fine").await);
    expect_ok(
        &phone
            .request(Body::DeleteForMe(pb::DeleteForMe {
                conversation: conv.clone(),
                seq: 1,
            }))
            .await,
    );
    let hidden = laptop
        .next_where(WAIT, |b| match b {
            Body::MessageHidden(h) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(
        (hidden.conversation.as_str(), hidden.seq),
        (conv.as_str(), 1)
    );
    let h = history(&mut laptop, &conv).await;
    assert!(h[0].deleted && h[0].body.is_empty());
    assert_eq!(text(&h[1]), "fine");
    let h = history(&mut a, &conv).await;
    assert_eq!(text(&h[0]), "embarrassing", "the sender still has it");
    expect_error(
        &phone
            .request(Body::DeleteForMe(pb::DeleteForMe {
                conversation: conv.clone(),
                seq: 3,
            }))
            .await,
        ErrorCode::NotFound,
    );
    server.stop().await;
}

#[tokio::test]
async fn a_message_that_expired_before_a_device_came_online_is_a_tombstone() {
    let server = TestServer::start_with(|c| c.messages.max_ttl_secs = 60).await;
    let t = Tcp;
    let mut a = server.user(t, "tta", "d").await;
    let mut reg = server.client(t).await;
    reg.register("ttb").await;
    let send = |cmid: &str, ttl_secs: u32| {
        Body::Send(pb::Send {
            ttl_secs,
            ..send_body("ttb", cmid, &format!("{cmid} text"))
        })
    };
    ack_of(&a.request(send("before", 0)).await);
    let ack = ack_of(&a.request(send("brief", 1)).await);
    assert_eq!(ack.seq, 2);
    ack_of(&a.request(send("after", 0)).await);
    expect_error(
        &a.request(send("toolong", 61)).await,
        ErrorCode::InvalidArgument,
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut b = server.client(t).await;
    b.login("ttb", "d").await;
    let items = b.sync_all(0, 100).await;
    let seqs: Vec<(u64, u64)> = items
        .iter()
        .map(|i| (i.inbox_seq, i.message.as_ref().unwrap().seq))
        .collect();
    assert_eq!(
        seqs,
        [(1, 1), (2, 2), (3, 3)],
        "contiguous, nothing skipped"
    );
    let m = items[1].message.as_ref().unwrap();
    assert!(m.expired && m.body.is_empty(), "{m:?}");
    assert_eq!(text(items[2].message.as_ref().unwrap()), "after text");
    // The sweeper (every second) erases the content from the store itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    server.stop().await;
    let values = all_values(dir.path());
    assert!(values.iter().any(|v| contains(v, b"after text")));
    assert!(!values.iter().any(|v| contains(v, b"brief text")), "erased");
}

#[tokio::test]
async fn a_direct_peer_hears_online_and_offline_once_settled() {
    let server = TestServer::start_with(|c| c.messages.presence_settle_ms = 300).await;
    let t = Tcp;
    let mut b = server.user(t, "prb", "d").await;
    let presence = |b: Body| match b {
        Body::PresenceEvent(p) => Some((p.user, p.online)),
        _ => None,
    };
    let mut a = server.user(t, "pra", "d").await;
    // The direct chat exists before pra's coming online has settled.
    ack_of(&a.send_text("prb", "m1", "hi").await);
    assert_eq!(b.next_where(WAIT, presence).await, ("pra".into(), true));
    a.close().await;
    assert_eq!(b.next_where(WAIT, presence).await, ("pra".into(), false));
    // Back and gone again within the settle time: nothing is announced.
    let mut a = server.client(t).await;
    a.login("pra", "d").await;
    a.close().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = b.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
    let flapped: Vec<_> = b
        .pushes()
        .drain(..)
        .filter_map(|f| f.body.and_then(presence))
        .collect();
    assert!(flapped.is_empty(), "{flapped:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_hears_a_group_members_presence_while_the_watch_lasts() {
    let server = TestServer::start_with(|c| c.messages.presence_settle_ms = 100).await;
    let t = Quic;
    let mut w = server.user(t, "gww", "d").await;
    let mut reg = server.client(t).await;
    reg.register("gwm").await;
    let g = w.create_group("g", &["gwm"]).await;
    let presence = |b: Body| match b {
        Body::PresenceEvent(p) => Some((p.user, p.online)),
        _ => None,
    };
    let watch = |watch, unwatch| {
        Body::GroupOnlineQuery(pb::GroupOnlineQuery {
            conversation: g.conversation.clone(),
            watch,
            unwatch,
        })
    };
    expect_body!(w.request(watch(true, false)).await, GroupOnlineResult);
    let mut m = server.client(t).await;
    m.login("gwm", "d").await;
    assert_eq!(w.next_where(WAIT, presence).await, ("gwm".into(), true));
    // Unwatched: gwm going offline is not announced to gww (no direct chat either).
    expect_body!(w.request(watch(false, true)).await, GroupOnlineResult);
    m.close().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = w.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
    let heard: Vec<_> = w
        .pushes()
        .drain(..)
        .filter_map(|f| f.body.and_then(presence))
        .collect();
    assert!(heard.is_empty(), "{heard:?}");
    // Not a member: refused.
    let mut x = server.user(t, "gwx", "d").await;
    expect_error(&x.request(watch(true, false)).await, ErrorCode::Forbidden);
    server.stop().await;
}

#[tokio::test]
async fn with_receipts_off_the_peer_gets_no_receipt() {
    let server = TestServer::start().await;
    let t = Quic;
    let mut a = server.user(t, "roa", "d").await;
    let mut b = server.user(t, "rob", "d").await;
    let s = expect_body!(
        b.request(Body::SetUserSettings(pb::SetUserSettings {
            send_receipts: Some(false)
        }))
        .await,
        UserSettings
    );
    assert!(!s.send_receipts);
    let s = expect_body!(
        b.request(Body::SetUserSettings(pb::SetUserSettings::default()))
            .await,
        UserSettings
    );
    assert!(!s.send_receipts, "an empty request reads the setting");
    let conv = direct_conversation("roa", "rob");
    ack_of(&a.send_text("rob", "m1", "read me").await);
    expect_body!(
        b.request(Body::MarkRead(pb::MarkRead {
            conversation: conv.clone(),
            seq: 0
        }))
        .await,
        ReadState
    );
    let r = expect_body!(
        a.request(Body::ReceiptsQuery(pb::ReceiptsQuery {
            conversation: conv.clone(),
            seq: 1
        }))
        .await,
        ReceiptsResult
    );
    assert_eq!((r.read_count, r.read_by.len()), (0, 0));
    // A receipt would have been queued to ann before rob's ReadState was answered, so
    // before the answer to a Ping she sends now.
    let _ = a.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
    while let Some(f) = a.pushes().pop_front() {
        assert!(
            !matches!(f.body, Some(Body::ReadReceipt(_))),
            "a receipt leaked: {f:?}"
        );
    }
    server.stop().await;
}

/// What a client built from an older tern.proto decodes a frame as: it knows `req_id`,
/// message pushes and sync pages, and nothing added later.
#[derive(Clone, PartialEq, prost::Message)]
struct OldFrame {
    #[prost(uint64, tag = "1")]
    req_id: u64,
    #[prost(message, optional, tag = "105")]
    sync_result: Option<pb::SyncResult>,
    #[prost(message, optional, tag = "200")]
    push: Option<pb::MessagePush>,
}

#[tokio::test]
async fn an_old_client_that_knows_none_of_the_new_pushes_still_syncs() {
    let server = TestServer::start_with(|c| c.messages.presence_settle_ms = 50).await;
    let t = Tcp;
    let mut a = server.user(t, "oca", "d").await;
    let mut b = server.user(t, "ocb", "d").await;
    let conv = direct_conversation("oca", "ocb");
    ack_of(&a.send_text("ocb", "m1", "one").await);
    // New kinds of push reach b: typing, a receipt, an edit entry, hidden.
    expect_ok(
        &a.request(Body::Typing(pb::Typing {
            conversation: conv.clone(),
            typing: true,
        }))
        .await,
    );
    ack_of(&a.request(edit(&conv, 1, "one!", "e1")).await);
    ack_of(&a.send_text("ocb", "m2", "two").await);
    expect_ok(
        &b.request(Body::DeleteForMe(pb::DeleteForMe {
            conversation: conv.clone(),
            seq: 2,
        }))
        .await,
    );
    // Everything b received, as the old client decodes it: new pushes are frames with
    // nothing it knows (it ignores them), message pushes are intact, in order.
    let _ = b.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
    let mut pushed = Vec::new();
    let mut ignored = 0;
    while let Some(f) = b.pushes().pop_front() {
        let old = OldFrame::decode(&encode_frame(&f)[4..]).unwrap();
        match old.push {
            Some(p) => pushed.push(p.inbox_seq),
            None => {
                assert_eq!(old.req_id, 0);
                ignored += 1;
            }
        }
    }
    assert_eq!(pushed, [1, 2, 3], "every inbox entry was pushed, in order");
    assert!(ignored >= 2, "typing and hidden were ignorable: {ignored}");
    // And its sync still pages the inbox contiguously.
    let f = b
        .request(Body::Sync(pb::Sync {
            after_inbox_seq: Some(0),
            limit: 0,
        }))
        .await;
    let old = OldFrame::decode(&encode_frame(&f)[4..]).unwrap();
    let page = old.sync_result.expect("a sync page");
    let seqs: Vec<u64> = page.items.iter().map(|i| i.inbox_seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(page.complete);
    server.stop().await;
}
