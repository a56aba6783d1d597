//! Peers: the same scenarios, on the same open-loop engine ([`crate::run`]), against the
//! systems users would pick instead of tern. `bench/compare.sh` starts each peer with a
//! config from `bench/peers/` and runs `tern-bench --peer KIND --peer-addr ADDR
//! --server-pid PID <scenario>` with the parameters it gave tern.
//!
//! One [`Adapter`] per protocol ([`mqtt`]: mosquitto, [`nats`]: NATS JetStream,
//! [`xmpp`]: ejabberd) gives the scenarios three things: a durable session per user
//! that receives what is addressed to the user (and to its groups), an [`Outbox`]
//! the pacer drives, and a way to drop the connection while the session stays. The
//! semantics match tern's: latency counts from the intended send time to the moment the
//! recipient's client has the message; "acked" is the peer's own acknowledgement (MQTT
//! PUBACK at QoS 1, JetStream PubAck, XMPP stream management `<a/>`).
//!
//! The message id (step, index, intended time) travels at the start of the payload,
//! which is padded to `--size` bytes.

pub mod mqtt;
pub mod nats;
pub mod xmpp;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use futures_util::StreamExt;
use hdrhistogram::Histogram;

use crate::clock;
use crate::report::{histogram, record_ns, Report};
use crate::run::{self, Probe, SenderRef, Tracker, Trackers};
use crate::scenarios::{self, Ctx, FanoutShape};
use crate::schedule::{msg_id, parse_msg_id, Nanos};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// MQTT 3.1.1 at QoS 1 with persistent sessions (mosquitto)
    Mosquitto,
    /// NATS JetStream, file storage, durable pull consumers (nats-server)
    Nats,
    /// XMPP with stream management and offline storage (ejabberd)
    Ejabberd,
}

/// Called with each received payload and the time it arrived.
pub type OnMsg = Arc<dyn Fn(&[u8], Nanos) + Send + Sync>;

/// What a connection reports to.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Messages received (None: a send-only connection).
    pub on_msg: Option<OnMsg>,
    /// Where the peer's acks of this connection's sends go.
    pub acks: Option<Arc<Trackers>>,
}

/// Where an outbox sends.
#[derive(Clone, Debug)]
pub enum Dest {
    User(String),
    Group(String),
}

/// One protocol's client side, as the scenarios drive it.
pub trait Adapter: Send + Sync + 'static {
    /// An open connection; dropping it (or [`Adapter::drop_conn`]) closes the socket.
    type Conn: Send + 'static;
    /// Per-run setup: accounts, streams.
    fn prepare(&self, users: &[String]) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Connects as `user` with a durable session that receives what is addressed to
    /// `user` and to `groups`; returns once the session is ready to receive.
    fn connect(
        &self,
        user: &str,
        groups: &[String],
        hooks: Hooks,
    ) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;
    /// A sender on `conn` to `dest`.
    fn outbox(&self, conn: &Self::Conn, dest: Dest) -> SenderRef;
    /// Whether the connection is still up.
    fn alive(&self, conn: &Self::Conn) -> bool;
    /// Closes the socket; the session (subscriptions, queued messages) stays.
    fn drop_conn(&self, conn: Self::Conn) -> impl Future<Output = ()> + Send;
    /// Scenarios this adapter supports.
    fn supports(&self, scenario: &str) -> bool;
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

/// The message id at the start of a payload.
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
        if let Some(t) = trackers.0.get(step) {
            t.deliver(g, intended, now);
        }
    })
}

/// The label of the system in reports.
pub fn label(ctx: &Ctx, kind: PeerKind) -> String {
    ctx.g
        .system
        .clone()
        .unwrap_or_else(|| format!("{kind:?}").to_lowercase())
}

/// What "acked" means for each peer (tern's is the durable SendAck).
fn ack_label(kind: PeerKind) -> &'static str {
    match kind {
        PeerKind::Mosquitto => "ack (intended send -> MQTT PUBACK, QoS 1)",
        PeerKind::Nats => "ack (intended send -> JetStream PubAck)",
        PeerKind::Ejabberd => "ack (intended send -> XMPP stream management <a/>)",
    }
}

/// Renames the report's ack latency to what the peer's ack means.
fn relabel_ack(r: &mut Report, kind: PeerKind) {
    for l in &mut r.latency {
        if l.name.starts_with("ack (") {
            l.name = ack_label(kind).into();
        }
    }
}

fn common(ctx: &Ctx, kind: PeerKind, r: &mut Report) {
    r.param("system", label(ctx, kind));
    if let Some(a) = ctx.g.peer_addr {
        r.param("peer_addr", a);
    }
    r.param("body_bytes", ctx.g.size);
    if let Some(c) = ctx.g.pin_cpu {
        r.param("generator_cpu", c);
    }
    if let Some(c) = ctx.g.server_cpu {
        r.param("server_cpu", c);
    }
    if let Some(l) = crate::procfs::loadavg() {
        r.param("loadavg_at_end", l);
    }
}

fn run_id() -> String {
    format!("b{:05x}", rand::random::<u32>() & 0xfffff)
}

fn concurrency(ctx: &Ctx) -> usize {
    // No password hashing on these connects (MQTT and NATS run without auth; ejabberd
    // stores plain passwords), so more of them may be in flight than tern's logins.
    ctx.g.login_concurrency.max(16)
}

/// Connects `users` (with their groups and hooks), `concurrency` at a time, in order.
async fn connect_all<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    users: Vec<(String, Vec<String>, Hooks)>,
) -> anyhow::Result<Vec<A::Conn>> {
    let t0 = std::time::Instant::now();
    let n = users.len();
    let out: Vec<anyhow::Result<A::Conn>> = futures_util::stream::iter(users)
        .map(|(u, groups, hooks)| async move {
            a.connect(&u, &groups, hooks)
                .await
                .with_context(|| format!("connecting {u}"))
        })
        .buffered(concurrency(ctx))
        .collect()
        .await;
    let v = out.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "tern-bench: {n} peer sessions connected in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(v)
}

/// Runs `scenario`'s command against the peer.
pub async fn run<A: Adapter>(
    ctx: &Ctx,
    kind: PeerKind,
    a: A,
    cmd: crate::Cmd,
) -> anyhow::Result<()> {
    use crate::Cmd;
    let a = Arc::new(a);
    let name = match &cmd {
        Cmd::OneToOne { .. } => "one-to-one",
        Cmd::Fanout { .. } => "fanout",
        Cmd::Idle { .. } => "idle",
        Cmd::Storm { .. } => "storm",
        Cmd::Durability { .. } => "durability",
        Cmd::CompareTable { .. } => "compare-table",
    };
    anyhow::ensure!(
        a.supports(name),
        "{name} is not run against {} (see bench/compare.sh)",
        label(ctx, kind)
    );
    match cmd {
        Cmd::OneToOne {
            pairs,
            rate,
            duration,
            sweep,
            ..
        } => {
            let rates = if sweep.is_empty() { vec![rate] } else { sweep };
            one_to_one(ctx, kind, &*a, pairs, rates, duration).await
        }
        Cmd::Fanout {
            members,
            senders,
            rate,
            duration,
        } => fanout(ctx, kind, &*a, members, senders, rate, duration).await,
        Cmd::Idle {
            connections,
            hold_secs,
            ..
        } => idle(ctx, kind, &*a, connections, hold_secs).await,
        Cmd::Storm {
            devices,
            missed,
            senders,
            window,
            timeout_secs,
            ..
        } => {
            storm(
                ctx,
                kind,
                &a,
                devices,
                missed,
                senders,
                window,
                timeout_secs,
            )
            .await
        }
        Cmd::Durability { .. } | Cmd::CompareTable { .. } => unreachable!("checked by supports"),
    }
}

async fn one_to_one<A: Adapter>(
    ctx: &Ctx,
    kind: PeerKind,
    a: &A,
    pairs: usize,
    rates: Vec<f64>,
    duration: f64,
) -> anyhow::Result<()> {
    let run = run_id();
    let trackers = Arc::new(Trackers(
        rates
            .iter()
            .map(|r| Tracker::new(run::step_total(*r, duration), 1))
            .collect(),
    ));
    let senders: Vec<String> = (0..pairs).map(|i| format!("{run}-s{i}")).collect();
    let receivers: Vec<String> = (0..pairs).map(|i| format!("{run}-r{i}")).collect();
    let all: Vec<String> = senders.iter().chain(&receivers).cloned().collect();
    a.prepare(&all).await?;
    // Receivers first, so their sessions exist before anything is sent.
    let rx = connect_all(
        ctx,
        a,
        receivers
            .iter()
            .map(|u| {
                let hooks = Hooks {
                    on_msg: Some(deliver_to(trackers.clone(), None)),
                    acks: None,
                };
                (u.clone(), Vec::new(), hooks)
            })
            .collect(),
    )
    .await?;
    let tx = connect_all(
        ctx,
        a,
        senders
            .iter()
            .map(|u| {
                let hooks = Hooks {
                    on_msg: None,
                    acks: Some(trackers.clone()),
                };
                (u.clone(), Vec::new(), hooks)
            })
            .collect(),
    )
    .await?;
    let outs: Vec<SenderRef> = tx
        .iter()
        .zip(&receivers)
        .map(|(c, r)| a.outbox(c, Dest::User(r.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (step, rate) in rates.iter().enumerate() {
        if step > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let o = run::run_step(
            ctx.g.server_pid,
            &outs,
            &trackers,
            step,
            *rate,
            duration,
            Duration::from_secs_f64(ctx.g.drain_secs),
            ctx.body(),
            &ctx.stats,
        )
        .await;
        let mut r = scenarios::pair_report(
            ctx,
            &|r| common(ctx, kind, r),
            "one-to-one",
            pairs,
            &o,
            &trackers.0[step],
        );
        relabel_ack(&mut r, kind);
        let dead = tx.iter().chain(&rx).filter(|c| !a.alive(c)).count();
        if dead > 0 {
            r.notes.push(format!("{dead} peer connections closed"));
        }
        ctx.print(&r);
    }
    for c in tx.into_iter().chain(rx) {
        a.drop_conn(c).await;
    }
    Ok(())
}

async fn fanout<A: Adapter>(
    ctx: &Ctx,
    kind: PeerKind,
    a: &A,
    members: usize,
    senders: usize,
    rate: f64,
    duration: f64,
) -> anyhow::Result<()> {
    let run = run_id();
    let group = format!("{run}-g");
    let names: Vec<String> = (0..members).map(|i| format!("{run}-m{i}")).collect();
    a.prepare(&names).await?;
    let total = run::step_total(rate, duration);
    let trackers = Arc::new(Trackers(vec![Tracker::new(total, (members - 1) as u32)]));
    let conns = connect_all(
        ctx,
        a,
        names
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let own = (i < senders).then_some((senders as u64, i as u64));
                let hooks = Hooks {
                    on_msg: Some(deliver_to(trackers.clone(), own)),
                    acks: (i < senders).then(|| trackers.clone()),
                };
                (u.clone(), vec![group.clone()], hooks)
            })
            .collect(),
    )
    .await?;
    let outs: Vec<SenderRef> = conns[..senders]
        .iter()
        .map(|c| a.outbox(c, Dest::Group(group.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = run::run_step(
        ctx.g.server_pid,
        &outs,
        &trackers,
        0,
        rate,
        duration,
        Duration::from_secs_f64(ctx.g.drain_secs),
        ctx.body(),
        &ctx.stats,
    )
    .await;
    let mut r = scenarios::fanout_report(
        ctx,
        &|r| common(ctx, kind, r),
        FanoutShape {
            members,
            senders,
            rate,
            duration,
            read_diffusion: false,
        },
        &o,
        &trackers.0[0],
    );
    r.params.retain(|(k, _)| k != "mode");
    relabel_ack(&mut r, kind);
    r.notes.insert(
        0,
        match kind {
            PeerKind::Mosquitto => {
                "group = one MQTT topic every member subscribes to (QoS 1, persistent sessions)"
                    .into()
            }
            PeerKind::Nats => {
                "group = one subject in the stream; a durable pull consumer per member".into()
            }
            PeerKind::Ejabberd => "not run: fanout is not compared with ejabberd".to_string(),
        },
    );
    let dead = conns.iter().filter(|c| !a.alive(c)).count();
    if dead > 0 {
        r.notes.push(format!("{dead} peer connections closed"));
    }
    ctx.print(&r);
    for c in conns {
        a.drop_conn(c).await;
    }
    Ok(())
}

fn rss_now(ctx: &Ctx) -> u64 {
    ctx.g
        .server_pid
        .and_then(crate::procfs::read_mem)
        .map(|m| m.rss_kib)
        .unwrap_or(0)
}

/// Connects `names` (each a durable session on its own inbox); the connect latencies
/// go into `lat`.
async fn ramp<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    names: &[String],
    lat: &mut Histogram<u64>,
) -> anyhow::Result<Vec<A::Conn>> {
    let out: Vec<anyhow::Result<(A::Conn, u64)>> = futures_util::stream::iter(names)
        .map(|u| async move {
            let t0 = clock::now();
            let c = a
                .connect(u, &[], Hooks::default())
                .await
                .with_context(|| format!("connecting {u}"))?;
            Ok((c, clock::now() - t0))
        })
        .buffer_unordered(concurrency(ctx))
        .collect()
        .await;
    let mut v = Vec::with_capacity(out.len());
    for r in out {
        let (c, ns) = r?;
        record_ns(lat, ns);
        v.push(c);
    }
    Ok(v)
}

async fn idle<A: Adapter>(
    ctx: &Ctx,
    kind: PeerKind,
    a: &A,
    n: usize,
    hold_secs: f64,
) -> anyhow::Result<()> {
    let run = run_id();
    let names: Vec<String> = (0..n).map(|i| format!("{run}-u{i}")).collect();
    a.prepare(&names).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_now(ctx);
    let mut lat = histogram();
    let errors_before = ctx.stats.snapshot();
    let half = n / 2;
    let t_a = clock::now();
    let mut conns = ramp(ctx, a, &names[..half], &mut lat).await?;
    let t_b = clock::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_half = rss_now(ctx);
    let t_c = clock::now();
    conns.extend(ramp(ctx, a, &names[half..], &mut lat).await?);
    let t_d = clock::now();
    let ramp_secs = clock::secs(t_b - t_a) + clock::secs(t_d - t_c);
    eprintln!("tern-bench: {n} peer connections in {ramp_secs:.1} s; holding {hold_secs} s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_full = rss_now(ctx);
    let probe = Probe::start(ctx.g.server_pid, true);
    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
    let (usage, gen) = probe.finish();
    let alive = conns.iter().filter(|c| a.alive(c)).count();
    let mut r = Report::new("idle", "connections/s");
    r.param("connections", n).param("hold_s", hold_secs).param(
        "heartbeat_s",
        ctx.g
            .heartbeat_secs
            .map(|h| h.to_string())
            .unwrap_or_else(|| "30".into()),
    );
    common(ctx, kind, &mut r);
    r.achieved = Some(n as f64 / ramp_secs.max(1e-9));
    r.latency("connect + session setup per connection", &lat);
    r.count("connections", n as u64)
        .count("alive_after_hold", alive as u64)
        .count("rss_before_kib", rss0)
        .count("rss_half_kib", rss_half)
        .count("rss_full_kib", rss_full);
    let per = |x: u64, y: u64, k: usize| (x as f64 - y as f64) / k.max(1) as f64;
    r.figure(
        "server RSS per connection (RSS_after - RSS_before) / N",
        per(rss_full, rss0, n),
        "KiB",
    );
    r.figure(
        "server RSS per connection, second half only (RSS_N - RSS_N/2) / (N - N/2)",
        per(rss_full, rss_half, n - half),
        "KiB",
    );
    if let Some(u) = &usage {
        r.figure("idle server CPU", u.cpu_pct(), "% of one core");
    }
    r.server = usage;
    r.generator_cpu_pct = gen;
    r.errors = ctx.stats.since(&errors_before);
    if alive < n {
        r.notes.push(format!(
            "{} connections were closed during the hold",
            n - alive
        ));
    }
    ctx.print(&r);
    for c in conns {
        a.drop_conn(c).await;
    }
    Ok(())
}

/// Per device: messages received in the storm and when it had them all.
struct DeviceCount {
    got: AtomicU64,
    done_at: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
async fn storm<A: Adapter>(
    ctx: &Ctx,
    kind: PeerKind,
    a: &Arc<A>,
    devices: usize,
    missed: usize,
    senders: usize,
    window: usize,
    timeout_secs: f64,
) -> anyhow::Result<()> {
    let run = run_id();
    let names: Vec<String> = (0..devices).map(|i| format!("{run}-d{i}")).collect();
    let writers: Vec<String> = (0..senders).map(|j| format!("{run}-w{j}")).collect();
    let all: Vec<String> = names.iter().chain(&writers).cloned().collect();
    a.prepare(&all).await?;
    let a_ref: &A = a;
    // 1. Each device makes its durable session once, then goes offline.
    let counts: Arc<Vec<DeviceCount>> = Arc::new(
        (0..devices)
            .map(|_| DeviceCount {
                got: AtomicU64::new(0),
                done_at: AtomicU64::new(0),
            })
            .collect(),
    );
    let first = connect_all(
        ctx,
        a_ref,
        names
            .iter()
            .map(|u| {
                let hooks = Hooks {
                    on_msg: Some(Arc::new(|_: &[u8], _| {})),
                    acks: None,
                };
                (u.clone(), Vec::new(), hooks)
            })
            .collect(),
    )
    .await?;
    for c in first {
        a.drop_conn(c).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 2. The missed messages, `window` unacked per sender.
    let total = (devices * missed) as u64;
    let trackers = Arc::new(Trackers(vec![Tracker::new(total, 1)]));
    let wconns = connect_all(
        ctx,
        a_ref,
        writers
            .iter()
            .map(|u| {
                let hooks = Hooks {
                    on_msg: None,
                    acks: Some(trackers.clone()),
                };
                (u.clone(), Vec::new(), hooks)
            })
            .collect(),
    )
    .await?;
    let outs: Vec<Vec<SenderRef>> = wconns
        .iter()
        .map(|c| {
            names
                .iter()
                .map(|d| a.outbox(c, Dest::User(d.clone())))
                .collect()
        })
        .collect();
    let body = Bytes::from_static(b"missed while offline");
    let t = &trackers.0[0];
    let send_start = clock::now();
    let limit = (window * senders) as u64;
    // Like tern's storm senders, the send phase runs until everything is acked; it
    // fails only when acks stop coming for 30 s.
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
        let dev = (g % devices as u64) as usize;
        let w = (g as usize / devices) % senders;
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
    let send_secs = clock::secs(clock::now() - send_start);
    eprintln!(
        "tern-bench: {total} messages acked in {send_secs:.1} s ({:.0} msg/s); now all {devices} devices reconnect",
        total as f64 / send_secs
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 3. The storm: every device at once.
    let errors_before = ctx.stats.snapshot();
    let probe = Probe::start(ctx.g.server_pid, true);
    let storm_start = clock::now();
    let complete = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(devices);
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout_secs);
    for (i, u) in names.iter().enumerate() {
        let counts = counts.clone();
        let complete = complete.clone();
        let on_msg: OnMsg = Arc::new(move |_p, now| {
            let c = &counts[i];
            if c.got.fetch_add(1, Ordering::AcqRel) + 1 == missed as u64 {
                c.done_at.store(now, Ordering::Release);
                complete.fetch_add(1, Ordering::AcqRel);
            }
        });
        let (u, a, stats) = (u.clone(), a.clone(), ctx.stats.clone());
        tasks.push(tokio::spawn(async move {
            let mut t0 = None;
            let mut retries = 0u32;
            loop {
                let s = clock::now();
                let r = a
                    .connect(
                        &u,
                        &[],
                        Hooks {
                            on_msg: Some(on_msg.clone()),
                            acks: None,
                        },
                    )
                    .await;
                match r {
                    Ok(c) => {
                        t0.get_or_insert(clock::now() - s);
                        return (Some(c), t0, retries);
                    }
                    Err(e) => {
                        stats.add(&format!("storm connect: {e}"));
                        retries += 1;
                        if tokio::time::Instant::now() >= deadline {
                            return (None, t0, retries);
                        }
                        tokio::time::sleep(Duration::from_millis(100 * (1 << retries.min(5))))
                            .await;
                    }
                }
            }
        }));
    }
    let mut conns = Vec::new();
    let mut auth_lat = histogram();
    let mut retries = 0u64;
    for t in tasks {
        let (c, auth, r) = t.await?;
        retries += r as u64;
        if let Some(ns) = auth {
            record_ns(&mut auth_lat, ns);
        }
        conns.extend(c);
    }
    while complete.load(Ordering::Acquire) < devices && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (usage, gen) = probe.finish();
    let mut complete_lat = histogram();
    let mut items = 0u64;
    let mut done = 0u64;
    let mut last_done = storm_start;
    for c in counts.iter() {
        items += c.got.load(Ordering::Acquire);
        let at = c.done_at.load(Ordering::Acquire);
        if at > 0 {
            done += 1;
            last_done = last_done.max(at);
            record_ns(&mut complete_lat, at - storm_start);
        }
    }
    let mut r = Report::new("storm", "msgs synced/s");
    r.param("devices", devices)
        .param("missed_per_device", missed)
        .param("senders", senders);
    common(ctx, kind, &mut r);
    let storm_secs = clock::secs(last_done - storm_start);
    r.achieved = (items > 0 && storm_secs > 0.0).then(|| items as f64 / storm_secs);
    r.latency(
        "device complete (storm start -> device has all it missed)",
        &complete_lat,
    );
    r.latency("connect + session resume", &auth_lat);
    r.count("devices", devices as u64)
        .count("devices_complete", done)
        .count("messages_expected", total)
        .count(
            "messages_acked_before_storm",
            t.acked.load(Ordering::Relaxed),
        )
        .count("items_synced", items)
        .count("reconnect_retries", retries);
    if done == devices as u64 {
        r.figure("time until every device has all it missed", storm_secs, "s");
    } else {
        r.notes.push(format!(
            "{} devices did not complete within {timeout_secs} s",
            devices as u64 - done
        ));
    }
    r.figure(
        "send phase (pipelined 1:1 sends, closed loop)",
        total as f64 / send_secs,
        "acked msg/s",
    );
    if let Some(u) = &usage {
        r.figure(
            "peak server RSS during the storm (VmHWM)",
            u.hwm_kib as f64 / 1024.0,
            "MiB",
        );
    }
    r.server = usage;
    r.generator_cpu_pct = gen;
    r.errors = ctx.stats.since(&errors_before);
    ctx.print(&r);
    for c in conns.into_iter().chain(wconns) {
        a.drop_conn(c).await;
    }
    Ok(())
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
