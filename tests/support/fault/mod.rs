//! Fault-injecting proxies for integration tests: put one between a client and a real
//! server to simulate a bad network without root, `tc netem` or iptables.
//!
//! * [`TcpFaultProxy`] forwards each accepted TCP connection (for TLS-TCP) to a fixed
//!   upstream address with its own copy loops, so it can cut connections (all at once, on
//!   demand, or at random per forwarded chunk), refuse new ones, and delay traffic.
//! * [`UdpFaultProxy`] relays UDP datagrams (for QUIC) between each client source address
//!   and the upstream through a per-client upstream socket, and can block, drop, delay,
//!   duplicate and reorder datagrams, or forget every client mapping (a path change).
//! * [`FrameFaultProxy`] terminates TLS on both sides (with the server's own dev
//!   certificate) and forwards whole tern frames, so its faults pick frames: drop chosen
//!   server→client frames (only `SendAck`s, say), hold a connection's client→server
//!   frames and release them later, or reset only the client side of a connection while
//!   its server side stays open (a stale connection whose late bytes still arrive).
//!
//! All listen on `127.0.0.1:0` only; every setting can be changed while traffic flows and
//! applies to data read from then on. Dropping a proxy (or calling `stop`) ends all of its
//! tasks, closes its sockets and aborts the connections it carries.
//!
//! Limits, on purpose kept simple:
//! * A TCP "cut" closes both sockets with `RST` (`SO_LINGER` 0), so both peers see the
//!   connection fail at once (an error or end of stream); a real cut that leaves the peers
//!   hanging until their own timeouts is better simulated with
//!   [`UdpFaultProxy::set_blocked`] or a huge [`TcpFaultProxy::set_delay`].
//! * TCP faults act on chunks as they come out of `read` (up to 64 KiB), not on
//!   segments; the delay is a latency (each chunk is written `d` after it was read, in
//!   order), with at most 16 chunks queued per direction, which bounds the throughput.
//! * Randomness comes from a small xorshift generator with a fixed default seed (see the
//!   `set_seed` methods); it is shared by all connections or clients of a proxy, so the
//!   outcome is only reproducible as far as the order in which tasks draw from it is.
//! * The UDP proxy keeps at most 4096 client mappings (datagrams from further clients are
//!   dropped) and at most 4096 delayed datagrams in flight (further ones are dropped);
//!   mappings never expire on their own, only through [`UdpFaultProxy::cut_all`].
//! * Nothing here panics on I/O errors: a failing TCP connection is aborted, a datagram
//!   that cannot be sent is dropped.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tern_proto::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};

/// Size of one TCP read (and so the largest chunk a fault applies to).
const TCP_CHUNK: usize = 64 * 1024;
/// Chunks queued per TCP direction (waiting for their delay to pass).
const TCP_QUEUE: usize = 16;
/// Largest UDP datagram the proxy relays.
const UDP_BUF: usize = 65535;
/// Most client mappings the UDP proxy keeps.
const UDP_MAX_CLIENTS: usize = 4096;
/// Most delayed datagrams in flight at once in the UDP proxy.
const UDP_MAX_DELAYED: usize = 4096;
/// Chance that a datagram is held back while reordering is on.
const REORDER_P: f64 = 0.3;
/// Longest a datagram is held back while reordering is on.
const REORDER_HOLD: Duration = Duration::from_millis(20);
/// Pause after an unexpected socket error, so a persistent error is not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Seed used until `set_seed` is called.
const DEFAULT_SEED: u64 = 0x7e57_fa17_5eed_0001;

// ---------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------

/// Control state broadcast to every task of a proxy: a cut bumps `epoch`, and every
/// connection or mapping created under an older epoch ends.
#[derive(Clone, Copy, Debug, Default)]
struct Ctl {
    epoch: u64,
    stopped: bool,
}

/// Resolves once the proxy is stopped or dropped, or a cut happened after `epoch`.
async fn cancelled(ctl: &mut watch::Receiver<Ctl>, epoch: u64) {
    loop {
        let now = *ctl.borrow_and_update();
        if now.stopped || now.epoch != epoch {
            return;
        }
        if ctl.changed().await.is_err() {
            return; // the proxy (the sender) is gone
        }
    }
}

fn bump_epoch(ctl: &watch::Sender<Ctl>) {
    ctl.send_modify(|c| c.epoch = c.epoch.wrapping_add(1));
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// xorshift64* generator: small, fast, reproducible; not for anything but tests.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // splitmix64 of the seed, so that small or similar seeds give unrelated streams;
        // xorshift must not start from 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { DEFAULT_SEED } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`; does not draw for p <= 0 or p >= 1 (or NaN), so a
    /// disabled fault does not disturb the sequence the enabled ones see.
    fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.next_f64() < p
        }
    }
}

/// Settings common to both proxies, readable from any task without locking (except
/// the generator).
#[derive(Debug)]
struct Knobs {
    blocked: AtomicBool,
    delay_ns: AtomicU64,
    rng: Mutex<XorShift>,
}

impl Knobs {
    fn new() -> Knobs {
        Knobs {
            blocked: AtomicBool::new(false),
            delay_ns: AtomicU64::new(0),
            rng: Mutex::new(XorShift::new(DEFAULT_SEED)),
        }
    }

    fn blocked(&self) -> bool {
        self.blocked.load(Ordering::SeqCst)
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Ordering::Relaxed))
    }

    fn set_delay(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.delay_ns.store(ns, Ordering::Relaxed);
    }

    fn set_seed(&self, seed: u64) {
        *lock(&self.rng) = XorShift::new(seed);
    }

    fn chance(&self, p: &AtomicU64) -> bool {
        let p = load_f64(p);
        // Skip the lock when the fault is off (the common case, once per chunk).
        !p.is_nan() && p > 0.0 && lock(&self.rng).chance(p)
    }
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store_f64(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct TcpShared {
    knobs: Knobs,
    cut_p: AtomicU64,
    accepted: AtomicUsize,
}

/// A TCP proxy on `127.0.0.1:0` that forwards every accepted connection to one upstream
/// address and can cut, refuse and delay them. See the module docs.
#[derive(Debug)]
pub struct TcpFaultProxy {
    addr: SocketAddr,
    shared: Arc<TcpShared>,
    ctl: watch::Sender<Ctl>,
}

impl TcpFaultProxy {
    /// Binds `127.0.0.1:0` and starts forwarding connections to `upstream`. Panics only
    /// if the loopback listener cannot be bound (a broken test environment).
    pub async fn start(upstream: SocketAddr) -> TcpFaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TCP fault proxy on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("TCP fault proxy local address");
        let shared = Arc::new(TcpShared {
            knobs: Knobs::new(),
            cut_p: AtomicU64::new(0f64.to_bits()),
            accepted: AtomicUsize::new(0),
        });
        let (ctl, rx) = watch::channel(Ctl::default());
        tokio::spawn(tcp_accept_loop(listener, upstream, shared.clone(), rx));
        TcpFaultProxy { addr, shared, ctl }
    }

    /// The address clients should connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Aborts every live proxied connection on both sides (`RST`); connections accepted
    /// afterwards are forwarded as usual.
    pub fn cut_all(&self) {
        bump_epoch(&self.ctl);
    }

    /// While blocked, new connections are accepted and immediately reset; turning it on
    /// also cuts every live connection.
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.knobs.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            bump_epoch(&self.ctl);
        }
    }

    /// Every chunk read from then on (either direction) is written `d` after it was read,
    /// in order. `Duration::ZERO` turns the delay off.
    pub fn set_delay(&self, d: Duration) {
        self.shared.knobs.set_delay(d);
    }

    /// For each chunk read from then on, with probability `p` the whole connection is
    /// cut instead of forwarding the chunk. 0 (the default) turns it off.
    pub fn set_cut_probability(&self, p: f64) {
        store_f64(&self.shared.cut_p, p);
    }

    /// Restarts the random generator from `seed` (a fixed seed is used by default).
    pub fn set_seed(&self, seed: u64) {
        self.shared.knobs.set_seed(seed);
    }

    /// How many connections were accepted in total, including those reset because the
    /// proxy was blocked.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes the listener and aborts every live connection. Dropping
    /// the proxy does the same.
    pub fn stop(&self) {
        self.ctl.send_modify(|c| c.stopped = true);
    }
}

impl Drop for TcpFaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<TcpShared>,
    mut ctl: watch::Receiver<Ctl>,
) {
    loop {
        let now = *ctl.borrow_and_update();
        if now.stopped {
            return;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    if shared.knobs.blocked() {
                        let _ = client.set_zero_linger();
                        drop(client);
                        continue;
                    }
                    tokio::spawn(tcp_conn(
                        shared.clone(),
                        client,
                        upstream,
                        ctl.clone(),
                        now.epoch,
                    ));
                }
                // E.g. out of file descriptors: wait a little instead of spinning.
                Err(_) => tokio::select! {
                    _ = sleep(ERROR_PAUSE) => {}
                    changed = ctl.changed() => if changed.is_err() { return },
                },
            },
            changed = ctl.changed() => if changed.is_err() { return },
        }
    }
}

/// Marker for "this connection must be aborted" (a cut, or an I/O error on either side).
#[derive(Debug)]
struct Abort;

async fn tcp_conn(
    shared: Arc<TcpShared>,
    mut client: TcpStream,
    upstream: SocketAddr,
    mut ctl: watch::Receiver<Ctl>,
    epoch: u64,
) {
    let server = tokio::select! {
        s = TcpStream::connect(upstream) => s.ok(),
        _ = cancelled(&mut ctl, epoch) => None,
    };
    let Some(mut server) = server else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let outcome = {
        let (client_r, client_w) = client.split();
        let (server_r, server_w) = server.split();
        let pump = async {
            tokio::try_join!(
                tcp_pipe(&shared, client_r, server_w),
                tcp_pipe(&shared, server_r, client_w),
            )
        };
        tokio::select! {
            done = pump => done.map(|_| ()),
            _ = cancelled(&mut ctl, epoch) => Err(Abort),
        }
    };
    if outcome.is_err() {
        // Abortive close: both peers see the connection fail now, not a clean EOF.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    // Both sockets are closed here.
}

/// Copies one direction: a reader that stamps each chunk with the time it is due, and
/// a writer that writes chunks in order once due. EOF is passed on as a write shutdown.
async fn tcp_pipe<R, W>(shared: &TcpShared, mut from: R, mut to: W) -> Result<(), Abort>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(TCP_QUEUE);
    let read = async move {
        let mut buf = vec![0u8; TCP_CHUNK];
        loop {
            let n = from.read(&mut buf).await.map_err(|_| Abort)?;
            if n == 0 {
                break;
            }
            if shared.knobs.chance(&shared.cut_p) {
                return Err(Abort);
            }
            let due = Instant::now() + shared.knobs.delay();
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            tx.send((due, chunk)).await.map_err(|_| Abort)?;
        }
        drop(tx); // lets the writer finish once the queue is drained
        Ok::<(), Abort>(())
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            to.write_all(&chunk).await.map_err(|_| Abort)?;
        }
        let _ = to.shutdown().await;
        Ok::<(), Abort>(())
    };
    tokio::try_join!(read, write).map(|_| ())
}

// ---------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct UdpShared {
    knobs: Knobs,
    drop_p: AtomicU64,
    dup_p: AtomicU64,
    reorder: AtomicBool,
    /// Datagrams sent client→server and server→client (duplicates count twice).
    to_server: AtomicU64,
    to_client: AtomicU64,
    /// Delayed datagrams currently in flight.
    delayed: AtomicUsize,
    /// Source of ids for held (reordered) datagrams.
    hold_ids: AtomicU64,
}

/// A UDP relay on `127.0.0.1:0` for QUIC: each client source address gets its own
/// upstream socket; datagrams can be blocked, dropped, delayed, duplicated and
/// reordered. See the module docs.
#[derive(Debug)]
pub struct UdpFaultProxy {
    addr: SocketAddr,
    shared: Arc<UdpShared>,
    ctl: watch::Sender<Ctl>,
}

impl UdpFaultProxy {
    /// Binds `127.0.0.1:0` and starts relaying to `upstream`. Panics only if the
    /// loopback socket cannot be bound (a broken test environment).
    pub async fn start(upstream: SocketAddr) -> UdpFaultProxy {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP fault proxy on 127.0.0.1:0");
        let addr = socket.local_addr().expect("UDP fault proxy local address");
        let shared = Arc::new(UdpShared {
            knobs: Knobs::new(),
            drop_p: AtomicU64::new(0f64.to_bits()),
            dup_p: AtomicU64::new(0f64.to_bits()),
            reorder: AtomicBool::new(false),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            delayed: AtomicUsize::new(0),
            hold_ids: AtomicU64::new(0),
        });
        let (ctl, rx) = watch::channel(Ctl::default());
        tokio::spawn(udp_main_loop(
            Arc::new(socket),
            upstream,
            shared.clone(),
            rx,
        ));
        UdpFaultProxy { addr, shared, ctl }
    }

    /// The address clients should send to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// While blocked, every datagram is dropped in both directions (also those already
    /// delayed or held back when it is turned on).
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.knobs.blocked.store(blocked, Ordering::SeqCst);
    }

    /// Drops each datagram (either direction) with probability `p`.
    pub fn set_drop_probability(&self, p: f64) {
        store_f64(&self.shared.drop_p, p);
    }

    /// Delays each datagram by `d` (datagrams may be reordered when `d` changes).
    pub fn set_delay(&self, d: Duration) {
        self.shared.knobs.set_delay(d);
    }

    /// Sends each datagram (either direction) twice with probability `p`.
    pub fn set_duplicate_probability(&self, p: f64) {
        store_f64(&self.shared.dup_p, p);
    }

    /// While on, each datagram is held back with probability 0.3 and sent right after
    /// the next one in the same direction, or after 20 ms if none comes.
    pub fn set_reorder(&self, on: bool) {
        self.shared.reorder.store(on, Ordering::SeqCst);
    }

    /// Restarts the random generator from `seed` (a fixed seed is used by default).
    pub fn set_seed(&self, seed: u64) {
        self.shared.knobs.set_seed(seed);
    }

    /// Forgets every client mapping and closes their upstream sockets; datagrams still
    /// delayed or held on those paths are lost. A client's next datagram gets a fresh
    /// upstream socket, so the server sees it come from a new address.
    pub fn cut_all(&self) {
        bump_epoch(&self.ctl);
    }

    /// Datagrams sent (client→server, server→client); a duplicate counts as two.
    pub fn datagrams(&self) -> (u64, u64) {
        (
            self.shared.to_server.load(Ordering::SeqCst),
            self.shared.to_client.load(Ordering::SeqCst),
        )
    }

    /// Stops relaying and closes every socket. Dropping the proxy does the same.
    pub fn stop(&self) {
        self.ctl.send_modify(|c| c.stopped = true);
    }
}

impl Drop for UdpFaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone, Copy, Debug)]
enum Dir {
    ToServer,
    ToClient,
}

/// Where one direction of one client mapping sends its datagrams, with its held-back
/// datagram (for reordering) and the epoch it belongs to.
#[derive(Clone, Debug)]
struct Outlet {
    shared: Arc<UdpShared>,
    socket: Arc<UdpSocket>,
    /// `None`: `socket` is connected to the upstream.
    dest: Option<SocketAddr>,
    dir: Dir,
    held: Arc<Mutex<Option<(u64, Bytes)>>>,
    ctl: watch::Receiver<Ctl>,
    epoch: u64,
}

impl Outlet {
    fn new(
        shared: &Arc<UdpShared>,
        socket: Arc<UdpSocket>,
        dest: Option<SocketAddr>,
        dir: Dir,
        ctl: &watch::Receiver<Ctl>,
        epoch: u64,
    ) -> Outlet {
        Outlet {
            shared: shared.clone(),
            socket,
            dest,
            dir,
            held: Arc::new(Mutex::new(None)),
            ctl: ctl.clone(),
            epoch,
        }
    }

    /// Applies drop, duplication and delay to one datagram received for this outlet.
    async fn relay(&self, data: Bytes) {
        let shared = &self.shared;
        if shared.knobs.blocked() || shared.knobs.chance(&shared.drop_p) {
            return;
        }
        let copies = if shared.knobs.chance(&shared.dup_p) {
            2
        } else {
            1
        };
        let delay = shared.knobs.delay();
        for _ in 0..copies {
            if delay.is_zero() {
                self.emit(data.clone()).await;
                continue;
            }
            if shared.delayed.fetch_add(1, Ordering::SeqCst) >= UDP_MAX_DELAYED {
                shared.delayed.fetch_sub(1, Ordering::SeqCst);
                continue; // queue overflow: dropped
            }
            let outlet = self.clone();
            let data = data.clone();
            tokio::spawn(async move {
                let mut ctl = outlet.ctl.clone();
                tokio::select! {
                    _ = sleep(delay) => outlet.emit(data).await,
                    _ = cancelled(&mut ctl, outlet.epoch) => {}
                }
                outlet.shared.delayed.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Sends a datagram, holding it back first if reordering says so, and releases the
    /// datagram held back before it.
    async fn emit(&self, data: Bytes) {
        let released = {
            let mut held = lock(&self.held);
            let reorder = self.shared.reorder.load(Ordering::SeqCst);
            if reorder && held.is_none() && lock(&self.shared.knobs.rng).chance(REORDER_P) {
                let id = self.shared.hold_ids.fetch_add(1, Ordering::Relaxed);
                *held = Some((id, data));
                drop(held);
                self.release_later(id);
                return;
            }
            held.take()
        };
        self.transmit(&data).await;
        if let Some((_, late)) = released {
            self.transmit(&late).await;
        }
    }

    /// Sends the held datagram `id` after [`REORDER_HOLD`] if nothing released it.
    fn release_later(&self, id: u64) {
        let outlet = self.clone();
        tokio::spawn(async move {
            let mut ctl = outlet.ctl.clone();
            tokio::select! {
                _ = sleep(REORDER_HOLD) => {}
                _ = cancelled(&mut ctl, outlet.epoch) => return,
            }
            let late = {
                let mut held = lock(&outlet.held);
                match held.as_ref() {
                    Some((held_id, _)) if *held_id == id => held.take(),
                    _ => None,
                }
            };
            if let Some((_, late)) = late {
                outlet.transmit(&late).await;
            }
        });
    }

    async fn transmit(&self, data: &[u8]) {
        if self.shared.knobs.blocked() {
            return;
        }
        let sent = match self.dest {
            Some(dest) => self.socket.send_to(data, dest).await,
            None => self.socket.send(data).await,
        };
        if sent.is_ok() {
            let counter = match self.dir {
                Dir::ToServer => &self.shared.to_server,
                Dir::ToClient => &self.shared.to_client,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Receives from clients on the proxy's socket and relays through each client's mapping,
/// creating mappings on demand and forgetting them all on a cut.
async fn udp_main_loop(
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    shared: Arc<UdpShared>,
    mut ctl: watch::Receiver<Ctl>,
) {
    let mut mappings: HashMap<SocketAddr, Outlet> = HashMap::new();
    let mut buf = vec![0u8; UDP_BUF];
    let mut epoch = ctl.borrow_and_update().epoch;
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => {
                    if shared.knobs.blocked() {
                        continue;
                    }
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    let outlet = match mappings.get(&client) {
                        Some(outlet) => outlet.clone(),
                        None => {
                            if mappings.len() >= UDP_MAX_CLIENTS {
                                continue;
                            }
                            let Ok(outlet) =
                                udp_new_mapping(&socket, upstream, client, &shared, &ctl, epoch)
                                    .await
                            else {
                                continue;
                            };
                            mappings.insert(client, outlet.clone());
                            outlet
                        }
                    };
                    outlet.relay(data).await;
                }
                Err(_) => sleep(ERROR_PAUSE).await,
            },
            changed = ctl.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *ctl.borrow_and_update();
                if now.stopped {
                    return;
                }
                if now.epoch != epoch {
                    epoch = now.epoch;
                    mappings.clear(); // their return tasks end on their own
                }
            }
        }
    }
}

/// Creates the upstream socket for a new client and spawns its server→client task.
async fn udp_new_mapping(
    main: &Arc<UdpSocket>,
    upstream: SocketAddr,
    client: SocketAddr,
    shared: &Arc<UdpShared>,
    ctl: &watch::Receiver<Ctl>,
    epoch: u64,
) -> io::Result<Outlet> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(upstream).await?;
    let socket = Arc::new(socket);
    let back = Outlet::new(
        shared,
        main.clone(),
        Some(client),
        Dir::ToClient,
        ctl,
        epoch,
    );
    tokio::spawn(udp_return_loop(socket.clone(), back, ctl.clone(), epoch));
    Ok(Outlet::new(shared, socket, None, Dir::ToServer, ctl, epoch))
}

/// Relays what the upstream sends on one mapping's socket back to its client.
async fn udp_return_loop(
    socket: Arc<UdpSocket>,
    back: Outlet,
    mut ctl: watch::Receiver<Ctl>,
    epoch: u64,
) {
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        tokio::select! {
            received = socket.recv(&mut buf) => match received {
                Ok(n) => back.relay(Bytes::copy_from_slice(&buf[..n])).await,
                // ICMP port unreachable from the upstream surfaces here once per
                // datagram: not a reason to stop, and not a loop.
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) => {}
                Err(_) => sleep(ERROR_PAUSE).await,
            },
            _ = cancelled(&mut ctl, epoch) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Frames (TLS-terminating)
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

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
    async fn frame_upstream(
        certs: &std::path::Path,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<Frame>) {
        let (acceptor, _) = crate::tls::acceptor_and_connector(certs);
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
                        while let Ok(Some(Ok(f))) =
                            tern_proto::codec::decode_frame(&mut buf, 1 << 20)
                        {
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
        let mut c = crate::tls_connect(proxy.addr(), &certs.path().join("ca.pem")).await;
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
        let mut c = crate::tls_connect(proxy.addr(), &certs.path().join("ca.pem")).await;
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

    #[test]
    fn xorshift_is_reproducible() {
        let draw = |seed| {
            let mut rng = XorShift::new(seed);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(draw(0), vec![0; 8]);
        let mut rng = XorShift::new(1);
        assert!(!rng.chance(0.0) && !rng.chance(f64::NAN) && rng.chance(1.0));
        let hits = (0..10_000).filter(|_| rng.chance(0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
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
}
