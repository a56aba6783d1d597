//! P sender/receiver pairs, durable 1:1 sends at a fixed total rate (or a sweep of
//! rates, one report each, and the peak sustained rate).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{health_notes, run_id, Ctx};
use crate::engine::run::{self, SenderRef, StepOutcome, Tracker, Trackers};
use crate::report::{self, Report};
use crate::systems::{connect_all, deliver_to, Adapter, Dest, Hooks};

/// P pairs reporting to `trackers`: the senders' outboxes, and every connection.
pub async fn setup<A: Adapter>(
    a: &A,
    pairs: usize,
    trackers: &Arc<Trackers>,
) -> anyhow::Result<(Vec<SenderRef>, Vec<A::Conn>)> {
    let run = run_id();
    let senders: Vec<String> = (0..pairs).map(|i| format!("{run}-s{i}")).collect();
    let receivers: Vec<String> = (0..pairs).map(|i| format!("{run}-r{i}")).collect();
    let all: Vec<String> = senders.iter().chain(&receivers).cloned().collect();
    a.prepare(&all).await?;
    // Receivers first, so their sessions exist before anything is sent.
    let mut conns = connect_all(a, &receivers, &[], |_| Hooks {
        on_msg: Some(deliver_to(trackers.clone(), None)),
        acks: None,
    })
    .await?;
    let tx = connect_all(a, &senders, &[], |_| Hooks {
        on_msg: None,
        acks: Some(trackers.clone()),
    })
    .await?;
    let outs = tx
        .iter()
        .zip(&receivers)
        .map(|(c, r)| a.outbox(c, Dest::User(r.clone())))
        .collect();
    conns.extend(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((outs, conns))
}

/// Runs step `step` (at `rate`) on `senders`.
pub async fn step<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    senders: &[SenderRef],
    trackers: &Arc<Trackers>,
    step: usize,
    rate: f64,
    duration: f64,
) -> StepOutcome {
    run::run_step(
        a.pid(),
        senders,
        trackers,
        step,
        rate,
        duration,
        ctx.drain(),
        ctx.body(),
        &ctx.stats,
    )
    .await
}

/// The report of one 1:1 step.
pub fn report<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    scenario: &str,
    pairs: usize,
    o: &StepOutcome,
    t: &Tracker,
) -> Report {
    let mut r = Report::new(scenario, "msg/s");
    r.param("pairs", pairs)
        .param("rate", o.rate)
        .param("duration_s", o.duration);
    ctx.common(a, &mut r);
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
    super::step_tail(ctx, a, &mut r, o, t);
    r.count("scheduled", t.total)
        .count("sent", sent)
        .count("acked", acked)
        .count("delivered", delivered)
        .count(
            "missing",
            t.total.saturating_sub(delivered - extra.min(delivered)),
        )
        .count("duplicates", extra);
    if let Some(x) = run::achieved(acked, o.start, t.last_ack.load(Ordering::Relaxed)) {
        r.figure("acked rate", x, "msg/s");
    }
    r
}

pub async fn run<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    pairs: usize,
    rates: Vec<f64>,
    duration: f64,
    p99_bound_ms: f64,
) -> anyhow::Result<()> {
    let trackers = Arc::new(Trackers(
        rates
            .iter()
            .map(|r| Tracker::new(run::step_total(*r, duration), 1))
            .collect(),
    ));
    let (senders, conns) = setup(a, pairs, &trackers).await?;
    let sweep = rates.len() > 1;
    let mut rows = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let o = step(ctx, a, &senders, &trackers, i, *rate, duration).await;
        let mut r = report(ctx, a, "one-to-one", pairs, &o, &trackers.0[i]);
        health_notes(a, &conns, &mut r);
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
            a.notes(&mut r);
            ctx.print(&r);
        }
        rows.push(r);
        if a.server_exited() {
            break;
        }
    }
    drop(conns);
    if sweep {
        print_sweep(ctx, a, &rows, pairs, duration, p99_bound_ms);
    }
    Ok(())
}

/// A sweep's rows and its peak sustained rate: JSON lines and a summary, or a table.
fn print_sweep<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    rows: &[Report],
    pairs: usize,
    duration: f64,
    p99_bound_ms: f64,
) {
    let peak = report::peak_sustained(rows, (p99_bound_ms * 1000.0) as u64);
    if ctx.g.json {
        for r in rows {
            println!("{}", r.to_json());
        }
        let mut s = Report::new("one-to-one sweep summary", "msg/s");
        s.param("pairs", pairs)
            .param("duration_s", duration)
            .param("p99_bound_ms", p99_bound_ms);
        ctx.common(a, &mut s);
        s.achieved = peak.and_then(|p| p.offered);
        s.notes
            .push("achieved_rate = peak sustained offered rate".into());
        a.notes(&mut s);
        println!("{}", s.to_json());
        return;
    }
    let params: Vec<String> = rows[0]
        .params
        .iter()
        .filter(|(k, _)| k != "rate" && k != "loadavg_at_end")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("== one-to-one sweep ==");
    println!("parameters: {}", params.join(" "));
    println!("latency: intended send -> recipient has the push (ms); server CPU % of one core; RSS at the end of each rate");
    print!("{}", report::sweep_table(rows));
    let bound = format!("peak sustained (p99 < {p99_bound_ms} ms, nothing missing, no errors)");
    match peak {
        Some(p) => println!(
            "{bound}: {} msg/s (p99 {} ms)",
            report::rate(p.offered.unwrap_or(0.0)),
            report::ms(p.headline().p99)
        ),
        None => println!("{bound}: none of the rates"),
    }
    for r in rows {
        let at = report::rate(r.offered.unwrap_or(0.0));
        for (e, n) in &r.errors {
            println!("errors at {at} msg/s: {e}={n}");
        }
        for n in &r.notes {
            println!("note at {at} msg/s: {n}");
        }
    }
    let mut tail = Report::default();
    a.notes(&mut tail);
    for n in tail.notes {
        println!("note: {n}");
    }
    if let Some(l) = crate::probe::procfs::loadavg() {
        println!("loadavg at end: {l}");
    }
}
