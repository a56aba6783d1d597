//! Read positions and unread counts on the in-memory store: the counts the list shows
//! against a model, under random interleavings of sends and reads; receipts to the right
//! people; bad MarkReads change nothing.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use tern_proto::pb::{self, ErrorCode};
use tern_proto::{direct_conversation, Body};

use crate::testkit::World;

fn receipts_in(w: &World) -> Vec<(String, pb::ReadReceipt)> {
    w.router
        .bodies()
        .into_iter()
        .filter_map(|(to, body)| match body {
            Body::ReadReceipt(e) => Some((to, e)),
            _ => None,
        })
        .collect()
}

async fn unread(w: &World, user: &str) -> HashMap<String, u64> {
    let list = w.conversations.list(user, 0, 0).await.unwrap();
    let map: HashMap<String, u64> = list
        .conversations
        .iter()
        .map(|c| (c.conversation.clone(), c.unread))
        .collect();
    assert_eq!(list.total_unread, map.values().sum::<u64>());
    map
}

#[tokio::test]
async fn unread_counts_follow_sends_and_reads_and_receipts_reach_both_sides() {
    let w = World::new();
    w.users(&["ann", "bob"]);
    for i in 0..3 {
        w.send("ann", "bob", &format!("m{i}")).await.unwrap();
    }
    let conv = direct_conversation("ann", "bob");
    assert_eq!(unread(&w, "bob").await[&conv], 3);
    assert_eq!(
        unread(&w, "ann").await[&conv],
        0,
        "one's own messages are read"
    );

    w.router.delivered.lock().unwrap().clear();
    let st = w.receipts.mark_read("bob", &conv, 2).await.unwrap();
    assert_eq!((st.read_seq, st.unread), (2, 1));
    let got = receipts_in(&w);
    let mut to: Vec<&str> = got.iter().map(|(u, _)| u.as_str()).collect();
    to.sort_unstable();
    assert_eq!(
        to,
        ["ann", "bob"],
        "the peer's receipt and bob's other devices"
    );
    assert!(got.iter().all(|(_, r)| r.user == "bob" && r.read_seq == 2));

    // Older positions are no-ops (not errors) and tell nobody.
    w.router.delivered.lock().unwrap().clear();
    let st = w.receipts.mark_read("bob", &conv, 1).await.unwrap();
    assert_eq!((st.read_seq, st.unread), (2, 1));
    assert!(receipts_in(&w).is_empty());

    // Beyond the head, or by a non-member: refused, nothing changes.
    let e = w.receipts.mark_read("bob", &conv, 4).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    w.users(&["eve"]);
    let e = w.receipts.mark_read("eve", &conv, 1).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert_eq!(unread(&w, "bob").await[&conv], 1);

    // 0 = up to the latest; ann's reply then counts for bob again.
    assert_eq!(
        w.receipts.mark_read("bob", &conv, 0).await.unwrap().unread,
        0
    );
    w.send("ann", "bob", "again").await.unwrap();
    assert_eq!(unread(&w, "bob").await[&conv], 1);
    w.stop().await;
}

#[tokio::test]
async fn group_members_start_unread_at_the_event_that_added_them() {
    let w = World::new();
    w.users(&["own", "a", "late"]);
    let conv = w
        .groups
        .create_group(
            "own",
            pb::CreateGroup {
                name: "g".into(),
                members: vec!["a".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .conversation;
    assert_eq!(unread(&w, "own").await[&conv], 0, "the creator caused it");
    assert_eq!(unread(&w, "a").await[&conv], 1, "a sees 'created'");
    w.groups
        .add_members(
            "own",
            pb::AddMembers {
                conversation: conv.clone(),
                users: vec!["late".into()],
                role: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(unread(&w, "late").await[&conv], 1, "only 'added you'");
    assert_eq!(unread(&w, "a").await[&conv], 2);
    w.stop().await;
}

#[tokio::test]
async fn the_list_is_most_recent_first_paged_and_totals_cover_every_page() {
    let w = World::new();
    w.users(&["me", "p1", "p2", "p3"]);
    for (i, p) in ["p1", "p2", "p3"].iter().enumerate() {
        for k in 0..=i {
            w.send(p, "me", &format!("{p}-{k}")).await.unwrap();
            w.clock.advance(10);
        }
    }
    w.send("p1", "me", "latest").await.unwrap();
    let page = w.conversations.list("me", 0, 2).await.unwrap();
    let order: Vec<&str> = page.conversations.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["p1", "p3"]);
    assert_eq!((page.total, page.total_unread), (3, 2 + 2 + 3));
    let first = &page.conversations[0];
    assert_eq!(
        (first.last_preview.as_str(), first.last_sender.as_str()),
        ("latest", "p1")
    );
    let rest = w.conversations.list("me", 2, 2).await.unwrap();
    let order: Vec<&str> = rest.conversations.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["p2"]);
    w.stop().await;
}

/// Random sends and reads among four users (1:1 and one group); after every step the
/// list's counts equal a model's: unread = messages after the read position, one's own
/// messages and the group events one caused never count.
#[tokio::test]
async fn unread_counts_match_a_model_under_random_interleavings() {
    for seed in 0..8u64 {
        let w = World::new();
        let users = ["u0", "u1", "u2", "u3"];
        w.users(&users);
        let group = w
            .groups
            .create_group(
                "u0",
                pb::CreateGroup {
                    name: "g".into(),
                    members: vec!["u1".into(), "u2".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .conversation;
        // model: conv -> (senders by seq, members), (user, conv) -> read seq
        let mut log: HashMap<String, Vec<String>> = HashMap::new();
        log.insert(group.clone(), vec!["u0".into()]);
        let mut read: HashMap<(String, String), u64> = HashMap::new();
        read.insert(("u0".into(), group.clone()), 1);
        let members = |conv: &str| -> Vec<String> {
            if conv == group {
                vec!["u0".into(), "u1".into(), "u2".into()]
            } else {
                let (a, b) = conv[2..].split_once(':').unwrap();
                vec![a.into(), b.into()]
            }
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for step in 0..60 {
            let from = users[rng.gen_range(0..4)];
            if rng.gen_bool(0.6) {
                let to_group = rng.gen_bool(0.3) && from != "u3";
                let conv = if to_group {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    w.messages
                        .send(
                            from,
                            "d",
                            pb::Send {
                                client_msg_id: format!("{seed}-{step}"),
                                conversation: group.clone(),
                                body: b"x".to_vec().into(),
                                ..Default::default()
                            },
                            Box::new(move |r| {
                                let _ = tx.send(r);
                            }),
                        )
                        .unwrap();
                    rx.await.unwrap().unwrap().conversation
                } else {
                    let mut to = users[rng.gen_range(0..4)];
                    if to == from {
                        to = if from == "u0" { "u1" } else { "u0" };
                    }
                    w.send(from, to, &format!("{seed}-{step}"))
                        .await
                        .unwrap()
                        .conversation
                };
                let l = log.entry(conv.clone()).or_default();
                l.push(from.to_string());
                read.insert((from.to_string(), conv), l.len() as u64);
            } else {
                let convs: Vec<String> = log
                    .keys()
                    .filter(|c| members(c).iter().any(|m| m == from))
                    .cloned()
                    .collect();
                if convs.is_empty() {
                    continue;
                }
                let conv = &convs[rng.gen_range(0..convs.len())];
                let last = log[conv].len() as u64;
                let seq = rng.gen_range(0..=last);
                let st = w.receipts.mark_read(from, conv, seq).await.unwrap();
                let want = if seq == 0 { last } else { seq };
                let r = read.entry((from.to_string(), conv.clone())).or_default();
                *r = (*r).max(want);
                assert_eq!(st.read_seq, *r, "seed {seed} step {step}");
            }
            for u in users {
                let have = unread(&w, u).await;
                for (conv, senders) in &log {
                    if !members(conv).iter().any(|m| m == u) {
                        continue;
                    }
                    let r = read
                        .get(&(u.to_string(), conv.clone()))
                        .copied()
                        .unwrap_or(0);
                    let want = senders.len() as u64 - r;
                    assert_eq!(have[conv], want, "seed {seed} step {step}: {u} in {conv}");
                }
            }
        }
        w.stop().await;
    }
}

#[tokio::test]
async fn pinned_conversations_come_first_and_muted_ones_stay_out_of_the_total() {
    let w = World::new();
    w.users(&["me", "old", "new"]);
    w.send("old", "me", "1").await.unwrap();
    w.clock.advance(10);
    w.send("new", "me", "2").await.unwrap();
    w.send("new", "me", "3").await.unwrap();
    let old = direct_conversation("me", "old");
    let new = direct_conversation("me", "new");
    let order = |l: &pb::ConversationList| -> Vec<String> {
        l.conversations
            .iter()
            .map(|c| c.conversation.clone())
            .collect()
    };
    let l = w.conversations.list("me", 0, 0).await.unwrap();
    assert_eq!(
        (order(&l), l.total_unread),
        (vec![new.clone(), old.clone()], 3)
    );

    w.router.delivered.lock().unwrap().clear();
    let s = w
        .conversations
        .set_settings("me", &old, None, Some(true))
        .await
        .unwrap();
    assert!(s.pinned && !s.muted);
    let s = w
        .conversations
        .set_settings("me", &new, Some(true), None)
        .await
        .unwrap();
    assert!(s.muted && !s.pinned);
    // Each change went to the user's devices.
    let pushed: Vec<String> = w
        .router
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(pushed, ["me", "me"]);
    let l = w.conversations.list("me", 0, 0).await.unwrap();
    assert_eq!(order(&l), vec![old.clone(), new.clone()], "pinned first");
    assert_eq!(l.total_unread, 1, "the muted conversation's 2 are left out");
    assert_eq!(
        l.conversations[1].unread, 2,
        "but it still shows its own count"
    );
    // Setting what is already set changes nothing and tells nobody.
    w.router.delivered.lock().unwrap().clear();
    w.conversations
        .set_settings("me", &new, Some(true), None)
        .await
        .unwrap();
    assert!(w.router.delivered.lock().unwrap().is_empty());
    // Another user's list is theirs alone.
    assert!(
        !w.conversations
            .list("new", 0, 0)
            .await
            .unwrap()
            .conversations[0]
            .muted
    );
    let e = w
        .conversations
        .set_settings("old", &new, Some(true), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    w.stop().await;
}

#[tokio::test]
async fn who_read_a_message_names_the_members_at_or_past_it() {
    let w = World::new();
    w.users(&["own", "a", "b"]);
    let conv = w
        .groups
        .create_group(
            "own",
            pb::CreateGroup {
                name: "g".into(),
                members: vec!["a".into(), "b".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .conversation;
    let (tx, rx) = tokio::sync::oneshot::channel();
    w.messages
        .send(
            "own",
            "d",
            pb::Send {
                client_msg_id: "hi".into(),
                conversation: conv.clone(),
                body: b"hi".to_vec().into(),
                ..Default::default()
            },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .unwrap();
    let seq = rx.await.unwrap().unwrap().seq;
    let r = w.receipts.who_read("own", &conv, seq).await.unwrap();
    assert_eq!(
        (r.read_count, r.members),
        (0, 2),
        "the sender does not count"
    );
    w.receipts.mark_read("b", &conv, 0).await.unwrap();
    let r = w.receipts.who_read("a", &conv, seq).await.unwrap();
    assert_eq!(
        (r.read_by, r.read_count, r.members),
        (vec!["b".to_string()], 1, 2)
    );
    // The creation event was caused by `own`: a and b are the others; b read it too.
    let r = w.receipts.who_read("own", &conv, 1).await.unwrap();
    assert_eq!(r.read_by, vec!["b".to_string()]);
    for bad in [0, seq + 1] {
        let e = w.receipts.who_read("own", &conv, bad).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }
    w.users(&["eve"]);
    let e = w.receipts.who_read("eve", &conv, 1).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    w.stop().await;
}

async fn send_to(
    w: &World,
    from: &str,
    conv: &str,
    cmid: &str,
    f: impl FnOnce(&mut pb::Send),
) -> crate::error::ServiceResult<crate::messages::AckInfo> {
    let mut req = pb::Send {
        client_msg_id: cmid.into(),
        conversation: conv.into(),
        body: cmid.as_bytes().to_vec().into(),
        ..Default::default()
    };
    f(&mut req);
    let (tx, rx) = tokio::sync::oneshot::channel();
    w.messages.send(
        from,
        "d",
        req,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    rx.await.unwrap()
}

#[tokio::test]
async fn replies_and_mentions_are_checked_and_unread_mentions_counted() {
    let w = World::new();
    w.users(&["own", "a", "b", "out"]);
    let conv = w
        .groups
        .create_group(
            "own",
            pb::CreateGroup {
                name: "g".into(),
                members: vec!["a".into(), "b".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .conversation;
    let mentions = |l: pb::ConversationList| l.conversations[0].mentions;
    let hi = send_to(&w, "a", &conv, "hi", |r| {
        r.mentions = vec!["b".into(), "b".into(), "a".into()];
        r.reply_to = 1;
    })
    .await
    .unwrap();
    let stored = w.store.message(&conv, hi.seq).unwrap().unwrap();
    assert_eq!(
        (stored.reply_to, stored.mentions.clone()),
        (1, vec!["b".to_string()]),
        "each once, not the sender"
    );
    assert_eq!(mentions(w.conversations.list("b", 0, 0).await.unwrap()), 1);
    assert_eq!(
        mentions(w.conversations.list("own", 0, 0).await.unwrap()),
        0
    );

    send_to(&w, "own", &conv, "all", |r| r.mention_all = true)
        .await
        .unwrap();
    assert_eq!(mentions(w.conversations.list("b", 0, 0).await.unwrap()), 2);
    assert_eq!(mentions(w.conversations.list("a", 0, 0).await.unwrap()), 1);
    assert_eq!(
        mentions(w.conversations.list("own", 0, 0).await.unwrap()),
        0,
        "one's own @all"
    );
    w.receipts.mark_read("b", &conv, hi.seq).await.unwrap();
    assert_eq!(mentions(w.conversations.list("b", 0, 0).await.unwrap()), 1);
    w.receipts.mark_read("b", &conv, 0).await.unwrap();
    assert_eq!(mentions(w.conversations.list("b", 0, 0).await.unwrap()), 0);

    // Bad input: refused with its code, nothing stored.
    let last = w.store.last_seq(&conv).unwrap();
    let e = send_to(&w, "a", &conv, "x1", |r| r.reply_to = last + 1)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = send_to(&w, "a", &conv, "x2", |r| r.mentions = vec!["out".into()])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = send_to(&w, "a", &conv, "x3", |r| r.mention_all = true)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "@all by a plain member");
    w.send("a", "b", "direct").await.unwrap();
    let direct = direct_conversation("a", "b");
    let e = send_to(&w, "a", &direct, "x4", |r| r.mention_all = true)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(w.store.last_seq(&conv).unwrap(), last);
    w.stop().await;
}
