//! Domain tests of messages on the in-memory store, a manual clock and a recording
//! router ([`crate::testkit`]): no sockets, no disk (but the eviction test, on sled).

use std::collections::HashMap;
use std::sync::Arc;

use tern_proto::pb;
use tokio::sync::oneshot;

use super::*;
use crate::store::{SledStore, Store, UserRecord};
use crate::testkit::{world_on, World};

#[tokio::test]
async fn a_send_is_sequenced_stamped_by_the_clock_and_pushed_to_online_members() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    w.router.online.lock().unwrap().push("bob".into());
    let first = w.send("ann", "bob", "m1").await.unwrap();
    w.clock.advance(5);
    let second = w.send("ann", "bob", "m2").await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.server_time_ms, 1_000_000);
    assert_eq!(second.server_time_ms, 1_000_005);
    assert_eq!((first.sender_inbox_seq, second.sender_inbox_seq), (1, 2));
    // Only bob is online: two pushes, to bob, naming his inbox seqs.
    let delivered = w.router.bodies();
    assert_eq!(delivered.len(), 2);
    for (i, (user, body)) in delivered.into_iter().enumerate() {
        assert_eq!(user, "bob");
        let tern_proto::Body::Push(p) = body else {
            panic!("not a push")
        };
        assert_eq!(p.inbox_seq, i as u64 + 1);
        assert_eq!(p.message.unwrap().seq, i as u64 + 1);
    }
    w.stop().await;
}

#[tokio::test]
async fn a_retry_gets_the_original_ack_and_stores_nothing() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    let first = w.send("ann", "bob", "same").await.unwrap();
    let commits = w.store.commit_count().unwrap();
    w.clock.advance(1000);
    let again = w.send("ann", "bob", "same").await.unwrap();
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(
        (again.seq, again.server_time_ms, again.sender_inbox_seq),
        (first.seq, first.server_time_ms, first.sender_inbox_seq)
    );
    assert_eq!(w.store.commit_count().unwrap(), commits, "nothing written");
    assert_eq!(w.store.last_seq(&first.conversation).unwrap(), 1);
    w.stop().await;
}

#[tokio::test]
async fn bad_sends_are_refused_with_clear_errors() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    let e = w.send("ann", "nobody", "x").await.unwrap_err();
    assert_eq!(e.code, pb::ErrorCode::NotFound);
    let e = w.send("ann", "bob", "").await.unwrap_err();
    assert_eq!(e.code, pb::ErrorCode::InvalidArgument);
    // A conversation ann is not in.
    let (tx, _rx) = oneshot::channel::<ServiceResult<AckInfo>>();
    let e = w
        .messages
        .send(
            "ann",
            "d",
            pb::Send {
                client_msg_id: "y".into(),
                conversation: "d:bob:carl".into(),
                ..Default::default()
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .unwrap_err();
    assert_eq!(e.code, pb::ErrorCode::Forbidden);
    w.stop().await;
}

/// With caches far smaller than the working set, conversation states and inbox heads
/// are evicted and reloaded all the time; seqs and inbox seqs must stay contiguous.
/// On real sled, as before the split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_states_reload_without_reusing_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap());
    let w = Arc::new(world_on(store.clone(), 32, 4));
    let users: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    for u in &users {
        store.put_user(u, &UserRecord::default()).unwrap();
    }
    // Every user sends to every other user, 3 rounds, from 2 tasks at once.
    let mut tasks = Vec::new();
    for half in 0..2 {
        let w = w.clone();
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for round in 0..3 {
                for (i, from) in users.iter().enumerate() {
                    for to in users.iter().skip(i % 2 + half).step_by(2) {
                        if from == to {
                            continue;
                        }
                        let cmid = format!("{half}-{round}-{from}-{to}");
                        acks.push(w.send(from, to, &cmid).await.unwrap());
                    }
                }
            }
            acks
        }));
    }
    let mut per_conv: HashMap<String, Vec<u64>> = HashMap::new();
    for t in tasks {
        for a in t.await.unwrap() {
            per_conv.entry(a.conversation).or_default().push(a.seq);
        }
    }
    assert!(
        per_conv.len() > 32,
        "more conversations than the cache holds"
    );
    for (conv, mut seqs) in per_conv {
        seqs.sort_unstable();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "{conv}: seqs contiguous, none reused");
        let stored = store.last_seq(&conv).unwrap();
        assert_eq!(stored, want.len() as u64, "{conv}");
    }
    // Inbox seqs: every user's inbox is 1..=n with no hole or double.
    for u in &users {
        let page = w.messages.sync(u, 0, 1000).await.unwrap();
        let seqs: Vec<u64> = page.items.iter().map(|i| i.inbox_seq).collect();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "inbox of {u}");
    }
    let cached = w.convs.cached();
    assert!(cached <= w.convs.shard_count(), "cache bounded: {cached}");
    // At most the cap plus the two heads one 1:1 append writes back.
    assert!(w.seq.cached_heads() <= 4 + 2);
    let w = Arc::try_unwrap(w).ok().expect("tasks are done");
    w.stop().await;
}

#[tokio::test]
async fn a_user_may_message_themselves() {
    let w = World::new();
    w.users(&["solo"]);
    let ack = w.send("solo", "solo", "note").await.unwrap();
    assert_eq!((ack.conversation.as_str(), ack.seq), ("d:solo:solo", 1));
    let list = w.conversations.list("solo", 0, 0).await.unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(list.conversations[0].member_count, 1);
    assert_eq!(list.conversations[0].unread, 0);
    w.stop().await;
}
