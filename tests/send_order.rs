//! Send order under every retry path: one device pipelines a run of messages into a 1:1
//! and a group conversation while the server refuses some of them (a connection rate
//! limit far below the pipelined rate, so RATE_LIMITED answers come in the middle of the
//! window), the network cuts connections at random, and the server binary is killed with
//! SIGKILL and restarted. Whatever happened, every message is stored once, and each
//! conversation's timeline holds the device's messages in the order they were sent.
//!
//! A property test: each case draws its faults from a seed (printed). CI runs a few
//! cases; `TERN_ORDER_CASES=20 cargo test -p tern-tests --test send_order -- --nocapture`
//! runs more, and `TERN_ORDER_SEED=N` replays one.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tern_sdk::{Client, Target, TransportMode};
use tern_tests::fault::TcpFaultProxy;
use tern_tests::rng::{env_or, seed_from_env, XorShift};
use tern_tests::sdk::{register_all, sdk_config};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

/// Messages per case, spread over the two conversations.
const MESSAGES: usize = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_run_is_stored_in_send_order_through_refusals_cuts_and_restarts() {
    let cases: u64 = env_or("TERN_ORDER_CASES", 3);
    let first = seed_from_env("TERN_ORDER_SEED");
    for case in 0..cases {
        run_case(first.wrapping_add(case * 7919)).await;
    }
}

async fn run_case(seed: u64) {
    eprintln!("send_order: seed {seed}");
    let mut rng = XorShift::new(seed);
    let data = tempfile::tempdir().unwrap();
    // Burst and rate far below what a 128-deep pipeline asks for: refusals come while
    // later sends are in flight behind them.
    let limits = [
        ("TERN_CONN_RATE_LIMIT", "400"),
        ("TERN_CONN_RATE_BURST", "40"),
    ];
    let mut server =
        ProcessServer::try_spawn_with(BIN, data.path(), "127.0.0.1:0", &limits).unwrap();
    let listen = server.tcp.to_string();
    let proxy = TcpFaultProxy::start(server.tcp).await;
    proxy.set_seed(seed);
    let (ann, bob) = ("soa", "sob");
    register_all(server.tcp, &server.ca, &[ann, bob]).await;

    let config = sdk_config(proxy.addr(), &server.ca, ann, "d", TransportMode::Tcp);
    let (client, _events) = Client::start(config);
    let group = client
        .create_group("g", &[bob.to_string()])
        .await
        .unwrap()
        .conversation;
    let direct = tern_proto::direct_conversation(ann, bob);

    // The whole run is queued at once: the SDK pipelines it (its window is 128).
    let mut tickets = Vec::new();
    for i in 0..MESSAGES {
        let target = if rng.range(0, 2) == 0 {
            Target::User(bob.into())
        } else {
            Target::Conversation(group.clone())
        };
        let ticket = client
            .send_with(target, Bytes::from(format!("{i}")), "")
            .await
            .unwrap();
        tickets.push(ticket);
    }
    // Faults while it drains: random cuts, then kill -9 and restart, twice.
    proxy.set_cut_probability(0.01);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(rng.range(100, 900))).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(rng.range(0, 200))).await;
        server = ProcessServer::try_spawn_with(BIN, data.path(), &listen, &limits).unwrap();
    }
    proxy.set_cut_probability(0.0);

    let mut acked = HashMap::new();
    for (i, t) in tickets.into_iter().enumerate() {
        let ack = tokio::time::timeout(Duration::from_secs(90), t)
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: message {i} not acked within 90 s"))
            .unwrap_or_else(|e| panic!("seed {seed}: message {i} failed: {e}"));
        acked.insert(i, (ack.conversation, ack.seq));
    }

    // Each timeline, read back: every message once, in the order it was sent.
    for conv in [&direct, &group] {
        let mut sent_order = Vec::new();
        let mut before = 0;
        loop {
            let page = client.history(conv, before, 200).await.unwrap();
            let mut got: Vec<_> = page
                .messages
                .iter()
                .filter(|m| m.sender == ann && m.event.is_none())
                .map(|m| {
                    let i: usize = std::str::from_utf8(&m.body).unwrap().parse().unwrap();
                    (m.seq, i)
                })
                .collect();
            let oldest = page.messages.iter().map(|m| m.seq).min();
            got.append(&mut sent_order);
            sent_order = got;
            match oldest {
                Some(s) if s > 1 => before = s,
                _ => break,
            }
        }
        sent_order.sort();
        let indexes: Vec<usize> = sent_order.iter().map(|(_, i)| *i).collect();
        let mut expected: Vec<usize> = acked
            .iter()
            .filter(|(_, (c, _))| c == conv)
            .map(|(i, _)| *i)
            .collect();
        expected.sort();
        assert_eq!(
            indexes, expected,
            "seed {seed}: {conv}'s timeline (left, in seq order) is not the run in send order"
        );
        for (seq, i) in &sent_order {
            assert_eq!(acked[i], (conv.clone(), *seq), "seed {seed}: ack of {i}");
        }
    }
    client.close().await;
    drop(server);
}
