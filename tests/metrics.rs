//! `--metrics-listen`: the Prometheus text reflects what the server did (its own test
//! binary, because the metrics are process-wide; the tests in it take turns).

use std::net::SocketAddr;
use std::time::Duration;

use tern_tests::*;

/// The metrics are process-wide: one test at a time, so no test sees another's counts.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn (held until it ends), a server with the metrics endpoint on, the
/// endpoint's address and a first scrape.
async fn metrics_server() -> (
    tokio::sync::MutexGuard<'static, ()>,
    TestServer,
    SocketAddr,
    String,
) {
    let turn = SERIAL.lock().await;
    let server =
        TestServer::start_with(|c| c.network.metrics_listen = Some("127.0.0.1:0".parse().unwrap()))
            .await;
    let addr = server.metrics.expect("metrics endpoint bound");
    let before = scrape_metrics(addr).await;
    (turn, server, addr, before)
}

#[tokio::test]
async fn metrics_count_connections_sends_dedup_pushes_and_flushes() {
    let (_turn, server, addr, before) = metrics_server().await;

    let mut alice = server.user(Transport::Tcp, "alice", "phone").await;
    let mut bob = server.user(Transport::Quic, "bob", "laptop").await;
    let mid = scrape_metrics(addr).await;
    assert_eq!(
        metric_value(&mid, "tern_connections{transport=\"tcp\"}"),
        1.0,
        "{mid}"
    );
    assert_eq!(
        metric_value(&mid, "tern_connections{transport=\"quic\"}"),
        1.0,
        "{mid}"
    );

    for i in 0..5 {
        ack_of(&alice.send_text("bob", &format!("m{i}"), "hi").await);
        bob.next_push(Duration::from_secs(5)).await.expect("push");
    }
    let again = ack_of(&alice.send_text("bob", "m0", "hi").await);
    assert!(again.duplicate);
    bob.ack(5).await;

    let after = scrape_metrics(addr).await;
    let delta = |s: &str| metric_value(&after, s) - metric_value(&before, s);
    assert_eq!(delta("tern_sends_total"), 5.0, "{after}");
    assert_eq!(delta("tern_dedup_hits_total"), 1.0, "{after}");
    // Each message is pushed to bob and to alice's sending device (its inbox copy).
    assert_eq!(delta("tern_pushes_total"), 10.0, "{after}");
    assert_eq!(delta("tern_acks_total"), 1.0, "{after}");
    assert_eq!(
        delta("tern_logins_total{kind=\"login\",result=\"ok\"}"),
        2.0,
        "{after}"
    );
    assert!(delta("tern_frames_in_total") >= 10.0, "{after}");
    assert!(delta("tern_frames_out_total") >= 12.0, "{after}");
    // Every acked send waited for a flush.
    assert!(delta("tern_writes_per_flush_sum") >= 6.0, "{after}");
    assert!(delta("tern_store_flush_seconds_count") >= 1.0, "{after}");

    alice.close().await;
    bob.close().await;
    // The gauges come back down when the connections end.
    let mut closed = String::new();
    for _ in 0..50 {
        closed = scrape_metrics(addr).await;
        if metric_value(&closed, "tern_connections{transport=\"tcp\"}") == 0.0
            && metric_value(&closed, "tern_connections{transport=\"quic\"}") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_value(&closed, "tern_connections{transport=\"tcp\"}"),
        0.0,
        "{closed}"
    );
    assert_eq!(
        metric_value(&closed, "tern_connections{transport=\"quic\"}"),
        0.0,
        "{closed}"
    );
    server.stop().await;
}

/// The SDK keeps one TLS client configuration per `Trust`, so a reconnect presents the
/// session ticket of the previous connection and the server resumes instead of doing a
/// full handshake (no certificate, no signature).
#[tokio::test]
async fn a_reconnect_with_the_same_trust_resumes_the_tls_session() {
    let (_turn, server, addr, before) = metrics_server().await;
    let opts = tern_sdk::ConnectOptions::new(tern_sdk::Trust::from_pem_file(&server.ca).unwrap());
    for _ in 0..3 {
        let mut conn = tern_sdk::connect(Transport::Tcp, server.tcp, &opts)
            .await
            .unwrap();
        // One round trip, so the client has read the ticket the server sent after the
        // handshake.
        conn.send(&tern_proto::Frame {
            req_id: 1,
            body: Some(tern_proto::Body::Ping(tern_proto::pb::Ping {
                client_time_ms: 1,
            })),
        })
        .await
        .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), conn.recv())
            .await
            .expect("an answer to the ping");
        assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
        conn.close().await;
    }
    let after = scrape_metrics(addr).await;
    let delta = |s: &str| metric_value(&after, s) - metric_value(&before, s);
    assert_eq!(
        delta("tern_tls_handshakes_total{kind=\"full\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("tern_tls_handshakes_total{kind=\"resumed\"}"),
        2.0,
        "{after}"
    );
    server.stop().await;
}
