//! The index following the timelines (in memory, with the indexer thread): sends, edits
//! and recalls reach it after they are durable; an index started after the messages
//! catches up from the timelines; query checks and page tokens.

use std::time::{Duration, Instant};

use tern_proto::pb::ErrorCode;

use super::*;
use crate::testkit::World;

fn settings() -> SearchSettings {
    SearchSettings {
        search_commit_ms: 20,
        search_rate: 1000,
        search_burst: 1000,
        ..SearchSettings::default()
    }
}

/// A search over `w` with its indexer running (the tap set when `tap`).
fn search_over(w: &World, tap: bool) -> (Arc<Search>, std::thread::JoinHandle<()>) {
    let s = Arc::new(Search::new(
        w.store.clone(),
        w.convs.clone(),
        w.seq.clone(),
        w.clock.clone(),
        settings(),
    ));
    s.open_in_ram().unwrap();
    if tap {
        w.seq.set_tap(&(s.clone() as Arc<dyn DurableTap>));
    }
    let t = s.run_indexer().expect("an indexer");
    (s, t)
}

fn req(q: &str) -> pb::SearchMessages {
    pb::SearchMessages {
        query: q.into(),
        ..Default::default()
    }
}

async fn send(w: &World, from: &str, to: &str, cmid: &str, text: &str) -> u64 {
    w.acked(|done| {
        w.messages.send(
            from,
            "d",
            pb::Send {
                client_msg_id: cmid.into(),
                peer: to.into(),
                body: text.as_bytes().to_vec().into(),
                ..Default::default()
            },
            done,
        )
    })
    .await
    .unwrap()
    .seq
}

/// Bodies of the hits once the index has no lag left.
async fn settled(s: &Arc<Search>, user: &str, q: &str) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.search(user, req(q)).await.unwrap();
        if r.index_lag == 0 {
            return r
                .messages
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect();
        }
        assert!(Instant::now() < until, "the index never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn docs_become(s: &Search, n: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while s.engine.get().unwrap().docs() != n || s.lag() != 0 {
        assert!(
            Instant::now() < until,
            "{} documents, lag {}; expected {n}",
            s.engine.get().unwrap().docs(),
            s.lag()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_edits_and_recalls_reach_the_index_after_they_are_durable() {
    let w = World::new();
    w.users(&["a", "b"]);
    let (s, t) = search_over(&w, true);
    let conv = tern_proto::direct_conversation("a", "b");
    let first = send(&w, "a", "b", "c1", "the quick brown fox").await;
    send(&w, "b", "a", "c2", "你好世界").await;
    assert_eq!(settled(&s, "b", "quick").await, ["the quick brown fox"]);
    assert_eq!(settled(&s, "a", "世界").await, ["你好世界"]);
    docs_become(&s, 2).await;

    w.acked(|done| {
        w.changes.edit(
            "a",
            "d",
            pb::Edit {
                client_msg_id: "e1".into(),
                conversation: conv.clone(),
                seq: first,
                body: b"a slow red fox".to_vec().into(),
                content_type: String::new(),
            },
            done,
        )
    })
    .await
    .unwrap();
    assert_eq!(settled(&s, "b", "slow").await, ["a slow red fox"]);
    assert!(settled(&s, "b", "quick").await.is_empty());
    // The edit entry itself is no document: still 2.
    docs_become(&s, 2).await;

    w.acked(|done| {
        w.changes.recall(
            "a",
            "d",
            pb::Recall {
                client_msg_id: "r1".into(),
                conversation: conv.clone(),
                seq: first,
            },
            done,
        )
    })
    .await
    .unwrap();
    docs_become(&s, 1).await;
    assert!(settled(&s, "b", "fox").await.is_empty());
    s.stop();
    t.join().unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_started_later_catches_up_from_the_timelines() {
    let w = World::new();
    w.users(&["a", "b", "c"]);
    for i in 0..700 {
        send(&w, "a", "b", &format!("m{i}"), &format!("hello number {i}")).await;
    }
    send(&w, "a", "c", "x", "hello c").await;
    // No tap: only the start-up comparison of timelines and marks finds them.
    let (s, t) = search_over(&w, false);
    docs_become(&s, 701).await;
    let r = s.search("b", req("hello")).await.unwrap();
    assert_eq!(r.messages.len(), DEFAULT_LIMIT);
    assert_eq!(r.messages[0].seq, 700, "newest first");
    assert!(!r.next_page.is_empty());
    assert_eq!(settled(&s, "c", "hello").await, ["hello c"]);
    s.stop();
    t.join().unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_entries_trimmed_by_retention_leave_the_index() {
    let w = World::new();
    w.users(&["a", "b"]);
    let (s, t) = search_over(&w, true);
    let conv = tern_proto::direct_conversation("a", "b");
    for i in 1..=10 {
        send(&w, "a", "b", &format!("t{i}"), &format!("note {i}")).await;
    }
    docs_become(&s, 10).await;
    // Retention trims seqs 1..=7 (what the sweeper commits).
    w.store
        .commit(&[crate::store::Mutation::TrimTimeline {
            conversation: conv.clone(),
            from: 1,
            below: 8,
        }])
        .unwrap();
    // The next entry of the conversation lets the indexer see the trim.
    send(&w, "b", "a", "t11", "note 11").await;
    docs_become(&s, 4).await;
    let hits = settled(&s, "a", "note").await;
    assert_eq!(hits, ["note 11", "note 10", "note 9", "note 8"]);
    s.stop();
    t.join().unwrap();
    w.stop().await;
}

#[tokio::test]
async fn bad_queries_and_page_tokens_are_invalid_arguments() {
    let w = World::new();
    let s = Arc::new(Search::new(
        w.store.clone(),
        w.convs.clone(),
        w.seq.clone(),
        w.clock.clone(),
        settings(),
    ));
    for q in [
        "",
        "  ",
        "AND OR NOT",
        "*&&",
        &"x".repeat(MAX_QUERY_BYTES + 1),
    ] {
        let e = s.search("a", req(q)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{q:?}");
    }
    // Valid, but no index opened: UNAVAILABLE, not a panic.
    let e = s.search("a", req("hello")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    for page in ["x", "1.2.3", "1.2.3.4.5", "2.1.1.1", "1.g.1.1", "1..1.1"] {
        assert!(decode_page(page).is_err(), "{page:?}");
    }
    let k = (u64::MAX, 7, 0xdead_beef);
    assert_eq!(decode_page(&encode_page(k)).unwrap(), Some(k));
    assert_eq!(decode_page("").unwrap(), None);
    w.stop().await;
}

#[test]
fn what_is_searchable_of_a_message() {
    let text = pb::Message {
        body: b"hi there".to_vec().into(),
        ..Default::default()
    };
    assert_eq!(searchable_text(&text).as_deref(), Some("hi there"));
    let recalled = pb::Message {
        recalled: true,
        ..text.clone()
    };
    assert_eq!(searchable_text(&recalled), None);
    let edit = pb::Message {
        kind: MessageKind::Edit as i32,
        ..text.clone()
    };
    assert_eq!(searchable_text(&edit), None);
    let binary = pb::Message {
        content_type: "application/octet-stream".into(),
        ..text.clone()
    };
    assert_eq!(searchable_text(&binary), None);
    let file = pb::Message {
        body: Default::default(),
        attachment: Some(pb::Attachment {
            name: "report-2024.pdf".into(),
            ..Default::default()
        }),
        ..text
    };
    assert!(searchable_text(&file).unwrap().contains("report-2024.pdf"));
}
