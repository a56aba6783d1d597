//! The systems under test, one [`Adapter`] each, so that every scenario is written once:
//! [`tern`] (a server started here, or an external one), and the systems users would
//! pick instead, for `bench/compare.sh`: [`mqtt`] (mosquitto), [`nats`] (NATS
//! JetStream) and [`xmpp`] (ejabberd), and [`relay`], the client of the bare TLS relay
//! (the ceiling). mosquitto and NATS run over plain TCP, or over TLS when the peer was
//! given a CA (`--peer-ca`, [`tls`]): one adapter each, with a TLS option.
//!
//! An adapter gives the scenarios a durable session per user that receives what is
//! addressed to the user (and to its groups), and an [`Outbox`](crate::engine::run::Outbox)
//! the pacer drives; dropping a connection closes its socket while the session stays.
//! The semantics are the same for every system: latency counts from the intended send
//! time to the moment the recipient's client has the message; "acked" is the system's
//! own acknowledgement (tern's durable `SendAck`, MQTT PUBACK at QoS 1, JetStream
//! PubAck, XMPP stream management `<a/>`).
//!
//! The message id (step, index, intended time) travels in tern's `client_msg_id`, and
//! at the start of the payload (padded to `--size` bytes) for the peers.
//!
//! What only some systems have is an optional capability with a default: tern's
//! warm-up logins before the idle baseline, its server log and `/metrics`, and its
//! storm, where devices pull what they missed with `Sync` pages instead of having it
//! pushed ([`Adapter::fill`], [`Adapter::catch_up`]).

pub mod mqtt;
pub mod nats;
pub mod relay;
pub mod tern;
pub mod tls;
pub mod xmpp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use futures_util::StreamExt;

use crate::engine::clock;
use crate::engine::run::{SenderRef, Stats, Tracker, Trackers};
use crate::engine::schedule::{msg_id, parse_msg_id, Nanos};
use crate::report::Report;
use crate::scenarios::StormArgs;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// MQTT 3.1.1 at QoS 1 with persistent sessions (mosquitto)
    Mosquitto,
    /// NATS JetStream, file storage, durable pull consumers (nats-server)
    Nats,
    /// XMPP with stream management and offline storage (ejabberd)
    Ejabberd,
    /// The bare TLS relay of `tern-bench relay` (no store: the ceiling)
    Relay,
}

/// Called with each received message id (or payload that starts with one) and the time
/// it arrived.
pub type OnMsg = Arc<dyn Fn(&[u8], Nanos) + Send + Sync>;

/// What a connection reports to.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Messages received (None: a send-only connection).
    pub on_msg: Option<OnMsg>,
    /// Where the system's acks of this connection's sends go.
    pub acks: Option<Arc<Trackers>>,
}

/// Where an outbox sends.
#[derive(Clone, Debug)]
pub enum Dest {
    User(String),
    /// A group by the name [`Adapter::group`] gave it.
    Group(String),
}

/// A group made for a fan-out run.
pub struct Group {
    /// What [`Dest::Group`] and [`Adapter::connect`] take.
    pub name: String,
    /// The `mode` parameter of the report, if the system has modes.
    pub mode: Option<&'static str>,
    /// What the group is in this system (the report's first note).
    pub note: String,
}

/// What one device did in the storm.
pub struct Device {
    /// When it had everything it missed.
    pub done_at: Option<Nanos>,
    /// Connect + authenticate, of the first successful attempt.
    pub auth_ns: Option<u64>,
    /// Messages it received.
    pub items: u64,
    pub retries: u32,
    /// Its connection, held (for its `Drop`) until the report is out.
    #[allow(dead_code)]
    pub conn: Option<Box<dyn Send>>,
}

/// What every peer adapter knows of the peer it drives.
pub struct Peer {
    /// Name in reports.
    pub system: String,
    pub addr: SocketAddr,
    /// The peer's pid, for CPU and memory readings.
    pub pid: Option<u32>,
    /// `--login-concurrency`
    pub concurrency: usize,
    pub keep_alive: Duration,
    pub stats: Arc<Stats>,
    /// TLS to the peer (`--peer-ca`), else plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The [`Adapter`] methods every peer answers the same way from its `peer: Peer` field;
/// `$ack` is what its ack is.
macro_rules! peer_basics {
    ($ack:literal) => {
        fn params(&self, r: &mut crate::report::Report) {
            r.param("system", &self.peer.system)
                .param("peer_addr", self.peer.addr)
                .param(
                    "transport",
                    if self.peer.tls.is_some() {
                        "TLS 1.3 over TCP"
                    } else {
                        "plain TCP"
                    },
                );
        }

        fn pid(&self) -> Option<u32> {
            self.peer.pid
        }

        fn concurrency(&self) -> usize {
            // No password hashing on these connects, so more may be in flight than
            // tern's logins.
            self.peer.concurrency.max(16)
        }

        fn ack_label(&self) -> &'static str {
            $ack
        }

        fn connect_label(&self) -> &'static str {
            "connect + session setup per connection"
        }
    };
}
pub(crate) use peer_basics;

/// One system's client side, as the scenarios drive it.
pub trait Adapter: Sized + Send + Sync + 'static {
    /// An open connection; dropping it closes the socket (the session stays).
    type Conn: Send + 'static;

    /// Parameters of the system under test, first in every report (`system`, ...).
    fn params(&self, r: &mut Report);
    /// The server's pid, for CPU and memory readings.
    fn pid(&self) -> Option<u32>;
    /// Connects (and logins) in flight during setup.
    fn concurrency(&self) -> usize;
    /// What "acked" means here (the name of the ack latency).
    fn ack_label(&self) -> &'static str;
    /// The name of the idle scenario's connect latency.
    fn connect_label(&self) -> &'static str;
    /// Scenarios this system supports.
    fn supports(&self, scenario: &str) -> bool;

    /// Per-run setup: accounts, streams (none by default).
    fn prepare(&self, _users: &[String]) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
    /// Makes group `name` with `members` (all prepared) in it.
    fn group(
        &self,
        name: &str,
        members: &[String],
    ) -> impl Future<Output = anyhow::Result<Group>> + Send;
    /// Connection number `i` (which may pick a source address), as `user` on `device`,
    /// with a durable session that receives what is addressed to `user` and to
    /// `groups`; returns once the session is ready to receive.
    fn connect(
        &self,
        i: usize,
        user: &str,
        device: &str,
        groups: &[String],
        hooks: Hooks,
    ) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;
    /// A sender on `conn` to `dest`.
    fn outbox(&self, conn: &Self::Conn, dest: Dest) -> SenderRef;
    /// Whether the connection is still up.
    fn alive(&self, conn: &Self::Conn) -> bool;

    /// Adds the server's own complaints to a report.
    fn notes(&self, _r: &mut Report) {}
    /// Whether the server process is known to have exited.
    fn server_exited(&self) -> bool {
        false
    }

    /// Idle: devices per user (systems without devices: one user per connection).
    fn devices_per_user(&self, _asked: usize) -> usize {
        1
    }
    /// Idle: the heartbeat parameter when none was given.
    fn default_heartbeat(&self) -> &'static str {
        "30"
    }
    /// Idle: this system's own parameters.
    fn idle_params(&self, _r: &mut Report, _dpu: usize, _users: usize) {}
    /// Idle: work before the memory baseline is read; returns a note for the report.
    fn warm_up(&self, _run: &str) -> impl Future<Output = anyhow::Result<Option<String>>> + Send {
        async { Ok(None) }
    }

    /// Storm: this system's own parameters.
    fn storm_params(&self, _a: &StormArgs, _r: &mut Report) {}
    /// Storm: the names of the (device complete, connect) latencies.
    fn storm_labels(&self, _a: &StormArgs) -> (String, String) {
        (
            "device complete (storm start -> device has all it missed)".into(),
            "connect + session resume".into(),
        )
    }
    /// Storm: device `i` makes its durable session once, then goes offline; returns
    /// what it needs to come back (a token), if anything.
    fn enroll(
        &self,
        i: usize,
        user: &str,
        _a: &StormArgs,
    ) -> impl Future<Output = anyhow::Result<Option<String>>> + Send {
        async move {
            let hooks = Hooks {
                on_msg: Some(Arc::new(|_: &[u8], _| {})),
                acks: None,
            };
            let c = self.connect(i, user, "phone", &[], hooks).await?;
            drop(c);
            Ok(None)
        }
    }
    /// Storm: `writers` send `a.missed` messages to each of `devices` (offline), with
    /// `a.window` unacked per writer; returns the acked count and the seconds it took.
    /// Like tern's senders, it runs until everything is acked and fails only when acks
    /// stop coming for 30 s.
    fn fill(
        &self,
        writers: &[String],
        devices: &[String],
        a: &StormArgs,
    ) -> impl Future<Output = anyhow::Result<(u64, f64)>> + Send {
        async move {
            let total = (devices.len() * a.missed) as u64;
            let trackers = Arc::new(Trackers(vec![Tracker::new(total, 1)]));
            let hooks = Hooks {
                on_msg: None,
                acks: Some(trackers.clone()),
            };
            let wconns = connect_all(self, writers, &[], |_| hooks.clone()).await?;
            let outs: Vec<Vec<SenderRef>> = wconns
                .iter()
                .map(|c| {
                    devices
                        .iter()
                        .map(|d| self.outbox(c, Dest::User(d.clone())))
                        .collect()
                })
                .collect();
            let body = Bytes::from_static(b"missed while offline");
            let t = &trackers.0[0];
            let send_start = clock::now();
            let limit = (a.window * writers.len()) as u64;
            let mut last_progress = (0u64, std::time::Instant::now());
            let stalled = |last: &mut (u64, std::time::Instant)| -> anyhow::Result<()> {
                let acked = t.acked.load(Ordering::Relaxed);
                if acked > last.0 {
                    *last = (acked, std::time::Instant::now());
                }
                anyhow::ensure!(
                    last.1.elapsed() < Duration::from_secs(30),
                    "storm send phase: acks stopped at {acked} of {total} for 30 s"
                );
                Ok(())
            };
            let mut g = 0u64;
            while g < total {
                if g - t.acked.load(Ordering::Relaxed) >= limit {
                    stalled(&mut last_progress)?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                // Rounds over the devices, so every inbox fills evenly.
                let dev = (g % devices.len() as u64) as usize;
                let w = (g as usize / devices.len()) % writers.len();
                anyhow::ensure!(
                    outs[w][dev].send(0, g, clock::now(), &body),
                    "storm sender connection closed"
                );
                t.sent.fetch_add(1, Ordering::Relaxed);
                g += 1;
            }
            while t.acked.load(Ordering::Relaxed) < total {
                stalled(&mut last_progress)?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok((total, clock::secs(clock::now() - send_start)))
        }
    }
    /// Storm: device `i` comes back (at once with all the others) and gets everything
    /// it missed, giving up at `deadline`. Default: it reconnects and the missed
    /// messages are pushed to it.
    #[allow(clippy::too_many_arguments)]
    fn catch_up(
        &self,
        i: usize,
        user: String,
        _token: Option<String>,
        a: &StormArgs,
        deadline: tokio::time::Instant,
        stats: Arc<Stats>,
    ) -> impl Future<Output = Device> + Send {
        let missed = a.missed as u64;
        async move {
            let got = Arc::new(AtomicU64::new(0));
            let done_at = Arc::new(AtomicU64::new(0));
            let done = Arc::new(tokio::sync::Notify::new());
            let on_msg: OnMsg = {
                let (got, done_at, done) = (got.clone(), done_at.clone(), done.clone());
                Arc::new(move |_p, now| {
                    if got.fetch_add(1, Ordering::AcqRel) + 1 == missed {
                        done_at.store(now, Ordering::Release);
                        done.notify_one();
                    }
                })
            };
            let mut auth_ns = None;
            let mut retries = 0u32;
            let mut conn = None;
            while conn.is_none() {
                let s = clock::now();
                let hooks = Hooks {
                    on_msg: Some(on_msg.clone()),
                    acks: None,
                };
                match self.connect(i, &user, "phone", &[], hooks).await {
                    Ok(c) => {
                        auth_ns = Some(clock::now() - s);
                        conn = Some(c);
                    }
                    Err(e) => {
                        stats.add(&format!("storm connect: {e}"));
                        retries += 1;
                        if tokio::time::Instant::now() >= deadline {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100 * (1 << retries.min(5))))
                            .await;
                    }
                }
            }
            if conn.is_some() {
                let _ = tokio::time::timeout_at(deadline, done.notified()).await;
            }
            let at = done_at.load(Ordering::Acquire);
            Device {
                done_at: (at > 0).then_some(at),
                auth_ns,
                items: got.load(Ordering::Acquire),
                retries,
                conn: conn.map(|c| Box::new(c) as Box<dyn Send>),
            }
        }
    }
}

/// The payload of message `g`: its id, a space, then `body` up to `body.len()` bytes.
pub fn payload(step: usize, g: u64, intended: Nanos, body: &[u8]) -> Bytes {
    let id = msg_id(step, g, intended);
    let mut v = Vec::with_capacity(body.len().max(id.len() + 1));
    v.extend_from_slice(id.as_bytes());
    v.push(b' ');
    if body.len() > v.len() {
        let pad = body.len() - v.len();
        v.extend_from_slice(&body[..pad]);
    }
    Bytes::from(v)
}

/// The message id at the start of a payload (or a bare id).
pub fn parse_payload(p: &[u8]) -> Option<(usize, u64, Nanos)> {
    let end = p.iter().position(|&b| b == b' ').unwrap_or(p.len());
    parse_msg_id(std::str::from_utf8(&p[..end]).ok()?)
}

/// Deliveries into `trackers`. `own = (senders, i)`: this member is sender `i` of
/// `senders`, whose own messages (g % senders == i) are not deliveries.
pub fn deliver_to(trackers: Arc<Trackers>, own: Option<(u64, u64)>) -> OnMsg {
    Arc::new(move |p, now| {
        let Some((step, g, intended)) = parse_payload(p) else {
            return;
        };
        if let Some((n, i)) = own {
            if g % n == i {
                return;
            }
        }
        trackers.deliver(step, g, intended, now);
    })
}

/// Connects `users` (user `k` as connection `k`, device "bench", with `groups` and
/// `hooks(k)`), [`Adapter::concurrency`] at a time, in order.
pub async fn connect_all<A: Adapter>(
    a: &A,
    users: &[String],
    groups: &[String],
    hooks: impl Fn(usize) -> Hooks,
) -> anyhow::Result<Vec<A::Conn>> {
    let t0 = std::time::Instant::now();
    // The futures are made first: a stream's `map` closure over borrowed names would
    // make the caller's future not `Send` (a higher-ranked lifetime rustc cannot prove).
    let connects: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(k, u)| {
            let h = hooks(k);
            async move {
                a.connect(k, u, "bench", groups, h)
                    .await
                    .with_context(|| format!("connecting {u}"))
            }
        })
        .collect();
    let out: Vec<anyhow::Result<A::Conn>> = futures_util::stream::iter(connects)
        .buffered(a.concurrency())
        .collect()
        .await;
    let v = out.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "tern-bench: {} sessions connected in {:.1} s",
        users.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_the_id_and_has_the_body_size() {
        let p = payload(2, 77, 5_000_000, &[b'x'; 100]);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(&p), Some((2, 77, 5_000_000)));
        // A body shorter than the id: just the id and the space.
        let p = payload(0, 1, 1000, b"ab");
        assert_eq!(&p[..], b"0.1.1 ");
        assert_eq!(parse_payload(&p), Some((0, 1, 1000)));
        assert_eq!(parse_payload(b"hello world"), None);
        // tern's client_msg_id: the bare id.
        assert_eq!(parse_payload(b"0.1.1"), Some((0, 1, 1000)));
    }

    #[test]
    fn a_sender_does_not_count_its_own_group_message() {
        let t = Arc::new(Trackers(vec![Tracker::new(4, 1)]));
        // Member 1 of 2 senders: messages 1 and 3 are its own.
        let f = deliver_to(t.clone(), Some((2, 1)));
        for g in 0..4 {
            f(&payload(0, g, 0, b""), 10);
        }
        assert_eq!(t.0[0].delivered.load(Ordering::Relaxed), 2);
    }
}
