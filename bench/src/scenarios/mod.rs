//! The five scenarios. Each starts (or finds) the server, sets up its users with raw
//! frames, runs, and prints its reports.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};
use tern_sdk::Transport;

use crate::clock;
use crate::net::{self, Connector, Fail, Live, LiveOpts, Raw, Stats};
use crate::report::{self, histogram, record_ns, Report};
use crate::run::{self, Probe, SenderRef, Target, TernSender, Tracker, Trackers};
use crate::server::{self, Server, Spawn};
use crate::{Global, Reconnect, TransportArg};

/// Server flags the bench lifts by default (only those the binary's --help lists).
const LIFTED_LIMITS: &[(&str, &str)] = &[
    ("--logins-per-address", "1000000000"),
    ("--conn-rate-limit", "1000000000"),
    ("--conn-rate-burst", "1000000000"),
    ("--user-rate-limit", "1000000000"),
    ("--user-rate-burst", "1000000000"),
];

/// What every scenario shares.
pub struct Ctx {
    pub g: Global,
    pub transport: Transport,
    pub stats: Arc<Stats>,
    help: Option<String>,
}

impl Ctx {
    pub fn new(g: Global) -> anyhow::Result<Self> {
        let transport = match g.transport {
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Quic => Transport::Quic,
        };
        let help = if g.server.is_none() && g.peer.is_none() {
            let bin = server::resolve_bin(&g.server_bin);
            Some(server::known_flags(&bin).with_context(|| {
                format!(
                    "server binary {} (build it: cargo build --release -p tern-server)",
                    bin.display()
                )
            })?)
        } else {
            None
        };
        Ok(Self {
            g,
            transport,
            stats: Arc::new(Stats::default()),
            help,
        })
    }

    pub fn server_knows(&self, flag: &str) -> bool {
        self.help
            .as_deref()
            .is_some_and(|h| h.contains(&format!("{flag} ")))
    }

    /// Starts the server with `extra` flags, or returns the external one.
    pub fn server(&self, extra: &[&str]) -> anyhow::Result<Server> {
        if let Some(addr) = self.g.server {
            let ca = self.g.ca.clone().context("--server needs --ca")?;
            if let (Some(pid), Some(cpu)) = (self.g.server_pid, self.g.server_cpu) {
                server::pin_process(pid, cpu)
                    .with_context(|| format!("pinning server pid {pid} to CPU {cpu}"))?;
            }
            if !extra.is_empty() {
                eprintln!(
                    "tern-bench: note: external server; it should run with {}",
                    extra.join(" ")
                );
            }
            return Ok(Server::external(addr, ca, self.g.server_pid));
        }
        let mut args: Vec<String> = Vec::new();
        if !self.g.keep_limits {
            for (flag, v) in LIFTED_LIMITS {
                if self.server_knows(flag) {
                    args.push((*flag).into());
                    args.push((*v).into());
                }
            }
        }
        if let Some(h) = self.g.heartbeat_secs {
            args.push("--heartbeat-secs".into());
            args.push(h.to_string());
        }
        if self.server_knows("--metrics-listen") {
            // The server's own counters go into each report beside the generator's.
            args.push("--metrics-listen".into());
            args.push("127.0.0.1:0".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.g.server_args.iter().cloned());
        let spawn = Spawn {
            bin: server::resolve_bin(&self.g.server_bin),
            args,
            cpu: self.g.server_cpu,
        };
        let s = Server::start(&spawn)?;
        eprintln!(
            "tern-bench: started {} (pid {}) tcp={} quic={}",
            spawn.bin.display(),
            s.pid.unwrap_or(0),
            s.tcp,
            s.quic
        );
        Ok(s)
    }

    /// Connections through the SDK, or bound to `sources` loopback addresses.
    pub fn connector(&self, s: &Server, sources: Option<usize>) -> anyhow::Result<Connector> {
        let n = self.g.sources.or(sources).unwrap_or(0);
        Connector::new(
            self.transport,
            s.addr(self.transport),
            &s.ca,
            net::loopback_sources(n),
            Duration::from_secs(10),
        )
    }

    /// Parameters every report carries.
    pub fn common(&self, r: &mut Report, s: &Server) {
        r.param("system", self.g.system.as_deref().unwrap_or("tern"));
        r.param("transport", self.transport);
        match &s.args {
            Some(a) => {
                r.param("server", format!("started {}", self.g.server_bin.display()));
                // The fixed flags (listen, ws-listen, data-dir) and the lifted limits are
                // not repeated.
                let mut flags = Vec::new();
                let mut lifted = Vec::new();
                let mut it = a[6..].iter();
                while let Some(f) = it.next() {
                    let v = it.next().cloned().unwrap_or_default();
                    if LIFTED_LIMITS.iter().any(|(l, lv)| l == f && *lv == v) {
                        lifted.push(f.trim_start_matches("--").to_string());
                    } else {
                        flags.push(format!("{f} {v}"));
                    }
                }
                r.param(
                    "server_flags",
                    if flags.is_empty() {
                        "-".into()
                    } else {
                        flags.join(" ")
                    },
                );
                r.param(
                    "flood_limits",
                    if lifted.is_empty() {
                        "server defaults".into()
                    } else {
                        format!("lifted ({} = 1e9)", lifted.join(", "))
                    },
                );
            }
            None => {
                r.param("server", format!("external {}", s.tcp));
            }
        };
        r.param("body_bytes", self.g.size);
        if let Some(c) = self.g.pin_cpu {
            r.param("generator_cpu", c);
        }
        if let Some(c) = self.g.server_cpu {
            r.param("server_cpu", c);
        }
        if let Some(l) = crate::procfs::loadavg() {
            r.param("loadavg_at_end", l);
        }
    }

    pub fn body(&self) -> Bytes {
        Bytes::from(vec![b'x'; self.g.size])
    }

    pub fn live_opts(&self, ok: &pb::LoginOk) -> LiveOpts {
        LiveOpts {
            ping_every: (ok.heartbeat_secs > 0)
                .then(|| Duration::from_secs(ok.heartbeat_secs as u64)),
            ack_every: self.g.ack_every.max(1),
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

    fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.g.drain_secs)
    }
}

/// A short random prefix for user names, so runs against one external server never
/// collide.
fn run_id() -> String {
    format!("b{:05x}", rand::random::<u32>() & 0xfffff)
}

/// Adds the server's own complaints (warnings and errors in its log) to a report.
fn log_notes(r: &mut Report, s: &Server) {
    let (n, first) = s.log_problems(3);
    if n > 0 {
        r.notes.push(format!(
            "server log has {n} warning/error lines; first: {}",
            first.join(" | ")
        ));
    }
}

/// Opens `users` (register + login, `login_concurrency` at a time), in order.
async fn open_users(
    ctx: &Ctx,
    connector: &Connector,
    names: &[String],
    device: &str,
) -> anyhow::Result<Vec<(Raw, pb::LoginOk)>> {
    let stats = ctx.stats.clone();
    let t0 = std::time::Instant::now();
    let out: Vec<Result<(Raw, pb::LoginOk), Fail>> =
        futures_util::stream::iter(names.iter().enumerate())
            .map(|(i, name)| {
                let stats = stats.clone();
                async move { net::open_user(connector, i, name, device, true, &stats).await }
            })
            .buffered(ctx.g.login_concurrency)
            .collect()
            .await;
    let mut v = Vec::with_capacity(out.len());
    for (name, r) in names.iter().zip(out) {
        v.push(r.map_err(|e| anyhow::anyhow!("setting up user {name}: {e}"))?);
    }
    eprintln!(
        "tern-bench: {} users registered and logged in in {:.1} s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(v)
}

/// P sender/receiver pairs, live, reporting to `trackers`.
async fn setup_pairs(
    ctx: &Ctx,
    connector: &Connector,
    pairs: usize,
    trackers: &Arc<Trackers>,
) -> anyhow::Result<(Vec<SenderRef>, Vec<Live>)> {
    let run = run_id();
    let mut names = Vec::new();
    for i in 0..pairs {
        names.push(format!("{run}-s{i}"));
        names.push(format!("{run}-r{i}"));
    }
    let opened = open_users(ctx, connector, &names, "bench").await?;
    let mut senders: Vec<SenderRef> = Vec::new();
    let mut lives = Vec::new();
    for (i, (raw, ok)) in opened.into_iter().enumerate() {
        let opts = ctx.live_opts(&ok);
        let live = Live::start(
            raw,
            names[i].clone(),
            opts,
            trackers.clone(),
            ctx.stats.clone(),
        );
        if i % 2 == 0 {
            let (tx, req) = live.sender();
            senders.push(Arc::new(TernSender {
                tx,
                req,
                target: Target::Peer(names[i + 1].clone()),
            }));
        }
        lives.push(live);
    }
    Ok((senders, lives))
}

/// The report of one 1:1 step; `common` adds the parameters of the system under test.
pub fn pair_report(
    ctx: &Ctx,
    common: &dyn Fn(&mut Report),
    scenario: &str,
    pairs: usize,
    o: &run::StepOutcome,
    t: &Tracker,
) -> Report {
    let mut r = Report::new(scenario, "msg/s");
    r.param("pairs", pairs)
        .param("rate", o.rate)
        .param("duration_s", o.duration);
    common(&mut r);
    let sent = t.sent.load(Ordering::Relaxed);
    let delivered = t.delivered.load(Ordering::Relaxed);
    let extra = t.extra.load(Ordering::Relaxed);
    let acked = t.acked.load(Ordering::Relaxed);
    r.offered = Some(o.rate);
    r.achieved = run::achieved(
        delivered - extra.min(delivered),
        o.start,
        t.last_delivery.load(Ordering::Relaxed),
    );
    r.latency(
        "e2e (intended send -> recipient has the push)",
        &t.snapshot(&t.e2e),
    );
    r.latency(
        "ack (intended send -> durable SendAck)",
        &t.snapshot(&t.ack),
    );
    r.latency(
        "generator lag (intended -> queued for write)",
        &t.snapshot(&t.lag),
    );
    r.count("scheduled", t.total)
        .count("sent", sent)
        .count("acked", acked)
        .count("delivered", delivered)
        .count(
            "missing",
            t.total.saturating_sub(delivered - extra.min(delivered)),
        )
        .count("duplicates", extra);
    if let Some(a) = run::achieved(acked, o.start, t.last_ack.load(Ordering::Relaxed)) {
        r.figure("acked rate", a, "msg/s");
    }
    r.server = o.server.clone();
    r.generator_cpu_pct = o.generator_cpu_pct;
    r.errors = o.errors.clone();
    if !o.drained {
        r.notes.push(format!(
            "not everything was acked and delivered within the drain time ({} s after the schedule ended)",
            ctx.g.drain_secs
        ));
    }
    r
}

pub async fn one_to_one(
    ctx: &Ctx,
    pairs: usize,
    rates: Vec<f64>,
    duration: f64,
    p99_bound_ms: f64,
) -> anyhow::Result<()> {
    let mut srv = ctx.server(&[])?;
    let connector = ctx.connector(&srv, None)?;
    let trackers = Arc::new(Trackers(
        rates
            .iter()
            .map(|r| Tracker::new(run::step_total(*r, duration), 1))
            .collect(),
    ));
    let (senders, lives) = setup_pairs(ctx, &connector, pairs, &trackers).await?;
    let sweep = rates.len() > 1;
    let mut rows = Vec::new();
    for (step, rate) in rates.iter().enumerate() {
        if step > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let o = run::run_step(
            srv.pid,
            &senders,
            &trackers,
            step,
            *rate,
            duration,
            ctx.drain(),
            ctx.body(),
            &ctx.stats,
        )
        .await;
        let mut r = pair_report(
            ctx,
            &|r| ctx.common(r, &srv),
            "one-to-one",
            pairs,
            &o,
            &trackers.0[step],
        );
        if !srv.alive() {
            r.notes.push("the server process has exited".into());
        }
        if sweep {
            let p = r.headline();
            eprintln!(
                "tern-bench: rate {rate}: achieved {} p99 {} ms max {} ms missing {}",
                r.achieved.map(report::rate).unwrap_or_default(),
                report::ms(p.p99),
                report::ms(p.max),
                r.get_count("missing").unwrap_or(0)
            );
        } else {
            log_notes(&mut r, &srv);
        }
        rows.push(r);
        if !srv.alive() {
            break;
        }
    }
    drop(lives);
    if sweep {
        let bound = (p99_bound_ms * 1000.0) as u64;
        let peak = report::peak_sustained(&rows, bound);
        if ctx.g.json {
            for r in &rows {
                println!("{}", r.to_json());
            }
            let mut s = Report::new("one-to-one sweep summary", "msg/s");
            s.param("pairs", pairs)
                .param("duration_s", duration)
                .param("p99_bound_ms", p99_bound_ms);
            ctx.common(&mut s, &srv);
            s.achieved = peak.and_then(|p| p.offered);
            s.notes
                .push("achieved_rate = peak sustained offered rate".into());
            log_notes(&mut s, &srv);
            println!("{}", s.to_json());
        } else {
            let first = &rows[0];
            let params: Vec<String> = first
                .params
                .iter()
                .filter(|(k, _)| k != "rate" && k != "loadavg_at_end")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("== one-to-one sweep ==");
            println!("parameters: {}", params.join(" "));
            println!("latency: intended send -> recipient has the push (ms); server CPU % of one core; RSS at the end of each rate");
            print!("{}", report::sweep_table(&rows));
            match peak {
                Some(p) => println!(
                    "peak sustained (p99 < {p99_bound_ms} ms, nothing missing, no errors): {} msg/s (p99 {} ms)",
                    report::rate(p.offered.unwrap_or(0.0)),
                    report::ms(p.headline().p99)
                ),
                None => println!(
                    "peak sustained (p99 < {p99_bound_ms} ms, nothing missing, no errors): none of the rates"
                ),
            }
            for r in &rows {
                for e in &r.errors {
                    println!(
                        "errors at {} msg/s: {}={}",
                        report::rate(r.offered.unwrap_or(0.0)),
                        e.0,
                        e.1
                    );
                }
                for n in &r.notes {
                    println!(
                        "note at {} msg/s: {n}",
                        report::rate(r.offered.unwrap_or(0.0))
                    );
                }
            }
            let mut tail = Report::default();
            log_notes(&mut tail, &srv);
            for n in tail.notes {
                println!("note: {n}");
            }
            if let Some(l) = crate::procfs::loadavg() {
                println!("loadavg at end: {l}");
            }
        }
    } else {
        ctx.print(&rows[0]);
    }
    srv.stop();
    Ok(())
}

pub async fn durability(ctx: &Ctx, pairs: usize, rate: f64, duration: f64) -> anyhow::Result<()> {
    if ctx.g.server.is_some() {
        bail!("durability starts its own servers (group commit on, then off); drop --server");
    }
    if !ctx.server_knows("--group-commit") {
        bail!("this server binary has no --group-commit flag");
    }
    let mut reports = Vec::new();
    for (label, flag) in [("on", "true"), ("off", "false")] {
        let mut srv = ctx.server(&["--group-commit", flag])?;
        let connector = ctx.connector(&srv, None)?;
        let trackers = Arc::new(Trackers(vec![Tracker::new(
            run::step_total(rate, duration),
            1,
        )]));
        let (senders, lives) = setup_pairs(ctx, &connector, pairs, &trackers).await?;
        let o = run::run_step(
            srv.pid,
            &senders,
            &trackers,
            0,
            rate,
            duration,
            ctx.drain(),
            ctx.body(),
            &ctx.stats,
        )
        .await;
        let t = &trackers.0[0];
        let mut r = pair_report(
            ctx,
            &|r| ctx.common(r, &srv),
            &format!("durability (group commit {label})"),
            pairs,
            &o,
            t,
        );
        // Headline: the durable ack.
        r.latency.swap(0, 1);
        r.param("group_commit", label);
        log_notes(&mut r, &srv);
        drop(lives);
        srv.stop();
        ctx.print(&r);
        reports.push(r);
    }
    let (on, off) = (&reports[0], &reports[1]);
    let mut c = Report::new(
        "durability comparison (group commit on vs off)",
        "acked msg/s",
    );
    c.param("pairs", pairs)
        .param("rate", rate)
        .param("duration_s", duration);
    c.offered = Some(rate);
    let a_on = on.get_figure("acked rate").unwrap_or(0.0);
    let a_off = off.get_figure("acked rate").unwrap_or(0.0);
    c.figure("acked msg/s, group commit on", a_on, "msg/s")
        .figure("acked msg/s, group commit off", a_off, "msg/s");
    if a_off > 0.0 {
        c.figure("acked rate ratio on/off", a_on / a_off, "x");
    }
    let (p_on, p_off) = (on.headline(), off.headline());
    c.figure("ack p99, group commit on", p_on.p99 as f64 / 1000.0, "ms")
        .figure("ack p99, group commit off", p_off.p99 as f64 / 1000.0, "ms");
    if p_on.p99 > 0 {
        c.figure(
            "ack p99 ratio off/on",
            p_off.p99 as f64 / p_on.p99 as f64,
            "x",
        );
    }
    c.figure(
        "acked in window, group commit on",
        on.get_count("acked").unwrap_or(0) as f64,
        "msgs",
    )
    .figure(
        "acked in window, group commit off",
        off.get_count("acked").unwrap_or(0) as f64,
        "msgs",
    );
    c.latency.push(report::Latency {
        name: "ack with group commit on".into(),
        p: p_on,
    });
    c.latency.push(report::Latency {
        name: "ack with group commit off".into(),
        p: p_off,
    });
    c.achieved = Some(a_on);
    c.no_server = Some("see the two runs above".into());
    c.notes.push(
        "achieved = acked msg/s with group commit on; each run measured from the first intended send to the last ack (bounded by the drain time)"
            .into(),
    );
    ctx.print(&c);
    Ok(())
}

pub async fn fanout(
    ctx: &Ctx,
    members: usize,
    senders: usize,
    rate: f64,
    duration: f64,
) -> anyhow::Result<()> {
    let mut srv = ctx.server(&[])?;
    let connector = ctx.connector(&srv, None)?;
    let run = run_id();
    let names: Vec<String> = (0..members).map(|i| format!("{run}-m{i}")).collect();
    let mut opened = open_users(ctx, &connector, &names, "bench").await?;
    // The first member creates the group with everyone in it.
    let (creator, _) = &mut opened[0];
    let conv = match creator
        .request(Body::CreateGroup(pb::CreateGroup {
            name: format!("bench {run}"),
            members: names[1..].to_vec(),
        }))
        .await
        .map_err(|e| anyhow::anyhow!("CreateGroup: {e}"))?
    {
        Body::GroupCreated(g) => g.conversation,
        other => bail!("CreateGroup answered {}", tern_proto::body_name(&other)),
    };
    let info = match creator
        .request(Body::ListConversations(pb::ListConversations {}))
        .await
        .map_err(|e| anyhow::anyhow!("ListConversations: {e}"))?
    {
        Body::ConversationList(l) => l.conversations.into_iter().find(|c| c.conversation == conv),
        _ => None,
    }
    .context("the new group is not in the creator's conversation list")?;
    let mode = if info.read_diffusion {
        "read diffusion (no inbox copies; pushes to online members)"
    } else {
        "write diffusion (an inbox entry per member)"
    };
    eprintln!(
        "tern-bench: group {conv} with {} members: {mode}",
        info.member_count
    );
    let total = run::step_total(rate, duration);
    let expected = (members - 1) as u32;
    let trackers = Arc::new(Trackers(vec![Tracker::new(total, expected)]));
    let mut lives = Vec::new();
    let mut sender_refs = Vec::new();
    for (i, (raw, ok)) in opened.into_iter().enumerate() {
        let live = Live::start(
            raw,
            names[i].clone(),
            ctx.live_opts(&ok),
            trackers.clone(),
            ctx.stats.clone(),
        );
        if i < senders {
            let (tx, req) = live.sender();
            sender_refs.push(Arc::new(TernSender {
                tx,
                req,
                target: Target::Conversation(conv.clone()),
            }) as SenderRef);
        }
        lives.push(live);
    }
    // Let the CREATED pushes settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = run::run_step(
        srv.pid,
        &sender_refs,
        &trackers,
        0,
        rate,
        duration,
        ctx.drain(),
        ctx.body(),
        &ctx.stats,
    )
    .await;
    let mut r = fanout_report(
        ctx,
        &|r| ctx.common(r, &srv),
        FanoutShape {
            members,
            senders,
            rate,
            duration,
            read_diffusion: info.read_diffusion,
        },
        &o,
        &trackers.0[0],
    );
    r.notes.insert(0, format!(
        "group mode: {mode}; the server's fan-out threshold decides (default 500 members: larger groups use read diffusion)"
    ));
    log_notes(&mut r, &srv);
    drop(lives);
    srv.stop();
    ctx.print(&r);
    Ok(())
}

/// A fan-out run's shape.
pub struct FanoutShape {
    pub members: usize,
    pub senders: usize,
    pub rate: f64,
    pub duration: f64,
    pub read_diffusion: bool,
}

/// The report of a fan-out run; `common` adds the parameters of the system under test.
pub fn fanout_report(
    ctx: &Ctx,
    common: &dyn Fn(&mut Report),
    f: FanoutShape,
    o: &run::StepOutcome,
    t: &Tracker,
) -> Report {
    let FanoutShape {
        members,
        senders,
        rate,
        duration,
        ..
    } = f;
    let total = run::step_total(rate, duration);
    let expected = (members - 1) as u32;
    let mut r = Report::new("fanout", "deliveries/s");
    r.param("members", members)
        .param("senders", senders)
        .param("rate_msgs", rate)
        .param("duration_s", duration)
        .param(
            "mode",
            if f.read_diffusion {
                "read-diffusion"
            } else {
                "write-diffusion"
            },
        );
    common(&mut r);
    let sent = t.sent.load(Ordering::Relaxed);
    let delivered = t.delivered.load(Ordering::Relaxed);
    let extra = t.extra.load(Ordering::Relaxed);
    let unique = delivered - extra.min(delivered);
    let completed = t.completed.load(Ordering::Relaxed);
    let last = t.last_delivery.load(Ordering::Relaxed);
    r.offered = Some(rate * expected as f64);
    r.achieved = run::achieved(unique, o.start, last);
    r.latency(
        "last member (intended send -> the last of the members has the push)",
        &t.snapshot(&t.last),
    );
    r.latency(
        "every delivery (intended send -> a member has the push)",
        &t.snapshot(&t.e2e),
    );
    r.latency(
        "ack (intended send -> durable SendAck)",
        &t.snapshot(&t.ack),
    );
    r.latency(
        "generator lag (intended -> queued for write)",
        &t.snapshot(&t.lag),
    );
    r.count("scheduled_msgs", total)
        .count("sent_msgs", sent)
        .count("acked_msgs", t.acked.load(Ordering::Relaxed))
        .count("msgs_reaching_every_member", completed)
        .count("deliveries", unique)
        .count("missing", (total * expected as u64).saturating_sub(unique))
        .count("duplicates", extra);
    r.figure("offered", rate, "msg/s into the group");
    if let Some(a) = run::achieved(completed, o.start, last) {
        r.figure("messages completed", a, "msg/s (reached every member)");
    }
    r.server = o.server.clone();
    r.generator_cpu_pct = o.generator_cpu_pct;
    r.errors = o.errors.clone();
    if !o.drained {
        r.notes.push(format!(
            "not everything was acked and delivered within the drain time ({} s)",
            ctx.g.drain_secs
        ));
    }
    r
}

fn rss_now(s: &Server) -> u64 {
    s.pid
        .and_then(crate::procfs::read_mem)
        .map(|m| m.rss_kib)
        .unwrap_or(0)
}

/// Opens connections `range` as (user i / dpu, device i % dpu), `login_concurrency` at
/// a time; each goes live (reading, pinging) as soon as it is logged in.
async fn ramp(
    ctx: &Ctx,
    connector: &Connector,
    run: &str,
    range: std::ops::Range<usize>,
    dpu: usize,
    login_lat: &mut Histogram<u64>,
) -> anyhow::Result<Vec<Live>> {
    let out: Vec<Result<(Live, u64), Fail>> = futures_util::stream::iter(range)
        .map(|i| async move {
            let t0 = clock::now();
            let user = format!("{run}-u{}", i / dpu);
            let device = format!("d{}", i % dpu);
            let (raw, ok) = net::with_retries(20, &ctx.stats, || async {
                let mut raw = connector.connect(i).await?;
                let ok = raw.login(&user, &device).await?;
                Ok((raw, ok))
            })
            .await?;
            let ns = clock::now() - t0;
            let live = Live::start(
                raw,
                ok.username.clone(),
                ctx.live_opts(&ok),
                Arc::new(net::Ignore),
                ctx.stats.clone(),
            );
            Ok((live, ns))
        })
        .buffer_unordered(ctx.g.login_concurrency)
        .collect()
        .await;
    let mut lives = Vec::with_capacity(out.len());
    for r in out {
        let (live, ns) = r.map_err(|e| anyhow::anyhow!("idle connection: {e}"))?;
        record_ns(login_lat, ns);
        lives.push(live);
    }
    Ok(lives)
}

pub async fn idle(ctx: &Ctx, n: usize, hold_secs: f64, dpu: usize) -> anyhow::Result<()> {
    let mut srv = ctx.server(&[])?;
    let sources = n.div_ceil(20_000).max(1);
    let connector = ctx.connector(&srv, Some(sources))?;
    let run = run_id();
    let users = n.div_ceil(dpu);
    // 1. Accounts first, on short connections: the argon2 work and whatever it leaves
    //    in the allocator happens before the baseline.
    let t0 = std::time::Instant::now();
    let stats = ctx.stats.clone();
    let regs: Vec<Result<(), Fail>> = futures_util::stream::iter(0..users)
        .map(|u| {
            let stats = stats.clone();
            let connector = &connector;
            let run = &run;
            async move {
                net::with_retries(20, &stats, || async {
                    let mut raw = connector.connect(u).await?;
                    raw.register(&format!("{run}-u{u}")).await
                })
                .await
            }
        })
        .buffer_unordered(ctx.g.login_concurrency)
        .collect()
        .await;
    for r in regs {
        r.map_err(|e| anyhow::anyhow!("register: {e}"))?;
    }
    eprintln!(
        "tern-bench: {users} users registered in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Warm-up logins at the same concurrency as the ramp, on one extra user whose
    // connections are closed again: the server's blocking threads and their allocator
    // arenas grow to what the ramp will use before the baseline is read.
    let warm_user = format!("{run}-warm");
    let warm = (4 * ctx.g.login_concurrency).max(100);
    net::with_retries(20, &ctx.stats, || async {
        connector.connect(0).await?.register(&warm_user).await
    })
    .await
    .map_err(|e| anyhow::anyhow!("register: {e}"))?;
    let warmed: Vec<Result<(), Fail>> = futures_util::stream::iter(0..warm)
        .map(|i| {
            let stats = stats.clone();
            let (connector, warm_user) = (&connector, &warm_user);
            async move {
                net::with_retries(20, &stats, || async {
                    let mut raw = connector.connect(i).await?;
                    raw.login(warm_user, &format!("w{}", i % 8)).await?;
                    Ok(())
                })
                .await
            }
        })
        .buffer_unordered(ctx.g.login_concurrency.min(8))
        .collect()
        .await;
    for r in warmed {
        r.map_err(|e| anyhow::anyhow!("warm-up login: {e}"))?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss_now(&srv);
    // 2. Ramp in two halves, reading RSS after each.
    let mut login_lat = histogram();
    let errors_before = ctx.stats.snapshot();
    let half = n / 2;
    let t_a = clock::now();
    let mut lives = ramp(ctx, &connector, &run, 0..half, dpu, &mut login_lat).await?;
    let t_b = clock::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_half = rss_now(&srv);
    let t_c = clock::now();
    lives.extend(ramp(ctx, &connector, &run, half..n, dpu, &mut login_lat).await?);
    let t_d = clock::now();
    let ramp_secs = clock::secs(t_b - t_a) + clock::secs(t_d - t_c);
    eprintln!("tern-bench: {n} connections logged in in {ramp_secs:.1} s; holding {hold_secs} s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_full = rss_now(&srv);
    // 3. Hold: idle CPU and memory.
    let probe = Probe::start(srv.pid, true);
    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
    let (usage, gen) = probe.finish();
    let alive = lives
        .iter()
        .filter(|l| l.alive.load(Ordering::Relaxed))
        .count();
    let mut r = Report::new("idle", "connections/s");
    r.param("connections", n)
        .param("devices_per_user", dpu)
        .param("users", users)
        .param("hold_s", hold_secs)
        .param("source_addresses", connector.sources.len())
        .param(
            "heartbeat_s",
            ctx.g
                .heartbeat_secs
                .map(|h| h.to_string())
                .unwrap_or_else(|| "server default".into()),
        )
        .param("login_concurrency", ctx.g.login_concurrency);
    ctx.common(&mut r, &srv);
    r.achieved = Some(n as f64 / ramp_secs.max(1e-9));
    r.latency(
        "connect + TLS/QUIC handshake + Login (argon2id) per connection",
        &login_lat,
    );
    r.count("connections", n as u64)
        .count("alive_after_hold", alive as u64)
        .count("rss_before_kib", rss0)
        .count("rss_half_kib", rss_half)
        .count("rss_full_kib", rss_full);
    let per = |a: u64, b: u64, k: usize| (a as f64 - b as f64) / k.max(1) as f64;
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
        r.figure(
            "server RSS per connection at the end of the hold",
            per(u.rss_after_kib, rss0, n),
            "KiB",
        );
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
    r.notes.push(format!(
        "rss_before is read after the accounts were registered and {warm} warm-up logins (argon2id's 19 MiB \
         buffers stay in the server's allocator arenas), before any of the N connections; \
         ramp time excludes the 1 s pause at N/2"
    ));
    log_notes(&mut r, &srv);
    drop(lives);
    srv.stop();
    ctx.print(&r);
    Ok(())
}

pub struct StormArgs {
    pub devices: usize,
    pub missed: usize,
    pub senders: usize,
    pub window: usize,
    pub reconnect: Reconnect,
    pub page: u32,
    pub timeout_secs: f64,
}

/// One storm sender: pipelines its share of the missed messages, `window` in flight.
async fn storm_send(
    mut raw: Raw,
    me: usize,
    plan: Vec<String>,
    missed: usize,
    window: usize,
    stats: Arc<Stats>,
) -> Result<u64, Fail> {
    use std::collections::{HashMap, VecDeque};
    // (recipient, n) in rounds, so every recipient's inbox fills evenly.
    let mut queue: VecDeque<(usize, usize)> = (0..missed)
        .flat_map(|n| (0..plan.len()).map(move |p| (p, n)))
        .collect();
    let mut inflight: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut acked = 0u64;
    let mut hold_until: Option<tokio::time::Instant> = None;
    while !queue.is_empty() || !inflight.is_empty() {
        let may_send = hold_until.is_none_or(|t| tokio::time::Instant::now() >= t);
        if may_send && inflight.len() < window && !queue.is_empty() {
            hold_until = None;
            let mut buf = Vec::new();
            while inflight.len() < window {
                let Some((p, n)) = queue.pop_front() else {
                    break;
                };
                let req_id = raw.next_req;
                raw.next_req += 1;
                buf.extend_from_slice(&encode_frame(&Frame {
                    req_id,
                    body: Some(Body::Send(pb::Send {
                        client_msg_id: format!("storm.{me}.{p}.{n}"),
                        peer: plan[p].clone(),
                        body: Bytes::from_static(b"missed while offline"),
                        ..Default::default()
                    })),
                }));
                inflight.insert(req_id, (p, n));
            }
            raw.write(&buf).await?;
        }
        let f = raw.next_frame(Duration::from_secs(30)).await?;
        match f.body {
            Some(Body::SendAck(_)) if inflight.remove(&f.req_id).is_some() => acked += 1,
            Some(Body::Error(e)) => {
                if let Some(item) = inflight.remove(&f.req_id) {
                    let fail = Fail::Code(net::code_name(e.code), e.message);
                    stats.add(&format!("storm send {}", fail.name()));
                    if let Some(wait) = fail.retry_after() {
                        queue.push_front(item);
                        hold_until = Some(tokio::time::Instant::now() + wait);
                    }
                }
            }
            Some(Body::Closing(c)) => return Err(Fail::Closed(net::close_name(c.reason))),
            _ => {}
        }
    }
    Ok(acked)
}

/// What one device did in the storm.
struct DeviceResult {
    done_at: Option<u64>,
    auth_ns: Option<u64>,
    items: u64,
    retries: u32,
    _conn: Option<Raw>,
}

/// One device coming back: connect, authenticate, Sync pages until complete, Ack.
#[allow(clippy::too_many_arguments)]
async fn storm_device(
    connector: Arc<Connector>,
    i: usize,
    user: String,
    token: Option<String>,
    missed: u64,
    page: u32,
    deadline: tokio::time::Instant,
    stats: Arc<Stats>,
) -> DeviceResult {
    let mut cursor = 0u64;
    let mut items = 0u64;
    let mut retries = 0u32;
    let mut auth_ns = None;
    loop {
        if tokio::time::Instant::now() >= deadline {
            return DeviceResult {
                done_at: None,
                auth_ns,
                items,
                retries,
                _conn: None,
            };
        }
        let attempt = async {
            let t0 = clock::now();
            let mut raw = connector.connect(i).await?;
            match &token {
                Some(t) => raw.resume(t).await?,
                None => raw.login(&user, "phone").await?,
            };
            let auth = clock::now() - t0;
            loop {
                let res = raw
                    .request(Body::Sync(pb::Sync {
                        after_inbox_seq: Some(cursor),
                        limit: page,
                    }))
                    .await?;
                let Body::SyncResult(s) = res else {
                    return Err(Fail::Io("Sync answered with something else".into()));
                };
                items += s.items.len() as u64;
                cursor = cursor.max(s.to_inbox_seq);
                if s.complete {
                    break;
                }
            }
            let done = clock::now();
            let _ = raw.request(Body::Ack(pb::Ack { inbox_seq: cursor })).await;
            Ok::<_, Fail>((raw, auth, done))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok((raw, auth, done))) => {
                auth_ns.get_or_insert(auth);
                if cursor < missed {
                    stats.add("storm device incomplete (inbox shorter than expected)");
                }
                return DeviceResult {
                    done_at: Some(done),
                    auth_ns,
                    items,
                    retries,
                    _conn: Some(raw),
                };
            }
            Ok(Err(e)) => {
                stats.add(&format!("storm {}", e.name()));
                retries += 1;
                let base = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(100 * (1 << retries.min(5))));
                let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                tokio::time::sleep(base + jitter).await;
            }
            Err(_) => continue,
        }
    }
}

pub async fn storm(ctx: &Ctx, a: StormArgs) -> anyhow::Result<()> {
    let mut srv = ctx.server(&[])?;
    let connector = Arc::new(ctx.connector(&srv, None)?);
    let run = run_id();
    let names: Vec<String> = (0..a.devices).map(|i| format!("{run}-d{i}")).collect();
    // 1. Devices: accounts (and, for resume, one login each to get a token).
    let t0 = std::time::Instant::now();
    let stats = ctx.stats.clone();
    let resume = a.reconnect == Reconnect::Resume;
    let tokens: Vec<Result<Option<String>, Fail>> =
        futures_util::stream::iter(names.iter().enumerate())
            .map(|(i, name)| {
                let stats = stats.clone();
                let connector = connector.clone();
                async move {
                    net::with_retries(20, &stats, || async {
                        let mut raw = connector.connect(i).await?;
                        raw.register(name).await?;
                        if resume {
                            Ok(Some(raw.login(name, "phone").await?.token))
                        } else {
                            Ok(None)
                        }
                    })
                    .await
                }
            })
            .buffered(ctx.g.login_concurrency)
            .collect()
            .await;
    let tokens: Vec<Option<String>> = tokens
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("device setup: {e}"))?;
    eprintln!(
        "tern-bench: {} devices set up in {:.1} s; sending {} messages each while they are offline",
        a.devices,
        t0.elapsed().as_secs_f64(),
        a.missed
    );
    // 2. The missed messages.
    let sender_names: Vec<String> = (0..a.senders).map(|j| format!("{run}-w{j}")).collect();
    let opened = open_users(ctx, &connector, &sender_names, "bench").await?;
    let send_start = clock::now();
    let mut tasks = Vec::new();
    for (j, (raw, _)) in opened.into_iter().enumerate() {
        let plan: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| i % a.senders == j)
            .map(|(_, n)| n.clone())
            .collect();
        tasks.push(tokio::spawn(storm_send(
            raw,
            j,
            plan,
            a.missed,
            a.window,
            ctx.stats.clone(),
        )));
    }
    let mut sent = 0u64;
    for t in tasks {
        sent += t.await?.map_err(|e| anyhow::anyhow!("storm sender: {e}"))?;
    }
    let send_secs = clock::secs(clock::now() - send_start);
    let expected = (a.devices * a.missed) as u64;
    eprintln!(
        "tern-bench: {sent} of {expected} messages acked in {send_secs:.1} s ({:.0} msg/s); now all {} devices reconnect",
        sent as f64 / send_secs,
        a.devices
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 3. The storm.
    let errors_before = ctx.stats.snapshot();
    let probe = Probe::start(srv.pid, true);
    let storm_start = clock::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(a.timeout_secs);
    let mut tasks = Vec::with_capacity(a.devices);
    for (i, name) in names.iter().enumerate() {
        tasks.push(tokio::spawn(storm_device(
            connector.clone(),
            i,
            name.clone(),
            tokens[i].clone(),
            a.missed as u64,
            a.page,
            deadline,
            ctx.stats.clone(),
        )));
    }
    let mut results = Vec::with_capacity(a.devices);
    for t in tasks {
        results.push(t.await?);
    }
    let (usage, gen) = probe.finish();
    let mut complete_lat = histogram();
    let mut auth_lat = histogram();
    let mut done = 0u64;
    let mut items = 0u64;
    let mut retries = 0u64;
    let mut last_done = storm_start;
    for r in &results {
        items += r.items;
        retries += r.retries as u64;
        if let Some(at) = r.done_at {
            done += 1;
            last_done = last_done.max(at);
            record_ns(&mut complete_lat, at - storm_start);
        }
        if let Some(ns) = r.auth_ns {
            record_ns(&mut auth_lat, ns);
        }
    }
    let mut r = Report::new("storm", "msgs synced/s");
    r.param("devices", a.devices)
        .param("missed_per_device", a.missed)
        .param("reconnect", format!("{:?}", a.reconnect).to_lowercase())
        .param("sync_page", a.page)
        .param("senders", a.senders);
    ctx.common(&mut r, &srv);
    let storm_secs = clock::secs(last_done - storm_start);
    r.achieved = (items > 0 && storm_secs > 0.0).then(|| items as f64 / storm_secs);
    r.latency(
        "device complete (storm start -> device has synced all it missed)",
        &complete_lat,
    );
    r.latency(
        &format!("connect + {:?} (first successful attempt)", a.reconnect).to_lowercase(),
        &auth_lat,
    );
    r.count("devices", a.devices as u64)
        .count("devices_complete", done)
        .count("messages_expected", expected)
        .count("messages_acked_before_storm", sent)
        .count("items_synced", items)
        .count("reconnect_retries", retries);
    if done == a.devices as u64 {
        r.figure("time until every device has all it missed", storm_secs, "s");
    } else {
        r.notes.push(format!(
            "{} devices did not complete within {} s",
            a.devices as u64 - done,
            a.timeout_secs
        ));
    }
    r.figure(
        "send phase (pipelined 1:1 sends, closed loop)",
        sent as f64 / send_secs,
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
    log_notes(&mut r, &srv);
    drop(results);
    srv.stop();
    ctx.print(&r);
    Ok(())
}
