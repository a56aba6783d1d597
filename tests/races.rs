//! Racing resumes: two connections authenticate the same (user, device) at the same
//! moment, over TCP+TCP and QUIC+TCP, while messages to that user are in flight, and a
//! resume races a fresh password login of the same device (on the newer and on the older
//! connection).
//!
//! Each round checks what a user would notice: exactly one session survives and the
//! other, the session of the older connection, is closed with `Closing{REPLACED}` as its
//! last frame; the survivor's pushes come once each, in inbox order, and with one Sync
//! from the device's cursor it has every message sent during and after the race exactly
//! once; after an Ack, a Sync from the server-side cursor returns nothing already seen.

use std::time::Duration;

use tern_proto::pb::{self, CloseReason};
use tern_proto::{Body, Frame, PROTOCOL_VERSION};
use tern_tests::*;

const LONG: Duration = Duration::from_secs(10);
const ROUNDS: usize = 20;
/// Messages sent while the two authentications race, and after the race is decided.
const DURING: usize = 5;
const AFTER: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Auth {
    Resume,
    Login,
}

fn login_ok(f: &Frame, who: &str) -> pb::LoginOk {
    match &f.body {
        Some(Body::LoginOk(ok)) => ok.clone(),
        other => panic!("{who}: expected LoginOk, got {other:?}"),
    }
}

async fn authenticate(c: &mut Client, how: Auth, user: &str, token: &str) -> pb::LoginOk {
    let body = match how {
        Auth::Resume => Body::Resume(pb::Resume {
            protocol_version: PROTOCOL_VERSION,
            token: token.into(),
        }),
        Auth::Login => login_body(user, "phone"),
    };
    let f = c.request(body).await;
    login_ok(&f, &format!("{how:?}"))
}

async fn ping(c: &mut Client) {
    let f = c.request(Body::Ping(pb::Ping { client_time_ms: 1 })).await;
    assert!(matches!(f.body, Some(Body::Pong(_))), "{f:?}");
}

/// Sends `n` pipelined messages and waits for their acks; returns the client_msg_ids.
async fn burst(sender: &mut Client, to: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..n {
        let cmid = format!("{tag}-{i}");
        reqs.push(sender.send_text_nowait(to, &cmid, &cmid).await);
        ids.push(cmid);
    }
    for r in reqs {
        let ack = ack_of(&sender.response(r).await);
        assert!(!ack.duplicate);
    }
    ids
}

struct Outcome {
    survivor_was_second: bool,
    pushes_to_survivor: usize,
    pushes_to_loser: usize,
    synced: usize,
}

/// One race: `first` and `second` are connected (in that order), then authenticate at
/// once while `DURING` messages are sent to the user. `cursor` is the device's inbox
/// cursor before the race (every entry up to it was delivered and acked).
#[allow(clippy::too_many_arguments)]
async fn race_round(
    server: &TestServer,
    (t1, t2): (Transport, Transport),
    (how1, how2): (Auth, Auth),
    user: &str,
    sender: &mut Client,
    token: &mut String,
    cursor: &mut u64,
    round: usize,
) -> Outcome {
    // A Ping on each, in turn, starts each server-side session (a QUIC session starts
    // with the stream's first bytes), so `first` is the older connection for the server.
    let mut first = server.client(t1).await;
    ping(&mut first).await;
    let mut second = server.client(t2).await;
    ping(&mut second).await;
    let tag = format!("r{round}");
    let during_tag = format!("{tag}-during");
    let (ok1, ok2, during) = tokio::join!(
        authenticate(&mut first, how1, user, token),
        authenticate(&mut second, how2, user, token),
        burst(sender, user, &during_tag, DURING),
    );
    assert_eq!(
        (ok1.device.as_str(), ok2.device.as_str()),
        ("phone", "phone")
    );

    // The loser is the one the server closes; the survivor stays open.
    let survivor_was_second = tokio::select! {
        _ = first.until_closed(LONG) => true,
        _ = second.until_closed(LONG) => false,
    };
    let (mut survivor, mut loser, ok) = if survivor_was_second {
        (second, first, ok2)
    } else {
        (first, second, ok1)
    };
    let closing = loser
        .closing()
        .cloned()
        .expect("the loser got a Closing frame");
    assert_eq!(
        closing.reason,
        CloseReason::Replaced as i32,
        "round {round}: loser closed with {closing:?}"
    );
    // Closing is the last frame the loser saw: nothing was pushed to it afterwards.
    let last = loser.pushes().back().expect("Closing is kept");
    assert!(
        matches!(last.body, Some(Body::Closing(_))),
        "round {round}: a frame after Closing: {last:?}"
    );
    let loser_pushes: Vec<u64> = loser
        .pushes()
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::Push(p)) => Some(p.inbox_seq),
            _ => None,
        })
        .collect();

    // Messages after the race is decided: the survivor alone must get them pushed.
    let after = burst(sender, user, &format!("{tag}-after"), AFTER).await;
    let expected: Vec<String> = during.iter().chain(after.iter()).cloned().collect();
    let want_last = *cursor + expected.len() as u64;
    let mut pushed: Vec<(u64, String)> = Vec::new();
    while pushed.last().map(|p| p.0) != Some(want_last) {
        let p = survivor
            .next_push(LONG)
            .await
            .unwrap_or_else(|| panic!("round {round}: survivor got pushes {pushed:?} only"));
        let m = p.message.expect("push has a message");
        pushed.push((p.inbox_seq, m.client_msg_id));
    }
    for w in pushed.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0 + 1,
            "round {round}: survivor pushes not once each in order: {pushed:?}"
        );
    }
    assert!(pushed[0].0 > *cursor, "round {round}: re-pushed {pushed:?}");
    // What a client does after LoginOk: one Sync from its cursor, dedup by inbox_seq.
    let synced = survivor.sync_all(*cursor, 3).await;
    let mut merged: Vec<(u64, String)> = synced
        .iter()
        .map(|it| (it.inbox_seq, it.message.clone().unwrap().client_msg_id))
        .collect();
    for p in &pushed {
        if let Some(s) = merged.iter().find(|m| m.0 == p.0) {
            assert_eq!(s, p, "round {round}: push and sync disagree");
        } else {
            merged.push(p.clone());
        }
    }
    merged.sort();
    let ids: Vec<String> = merged.iter().map(|m| m.1.clone()).collect();
    assert_eq!(
        ids, expected,
        "round {round}: survivor has every message once, in order"
    );
    assert_eq!(merged.last().unwrap().0, want_last);
    // The loser never saw anything sent after the race was decided.
    assert!(
        loser_pushes.iter().all(|s| *s <= *cursor + DURING as u64),
        "round {round}: loser got {loser_pushes:?}"
    );

    // Exactly one live session for the device.
    let p = expect_body!(sender.presence(&[user]).await, PresenceResult);
    assert_eq!(p.users[0].online_devices, vec!["phone"]);

    // Ack, then a Sync from the server-side cursor: no duplicates, nothing missing.
    expect_ok(&survivor.ack(want_last).await);
    let rest = survivor.sync_page(None, 0).await;
    assert!(
        rest.items.is_empty() && rest.from_inbox_seq == want_last,
        "round {round}: sync after ack returned {:?}",
        rest.items.iter().map(|i| i.inbox_seq).collect::<Vec<_>>()
    );

    *cursor = want_last;
    *token = ok.token.clone();
    let outcome = Outcome {
        survivor_was_second,
        pushes_to_survivor: pushed.len(),
        pushes_to_loser: loser_pushes.len(),
        synced: synced.len(),
    };
    survivor.close().await;
    outcome
}

async fn run_races(label: &str, pair: (Transport, Transport), hows: (Auth, Auth)) {
    let server = TestServer::start().await;
    let user = format!("racer-{label}");
    let mut sender = server
        .user(Transport::Tcp, &format!("rsend-{label}"), "d")
        .await;
    let mut phone = server.client(Transport::Tcp).await;
    phone.register(&user).await;
    let mut token = phone.login(&user, "phone").await.token;
    phone.close().await;
    let mut cursor = 0;
    let (mut second_won, mut to_survivor, mut to_loser, mut synced) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let o = race_round(
            &server,
            pair,
            hows,
            &user,
            &mut sender,
            &mut token,
            &mut cursor,
            round,
        )
        .await;
        second_won += usize::from(o.survivor_was_second);
        to_survivor += o.pushes_to_survivor;
        to_loser += o.pushes_to_loser;
        synced += o.synced;
    }
    eprintln!(
        "races {label}: {ROUNDS} rounds, {} messages; survivor = newer connection in \
         {second_won}; pushes to survivors {to_survivor}, to losers before their Closing \
         {to_loser}, found by sync {synced}; 0 lost, 0 duplicated",
        cursor
    );
    // Whichever authentication the server finished first, the session of the newer
    // connection is the one that stays: a Login/Resume on an older connection (late, or
    // merely slower) never evicts it.
    assert_eq!(
        second_won, ROUNDS,
        "{label}: the older connection won a race"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tcp_resumes_of_one_device_race() {
    run_races("tcp-tcp", (Tcp, Tcp), (Auth::Resume, Auth::Resume)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_and_tcp_resumes_of_one_device_race() {
    run_races("quic-tcp", (Quic, Tcp), (Auth::Resume, Auth::Resume)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_races_a_fresh_login_of_the_same_device() {
    run_races("resume-login", (Tcp, Quic), (Auth::Resume, Auth::Login)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_login_on_the_older_connection_does_not_evict_a_resume_on_the_newer() {
    run_races("login-resume", (Tcp, Tcp), (Auth::Login, Auth::Resume)).await;
}

/// The raw-frame version of a stale connection: its Resume and five pipelined Sends are
/// held in the network while the same device resumes on a new connection and sends the
/// same five (same client_msg_ids); then the stale bytes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_resume_with_pipelined_sends_on_a_stale_connection_changes_nothing() {
    let server = TestServer::start().await;
    let proxy =
        tern_tests::fault::FrameFaultProxy::start(server.tcp, &server.dir.path().join("certs"))
            .await;
    let mut peer = server.user(Tcp, "late-peer", "d").await;
    let mut first = server.client(Tcp).await;
    first.register("late-dev").await;
    let token = first.login("late-dev", "phone").await.token;
    first.close().await;

    proxy.hold_new_connections(true);
    let mut stale = Client::connect(Tcp, proxy.addr(), &server.ca).await;
    let conn = proxy.connection(0, LONG).await.expect("proxied");
    proxy.hold_new_connections(false);
    stale
        .send_req(Body::Resume(pb::Resume {
            protocol_version: PROTOCOL_VERSION,
            token: token.clone(),
        }))
        .await;
    let mut stale_sends = Vec::new();
    for i in 0..5 {
        let cmid = format!("x{i}");
        stale_sends.push(stale.send_text_nowait("late-peer", &cmid, &cmid).await);
    }
    assert!(conn.wait_until(LONG, |c| c.held().len() == 6).await);

    // The device comes back on a new connection and sends the same messages.
    let mut live = server.client(Tcp).await;
    login_ok(&live.resume(&token).await, "live resume");
    let mut seqs = Vec::new();
    for i in 0..5 {
        let cmid = format!("x{i}");
        let ack = ack_of(&live.send_text("late-peer", &cmid, &cmid).await);
        assert!(!ack.duplicate);
        seqs.push(ack.seq);
    }

    // The stale bytes arrive: its session is closed as replaced; any send it still ran
    // was answered with the original ack.
    conn.release();
    stale.expect_closed(LONG, CloseReason::Replaced).await;
    let mut dup_acks = 0;
    for (i, r) in stale_sends.into_iter().enumerate() {
        if let Some(f) = stale.try_response(r) {
            let a = ack_of(&f);
            assert!(a.duplicate && a.seq == seqs[i], "stale send {i}: {a:?}");
            dup_acks += 1;
        }
    }
    // The live session is untouched, and the peer got each message once, in order.
    let f = live
        .request(Body::Ping(pb::Ping { client_time_ms: 2 }))
        .await;
    assert!(matches!(f.body, Some(Body::Pong(_))), "live session: {f:?}");
    assert!(!live.eof() && live.closing().is_none());
    ack_of(&live.send_text("late-peer", "x5", "x5").await);
    let mut got = Vec::new();
    while got.len() < 6 {
        let p = peer.next_push(LONG).await.expect("a push");
        got.push(p.message.unwrap().client_msg_id);
    }
    assert_eq!(got, vec!["x0", "x1", "x2", "x3", "x4", "x5"]);
    eprintln!(
        "late resume + sends on a stale connection: closed as replaced; {dup_acks} of 5 stale \
         sends ran and were answered duplicate; the peer got 6 messages once, in order"
    );
    server.stop().await;
}
