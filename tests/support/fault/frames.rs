//! [`FrameFaultProxy`]: terminates TLS on both sides and forwards whole tern frames, so
//! its faults pick frames.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tern_proto::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use super::{lock, XorShift, DEFAULT_SEED, ERROR_PAUSE};

/// Largest frame the frame proxy parses; past it a connection is forwarded as raw bytes.
const FRAME_PROXY_MAX: usize = 16 * 1024 * 1024;

/// Decides, per server→client frame, whether the drop fault applies to it.
pub type FramePredicate = Arc<dyn Fn(&Frame) -> bool + Send + Sync>;

#[derive(Clone, Copy, Debug, Default)]
struct FrameCtl {
    /// Client→server frames are held back (in order) while set.
    hold: bool,
    /// The client side was reset; the server side stays open.
    detached: bool,
    /// Both sides reset.
    cut: bool,
}

/// One proxied connection: its controls and what the proxy saw on it.
struct FrameConnState {
    ctl: watch::Sender<FrameCtl>,
    /// Bumped whenever anything below changes, for waiters.
    seen: watch::Sender<u64>,
    /// Decoded copies of the client→server frames held back (including released ones).
    held: Mutex<Vec<Frame>>,
    /// Server→client frames that arrived after the client side was detached.
    orphaned: Mutex<Vec<Frame>>,
    upstream_closed: AtomicBool,
}

impl FrameConnState {
    fn bump(&self) {
        self.seen.send_modify(|v| *v = v.wrapping_add(1));
    }
}

struct FrameShared {
    upstream: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    drop_filter: Mutex<Option<(FramePredicate, f64)>>,
    rng: Mutex<XorShift>,
    dropped: Mutex<Vec<Frame>>,
    /// Server→client frames the drop predicate matched (dropped or not).
    matched: AtomicU64,
    hold_new: AtomicBool,
    conns: Mutex<Vec<Arc<FrameConnState>>>,
    accepted: watch::Sender<usize>,
}

/// A TLS-terminating proxy for TLS-TCP that understands tern frames: it is the TLS
/// server for the client (with the server's own certificate from its data dir) and a TLS
/// client of the real server (trusting the dev CA), and forwards whole frames, so faults
/// can pick frames: drop chosen server→client frames (e.g. only `SendAck`s), hold a
/// connection's client→server frames and release them later, or reset only the client
/// side of a connection while its server side stays open (a stale connection whose late
/// bytes can still reach the server).
///
/// Limits: one task per connection forwards both directions, so a peer that stops
/// reading for long can stall the other direction (fine for test traffic); frames over
/// 16 MiB switch that connection to raw forwarding; held frames are kept in memory.
pub struct FrameFaultProxy {
    addr: SocketAddr,
    shared: Arc<FrameShared>,
    stop: watch::Sender<bool>,
}

/// A handle on one connection of a [`FrameFaultProxy`], by accept order.
#[derive(Clone)]
pub struct FrameConn(Arc<FrameConnState>);

impl FrameFaultProxy {
    /// Binds `127.0.0.1:0` and forwards to the TLS-TCP server at `upstream`. `certs` is
    /// the server's certificate directory (`<data dir>/certs`: `ca.pem`, `server.pem`,
    /// `server.key`).
    pub async fn start(upstream: SocketAddr, certs: &std::path::Path) -> FrameFaultProxy {
        let (acceptor, connector) = crate::tls::acceptor_and_connector(certs);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind frame proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("frame proxy address");
        let shared = Arc::new(FrameShared {
            upstream,
            acceptor,
            connector,
            drop_filter: Mutex::new(None),
            rng: Mutex::new(XorShift::new(DEFAULT_SEED)),
            dropped: Mutex::new(Vec::new()),
            matched: AtomicU64::new(0),
            hold_new: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            accepted: watch::channel(0).0,
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(frame_accept_loop(listener, shared.clone(), stop_rx));
        FrameFaultProxy { addr, shared, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops server→client frames for which `matches` is true, each with probability
    /// `p` (1.0: all of them), from now on.
    pub fn drop_to_client(&self, matches: impl Fn(&Frame) -> bool + Send + Sync + 'static, p: f64) {
        *lock(&self.shared.drop_filter) = Some((Arc::new(matches), p));
    }

    /// Drops only `SendAck` frames, each with probability `p`.
    pub fn drop_send_acks(&self, p: f64) {
        self.drop_to_client(|f| matches!(f.body, Some(tern_proto::Body::SendAck(_))), p);
    }

    /// Stops dropping.
    pub fn drop_nothing(&self) {
        *lock(&self.shared.drop_filter) = None;
    }

    /// The server→client frames dropped so far, in order.
    pub fn dropped(&self) -> Vec<Frame> {
        lock(&self.shared.dropped).clone()
    }

    /// Server→client frames the drop predicate matched so far (dropped or forwarded).
    pub fn matched(&self) -> u64 {
        self.shared.matched.load(Ordering::SeqCst)
    }

    /// Connections accepted from now on start with their client→server frames held.
    pub fn hold_new_connections(&self, hold: bool) {
        self.shared.hold_new.store(hold, Ordering::SeqCst);
    }

    pub fn set_seed(&self, seed: u64) {
        *lock(&self.shared.rng) = XorShift::new(seed);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// The `i`-th accepted connection (from 0), waiting up to `within` for it.
    pub async fn connection(&self, i: usize, within: Duration) -> Option<FrameConn> {
        let mut rx = self.shared.accepted.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|n| *n > i)).await;
        lock(&self.shared.conns).get(i).cloned().map(FrameConn)
    }

    /// Resets every live connection on both sides.
    pub fn cut_all(&self) {
        for c in lock(&self.shared.conns).iter() {
            c.ctl.send_modify(|c| c.cut = true);
        }
    }
}

impl Drop for FrameFaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.cut_all();
    }
}

impl FrameConn {
    /// Holds this connection's client→server frames from now on.
    pub fn hold(&self) {
        self.0.ctl.send_modify(|c| c.hold = true);
    }

    /// Forwards the held frames, in order, and stops holding.
    pub fn release(&self) {
        self.0.ctl.send_modify(|c| c.hold = false);
    }

    /// Resets the client side only; the server side stays open (and still receives
    /// released frames).
    pub fn detach_client(&self) {
        self.0.ctl.send_modify(|c| c.detached = true);
    }

    /// Resets both sides.
    pub fn cut(&self) {
        self.0.ctl.send_modify(|c| c.cut = true);
    }

    /// Decoded copies of the client→server frames held back so far (released or not).
    pub fn held(&self) -> Vec<Frame> {
        lock(&self.0.held).clone()
    }

    /// Server→client frames that arrived after the client side was detached.
    pub fn orphaned(&self) -> Vec<Frame> {
        lock(&self.0.orphaned).clone()
    }

    pub fn upstream_closed(&self) -> bool {
        self.0.upstream_closed.load(Ordering::SeqCst)
    }

    /// Waits up to `within` until `done(self)` holds; returns whether it did.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&FrameConn) -> bool) -> bool {
        let mut rx = self.0.seen.subscribe();
        let deadline = Instant::now() + within;
        loop {
            rx.borrow_and_update();
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return done(self),
            }
        }
    }
}

async fn frame_accept_loop(
    listener: TcpListener,
    shared: Arc<FrameShared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let hold = shared.hold_new.load(Ordering::SeqCst);
                    let state = Arc::new(FrameConnState {
                        ctl: watch::channel(FrameCtl { hold, ..FrameCtl::default() }).0,
                        seen: watch::channel(0).0,
                        held: Mutex::new(Vec::new()),
                        orphaned: Mutex::new(Vec::new()),
                        upstream_closed: AtomicBool::new(false),
                    });
                    let n = {
                        let mut conns = lock(&shared.conns);
                        conns.push(state.clone());
                        conns.len()
                    };
                    shared.accepted.send_replace(n);
                    tokio::spawn(frame_conn(shared.clone(), client, state));
                }
                Err(_) => sleep(ERROR_PAUSE).await,
            },
            _ = stop.changed() => return,
        }
    }
}

/// Splits whole raw frames (prefix included) off `buf`; `None` once a prefix is over the
/// parse limit (the caller then forwards raw bytes).
fn split_raw_frames(buf: &mut bytes::BytesMut) -> Option<Vec<(Bytes, Option<Frame>)>> {
    use prost::Message as _;
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > FRAME_PROXY_MAX {
            return None;
        }
        if buf.len() < 4 + len {
            break;
        }
        let raw = buf.split_to(4 + len).freeze();
        let frame = Frame::decode(&raw[4..]).ok();
        out.push((raw, frame));
    }
    Some(out)
}

fn reset(stream: &tokio_rustls::server::TlsStream<TcpStream>) {
    let _ = stream.get_ref().0.set_zero_linger();
}

async fn frame_conn(shared: Arc<FrameShared>, client: TcpStream, state: Arc<FrameConnState>) {
    let _ = client.set_nodelay(true);
    let setup = async {
        let client = shared.acceptor.accept(client).await.ok()?;
        let up = TcpStream::connect(shared.upstream).await.ok()?;
        let _ = up.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let up = shared.connector.connect(name, up).await.ok()?;
        Some((client, up))
    };
    let Some((client, mut up)) = tokio::time::timeout(Duration::from_secs(10), setup)
        .await
        .ok()
        .flatten()
    else {
        state.upstream_closed.store(true, Ordering::SeqCst);
        state.bump();
        return;
    };
    let mut client = Some(client);
    let mut ctl = state.ctl.subscribe();
    let (mut cbuf, mut ubuf) = (bytes::BytesMut::new(), bytes::BytesMut::new());
    let mut held: std::collections::VecDeque<Bytes> = Default::default();
    let (mut raw_up, mut raw_down) = (false, false);
    let mut client_eof = false;
    let mut up_shut = false;
    loop {
        let now = *ctl.borrow_and_update();
        if now.cut {
            if let Some(c) = &client {
                reset(c);
            }
            let _ = up.get_ref().0.set_zero_linger();
            break;
        }
        if now.detached {
            if let Some(c) = client.take() {
                reset(&c);
                drop(c);
            }
        }
        if !now.hold && !held.is_empty() {
            let mut ok = true;
            while let Some(b) = held.pop_front() {
                ok &= up.write_all(&b).await.is_ok();
            }
            if !ok || up.flush().await.is_err() {
                break;
            }
            state.bump();
        }
        if client_eof && held.is_empty() && !up_shut && !now.detached {
            let _ = up.shutdown().await;
            up_shut = true;
        }
        tokio::select! {
            r = async {
                match client.as_mut() {
                    Some(c) => c.read_buf(&mut cbuf).await,
                    None => std::future::pending().await,
                }
            }, if !client_eof => match r {
                Ok(0) | Err(_) => client_eof = true,
                Ok(_) => {
                    let frames = if raw_up { None } else { split_raw_frames(&mut cbuf) };
                    let frames = match frames {
                        Some(f) => f,
                        None => {
                            raw_up = true;
                            vec![(cbuf.split().freeze(), None)]
                        }
                    };
                    let hold = ctl.borrow().hold;
                    for (raw, frame) in frames {
                        if hold {
                            held.push_back(raw);
                            if let Some(f) = frame {
                                lock(&state.held).push(f);
                            }
                            state.bump();
                        } else if up.write_all(&raw).await.is_err() {
                            break;
                        }
                    }
                    let _ = up.flush().await;
                }
            },
            r = up.read_buf(&mut ubuf) => match r {
                Ok(0) | Err(_) => {
                    state.upstream_closed.store(true, Ordering::SeqCst);
                    state.bump();
                    if let Some(c) = client.as_mut() {
                        let _ = c.shutdown().await;
                    }
                    break;
                }
                Ok(_) => {
                    let frames = if raw_down { None } else { split_raw_frames(&mut ubuf) };
                    let frames = match frames {
                        Some(f) => f,
                        None => {
                            raw_down = true;
                            vec![(ubuf.split().freeze(), None)]
                        }
                    };
                    let filter = lock(&shared.drop_filter).clone();
                    for (raw, frame) in frames {
                        let Some(c) = client.as_mut() else {
                            if let Some(f) = frame {
                                lock(&state.orphaned).push(f);
                            }
                            state.bump();
                            continue;
                        };
                        if let (Some((matches, p)), Some(f)) = (&filter, &frame) {
                            if matches(f) {
                                let drop_it = lock(&shared.rng).chance(*p);
                                if drop_it {
                                    lock(&shared.dropped).push(f.clone());
                                }
                                shared.matched.fetch_add(1, Ordering::SeqCst);
                                state.bump();
                                if drop_it {
                                    continue;
                                }
                            }
                        }
                        if c.write_all(&raw).await.is_err() {
                            client_eof = true;
                        }
                    }
                    if let Some(c) = client.as_mut() {
                        let _ = c.flush().await;
                    }
                }
            },
            changed = ctl.changed() => if changed.is_err() { break },
        }
    }
}
