//! tern-sdk against a real server: kill -9 and restart under hundreds of pipelined
//! unacknowledged sends, network faults through TCP and UDP fault proxies, UDP blocked
//! (Auto falls back to TCP), and multi-device sync. The promise checked every time: each
//! message acked exactly once, and the receiver gets each exactly once, in order.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern_proto::pb;
use tern_sdk::{
    register, Client, ClientConfig, ConnectOptions, Credentials, Event, Events, MemoryStore,
    SendTicket, Target, Transport, TransportMode, Trust,
};
use tern_tests::fault::{TcpFaultProxy, UdpFaultProxy};
use tern_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_tern-test-server");

fn config(
    server: SocketAddr,
    quic: Option<SocketAddr>,
    ca: &Path,
    user: &str,
    device: &str,
    mode: TransportMode,
) -> ClientConfig {
    let mut c = ClientConfig::new(
        server,
        Trust::from_pem_file(ca).unwrap(),
        Credentials {
            username: user.into(),
            password: Some(PASSWORD.into()),
            device: device.into(),
        },
        Box::new(MemoryStore::default()),
    );
    c.quic_server = quic;
    c.transport = mode;
    c.initial_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(500);
    c.quic_deadline = Duration::from_millis(700);
    c
}

async fn register_all(server: SocketAddr, ca: &Path, users: &[&str]) {
    let opts = ConnectOptions::new(Trust::from_pem_file(ca).unwrap());
    for u in users {
        register(server, &opts, TransportMode::Tcp, u, PASSWORD)
            .await
            .unwrap();
    }
}

/// Waits for the first Connected event; returns its transport.
async fn connected(events: &mut Events) -> Transport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Event::Connected { transport, .. })) => return transport,
            Ok(Some(Event::AuthLost { message, .. })) => panic!("auth lost: {message}"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("client stopped"),
            Err(_) => panic!("never connected"),
        }
    }
}

/// Collects `n` messages from others (own ones are skipped), failing on a duplicate.
fn collect(
    mut events: Events,
    n: usize,
    within: Duration,
) -> tokio::task::JoinHandle<(Vec<pb::Message>, usize)> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        let mut reconnects = 0;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(Event::Message {
                    message,
                    own: false,
                })) => got.push(message),
                Ok(Some(Event::Reconnecting { .. })) => reconnects += 1,
                Ok(Some(_)) => {}
                Ok(None) => panic!("receiver stopped after {} messages", got.len()),
                Err(_) => panic!("receiver got {} of {n} messages in {within:?}", got.len()),
            }
        }
        // Nothing more (no duplicates) for a moment.
        let extra = tokio::time::timeout(Duration::from_millis(500), async {
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
                "an extra message was delivered: seq {} {}",
                m.seq, m.client_msg_id
            );
        }
        (got, reconnects)
    })
}

/// Every ticket resolved once; the receiver got exactly the sent messages in send order
/// with contiguous seqs.
fn check(sent: &[String], acks: &[pb::SendAck], received: &[pb::Message]) {
    assert_eq!(acks.len(), sent.len());
    let mut seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        sent.len(),
        "two sends were acked with the same seq"
    );
    let texts: Vec<String> = received.iter().map(text).collect();
    assert_eq!(
        texts, sent,
        "receiver got exactly the sent messages, in order"
    );
    let rseqs: Vec<u64> = received.iter().map(|m| m.seq).collect();
    let first = rseqs[0];
    assert_eq!(
        rseqs,
        (first..first + sent.len() as u64).collect::<Vec<_>>(),
        "contiguous seqs"
    );
    for (ack, m) in acks.iter().zip(received) {
        assert_eq!(
            (ack.seq, &ack.client_msg_id),
            (m.seq, &m.client_msg_id),
            "ack matches what was stored"
        );
    }
}

async fn queue(client: &Client, to: &str, texts: &[String]) -> Vec<SendTicket> {
    let mut tickets = Vec::new();
    for t in texts {
        tickets.push(
            client
                .send_with(Target::User(to.into()), t.clone().into_bytes().into(), "")
                .await
                .unwrap(),
        );
    }
    tickets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_under_pipelined_sends() {
    init_logs();
    let data = tempfile::tempdir().unwrap();
    let mut server = ProcessServer::spawn(BIN, data.path());
    let addr = server.tcp;
    let listen = addr.to_string();
    let ca = server.ca.clone();
    register_all(addr, &ca, &["ks", "kr"]).await;

    let (receiver, mut rev) =
        Client::start(config(addr, None, &ca, "kr", "phone", TransportMode::Auto));
    connected(&mut rev).await;
    let (sender, mut sev) =
        Client::start(config(addr, None, &ca, "ks", "phone", TransportMode::Auto));
    connected(&mut sev).await;
    let n = 400;
    let collector = collect(rev, n, Duration::from_secs(90));
    tokio::spawn(async move { while sev.next().await.is_some() {} });

    let texts: Vec<String> = (0..n).map(|i| format!("k{i:04}")).collect();
    let tickets = queue(&sender, "kr", &texts).await;
    let mut acks = Vec::new();
    let mut kills = 0;
    let t0 = std::time::Instant::now();
    for (i, t) in tickets.into_iter().enumerate() {
        if i == 60 || i == 230 {
            // Hundreds are queued and unacked right now.
            server.kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            server = ProcessServer::spawn_at(BIN, data.path(), &listen);
        }
        acks.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("ack in time")
                .expect("acked"),
        );
        if i % 50 == 0 || i == 61 || i == 231 {
            eprintln!("{:?} ack {i}", t0.elapsed());
        }
    }
    let (received, reconnects) = collector.await.unwrap();
    eprintln!("{:?} received all", t0.elapsed());
    check(&texts, &acks, &received);
    let dups = acks.iter().filter(|a| a.duplicate).count();
    eprintln!("sdk kill -9: {n} messages, {kills} kills, receiver reconnects {reconnects}, acks marked duplicate {dups}");
    assert!(reconnects >= 1, "the receiver lived through a kill");
    sender.close().await;
    receiver.close().await;
}

async fn faulty_run(
    server: &TestServer,
    mode: TransportMode,
    tcp: SocketAddr,
    quic: Option<SocketAddr>,
    tag: &str,
    pace: Duration,
    chaos: impl FnOnce() -> tokio::task::JoinHandle<()>,
) -> usize {
    let (s, r) = (format!("fs-{tag}"), format!("fr-{tag}"));
    register_all(server.tcp, &server.ca, &[&s, &r]).await;
    let (receiver, mut rev) = Client::start(config(tcp, quic, &server.ca, &r, "d", mode));
    connected(&mut rev).await;
    let (sender, mut sev) = Client::start(config(tcp, quic, &server.ca, &s, "d", mode));
    connected(&mut sev).await;
    let n = 300;
    let collector = collect(rev, n, Duration::from_secs(90));
    tokio::spawn(async move { while sev.next().await.is_some() {} });
    let chaos = chaos();
    let texts: Vec<String> = (0..n).map(|i| format!("{tag}{i:04}")).collect();
    let mut acks = Vec::new();
    // Sent in paced bursts, so the run spans the faults and they land both between and
    // during pipelined sends.
    for chunk in texts.chunks(25) {
        tokio::time::sleep(pace).await;
        for t in queue(&sender, &r, chunk).await {
            acks.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("ack in time")
                    .expect("acked"),
            );
        }
    }
    let (received, reconnects) = collector.await.unwrap();
    chaos.abort();
    check(&texts, &acks, &received);
    sender.close().await;
    receiver.close().await;
    reconnects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_cuts_and_delays_lose_and_duplicate_nothing() {
    let server = TestServer::start().await;
    let proxy = std::sync::Arc::new(TcpFaultProxy::start(server.tcp).await);
    proxy.set_delay(Duration::from_millis(2));
    proxy.set_cut_probability(0.01);
    let p = proxy.clone();
    let reconnects = faulty_run(
        &server,
        TransportMode::Tcp,
        proxy.addr(),
        None,
        "tcp",
        Duration::from_millis(100),
        move || {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    p.cut_all();
                }
            })
        },
    )
    .await;
    eprintln!(
        "tcp faults: {} proxied connections, receiver reconnects {reconnects}",
        proxy.connections()
    );
    assert!(proxy.connections() >= 4, "the faults forced reconnects");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_loss_duplication_reordering_and_path_cuts_lose_and_duplicate_nothing() {
    let server = TestServer::start().await;
    let proxy = std::sync::Arc::new(UdpFaultProxy::start(server.quic).await);
    proxy.set_drop_probability(0.05);
    proxy.set_duplicate_probability(0.05);
    proxy.set_reorder(true);
    proxy.set_delay(Duration::from_millis(2));
    let p = proxy.clone();
    let reconnects = faulty_run(
        &server,
        TransportMode::Quic,
        server.tcp,
        Some(proxy.addr()),
        "udp",
        Duration::from_millis(200),
        move || {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                p.cut_all();
                tokio::time::sleep(Duration::from_millis(300)).await;
                // A short blackout: longer than nothing, shorter than the idle timeout.
                p.set_blocked(true);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                p.set_blocked(false);
            })
        },
    )
    .await;
    let (up, down) = proxy.datagrams();
    eprintln!("udp faults: {up} datagrams up, {down} down, receiver reconnects {reconnects}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_tcp_when_udp_is_blocked() {
    let server = TestServer::start().await;
    let blackhole = UdpFaultProxy::start(server.quic).await;
    blackhole.set_blocked(true);
    register_all(server.tcp, &server.ca, &["ua", "ub"]).await;
    let cfg = |u: &str| {
        config(
            server.tcp,
            Some(blackhole.addr()),
            &server.ca,
            u,
            "d",
            TransportMode::Auto,
        )
    };
    let (a, mut aev) = Client::start(cfg("ua"));
    assert_eq!(connected(&mut aev).await, Transport::Tcp);
    let (b, mut bev) = Client::start(cfg("ub"));
    assert_eq!(connected(&mut bev).await, Transport::Tcp);
    let collector = collect(bev, 1, Duration::from_secs(10));
    let ack = a
        .send_text(Target::User("ub".into()), "over tcp")
        .await
        .unwrap();
    assert_eq!(ack.seq, 1);
    let (got, _) = collector.await.unwrap();
    assert_eq!(text(&got[0]), "over tcp");
    // With UDP open, the same config uses QUIC.
    blackhole.set_blocked(false);
    let (c, mut cev) = Client::start(cfg("ua"));
    assert_eq!(connected(&mut cev).await, Transport::Quic);
    for cl in [a, b, c] {
        cl.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_sees_what_the_first_sent() {
    let server = TestServer::start().await;
    register_all(server.tcp, &server.ca, &["dev-a", "dev-b"]).await;
    let cfg = |u: &str, d: &str, m| config(server.tcp, None, &server.ca, u, d, m);
    let (phone, mut pev) = Client::start(cfg("dev-a", "phone", TransportMode::Quic));
    connected(&mut pev).await;
    let (laptop, mut lev) = Client::start(cfg("dev-a", "laptop", TransportMode::Tcp));
    connected(&mut lev).await;
    let ack = phone
        .send_text(Target::User("dev-b".into()), "from my phone")
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Message { message, own }) = lev.next().await {
                return (message, own);
            }
        }
    })
    .await
    .expect("the laptop sees it");
    assert!(seen.1, "marked as the user's own message");
    assert_eq!(
        (seen.0.seq, seen.0.client_msg_id.as_str()),
        (ack.seq, ack.client_msg_id.as_str())
    );
    assert_eq!(seen.0.sender_device, "phone");
    // A device that was offline catches up on its own messages too.
    laptop.close().await;
    phone
        .send_text(Target::User("dev-b".into()), "second")
        .await
        .unwrap();
    let (laptop2, lev2) = Client::start(cfg("dev-a", "laptop", TransportMode::Tcp));
    let _ = &laptop2;
    let got = tokio::time::timeout(Duration::from_secs(10), async move {
        let mut lev2 = lev2;
        let mut texts = Vec::new();
        while let Some(e) = lev2.next().await {
            if let Event::Message { message, .. } = e {
                texts.push(text(&message));
            }
            if texts.len() == 2 {
                return texts;
            }
        }
        texts
    })
    .await
    .expect("catch-up");
    // A fresh MemoryStore starts from cursor 0: both messages, in order.
    assert_eq!(got, vec!["from my phone", "second"]);
    phone.close().await;
    laptop2.close().await;
    server.stop().await;
}
