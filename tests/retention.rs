//! Retention over real sockets (issue 14, docs/PROTOCOL.md 8.11): a server with small
//! retention settings and a short sweep interval trims inboxes by count and by age and
//! timelines by count; Sync and Pull from below what is kept answer CURSOR_TRIMMED naming
//! the first retained position; the SDK recovers from it by itself (every message still
//! retained exactly once and in order, none it already had again); with the default
//! config nothing is trimmed.
//!
//! The sweeper runs on its own schedule: tests wait for its effect (bounded polls), never
//! for a fixed time, except the "nothing is trimmed" check, which lets several sweeps
//! pass on purpose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_proto::pb::{self, ErrorCode};
use tern_proto::{Body, Frame};
use tern_sdk::{Client as SdkClient, Event, Events, SavedState, StateStore, TransportMode};
use tern_tests::*;

const WAIT: Duration = Duration::from_secs(20);

fn retention(
    inbox_entries: u64,
    inbox_age_secs: u64,
    timeline_entries: u64,
) -> impl FnOnce(&mut tern_server::Config) {
    move |c| {
        c.retention.retention_inbox_max_entries = inbox_entries;
        c.retention.retention_inbox_max_age_secs = inbox_age_secs;
        c.retention.retention_timeline_max_entries = timeline_entries;
        c.retention.retention_timeline_min_age_secs = 0;
        c.retention.retention_sweep_interval_ms = 50;
    }
}

async fn sync_raw(c: &mut Client, after: u64) -> Frame {
    c.request(Body::Sync(pb::Sync {
        after_inbox_seq: Some(after),
        limit: 1000,
    }))
    .await
}

/// Polls a Sync from `after` until it answers CURSOR_TRIMMED; returns its message.
async fn until_sync_trimmed(c: &mut Client, after: u64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let f = sync_raw(c, after).await;
        if let Some(Body::Error(e)) = &f.body {
            assert_eq!(e.code, ErrorCode::CursorTrimmed as i32, "{e:?}");
            return e.message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbox was never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first retained inbox seq a CURSOR_TRIMMED message names.
fn first_retained(message: &str) -> u64 {
    tern_sdk::engine::recovery::first_retained_inbox_seq(message)
        .unwrap_or_else(|| panic!("no first retained inbox seq in {message:?}"))
}

fn texts(items: &[pb::InboxItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| text(i.message.as_ref().unwrap()))
        .collect()
}

#[tokio::test]
async fn the_inbox_is_trimmed_by_count_and_older_cursors_get_cursor_trimmed() {
    init_logs();
    let server = TestServer::start_with(|c| {
        retention(3, 0, 0)(c);
        c.network.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut a = server.user(Tcp, "rc_ann", "d").await;
    let mut b = server.user(Tcp, "rc_bob", "d").await;
    let mut conv = String::new();
    for i in 1..=10 {
        conv = ack_of(
            &a.send_text("rc_bob", &format!("m{i}"), &format!("t{i}"))
                .await,
        )
        .conversation;
    }
    // Bob keeps his 3 newest inbox entries: 8, 9, 10.
    let msg = until_sync_trimmed(&mut b, 0).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut first = first_retained(&msg);
    while first < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "trimmed only below {first}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        first = first_retained(&until_sync_trimmed(&mut b, 0).await);
    }
    assert_eq!(first, 8, "{msg}");
    assert!(msg.contains("inbox head 10"), "{msg}");
    let f = sync_raw(&mut b, 6).await;
    expect_error(&f, ErrorCode::CursorTrimmed);
    let kept = b.sync_all(7, 100).await;
    assert_eq!(texts(&kept), ["t8", "t9", "t10"]);
    // The sender's own inbox copies are trimmed the same way.
    first_retained(&until_sync_trimmed(&mut a, 0).await);
    // Trimming the inbox leaves the timeline whole: Pull still has all ten.
    let p = expect_pull(&b.pull(&conv, 0, 100).await);
    assert_eq!(p.messages.len(), 10);
    assert_eq!((p.first_seq, p.from_seq, p.to_seq), (1, 1, 10));
    // New messages keep counting from the head.
    let ack = ack_of(&a.send_text("rc_bob", "m11", "t11").await);
    assert_eq!(ack.seq, 11);
    let next = b.sync_all(10, 100).await;
    assert_eq!(
        (
            next.len(),
            next[0].inbox_seq,
            text(next[0].message.as_ref().unwrap()).as_str()
        ),
        (1, 11, "t11")
    );
    let m = scrape_metrics(server.metrics.expect("metrics on")).await;
    assert!(
        metric_value(&m, "tern_retention_trimmed_total{kind=\"inbox\"}") >= 7.0 + 7.0,
        "Bob's 7 and Ann's 7 trimmed entries are counted: {m}"
    );
    assert!(
        metric_value(&m, "tern_retention_cursor_trimmed_total") >= 2.0,
        "{m}"
    );
    assert!(
        metric_value(&m, "tern_retention_last_sweep_timestamp_seconds") > 0.0,
        "{m}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_inbox_is_trimmed_by_age() {
    init_logs();
    let server = TestServer::start_with(retention(0, 2, 0)).await;
    let mut a = server.user(Tcp, "ra_ann", "d").await;
    let mut b = server.user(Tcp, "ra_bob", "d").await;
    for i in 1..=5 {
        ack_of(
            &a.send_text("ra_bob", &format!("m{i}"), &format!("t{i}"))
                .await,
        );
    }
    // Once they are 2 s old, all five go (an inbox may be trimmed whole).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = until_sync_trimmed(&mut b, 0).await;
        if first_retained(&msg) == 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{msg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The head stays: the next message is inbox seq 6, served to a cursor at 5.
    ack_of(&a.send_text("ra_bob", "m6", "t6").await);
    let items = b.sync_all(5, 100).await;
    assert_eq!(items[0].inbox_seq, 6);
    assert_eq!(texts(&items), ["t6"]);
    server.stop().await;
}

#[tokio::test]
async fn the_timeline_is_trimmed_by_count_and_pull_from_below_gets_cursor_trimmed() {
    init_logs();
    let server = TestServer::start_with(retention(0, 0, 4)).await;
    let mut a = server.user(Tcp, "rt_ann", "d").await;
    let mut b = server.user(Tcp, "rt_bob", "d").await;
    let mut conv = String::new();
    for i in 1..=10 {
        conv = ack_of(
            &a.send_text("rt_bob", &format!("m{i}"), &format!("t{i}"))
                .await,
        )
        .conversation;
    }
    // A forward pull from a trimmed position: CURSOR_TRIMMED naming the first retained seq.
    let deadline = tokio::time::Instant::now() + WAIT;
    let msg = loop {
        let f = b.pull(&conv, 2, 100).await;
        match &f.body {
            Some(Body::Error(e)) if e.message.contains("first retained seq is 7") => {
                assert_eq!(e.code, ErrorCode::CursorTrimmed as i32);
                break e.message.clone();
            }
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never trimmed to 7: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(msg.contains("pull from after_seq 0"), "{msg}");
    // From 0: served from the first retained seq, which first_seq tells.
    let p = expect_pull(&b.pull(&conv, 0, 100).await);
    assert_eq!(
        (p.first_seq, p.from_seq, p.to_seq, p.last_seq),
        (7, 7, 10, 10)
    );
    let got: Vec<String> = p.messages.iter().map(text).collect();
    assert_eq!(got, ["t7", "t8", "t9", "t10"]);
    assert!(p.complete);
    // Continuing from a retained position is not an error.
    let p = expect_pull(&b.pull(&conv, 8, 100).await);
    assert_eq!((p.from_seq, p.to_seq), (9, 10));
    // Backward (newest page): clipped at the first retained seq, and complete.
    let f = b
        .request(Body::Pull(pb::Pull {
            conversation: conv.clone(),
            before_seq: 11,
            limit: 100,
            ..Default::default()
        }))
        .await;
    let p = expect_pull(&f);
    assert_eq!((p.first_seq, p.from_seq, p.to_seq), (7, 7, 10));
    assert!(p.complete);
    // The inbox rule is off: Bob's inbox still has all ten entries; those whose message
    // was trimmed come as erased tombstones, the rest whole.
    let items = b.sync_all(0, 100).await;
    assert_eq!(items.len(), 10);
    for (i, it) in items.iter().enumerate() {
        let m = it.message.as_ref().unwrap();
        assert_eq!(m.seq, i as u64 + 1);
        if m.seq < 7 {
            assert!(m.expired && m.body.is_empty(), "{m:?}");
        } else {
            assert_eq!(text(m), format!("t{}", m.seq));
        }
    }
    // Seqs go on from the last one.
    assert_eq!(ack_of(&a.send_text("rt_bob", "m11", "t11").await).seq, 11);
    server.stop().await;
}

#[tokio::test]
async fn nothing_is_trimmed_with_the_default_config() {
    init_logs();
    let defaults = tern_server::Config::default();
    let r = &defaults.retention;
    assert_eq!(
        (
            r.retention_inbox_max_age_secs,
            r.retention_inbox_max_entries,
            r.retention_timeline_max_age_secs,
            r.retention_timeline_max_entries
        ),
        (0, 0, 0, 0),
        "retention is off by default"
    );
    // Default rules, but a sweep interval short enough that many sweeps would have run.
    let server = TestServer::start_with(|c| c.retention.retention_sweep_interval_ms = 10).await;
    let mut a = server.user(Tcp, "rd_ann", "d").await;
    let mut b = server.user(Tcp, "rd_bob", "d").await;
    let mut conv = String::new();
    for i in 1..=20 {
        conv = ack_of(
            &a.send_text("rd_bob", &format!("m{i}"), &format!("t{i}"))
                .await,
        )
        .conversation;
    }
    // Deliberately let time pass: a sweeper that trimmed would have by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.sync_all(0, 100).await.len(), 20);
    let p = expect_pull(&b.pull(&conv, 0, 100).await);
    assert_eq!((p.first_seq, p.messages.len()), (1, 20));
    server.stop().await;
}

/// SDK state kept across client restarts (the app's storage).
#[derive(Clone, Default)]
struct SharedState(Arc<Mutex<SavedState>>);

impl StateStore for SharedState {
    fn load(&mut self) -> std::io::Result<SavedState> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn save(&mut self, state: &SavedState) -> std::io::Result<()> {
        *self.0.lock().unwrap() = state.clone();
        Ok(())
    }
}

fn sdk(server: &TestServer, user: &str, state: &SharedState) -> (SdkClient, Events) {
    let mut c = sdk_config(server.tcp, &server.ca, user, "phone", TransportMode::Tcp);
    c.store = Box::new(state.clone());
    SdkClient::start(c)
}

/// Messages from others until `want` have come (or panics after WAIT), then nothing more
/// for a moment. Returns (conversation, text) in delivery order.
async fn receive(events: &mut Events, want: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Event::Message {
                message,
                own: false,
            })) => got.push((message.conversation.clone(), text(&message))),
            Ok(Some(Event::AuthLost { message, .. })) => panic!("auth lost: {message}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped after {got:?}"),
            Err(_) => panic!("got {} of {want}: {got:?}", got.len()),
        }
    }
    let extra = tokio::time::timeout(Duration::from_millis(700), async {
        loop {
            match events.next().await {
                Some(Event::Message {
                    message,
                    own: false,
                }) => return Some(message),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await;
    if let Ok(Some(m)) = extra {
        panic!(
            "one more message than expected: {} seq {} {:?}",
            m.conversation,
            m.seq,
            text(&m)
        );
    }
    got
}

/// The texts of one conversation, in delivery order.
fn of(got: &[(String, String)], conv: &str) -> Vec<String> {
    got.iter()
        .filter(|(c, _)| c == conv)
        .map(|(_, t)| t.clone())
        .collect()
}

#[tokio::test]
async fn the_sdk_recovers_from_a_trimmed_inbox_by_itself() {
    init_logs();
    // Bob keeps 4 inbox entries; timelines keep 12 entries each.
    let server = TestServer::start_with(retention(4, 0, 12)).await;
    register_all(server.tcp, &server.ca, &["rs_ann", "rs_bob", "rs_cat"]).await;
    let state = SharedState::default();
    let (bob, mut bob_events) = sdk(&server, "rs_bob", &state);
    let mut a = server.client(Tcp).await;
    a.login("rs_ann", "d").await;
    let mut c = server.client(Tcp).await;
    c.login("rs_cat", "d").await;
    let group = a
        .create_group("rs", &["rs_bob", "rs_cat"])
        .await
        .conversation;
    // Online: Bob gets the first two 1:1 messages and one from Cat.
    let direct = ack_of(&a.send_text("rs_bob", "a1", "a1").await).conversation;
    ack_of(&a.send_text("rs_bob", "a2", "a2").await);
    let cat = ack_of(&c.send_text("rs_bob", "c1", "c1").await).conversation;
    // CREATED (the group's first entry), a1, a2, c1.
    let first = receive(&mut bob_events, 4).await;
    assert_eq!(of(&first, &group).len(), 1);
    assert_eq!(of(&first, &direct), ["a1", "a2"]);
    assert_eq!(of(&first, &cat), ["c1"]);
    bob.close().await;
    drop(bob_events);

    // Offline: 20 more 1:1 messages (the timeline keeps a9..a22), 3 in the group, 1
    // from Cat. Bob's inbox keeps only its 4 newest entries.
    for i in 3..=22 {
        ack_of(
            &a.send_text("rs_bob", &format!("a{i}"), &format!("a{i}"))
                .await,
        );
    }
    for i in 1..=3 {
        let f = a
            .request(Body::Send(pb::Send {
                client_msg_id: format!("g{i}"),
                conversation: group.clone(),
                body: format!("g{i}").into_bytes().into(),
                ..Default::default()
            }))
            .await;
        ack_of(&f);
    }
    ack_of(&c.send_text("rs_bob", "c2", "c2").await);
    // Wait for the sweep, seen from a raw connection of Bob's: his inbox is trimmed past
    // what his phone had.
    let mut raw = server.client(Tcp).await;
    raw.login("rs_bob", "laptop").await;
    let cursor = state.0.lock().unwrap().cursors.inbox;
    assert!(cursor > 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = until_sync_trimmed(&mut raw, cursor).await;
        // Bob's inbox: the CREATED message, 22 + 3 + 2 messages: head 28, keeps 25..28.
        if first_retained(&msg) >= 25 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{msg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the 1:1 timeline is trimmed to its 12 newest entries.
    loop {
        let p = expect_pull(&raw.pull(&direct, 0, 100).await);
        if p.first_seq == 11 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timeline from {}",
            p.first_seq
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The phone comes back: no app code runs, it just receives.
    let (bob, mut bob_events) = sdk(&server, "rs_bob", &state);
    let got = receive(&mut bob_events, 12 + 3 + 1).await;
    // 1:1 with Ann: a1, a2 were had; a3..a10 were trimmed from the timeline too (the
    // conversation keeps seq 11..22 = a11..a22); everything retained, once, in order.
    let want: Vec<String> = (11..=22).map(|i| format!("a{i}")).collect();
    assert_eq!(of(&got, &direct), want);
    assert_eq!(of(&got, &group), ["g1", "g2", "g3"]);
    assert_eq!(of(&got, &cat), ["c2"], "c1 was had already");
    // Live delivery goes on after the recovery, exactly once.
    ack_of(&a.send_text("rs_bob", "a23", "a23").await);
    let more = receive(&mut bob_events, 1).await;
    assert_eq!(more, [(direct.clone(), "a23".to_string())]);
    bob.close().await;
    server.stop().await;
}
