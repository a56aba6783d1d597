//! The scenarios, each written once against [`Adapter`]: [`one_to_one`], [`fanout`],
//! [`idle`], [`storm`]; and three that are tern only: [`durability`] (it starts its own
//! servers with group commit on and off), [`conversations`] (the conversation list
//! of a user in many conversations), [`soak`] (disk use under retention) and [`search`]
//! (history search latency over a big index) and [`blobs`] (upload and
//! download throughput of a big file). [`run`] picks the system under test.

pub mod blobs;
pub mod conversations;
pub mod durability;
pub mod fanout;
pub mod idle;
pub mod one_to_one;
pub mod search;
pub mod soak;
pub mod storm;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::run::{Stats, StepOutcome, Tracker};
use crate::report::Report;
use crate::systems::{mqtt, nats, relay, tern, tls, xmpp, Adapter, Peer, PeerKind};
use crate::{Cmd, Global, Reconnect};

/// What every scenario shares.
pub struct Ctx {
    pub g: Global,
    pub stats: Arc<Stats>,
}

impl Ctx {
    pub fn new(g: Global) -> Self {
        Self {
            g,
            stats: Arc::new(Stats::default()),
        }
    }

    pub fn body(&self) -> Bytes {
        Bytes::from(vec![b'x'; self.g.size])
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.g.drain_secs)
    }

    /// Parameters every report carries: the system's own, then the generator's.
    pub fn common(&self, a: &impl Adapter, r: &mut Report) {
        a.params(r);
        r.param("body_bytes", self.g.size);
        if let Some(c) = self.g.pin_cpu {
            r.param("generator_cpu", c);
        }
        if let Some(c) = self.g.server_cpu {
            r.param("server_cpu", c);
        }
        if let Some(l) = crate::probe::procfs::loadavg() {
            r.param("loadavg_at_end", l);
        }
    }

    pub fn print(&self, r: &Report) {
        let tagged;
        let r = match &self.g.tag {
            Some(t) => {
                let mut c = r.clone();
                c.scenario = format!("{} {t}", c.scenario);
                tagged = c;
                &tagged
            }
            None => r,
        };
        if self.g.json {
            println!("{}", r.to_json());
        } else {
            println!("{}", r.human());
        }
    }
}

/// The storm's options.
pub struct StormArgs {
    pub devices: usize,
    pub missed: usize,
    pub senders: usize,
    pub window: usize,
    pub reconnect: Reconnect,
    pub page: u32,
    pub timeout_secs: f64,
}

/// A short random prefix for user names, so runs against one external server never
/// collide.
pub fn run_id() -> String {
    format!("b{:05x}", rand::random::<u32>() & 0xfffff)
}

/// The server's RSS now (0: not measured).
pub fn rss_now(pid: Option<u32>) -> u64 {
    pid.and_then(crate::probe::procfs::read_mem)
        .map(|m| m.rss_kib)
        .unwrap_or(0)
}

/// What every message step's report has after its own latencies: the ack and generator
/// lag latencies, the server's usage, the errors, and whether the drain finished.
pub fn step_tail<A: Adapter>(ctx: &Ctx, a: &A, r: &mut Report, o: &StepOutcome, t: &Tracker) {
    r.latency(a.ack_label(), &t.snapshot(&t.ack));
    r.latency(
        "generator lag (intended -> queued for write)",
        &t.snapshot(&t.lag),
    );
    r.server = o.server.clone();
    r.generator_cpu_pct = o.generator_cpu_pct;
    r.errors = o.errors.clone();
    if !o.drained {
        r.notes.push(format!(
            "not everything was acked and delivered within the drain time ({} s after the schedule ended)",
            ctx.g.drain_secs
        ));
    }
}

/// Notes every message scenario adds after a run: dead connections, the server's log.
pub fn health_notes<A: Adapter>(a: &A, conns: &[A::Conn], r: &mut Report) {
    let dead = conns.iter().filter(|c| !a.alive(c)).count();
    if dead > 0 {
        r.notes.push(format!("{dead} connections closed"));
    }
    if a.server_exited() {
        r.notes.push("the server process has exited".into());
    }
}

/// Runs `cmd` against tern, or against the peer `--peer` names.
pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let g = &ctx.g;
    let (Some(kind), Some(addr)) = (g.peer, g.peer_addr) else {
        if let Cmd::Durability {
            pairs,
            rate,
            duration,
        } = cmd
        {
            return durability::run(ctx, pairs, rate, duration).await;
        }
        if let Cmd::Soak {
            pairs,
            rate,
            duration,
            sample_secs,
            inbox_entries,
            timeline_entries,
            sweep_ms,
            retention_off,
        } = cmd
        {
            let args = soak::SoakArgs {
                pairs,
                rate,
                duration,
                sample_secs,
                inbox_entries,
                timeline_entries,
                sweep_ms,
                retention_off,
            };
            return soak::run(ctx, args).await;
        }
        if let Cmd::Conversations {
            conversations,
            direct,
            unread_every,
            mute_every,
            calls,
            page,
        } = cmd
        {
            let args = conversations::ConvArgs {
                conversations,
                direct,
                unread_every,
                mute_every,
                calls,
                page,
            };
            return conversations::run(ctx, args).await;
        }
        if let Cmd::Blobs { mib, rounds } = cmd {
            return blobs::run(ctx, blobs::BlobArgs { mib, rounds }).await;
        }
        if let Cmd::Search {
            messages,
            writers,
            calls,
        } = cmd
        {
            let args = search::SearchArgs {
                messages,
                writers,
                calls,
            };
            return search::run(ctx, args).await;
        }
        if let Cmd::Idle {
            connections,
            hold_secs,
            devices_per_user,
            reconnect: Reconnect::Resume,
        } = cmd
        {
            let sources = Some(connections.div_ceil(20_000).max(1));
            let a = tern::Tern::start(ctx, &[], sources)?;
            let setup = idle::ByResume::default();
            return idle::run(ctx, &a, connections, hold_secs, devices_per_user, setup).await;
        }
        let sources = match &cmd {
            Cmd::Idle { connections, .. } => Some(connections.div_ceil(20_000).max(1)),
            _ => None,
        };
        return with(ctx, tern::Tern::start(ctx, &[], sources)?, cmd).await;
    };
    let peer = Peer {
        system: g
            .system
            .clone()
            .unwrap_or_else(|| format!("{kind:?}").to_lowercase()),
        addr,
        pid: g.server_pid,
        concurrency: g.login_concurrency,
        keep_alive: Duration::from_secs(g.heartbeat_secs.unwrap_or(30).into()),
        stats: ctx.stats.clone(),
        tls: g.peer_ca.as_deref().map(tls::client_config).transpose()?,
    };
    match kind {
        PeerKind::Mosquitto => with(ctx, mqtt::Mqtt { peer }, cmd).await,
        PeerKind::Nats => {
            let stream = format!("B{:08X}", rand::random::<u32>());
            with(ctx, nats::Nats { peer, stream }, cmd).await
        }
        PeerKind::Ejabberd => {
            anyhow::ensure!(peer.tls.is_none(), "ejabberd runs without TLS here");
            with(ctx, xmpp::Xmpp { peer }, cmd).await
        }
        PeerKind::Relay => with(ctx, relay::Relay { peer }, cmd).await,
    }
}

async fn with<A: Adapter>(ctx: &Ctx, a: A, cmd: Cmd) -> anyhow::Result<()> {
    let name = match &cmd {
        Cmd::OneToOne { .. } => "one-to-one",
        Cmd::Fanout { .. } => "fanout",
        Cmd::Idle { .. } => "idle",
        Cmd::Storm { .. } => "storm",
        Cmd::Durability { .. } => "durability",
        Cmd::Conversations { .. } => "conversations",
        Cmd::Soak { .. } => "soak",
        Cmd::Search { .. } => "search",
        Cmd::Blobs { .. } => "blobs",
        Cmd::CompareTable { .. } => "compare-table",
        Cmd::Relay { .. } => "relay",
        Cmd::MakeCerts { .. } => "make-certs",
    };
    if !a.supports(name) {
        let mut r = Report::default();
        a.params(&mut r);
        let system = r.params.first().map(|p| p.1.clone()).unwrap_or_default();
        anyhow::bail!("{name} is not run against {system} (see bench/compare.sh)");
    }
    match cmd {
        Cmd::OneToOne {
            pairs,
            rate,
            duration,
            sweep,
            p99_bound_ms,
        } => {
            let rates = if sweep.is_empty() { vec![rate] } else { sweep };
            one_to_one::run(ctx, &a, pairs, rates, duration, p99_bound_ms).await
        }
        Cmd::Fanout {
            members,
            senders,
            rate,
            duration,
        } => fanout::run(ctx, &a, members, senders, rate, duration).await,
        Cmd::Idle {
            connections,
            hold_secs,
            devices_per_user,
            reconnect,
        } => {
            // tern's resume runs from `run`; the peers have no token resume here.
            anyhow::ensure!(
                reconnect == Reconnect::Login,
                "idle --reconnect resume is tern only"
            );
            idle::run(
                ctx,
                &a,
                connections,
                hold_secs,
                devices_per_user,
                idle::ByLogin,
            )
            .await
        }
        Cmd::Storm {
            devices,
            missed,
            senders,
            window,
            reconnect,
            page,
            timeout_secs,
        } => {
            let s = StormArgs {
                devices,
                missed,
                senders,
                window,
                reconnect,
                page,
                timeout_secs,
            };
            storm::run(ctx, Arc::new(a), s).await
        }
        Cmd::Durability { .. }
        | Cmd::Conversations { .. }
        | Cmd::Soak { .. }
        | Cmd::Search { .. }
        | Cmd::Blobs { .. }
        | Cmd::CompareTable { .. }
        | Cmd::Relay { .. }
        | Cmd::MakeCerts { .. } => {
            unreachable!("handled by run and main")
        }
    }
}
