//! Offline catch-up: a device offline through 10,000 messages resumes, while more arrive
//! live and a fifth of the live pushes are dropped on the way in (as a lossy link would),
//! forcing gaps. The SDK's delivery engine, driven over a real connection, must deliver
//! every message exactly once and in order, repairing each gap with a sync.

use std::time::{Duration, Instant};

use tern_proto::{Body, Frame};
use tern_sdk::engine::{Cursors, Engine, EngineEvent};
use tern_tests::*;

const OFFLINE: usize = 10_000;
const LIVE: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_offline_then_live_with_dropped_pushes() {
    // The rate limits are not under test here: the sender goes as fast as it can.
    let server = TestServer::start_with(|c| {
        c.limits.conn_rate_limit = 1_000_000;
        c.limits.conn_rate_burst = 1_000_000;
        c.limits.user_rate_limit = 1_000_000;
        c.limits.user_rate_burst = 1_000_000;
    })
    .await;
    let mut a = server.user(Tcp, "cu-a", "d").await;
    let mut reg = server.client(Tcp).await;
    reg.register("cu-b").await;

    // 10k messages while cu-b is offline, pipelined 200 at a time.
    let t0 = Instant::now();
    let mut n = 0;
    while n < OFFLINE {
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(
                a.send_text_nowait("cu-b", &format!("m{n}"), &format!("{n}"))
                    .await,
            );
            n += 1;
        }
        for id in ids {
            ack_of(&a.response(id).await);
        }
        a.pushes().clear();
    }
    let sent_in = t0.elapsed();

    // cu-b comes back and catches up, with live traffic arriving meanwhile.
    let mut b = server.client(Quic).await;
    let ok = b.login("cu-b", "phone").await;
    assert_eq!(ok.inbox_head, OFFLINE as u64);
    let live = tokio::spawn(async move {
        for i in 0..LIVE {
            let n = OFFLINE + i;
            let id = a
                .send_text_nowait("cu-b", &format!("m{n}"), &format!("{n}"))
                .await;
            if i % 100 == 99 {
                ack_of(&a.response(id).await);
                a.pushes().clear();
            }
        }
        a
    });

    let mut engine = Engine::new("cu-b", Cursors::default(), vec![]);
    engine.on_connected(&ok.store_epoch);
    let mut delivered: Vec<u64> = Vec::new();
    let mut pushes_seen = 0u64;
    let mut dropped = 0u64;
    let mut syncs = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let t1 = Instant::now();
    while delivered.len() < OFFLINE + LIVE {
        assert!(
            Instant::now() < deadline,
            "caught up only to {} of {}",
            delivered.len(),
            OFFLINE + LIVE
        );
        let mut out = Vec::new();
        while let Some(f) = engine.poll_transmit() {
            if matches!(f.body, Some(Body::Sync(_))) {
                syncs += 1;
            }
            out.push(tern_proto::encode_frame(&f));
        }
        if !out.is_empty() {
            b.conn.send_many(&out).await.unwrap();
        }
        while let Some(ev) = engine.poll_event() {
            if let EngineEvent::Message { message, .. } = ev {
                delivered.push(message.seq);
            }
        }
        let timeout = engine
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        match tokio::time::timeout(timeout, b.conn.recv()).await {
            Err(_) => engine.handle_timeout(Instant::now()),
            Ok(Some(Ok(Ok(f)))) => {
                let is_push = matches!(f.body, Some(Body::Push(_)));
                if is_push {
                    pushes_seen += 1;
                    // A lossy link: every fifth push never arrives.
                    if pushes_seen.is_multiple_of(5) {
                        dropped += 1;
                        continue;
                    }
                }
                engine.handle_frame(f, Instant::now());
            }
            other => panic!("connection failed: {other:?}"),
        }
    }
    let caught_up_in = t1.elapsed();
    let _ = live.await.unwrap();
    // Exactly once, in order: 1..=12000.
    assert_eq!(delivered, (1..=(OFFLINE + LIVE) as u64).collect::<Vec<_>>());
    assert!(
        dropped > 0 && syncs > 1,
        "gaps were forced ({dropped} dropped) and repaired ({syncs} syncs)"
    );
    // Nothing more trickles in afterwards (no duplicates).
    let extra = tokio::time::timeout(Duration::from_millis(300), b.conn.recv()).await;
    if let Ok(Some(Ok(Ok(Frame {
        body: Some(Body::Push(p)),
        ..
    })))) = extra
    {
        engine.handle_frame(
            Frame {
                req_id: 0,
                body: Some(Body::Push(p)),
            },
            Instant::now(),
        );
        assert!(engine.poll_event().is_none(), "a duplicate was delivered");
    }
    eprintln!(
        "catch-up: {OFFLINE} offline messages sent in {sent_in:?}; {} delivered in order in {caught_up_in:?} \
         with {LIVE} live, {dropped} pushes dropped, {syncs} syncs",
        delivered.len()
    );
    server.stop().await;
}
