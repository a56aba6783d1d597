//! [`UdpFaultProxy`]: relays UDP datagrams (for QUIC) and blocks, drops, delays,
//! duplicates and reorders them, or forgets every client mapping (a path change).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::sleep;

use super::{bump_epoch, cancelled, lock, store_f64, Ctl, Knobs, ERROR_PAUSE};

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
