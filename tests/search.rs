//! History search over real sockets (issue 14): SearchMessages finds English and Chinese
//! text, only in the caller's conversations (or one of them, or from one sender), newest
//! first and paged; an edited message by its new text only, a recalled one not at all; a
//! deleted or corrupt index directory is rebuilt at start; bad queries get
//! INVALID_ARGUMENT; the metrics show the indexer.
//!
//! Messages become searchable shortly after their ack (the index commits in batches), so
//! the tests ask again until the index has caught up, within a bounded time: never a
//! sleep taken as proof.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{direct_conversation, Body, Frame};
use tern_tests::*;

/// How long the index may take to catch up (it commits every 200 ms).
const CATCH_UP: Duration = Duration::from_secs(20);

fn query(q: &str) -> pb::SearchMessages {
    pb::SearchMessages {
        query: q.into(),
        ..Default::default()
    }
}

async fn search(c: &mut Client, req: pb::SearchMessages) -> Frame {
    c.request(Body::SearchMessages(req)).await
}

fn result(f: &Frame) -> pb::SearchResult {
    expect_body!(f, SearchResult)
}

fn texts(r: &pb::SearchResult) -> Vec<String> {
    r.messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Searches until the answer satisfies `done` and the index has no lag (so a negative
/// answer means "not in the index", not "not indexed yet"); panics after [`CATCH_UP`].
async fn settled(
    c: &mut Client,
    req: pb::SearchMessages,
    done: impl Fn(&pb::SearchResult) -> bool,
) -> pb::SearchResult {
    let until = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let r = result(&search(c, req.clone()).await);
        if done(&r) && r.index_lag == 0 {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "search {:?} never settled; last answer {:?} (lag {})",
            req.query,
            texts(&r),
            r.index_lag
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hits' texts once the index has caught up with everything sent before.
async fn found(c: &mut Client, req: pb::SearchMessages) -> Vec<String> {
    texts(&settled(c, req, |_| true).await)
}

/// A server with a fast search rate limit out of the way.
async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.search.search_rate = 1000;
        c.search.search_burst = 1000;
    })
    .await
}

#[tokio::test]
async fn english_and_chinese_text_is_found_only_in_the_callers_conversations() {
    let server = server().await;
    let t = Tcp;
    let mut a = server.user(t, "sa", "d").await;
    let mut b = server.user(t, "sb", "d").await;
    let mut c = server.user(Quic, "sc", "d").await;
    let ab = direct_conversation("sa", "sb");
    ack_of(&a.send_text("sb", "m1", "Hello brave new World").await);
    ack_of(&b.send_text("sa", "m2", "你好世界").await);
    ack_of(&a.send_text("sc", "m3", "a secret world for sc only").await);
    let g = a.create_group("g", &["sb", "sc"]).await.conversation;
    ack_of(&c.send_text(&g, "m4", "world cup tonight, 世界杯").await);

    // Newest first; the a-c message is not b's to find.
    assert_eq!(
        found(&mut b, query("world")).await,
        ["world cup tonight, 世界杯", "Hello brave new World"]
    );
    assert_eq!(
        found(&mut c, query("WORLD")).await,
        ["world cup tonight, 世界杯", "a secret world for sc only"]
    );
    assert_eq!(
        found(&mut b, query("world hello")).await,
        ["Hello brave new World"]
    );
    assert!(found(&mut b, query("worl")).await.is_empty(), "whole words");
    // Chinese: a word inside a run of characters, and single characters.
    assert_eq!(
        found(&mut b, query("世界")).await,
        ["world cup tonight, 世界杯", "你好世界"]
    );
    assert_eq!(found(&mut a, query("你好世界")).await, ["你好世界"]);
    assert_eq!(
        found(&mut a, query("杯")).await,
        ["world cup tonight, 世界杯"]
    );
    assert!(found(&mut a, query("界世")).await.is_empty());
    assert!(found(&mut a, query("你 好 世 界 杯")).await.is_empty());

    // Within one conversation, and from one sender.
    let in_ab = pb::SearchMessages {
        conversation: ab.clone(),
        ..query("世界")
    };
    assert_eq!(found(&mut b, in_ab.clone()).await, ["你好世界"]);
    let from_c = pb::SearchMessages {
        sender: "sc".into(),
        ..query("world")
    };
    assert_eq!(found(&mut b, from_c).await, ["world cup tonight, 世界杯"]);
    let from_a = pb::SearchMessages {
        sender: "sa".into(),
        ..query("世界")
    };
    assert!(found(&mut b, from_a).await.is_empty());
    // A conversation the caller is not in: FORBIDDEN, whatever it holds.
    expect_error(&search(&mut c, in_ab).await, ErrorCode::Forbidden);
    // Hits are the stored messages, whole.
    let r = settled(&mut b, query("hello"), |r| r.messages.len() == 1).await;
    let m = &r.messages[0];
    assert_eq!(
        (m.conversation.as_str(), m.seq, m.sender.as_str()),
        (ab.as_str(), 1, "sa")
    );
    assert!(m.server_time_ms > 0);
    server.stop().await;
}

#[tokio::test]
async fn an_edit_is_found_by_its_new_text_and_a_recall_not_at_all() {
    let server = server().await;
    let mut a = server.user(Tcp, "ea", "d").await;
    let mut b = server.user(Tcp, "eb", "d").await;
    let conv = direct_conversation("ea", "eb");
    let seq = ack_of(&a.send_text("eb", "m1", "meet at the old bridge").await).seq;
    let gone = ack_of(&a.send_text("eb", "m2", "the vault code is 1234").await).seq;
    ack_of(&a.send_text("eb", "m3", "bridge club on friday").await);
    assert_eq!(found(&mut b, query("bridge")).await.len(), 2);

    let f = a
        .request(Body::Edit(pb::Edit {
            client_msg_id: "e1".into(),
            conversation: conv.clone(),
            seq,
            body: b"meet at the new harbour".to_vec().into(),
            content_type: String::new(),
        }))
        .await;
    ack_of(&f);
    let r = settled(&mut b, query("harbour"), |r| r.messages.len() == 1).await;
    assert_eq!(r.messages[0].seq, seq);
    assert!(r.messages[0].edited);
    assert_eq!(
        found(&mut b, query("bridge")).await,
        ["bridge club on friday"],
        "the old text is no longer found"
    );
    assert!(found(&mut b, query("old")).await.is_empty());

    assert_eq!(found(&mut b, query("vault")).await.len(), 1);
    ack_of(
        &a.request(Body::Recall(pb::Recall {
            client_msg_id: "r1".into(),
            conversation: conv.clone(),
            seq: gone,
        }))
        .await,
    );
    // At once (hits are re-read from the store), and after the index caught up.
    assert!(texts(&result(&search(&mut b, query("vault")).await)).is_empty());
    assert!(found(&mut b, query("vault code")).await.is_empty());
    assert!(found(&mut a, query("1234")).await.is_empty());

    // Deleted for me: gone for the one who deleted it, not for the other.
    let f = b
        .request(Body::DeleteForMe(pb::DeleteForMe {
            conversation: conv.clone(),
            seq: seq + 2,
        }))
        .await;
    assert!(matches!(f.body, Some(Body::Ok(_))), "{f:?}");
    assert!(found(&mut b, query("friday")).await.is_empty());
    assert_eq!(found(&mut a, query("friday")).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn pages_go_newest_first_and_cover_every_hit_once() {
    let server = server().await;
    let mut a = server.user(Tcp, "pa", "d").await;
    let mut b = server.user(Tcp, "pb", "d").await;
    for i in 0..25 {
        ack_of(
            &a.send_text("pb", &format!("m{i}"), &format!("note number {i}"))
                .await,
        );
        ack_of(&a.send_text("pb", &format!("x{i}"), "unrelated").await);
    }
    settled(&mut b, query("note"), |r| r.messages.len() == 20).await;
    let mut seqs = Vec::new();
    let mut page = String::new();
    let mut pages = 0;
    loop {
        let r = result(
            &search(
                &mut b,
                pb::SearchMessages {
                    limit: 10,
                    page: page.clone(),
                    ..query("note")
                },
            )
            .await,
        );
        assert!(r.messages.len() <= 10);
        seqs.extend(r.messages.iter().map(|m| m.seq));
        pages += 1;
        if r.next_page.is_empty() {
            break;
        }
        page = r.next_page;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seqs.len(), 25, "{seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(seqs.iter().collect::<HashSet<_>>().len(), 25);
    // The default page is 20; a limit past 100 is capped, not refused.
    assert_eq!(found(&mut b, query("note")).await.len(), 20);
    let r = result(
        &search(
            &mut b,
            pb::SearchMessages {
                limit: 5000,
                ..query("note")
            },
        )
        .await,
    );
    assert_eq!(r.messages.len(), 25);
    assert!(r.next_page.is_empty());
    server.stop().await;
}

async fn start_in(dir: &Path) -> TestServer {
    let dir = dir.to_path_buf();
    TestServer::start_with(move |c| {
        c.store.data_dir = dir.clone();
        c.search.search_rate = 1000;
        c.search.search_burst = 1000;
    })
    .await
}

#[tokio::test]
async fn a_deleted_or_corrupt_index_is_rebuilt_from_the_timelines_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let index_dir = data.join("search");

    let server = start_in(&data).await;
    let mut a = server.user(Tcp, "ra", "d").await;
    let mut b = server.user(Tcp, "rb", "d").await;
    for i in 0..30 {
        ack_of(
            &a.send_text("rb", &format!("m{i}"), &format!("hello 世界 {i}"))
                .await,
        );
    }
    let g = a.create_group("g", &["rb"]).await.conversation;
    ack_of(&b.send_text(&g, "g1", "lunch in the group").await);
    assert_eq!(found(&mut b, query("世界")).await.len(), 20);
    assert!(
        index_dir.join("meta.json").exists(),
        "the index lives in <data-dir>/search/"
    );
    server.stop().await;

    // Missing: rebuilt at start, everything found again.
    std::fs::remove_dir_all(&index_dir).unwrap();
    let server = start_in(&data).await;
    let mut b = server.client(Tcp).await;
    b.login("rb", "d").await;
    let r = settled(&mut b, query("世界 hello"), |r| r.messages.len() == 20).await;
    assert_eq!(r.messages[0].seq, 30, "newest first");
    assert_eq!(found(&mut b, query("lunch")).await, ["lunch in the group"]);
    let mut all = 0;
    let mut page = String::new();
    loop {
        let r = result(
            &search(
                &mut b,
                pb::SearchMessages {
                    limit: 100,
                    page: page.clone(),
                    ..query("hello")
                },
            )
            .await,
        );
        all += r.messages.len();
        if r.next_page.is_empty() {
            break;
        }
        page = r.next_page;
    }
    assert_eq!(all, 30, "every message is back in the index");
    server.stop().await;

    // Corrupt: garbage where the index's metadata was; rebuilt the same way.
    std::fs::write(index_dir.join("meta.json"), b"{ not json").unwrap();
    let server = start_in(&data).await;
    let mut b = server.client(Tcp).await;
    b.login("rb", "d").await;
    settled(&mut b, query("世界"), |r| r.messages.len() == 20).await;
    assert_eq!(found(&mut b, query("lunch")).await, ["lunch in the group"]);
    server.stop().await;
}

#[tokio::test]
async fn bad_queries_are_refused_with_invalid_argument() {
    let server = TestServer::start_with(|c| {
        c.search.search_rate = 0;
        c.search.search_burst = 11;
    })
    .await;
    let mut a = server.user(Tcp, "ba", "d").await;
    let long = "word ".repeat(60);
    for (q, why) in [
        ("", "empty"),
        ("   ", "empty"),
        (long.as_str(), "longer than 256"),
        ("AND OR", "nothing to search"),
        ("*&&", "nothing to search"),
        ("\"-\" ()", "nothing to search"),
    ] {
        let msg = expect_error(&search(&mut a, query(q)).await, ErrorCode::InvalidArgument);
        assert!(msg.contains(why), "{q:?}: {msg}");
    }
    let bad_page = pb::SearchMessages {
        page: "not-a-token".into(),
        ..query("hello")
    };
    expect_error(&search(&mut a, bad_page).await, ErrorCode::InvalidArgument);
    let bad_sender = pb::SearchMessages {
        sender: "Not A Name".into(),
        ..query("hello")
    };
    expect_error(
        &search(&mut a, bad_sender).await,
        ErrorCode::InvalidArgument,
    );
    let malformed = pb::SearchMessages {
        conversation: "g:nosuchgroup".into(),
        ..query("hello")
    };
    expect_error(&search(&mut a, malformed).await, ErrorCode::InvalidArgument);
    let unknown = pb::SearchMessages {
        conversation: "g:0123456789abcdef".into(),
        ..query("hello")
    };
    expect_error(&search(&mut a, unknown).await, ErrorCode::Forbidden);
    // A user with no conversation finds nothing (and the query is fine).
    let r = result(&search(&mut a, query("hello")).await);
    assert!(r.messages.is_empty() && r.next_page.is_empty());
    // 11 searches so far, the whole burst (no refill at rate 0): the next one is
    // rate-limited, with a retry hint.
    let f = search(&mut a, query("hello")).await;
    expect_error(&f, ErrorCode::RateLimited);
    match f.body {
        Some(Body::Error(e)) => assert!(e.retry_after_ms > 0),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn the_metrics_show_what_was_indexed_and_the_lag() {
    let server = TestServer::start_with(|c| {
        c.network.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.search.search_rate = 1000;
        c.search.search_burst = 1000;
    })
    .await;
    let mut a = server.user(Tcp, "ma", "d").await;
    let mut b = server.user(Tcp, "mb", "d").await;
    ack_of(&a.send_text("mb", "m1", "metrics please").await);
    found(&mut b, query("metrics")).await;
    let text = scrape_metrics(server.metrics.expect("metrics endpoint")).await;
    let value = |name: &str| -> f64 {
        let present = text.lines().any(|l| l.starts_with(&format!("{name} ")));
        assert!(present, "{name} missing from\n{text}");
        metric_value(&text, name)
    };
    assert!(value("tern_search_indexed_total") >= 1.0);
    assert!(value("tern_search_index_lag") >= 0.0);
    assert!(text.contains("tern_search_seconds_count"));
    server.stop().await;
}
