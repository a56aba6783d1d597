//! Edit, recall and delete-for-me on the in-memory store: who may do what and when, what
//! history and the counts show afterwards, that a refused change writes nothing, and that
//! expired messages become tombstones without breaking seq contiguity.

use prost::Message as _;
use tern_proto::pb::{self, ErrorCode, MessageKind};
use tern_proto::{direct_conversation, Body};

use crate::error::ServiceResult;
use crate::messages::AckInfo;
use crate::testkit::World;

fn edit(conv: &str, seq: u64, text: &str, cmid: &str) -> pb::Edit {
    pb::Edit {
        client_msg_id: cmid.into(),
        conversation: conv.into(),
        seq,
        body: text.as_bytes().to_vec().into(),
        content_type: String::new(),
    }
}

fn recall(conv: &str, seq: u64, cmid: &str) -> pb::Recall {
    pb::Recall {
        client_msg_id: cmid.into(),
        conversation: conv.into(),
        seq,
    }
}

async fn do_edit(w: &World, user: &str, req: pb::Edit) -> ServiceResult<AckInfo> {
    w.acked(|done| w.changes.edit(user, "d", req, done)).await
}

async fn do_recall(w: &World, user: &str, req: pb::Recall) -> ServiceResult<AckInfo> {
    w.acked(|done| w.changes.recall(user, "d", req, done)).await
}

async fn history(w: &World, user: &str, conv: &str) -> Vec<pb::Message> {
    w.messages
        .pull(
            user,
            pb::Pull {
                conversation: conv.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .messages
}

async fn info(w: &World, user: &str, conv: &str) -> pb::ConversationInfo {
    let list = w.conversations.list(user, 0, 0).await.unwrap();
    list.conversations
        .into_iter()
        .find(|c| c.conversation == conv)
        .unwrap()
}

#[tokio::test]
async fn an_edit_is_a_new_entry_and_history_shows_the_latest_text() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    *w.router.online.lock().unwrap() = vec!["ann".into(), "bob".into()];
    let conv = direct_conversation("ann", "bob");
    w.send("ann", "bob", "hello").await.unwrap();
    assert_eq!(info(&w, "bob", &conv).await.unread, 1);

    let ack = do_edit(&w, "ann", edit(&conv, 1, "hello, bob", "e1"))
        .await
        .unwrap();
    assert_eq!((ack.seq, ack.duplicate), (2, false));
    let h = history(&w, "bob", &conv).await;
    assert_eq!(h.len(), 2);
    assert_eq!(&h[0].body[..], b"hello, bob");
    assert!(h[0].edited);
    assert_eq!(h[0].edits, vec![2]);
    assert_eq!(h[1].kind, MessageKind::Edit as i32);
    assert_eq!((h[1].target_seq, &h[1].body[..]), (1, &b"hello, bob"[..]));
    // The edit entry reached both inboxes as a push, and is not an unread message; the
    // sender's read position did not move, and the list shows the new text.
    let pushed: Vec<String> = w
        .router
        .bodies()
        .into_iter()
        .filter_map(|(to, b)| match b {
            Body::Push(p) if p.message.as_ref().unwrap().seq == 2 => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    let bob = info(&w, "bob", &conv).await;
    assert_eq!((bob.unread, bob.last_seq), (1, 2));
    assert_eq!(bob.last_preview, "hello, bob");
    assert_eq!(info(&w, "ann", &conv).await.unread, 0);

    // A retry of the same client_msg_id is answered with the original ack.
    let again = do_edit(&w, "ann", edit(&conv, 1, "hello, bob", "e1"))
        .await
        .unwrap();
    assert_eq!((again.seq, again.duplicate), (2, true));
    w.stop().await;
}

#[tokio::test]
async fn bad_edits_are_refused_with_their_codes_and_change_nothing() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    let conv = direct_conversation("ann", "bob");
    w.send("ann", "bob", "m1").await.unwrap();
    let code = |r: ServiceResult<AckInfo>| r.unwrap_err().code;
    assert_eq!(
        code(do_edit(&w, "bob", edit(&conv, 1, "x", "b1")).await),
        ErrorCode::Forbidden,
        "someone else's message"
    );
    assert_eq!(
        code(do_edit(&w, "ann", edit(&conv, 2, "x", "a1")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(do_edit(&w, "ann", edit(&conv, 0, "x", "a2")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(do_edit(&w, "ann", edit(&conv, 1, "", "a3")).await),
        ErrorCode::InvalidArgument
    );
    w.users(&["eve"]);
    assert_eq!(
        code(do_edit(&w, "eve", edit(&conv, 1, "x", "v1")).await),
        ErrorCode::Forbidden,
        "not a member"
    );
    w.clock.advance(48 * 3600 * 1000 + 1);
    assert_eq!(
        code(do_edit(&w, "ann", edit(&conv, 1, "late", "a4")).await),
        ErrorCode::WindowExpired
    );
    let h = history(&w, "ann", &conv).await;
    assert_eq!(h.len(), 1, "nothing was appended");
    assert_eq!(&h[0].body[..], b"m1");
    assert!(!h[0].edited);
    w.stop().await;
}

#[tokio::test]
async fn a_recall_removes_the_content_of_the_message_and_its_edits() {
    let w = World::new();
    w.users(&["own", "mem", "oth"]);
    let g = w
        .groups
        .create_group(
            "own",
            pb::CreateGroup {
                name: "g".into(),
                members: vec!["mem".into(), "oth".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let conv = g.conversation;
    let send = |from: &'static str, text: &'static str, mentions: Vec<String>| {
        let req = pb::Send {
            client_msg_id: "c1".into(),
            conversation: conv.clone(),
            body: text.as_bytes().to_vec().into(),
            mentions,
            ..Default::default()
        };
        let w = &w;
        async move { w.acked(|done| w.messages.send(from, "d", req, done)).await }
    };
    // seq 2: mem mentions oth; seq 3: mem edits it.
    send("mem", "secret for oth", vec!["oth".into()])
        .await
        .unwrap();
    do_edit(&w, "mem", edit(&conv, 2, "secret v2", "e"))
        .await
        .unwrap();
    let before = info(&w, "oth", &conv).await;
    assert_eq!((before.unread, before.mentions), (2, 1));

    // Someone else's message: a plain member may not; past the window the sender may
    // not; the owner may at any time.
    assert_eq!(
        do_recall(&w, "oth", recall(&conv, 2, "r0"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    w.clock.advance(121_000);
    assert_eq!(
        do_recall(&w, "mem", recall(&conv, 2, "r1"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::WindowExpired
    );
    let ack = do_recall(&w, "own", recall(&conv, 2, "r2")).await.unwrap();
    assert_eq!(ack.seq, 4);

    for seq in [2, 3] {
        let m = w.store.message(&conv, seq).unwrap().unwrap();
        assert!(m.recalled, "{seq}");
        assert!(m.body.is_empty() && m.mentions.is_empty(), "{m:?}");
        assert!(!m.encode_to_vec().windows(6).any(|x| x == b"secret"));
    }
    let h = history(&w, "oth", &conv).await;
    assert_eq!(h[3].kind, MessageKind::Recall as i32);
    assert_eq!(h[3].target_seq, 2);
    // It no longer counts: neither as unread nor as a mention (the group's creation,
    // which oth did not cause, still does).
    let after = info(&w, "oth", &conv).await;
    assert_eq!((after.unread, after.mentions), (1, 0));
    assert_eq!(
        do_recall(&w, "own", recall(&conv, 2, "r3"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument,
        "already recalled"
    );
    assert_eq!(
        do_recall(&w, "own", recall(&conv, 1, "r4"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument,
        "a group event"
    );
    assert_eq!(
        do_edit(&w, "mem", edit(&conv, 2, "again", "e2"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument,
        "a recalled message cannot be edited"
    );
    w.stop().await;
}

#[tokio::test]
async fn the_sender_recalls_within_the_window() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    let conv = direct_conversation("ann", "bob");
    w.send("ann", "bob", "oops").await.unwrap();
    assert_eq!(
        do_recall(&w, "bob", recall(&conv, 1, "r"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::Forbidden,
        "no moderators in a direct chat"
    );
    w.clock.advance(119_000);
    do_recall(&w, "ann", recall(&conv, 1, "r")).await.unwrap();
    let bob = info(&w, "bob", &conv).await;
    assert_eq!((bob.unread, bob.last_kind), (0, MessageKind::Recall as i32));
    assert_eq!(bob.last_preview, "");
    w.stop().await;
}

#[tokio::test]
async fn delete_for_me_hides_a_message_for_one_user_only() {
    let w = World::new();
    w.users(&["ann", "bob", "eve"]);
    let conv = direct_conversation("ann", "bob");
    w.send("ann", "bob", "m1").await.unwrap();
    w.send("ann", "bob", "m2").await.unwrap();
    w.router.delivered.lock().unwrap().clear();
    w.changes.delete_for_me("bob", &conv, 1).await.unwrap();
    let hidden: Vec<(String, pb::MessageHidden)> = w
        .router
        .bodies()
        .into_iter()
        .filter_map(|(to, b)| match b {
            Body::MessageHidden(h) => Some((to, h)),
            _ => None,
        })
        .collect();
    assert_eq!(hidden.len(), 1);
    assert_eq!(hidden[0].0, "bob");
    assert_eq!(hidden[0].1.seq, 1);

    let h = history(&w, "bob", &conv).await;
    assert_eq!(h.len(), 2, "seqs stay contiguous");
    assert!(h[0].deleted && h[0].body.is_empty());
    assert_eq!(&h[1].body[..], b"m2");
    let a = history(&w, "ann", &conv).await;
    assert!(!a[0].deleted && &a[0].body[..] == b"m1");
    // Sync serves the tombstone to bob too.
    let page = w.messages.sync("bob", 0, 10).await.unwrap();
    let first = pb::Message::decode(page.items[0].message.clone()).unwrap();
    assert!(first.deleted && first.body.is_empty());

    // Twice is a no-op; a seq that does not exist or a non-member is refused.
    w.router.delivered.lock().unwrap().clear();
    w.changes.delete_for_me("bob", &conv, 1).await.unwrap();
    assert!(w.router.bodies().is_empty());
    let e = w.changes.delete_for_me("bob", &conv, 3).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = w.changes.delete_for_me("eve", &conv, 1).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    w.stop().await;
}

#[tokio::test]
async fn an_expired_message_becomes_a_tombstone_in_its_place() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    let conv = direct_conversation("ann", "bob");
    let send = |cmid: &'static str, ttl_secs: u32| {
        let req = pb::Send {
            client_msg_id: cmid.into(),
            peer: "bob".into(),
            body: cmid.as_bytes().to_vec().into(),
            ttl_secs,
            ..Default::default()
        };
        let w = &w;
        async move { w.acked(|done| w.messages.send("ann", "d", req, done)).await }
    };
    send("keep", 0).await.unwrap();
    send("brief", 10).await.unwrap();
    send("after", 0).await.unwrap();
    let e = send("toolong", 7 * 24 * 3600 + 1).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);

    assert_eq!(&history(&w, "bob", &conv).await[1].body[..], b"brief");
    w.clock.advance(10_000);
    let h = history(&w, "bob", &conv).await;
    assert_eq!(
        h.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "contiguous"
    );
    assert!(h[1].expired && h[1].body.is_empty());
    assert!(!h[0].expired && !h[2].expired);
    let page = w.messages.sync("bob", 0, 10).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let m = pb::Message::decode(page.items[1].message.clone()).unwrap();
    assert!(m.expired && m.body.is_empty() && m.seq == 2);

    // Until the sweeper runs the content is still on disk (never served); then it is
    // gone from the store and the message stops counting as unread.
    assert_eq!(
        &w.store.message(&conv, 2).unwrap().unwrap().body[..],
        b"brief"
    );
    assert_eq!(info(&w, "bob", &conv).await.unread, 3);
    assert_eq!(w.messages.sweep_expired().unwrap(), 1);
    let stored = w.store.message(&conv, 2).unwrap().unwrap();
    assert!(stored.expired && stored.body.is_empty());
    assert_eq!(info(&w, "bob", &conv).await.unread, 2);
    assert_eq!(w.messages.sweep_expired().unwrap(), 0, "each once");
    w.stop().await;
}

#[tokio::test]
async fn a_user_who_turns_receipts_off_is_never_reported_as_having_read() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    let conv = direct_conversation("ann", "bob");
    w.send("ann", "bob", "m1").await.unwrap();
    let s = w.accounts.user_settings("bob", None).await.unwrap();
    assert!(s.send_receipts, "on by default");
    let s = w.accounts.user_settings("bob", Some(false)).await.unwrap();
    assert!(!s.send_receipts);
    w.router.delivered.lock().unwrap().clear();
    let st = w.receipts.mark_read("bob", &conv, 0).await.unwrap();
    assert_eq!(st.unread, 0, "bob still sees his own state");
    let to: Vec<String> = w
        .router
        .bodies()
        .into_iter()
        .filter_map(|(to, b)| matches!(b, Body::ReadReceipt(_)).then_some(to))
        .collect();
    assert_eq!(to, ["bob"], "only bob's own devices hear of it");
    let r = w.receipts.who_read("ann", &conv, 1).await.unwrap();
    assert!(r.read_by.is_empty());
    assert_eq!(r.read_count, 0);
    w.stop().await;
}
