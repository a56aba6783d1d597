//! The fault proxies of `tern_tests::fault` (tests/support/fault/) against small echo and
//! frame servers: each fault does what its docs say, and no more.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tern_proto::Frame;
use tern_tests::fault::{FrameFaultProxy, TcpFaultProxy, UdpFaultProxy};
use tern_tests::tls::{acceptor_and_connector, tls_connect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

/// Largest UDP datagram the echo server and clients here read.
const UDP_BUF: usize = 65535;

const SECOND: Duration = Duration::from_secs(1);

async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes `msg` and reads the same number of bytes back.
async fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await?;
    Ok(back)
}

/// True if the stream ends (EOF or error) within a second.
async fn closes_soon(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        timeout(SECOND, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A TLS frame server on the given certs: answers each frame with a `SendAck` and a
/// `Pong` carrying its req_id, and reports every frame it receives.
async fn frame_upstream(certs: &std::path::Path) -> (SocketAddr, mpsc::UnboundedReceiver<Frame>) {
    let (acceptor, _) = acceptor_and_connector(certs);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = bytes::BytesMut::new();
                while matches!(tls.read_buf(&mut buf).await, Ok(n) if n > 0) {
                    while let Ok(Some(Ok(f))) = tern_proto::codec::decode_frame(&mut buf, 1 << 20) {
                        let _ = tx.send(f.clone());
                        for body in [
                            tern_proto::Body::SendAck(tern_proto::pb::SendAck::default()),
                            tern_proto::Body::Pong(tern_proto::pb::Pong::default()),
                        ] {
                            let out = tern_proto::encode_frame(&Frame {
                                req_id: f.req_id,
                                body: Some(body),
                            });
                            if tls.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn ping(req_id: u64) -> Bytes {
    tern_proto::encode_frame(&Frame {
        req_id,
        body: Some(tern_proto::Body::Ping(tern_proto::pb::Ping::default())),
    })
}

/// Reads frames until `n` arrived or nothing comes for 300 ms.
async fn read_frames<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Vec<Frame> {
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    while out.len() < n {
        match timeout(Duration::from_millis(300), r.read_buf(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => {
                while let Ok(Some(Ok(f))) = tern_proto::codec::decode_frame(&mut buf, 1 << 20) {
                    out.push(f);
                }
            }
            _ => break,
        }
    }
    out
}

#[tokio::test]
async fn frames_drop_only_the_chosen_kind() {
    let certs = tempfile::tempdir().unwrap();
    tern_server::certs::make_dev_certs(certs.path()).unwrap();
    let (upstream, _rx) = frame_upstream(certs.path()).await;
    let proxy = FrameFaultProxy::start(upstream, certs.path()).await;
    proxy.drop_send_acks(1.0);
    let mut c = tls_connect(proxy.addr(), &certs.path().join("ca.pem")).await;
    for id in 1..=10 {
        c.write_all(&ping(id)).await.unwrap();
    }
    let got = read_frames(&mut c, 20).await;
    let ids: Vec<u64> = got.iter().map(|f| f.req_id).collect();
    assert_eq!(
        ids,
        (1..=10).collect::<Vec<_>>(),
        "only the Pongs, in order"
    );
    assert!(got
        .iter()
        .all(|f| matches!(f.body, Some(tern_proto::Body::Pong(_)))));
    assert_eq!((proxy.dropped().len(), proxy.matched()), (10, 10));
    // Off again: both kinds pass.
    proxy.drop_nothing();
    c.write_all(&ping(11)).await.unwrap();
    assert_eq!(read_frames(&mut c, 2).await.len(), 2);
}

#[tokio::test]
async fn frames_held_then_released_on_a_detached_connection() {
    let certs = tempfile::tempdir().unwrap();
    tern_server::certs::make_dev_certs(certs.path()).unwrap();
    let (upstream, mut rx) = frame_upstream(certs.path()).await;
    let proxy = FrameFaultProxy::start(upstream, certs.path()).await;
    proxy.hold_new_connections(true);
    let mut c = tls_connect(proxy.addr(), &certs.path().join("ca.pem")).await;
    for id in 1..=3 {
        c.write_all(&ping(id)).await.unwrap();
    }
    let conn = proxy.connection(0, SECOND).await.unwrap();
    assert!(conn.wait_until(SECOND, |c| c.held().len() == 3).await);
    assert!(rx.try_recv().is_err(), "a held frame reached the server");
    // The client side goes away; the server side stays and gets the frames late.
    conn.detach_client();
    let mut rest = Vec::new();
    assert!(
        !matches!(timeout(SECOND, c.read_to_end(&mut rest)).await, Ok(Ok(n)) if n > 0),
        "the client side was reset"
    );
    conn.release();
    let mut late = Vec::new();
    for _ in 0..3 {
        late.push(timeout(SECOND, rx.recv()).await.unwrap().unwrap().req_id);
    }
    assert_eq!(late, vec![1, 2, 3], "released in order");
    assert!(conn.wait_until(SECOND, |c| c.orphaned().len() == 6).await);
    assert!(!conn.upstream_closed());
}

#[tokio::test]
async fn tcp_bytes_round_trip() {
    let proxy = TcpFaultProxy::start(tcp_echo().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // Several 64 KiB chunks, written and read concurrently.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = client.split();
    let mut back = vec![0u8; data.len()];
    let (wrote, read) = timeout(2 * SECOND, async {
        tokio::join!(w.write_all(&data), r.read_exact(&mut back))
    })
    .await
    .unwrap();
    wrote.unwrap();
    read.unwrap();
    assert!(back == data, "bytes changed through the proxy");
    assert_eq!(proxy.connections(), 1);
    // A half-close travels through: the echo server closes, we see EOF.
    client.shutdown().await.unwrap();
    assert!(closes_soon(&mut client).await);
}

#[tokio::test]
async fn tcp_cut_all_closes_live_connections_and_accepts_new_ones() {
    let proxy = TcpFaultProxy::start(tcp_echo().await).await;
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(echo_once(&mut a, b"a").await.unwrap(), b"a");
    assert_eq!(echo_once(&mut b, b"b").await.unwrap(), b"b");
    proxy.cut_all();
    assert!(
        closes_soon(&mut a).await,
        "first connection survived cut_all"
    );
    assert!(
        closes_soon(&mut b).await,
        "second connection survived cut_all"
    );
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(echo_once(&mut c, b"again").await.unwrap(), b"again");
    assert_eq!(proxy.connections(), 3);
}

#[tokio::test]
async fn tcp_blocked_refuses_and_cuts() {
    let proxy = TcpFaultProxy::start(tcp_echo().await).await;
    let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(echo_once(&mut live, b"x").await.unwrap(), b"x");
    proxy.set_blocked(true);
    assert!(
        closes_soon(&mut live).await,
        "live connection survived blocking"
    );
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    let _ = refused.write_all(b"hello").await;
    assert!(closes_soon(&mut refused).await, "blocked proxy forwarded");
    assert_eq!(proxy.connections(), 2);
    proxy.set_blocked(false);
    let mut ok = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(echo_once(&mut ok, b"y").await.unwrap(), b"y");
    assert_eq!(proxy.connections(), 3);
}

#[tokio::test]
async fn tcp_delay_is_observable_and_keeps_order() {
    let proxy = TcpFaultProxy::start(tcp_echo().await).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(echo_once(&mut client, b"warm").await.unwrap(), b"warm");
    proxy.set_delay(Duration::from_millis(200));
    let started = std::time::Instant::now();
    for part in [&b"ab"[..], b"cd", b"ef"] {
        client.write_all(part).await.unwrap();
        sleep(Duration::from_millis(5)).await;
    }
    let mut back = [0u8; 6];
    timeout(2 * SECOND, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(&back, b"abcdef");
    // 200 ms on the way there and 200 ms on the way back.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    proxy.set_delay(Duration::ZERO);
    let started = std::time::Instant::now();
    assert_eq!(echo_once(&mut client, b"fast").await.unwrap(), b"fast");
    // Would be >= 400 ms if the delay were still applied.
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn tcp_cut_probability() {
    let proxy = TcpFaultProxy::start(tcp_echo().await).await;
    proxy.set_seed(42);
    proxy.set_cut_probability(1.0);
    let mut doomed = TcpStream::connect(proxy.addr()).await.unwrap();
    let _ = doomed.write_all(b"first chunk").await;
    assert!(closes_soon(&mut doomed).await, "p = 1 did not cut");
    proxy.set_cut_probability(0.0);
    let mut fine = TcpStream::connect(proxy.addr()).await.unwrap();
    for _ in 0..20 {
        assert_eq!(echo_once(&mut fine, b"ping").await.unwrap(), b"ping");
    }
}

#[tokio::test]
async fn tcp_dropping_the_proxy_stops_it() {
    let proxy = TcpFaultProxy::start(tcp_echo().await).await;
    let addr = proxy.addr();
    let mut live = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut live, b"z").await.unwrap(), b"z");
    drop(proxy);
    assert!(
        closes_soon(&mut live).await,
        "connection outlived the proxy"
    );
    // The accept task ends and closes the listener.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still open after drop");
}

async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; UDP_BUF];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Receives one datagram within `wait`, or `None`.
async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; UDP_BUF];
    match timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

#[tokio::test]
async fn udp_datagram_round_trip() {
    let proxy = UdpFaultProxy::start(udp_echo().await).await;
    let client = udp_client().await;
    client.send_to(b"hello", proxy.addr()).await.unwrap();
    let (data, from) = recv_within(&client, SECOND).await.unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(from, proxy.addr());
    assert_eq!(proxy.datagrams(), (1, 1));
}

#[tokio::test]
async fn udp_blocked_drops_both_ways() {
    let proxy = UdpFaultProxy::start(udp_echo().await).await;
    let client = udp_client().await;
    proxy.set_blocked(true);
    client.send_to(b"lost", proxy.addr()).await.unwrap();
    assert!(recv_within(&client, Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(proxy.datagrams(), (0, 0));
    proxy.set_blocked(false);
    client.send_to(b"found", proxy.addr()).await.unwrap();
    assert_eq!(recv_within(&client, SECOND).await.unwrap().0, b"found");
}

#[tokio::test]
async fn udp_drop_probability_one_drops_everything() {
    let proxy = UdpFaultProxy::start(udp_echo().await).await;
    let client = udp_client().await;
    proxy.set_drop_probability(1.0);
    for i in 0..10u8 {
        client.send_to(&[i], proxy.addr()).await.unwrap();
    }
    assert!(recv_within(&client, Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(proxy.datagrams(), (0, 0));
}

#[tokio::test]
async fn udp_duplicate_probability_one_sends_two_copies() {
    let server = udp_client().await;
    let proxy = UdpFaultProxy::start(server.local_addr().unwrap()).await;
    let client = udp_client().await;
    proxy.set_duplicate_probability(1.0);
    client.send_to(b"twice", proxy.addr()).await.unwrap();
    let (first, path) = recv_within(&server, SECOND).await.unwrap();
    let (second, _) = recv_within(&server, SECOND).await.unwrap();
    assert_eq!((&first[..], &second[..]), (&b"twice"[..], &b"twice"[..]));
    assert!(recv_within(&server, Duration::from_millis(100))
        .await
        .is_none());
    server.send_to(b"back", path).await.unwrap();
    assert_eq!(recv_within(&client, SECOND).await.unwrap().0, b"back");
    assert_eq!(recv_within(&client, SECOND).await.unwrap().0, b"back");
    assert!(recv_within(&client, Duration::from_millis(100))
        .await
        .is_none());
    assert_eq!(proxy.datagrams(), (2, 2));
}

#[tokio::test]
async fn udp_cut_all_gives_a_new_path() {
    let server = udp_client().await;
    let proxy = UdpFaultProxy::start(server.local_addr().unwrap()).await;
    let client = udp_client().await;
    client.send_to(b"1", proxy.addr()).await.unwrap();
    let (_, old_path) = recv_within(&server, SECOND).await.unwrap();
    client.send_to(b"2", proxy.addr()).await.unwrap();
    assert_eq!(recv_within(&server, SECOND).await.unwrap().1, old_path);
    proxy.cut_all();
    client.send_to(b"3", proxy.addr()).await.unwrap();
    let (data, new_path) = recv_within(&server, SECOND).await.unwrap();
    assert_eq!(data, b"3");
    assert_ne!(new_path, old_path, "cut_all kept the old upstream socket");
    // The new path relays back to the client.
    server.send_to(b"reply", new_path).await.unwrap();
    assert_eq!(recv_within(&client, SECOND).await.unwrap().0, b"reply");
}

#[tokio::test]
async fn udp_delay_is_observable() {
    let proxy = UdpFaultProxy::start(udp_echo().await).await;
    let client = udp_client().await;
    proxy.set_delay(Duration::from_millis(100));
    let started = std::time::Instant::now();
    client.send_to(b"slow", proxy.addr()).await.unwrap();
    assert_eq!(recv_within(&client, SECOND).await.unwrap().0, b"slow");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
}

#[tokio::test]
async fn udp_reorder_changes_order_but_loses_nothing() {
    let server = udp_client().await;
    let proxy = UdpFaultProxy::start(server.local_addr().unwrap()).await;
    let client = udp_client().await;
    proxy.set_seed(3);
    proxy.set_reorder(true);
    for i in 0..50u8 {
        client.send_to(&[i], proxy.addr()).await.unwrap();
    }
    let mut got = Vec::new();
    while let Some((data, _)) = recv_within(&server, Duration::from_millis(300)).await {
        got.push(data[0]);
        if got.len() == 50 {
            break;
        }
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<u8>>(), "lost or duplicated");
    assert_ne!(got, sorted, "nothing was reordered");
}
