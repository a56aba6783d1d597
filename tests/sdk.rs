//! tern-sdk against a real server: kill -9 and restart under hundreds of pipelined
//! unacknowledged sends, network faults through TCP and UDP fault proxies, UDP blocked
//! (Auto falls back to TCP), and multi-device sync. The promise checked every time: each
//! message acked exactly once, and the receiver gets each exactly once, in order.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tern_proto::pb;
use tern_proto::Body;
use tern_sdk::{Client, ClientConfig, Event, Events, SendTicket, Target, Transport, TransportMode};
use tern_tests::fault::{FrameFaultProxy, TcpFaultProxy, UdpFaultProxy};
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
    let mut c = sdk_config(server, ca, user, device, mode);
    c.quic_server = quic;
    c.max_backoff = Duration::from_millis(500);
    c.quic_deadline = Duration::from_millis(700);
    c
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

/// Watches a client's events: counts connections and notes a `Replaced`.
fn watch_events(mut events: Events) -> tokio::sync::watch::Receiver<(usize, bool)> {
    let (tx, rx) = tokio::sync::watch::channel((0usize, false));
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                Event::Connected { .. } => tx.send_modify(|s| s.0 += 1),
                Event::Replaced => tx.send_modify(|s| s.1 = true),
                _ => {}
            }
        }
    });
    rx
}

/// A sender behind the frame-aware proxy and a receiver connected directly.
struct ProxiedPair {
    server: TestServer,
    proxy: FrameFaultProxy,
    sender: Client,
    sender_events: tokio::sync::watch::Receiver<(usize, bool)>,
    receiver: Client,
    receiver_events: Option<Events>,
    to: String,
}

async fn proxied_pair(tag: &str) -> ProxiedPair {
    let server = TestServer::start().await;
    let proxy = FrameFaultProxy::start(server.tcp, &server.dir.path().join("certs")).await;
    let (s, r) = (format!("ps-{tag}"), format!("pr-{tag}"));
    register_all(server.tcp, &server.ca, &[&s, &r]).await;
    let (receiver, mut rev) = Client::start(config(
        server.tcp,
        None,
        &server.ca,
        &r,
        "d",
        TransportMode::Tcp,
    ));
    connected(&mut rev).await;
    let (sender, mut sev) = Client::start(config(
        proxy.addr(),
        None,
        &server.ca,
        &s,
        "d",
        TransportMode::Tcp,
    ));
    connected(&mut sev).await;
    let mut sender_events = watch_events(sev);
    sender_events.borrow_and_update();
    ProxiedPair {
        server,
        proxy,
        sender,
        sender_events,
        receiver,
        receiver_events: Some(rev),
        to: r,
    }
}

async fn resolve(t: SendTicket) -> pb::SendAck {
    tokio::time::timeout(Duration::from_secs(30), t)
        .await
        .expect("ack in time")
        .expect("acked")
}

/// Waits until the sender has connected `n` times in all (the first included).
async fn connected_times(events: &mut tokio::sync::watch::Receiver<(usize, bool)>, n: usize) {
    let r = tokio::time::timeout(Duration::from_secs(20), events.wait_for(|s| s.0 >= n - 1)).await;
    assert!(r.is_ok(), "the sender did not reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_send_acks_are_resent_and_answered_as_duplicates() {
    init_logs();
    let mut p = proxied_pair("acks").await;
    let (n1, n2) = (50, 100);
    let texts: Vec<String> = (0..n1 + n2).map(|i| format!("a{i:04}")).collect();
    let collector = collect(
        p.receiver_events.take().unwrap(),
        n1 + n2,
        Duration::from_secs(60),
    );
    let conn0 = p.proxy.connection(0, Duration::from_secs(5)).await.unwrap();

    // Phase 1: every SendAck is lost; the messages are stored and pushed all the same.
    p.proxy.drop_send_acks(1.0);
    let tickets = queue(&p.sender, &p.to, &texts[..n1]).await;
    let proxy = &p.proxy;
    assert!(
        conn0
            .wait_until(Duration::from_secs(20), |_| proxy.dropped().len() == n1)
            .await,
        "all {n1} acks were dropped"
    );
    // The SDK only learns on a new connection: it resends with the same ids.
    p.proxy.drop_nothing();
    conn0.cut();
    let mut acks = Vec::new();
    for t in tickets {
        acks.push(resolve(t).await);
    }
    assert!(
        acks.iter().all(|a| a.duplicate),
        "every resend was answered with the original ack, marked duplicate"
    );
    connected_times(&mut p.sender_events, 2).await;

    // Phase 2: some acks are lost on a live connection.
    let conn1 = p.proxy.connection(1, Duration::from_secs(5)).await.unwrap();
    p.proxy.set_seed(5);
    p.proxy.drop_send_acks(0.3);
    let tickets = queue(&p.sender, &p.to, &texts[n1..]).await;
    assert!(
        conn1
            .wait_until(Duration::from_secs(20), |_| proxy.matched() as usize
                == n1 + n2)
            .await,
        "every ack of phase 2 went through the proxy"
    );
    let lost: std::collections::HashSet<String> = p.proxy.dropped()[n1..]
        .iter()
        .map(|f| match &f.body {
            Some(tern_proto::Body::SendAck(a)) => a.client_msg_id.clone(),
            other => panic!("dropped a {other:?}"),
        })
        .collect();
    assert!(!lost.is_empty() && lost.len() < n2, "{} lost", lost.len());
    // Those that were not lost resolve on this connection, as first acks.
    let (kept, waiting): (Vec<_>, Vec<_>) = tickets
        .into_iter()
        .partition(|t| !lost.contains(&t.client_msg_id));
    let mut phase2 = std::collections::HashMap::new();
    for t in kept {
        let id = t.client_msg_id.clone();
        let a = resolve(t).await;
        assert!(!a.duplicate, "a first ack");
        phase2.insert(id, a);
    }
    p.proxy.drop_nothing();
    conn1.cut();
    for t in waiting {
        let id = t.client_msg_id.clone();
        let a = resolve(t).await;
        assert!(a.duplicate, "a resend after a lost ack is a duplicate");
        phase2.insert(id, a);
    }
    // Phase 2 tickets in send order.
    let sent_ids: Vec<String> = {
        let mut v: Vec<_> = phase2.values().cloned().collect();
        v.sort_by_key(|a| a.seq);
        v.into_iter().map(|a| a.client_msg_id).collect()
    };
    acks.extend(sent_ids.iter().map(|id| phase2[id].clone()));
    let (received, _) = collector.await.unwrap();
    check(&texts, &acks, &received);
    eprintln!(
        "dropped acks: {n1} of {n1}, then {} of {n2} on a live connection; {} resends \
         answered duplicate=true; {} proxied connections; receiver got {} messages once, in order",
        lost.len(),
        acks.iter().filter(|a| a.duplicate).count(),
        p.proxy.connections(),
        received.len()
    );
    assert!(!p.sender_events.borrow().1, "never replaced");
    p.sender.close().await;
    p.receiver.close().await;
    p.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_sends_from_a_replaced_connection_are_not_delivered_again() {
    init_logs();
    let mut p = proxied_pair("late-send").await;
    let texts: Vec<String> = (0..40).map(|i| format!("l{i:04}")).collect();
    let collector = collect(
        p.receiver_events.take().unwrap(),
        40,
        Duration::from_secs(60),
    );
    let mut acks = Vec::new();
    for t in queue(&p.sender, &p.to, &texts[..10]).await {
        acks.push(resolve(t).await);
    }
    // Connection 0 goes quiet towards the server: 20 sends are stuck in it.
    let conn0 = p.proxy.connection(0, Duration::from_secs(5)).await.unwrap();
    conn0.hold();
    let stuck = queue(&p.sender, &p.to, &texts[10..30]).await;
    let sends = |c: &tern_tests::fault::FrameConn| {
        c.held()
            .iter()
            .filter(|f| matches!(f.body, Some(tern_proto::Body::Send(_))))
            .count()
    };
    assert!(
        conn0
            .wait_until(Duration::from_secs(10), |c| sends(c) == 20)
            .await
    );
    // The client gives the connection up and resends on a new one.
    conn0.detach_client();
    for t in stuck {
        let a = resolve(t).await;
        assert!(!a.duplicate, "the stuck originals never reached the server");
        acks.push(a);
    }
    // The server replaced connection 0's session when the device resumed.
    assert!(
        conn0
            .wait_until(Duration::from_secs(10), |c| c.upstream_closed())
            .await,
        "the old connection was closed by the server"
    );
    let closing = conn0.orphaned().into_iter().find_map(|f| match f.body {
        Some(tern_proto::Body::Closing(c)) => Some(c),
        _ => None,
    });
    assert_eq!(
        closing.map(|c| c.reason),
        Some(pb::CloseReason::Replaced as i32)
    );
    // Now the stale bytes arrive (nowhere: the server closed that connection).
    conn0.release();
    for t in queue(&p.sender, &p.to, &texts[30..]).await {
        acks.push(resolve(t).await);
    }
    let (received, _) = collector.await.unwrap();
    check(&texts, &acks, &received);
    assert!(!p.sender_events.borrow().1, "never replaced");
    eprintln!(
        "late sends: 20 held on a stale connection, resent on a new one; receiver got {} once, in order",
        received.len()
    );
    p.sender.close().await;
    p.receiver.close().await;
    p.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_resume_from_a_stale_connection_does_not_displace_the_live_one() {
    init_logs();
    let mut p = proxied_pair("late-resume").await;
    let texts: Vec<String> = (0..30).map(|i| format!("r{i:04}")).collect();
    let collector = collect(
        p.receiver_events.take().unwrap(),
        30,
        Duration::from_secs(60),
    );
    let mut acks = Vec::new();
    for t in queue(&p.sender, &p.to, &texts[..10]).await {
        acks.push(resolve(t).await);
    }
    // The connection drops; the reconnect's Resume gets stuck on the way.
    p.proxy.hold_new_connections(true);
    p.proxy
        .connection(0, Duration::from_secs(5))
        .await
        .unwrap()
        .cut();
    let conn1 = p
        .proxy
        .connection(1, Duration::from_secs(10))
        .await
        .unwrap();
    p.proxy.hold_new_connections(false);
    assert!(
        conn1
            .wait_until(Duration::from_secs(10), |c| c
                .held()
                .iter()
                .any(|f| matches!(f.body, Some(tern_proto::Body::Resume(_)))))
            .await,
        "the Resume is held"
    );
    // The client gives up on it, resumes on a third connection and sends.
    conn1.detach_client();
    connected_times(&mut p.sender_events, 2).await;
    for t in queue(&p.sender, &p.to, &texts[10..20]).await {
        acks.push(resolve(t).await);
    }
    // The stale Resume arrives now, on the old connection.
    conn1.release();
    assert!(
        conn1
            .wait_until(Duration::from_secs(10), |c| c.upstream_closed()
                || c.orphaned().iter().any(|f| f.req_id != 0))
            .await,
        "the server answered the stale Resume"
    );
    let answer: Vec<&'static str> = conn1
        .orphaned()
        .iter()
        .filter_map(|f| f.body.as_ref().map(tern_proto::body_name))
        .collect();
    // The stale session is the one closed as replaced (by the newer connection).
    assert!(
        conn1
            .wait_until(Duration::from_secs(10), |c| c.orphaned().iter().any(|f| {
                matches!(&f.body, Some(tern_proto::Body::Closing(cl))
                    if cl.reason == pb::CloseReason::Replaced as i32)
            }))
            .await,
        "the stale connection got Closing{{REPLACED}}: {answer:?}"
    );
    // The live session is untouched: more sends go through on it.
    let mut failed = None;
    for t in queue(&p.sender, &p.to, &texts[20..]).await {
        match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(Ok(a)) => acks.push(a),
            other => {
                failed = Some(format!("{other:?}"));
                break;
            }
        }
    }
    assert!(
        failed.is_none(),
        "a stale Resume replaced the live session: the server answered it with {answer:?}, \
         and the live client's sends then failed: {failed:?} (Replaced seen: {})",
        p.sender_events.borrow().1
    );
    let (received, _) = collector.await.unwrap();
    check(&texts, &acks, &received);
    let (connects, replaced) = *p.sender_events.borrow();
    assert!(!replaced, "the live session was replaced");
    assert_eq!(connects, 1, "one reconnect, none after the stale Resume");
    eprintln!(
        "late resume: the server answered the stale Resume with {answer:?}; the live \
         session kept going; receiver got {} once, in order",
        received.len()
    );
    p.sender.close().await;
    p.receiver.close().await;
    p.server.stop().await;
}

/// close() while a connection attempt hangs (a server that accepts TCP and never answers
/// the TLS handshake) returns at once instead of waiting for the attempt to time out.
#[tokio::test]
async fn close_during_a_hanging_connection_attempt_returns_promptly() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let server = TestServer::start().await; // only for its CA file
    let c = config(addr, None, &server.ca, "nobody", "d", TransportMode::Tcp);
    let (client, mut events) = Client::start(c);
    // Let the attempt start and hang in the handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(2), client.close())
        .await
        .expect("close() returned while the connection attempt was hanging");
    let took = started.elapsed();
    let mut closed = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), events.next()).await {
        if matches!(ev, Event::Closed) {
            closed = true;
        }
    }
    assert!(closed, "the Closed event was emitted");
    println!("close() during a hanging handshake returned in {took:?}");
    held.abort();
    server.stop().await;
}

/// A member added to a large (read-diffusion) group whose history is JOINED gets, through
/// the SDK, exactly what was sent from the event that added them on, in order, and the
/// SDK does not loop pulling the history it may not read.
#[tokio::test]
async fn a_late_member_of_a_joined_read_diffusion_group_gets_its_part_once() {
    let server = TestServer::start_with(|c| c.groups.group_fanout_threshold = 2).await;
    let mut own = server.user(Tcp, "jvo", "d").await;
    let mut reg = server.client(Tcp).await;
    for u in ["jva", "jvb", "jvl"] {
        reg.register(u).await;
    }
    let g = own.create_group("big", &["jva", "jvb"]).await;
    let send = |cmid: &str| {
        Body::Send(pb::Send {
            client_msg_id: cmid.into(),
            conversation: g.conversation.clone(),
            body: cmid.as_bytes().to_vec().into(),
            ..Default::default()
        })
    };
    for i in 0..5 {
        ack_of(&own.request(send(&format!("old{i}"))).await);
    }
    expect_ok(
        &own.request(Body::AddMembers(pb::AddMembers {
            conversation: g.conversation.clone(),
            users: vec!["jvl".into()],
            role: 0,
        }))
        .await,
    );
    // seq 1 CREATED, 2-6 old, 7 MEMBERS_ADDED, then 8-10 new.
    for i in 0..3 {
        ack_of(&own.request(send(&format!("new{i}"))).await);
    }
    let (late, events) = Client::start(config(
        server.tcp,
        None,
        &server.ca,
        "jvl",
        "d",
        TransportMode::Tcp,
    ));
    let (got, _) = collect(events, 4, Duration::from_secs(20)).await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
    assert!(got.iter().all(|m| !text(m).starts_with("old")));
    late.close().await;
    server.stop().await;
}
