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
//!
//! Layout: `tcp.rs`, `udp.rs` and `frames.rs` hold one proxy each (the generator is `crate::rng`);
//! this file holds what they share (the cut/stop control channel and the fault settings).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

mod frames;
mod tcp;
mod udp;

use crate::rng::{XorShift, DEFAULT_SEED};
pub use frames::{FrameConn, FrameFaultProxy, FramePredicate};
pub use tcp::TcpFaultProxy;
pub use udp::UdpFaultProxy;

/// Pause after an unexpected socket error, so a persistent error is not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

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
