//! One group of G online members; S of them send at a fixed total rate, and every
//! message goes to the G - 1 others.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{health_notes, run_id, Ctx};
use crate::engine::run::{self, SenderRef, Tracker, Trackers};
use crate::report::Report;
use crate::systems::{connect_all, deliver_to, Adapter, Dest, Hooks};

pub async fn run<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    members: usize,
    senders: usize,
    rate: f64,
    duration: f64,
) -> anyhow::Result<()> {
    let run = run_id();
    let names: Vec<String> = (0..members).map(|i| format!("{run}-m{i}")).collect();
    a.prepare(&names).await?;
    let group = a.group(&format!("{run}-g"), &names).await?;
    let total = run::step_total(rate, duration);
    let expected = (members - 1) as u32;
    let trackers = Arc::new(Trackers(vec![Tracker::new(total, expected)]));
    let conns = connect_all(a, &names, std::slice::from_ref(&group.name), |i| Hooks {
        on_msg: Some(deliver_to(
            trackers.clone(),
            (i < senders).then_some((senders as u64, i as u64)),
        )),
        acks: (i < senders).then(|| trackers.clone()),
    })
    .await?;
    let outs: Vec<SenderRef> = conns[..senders]
        .iter()
        .map(|c| a.outbox(c, Dest::Group(group.name.clone())))
        .collect();
    // Let the sessions settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = run::run_step(
        a.pid(),
        &outs,
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
    let mut r = Report::new("fanout", "deliveries/s");
    r.param("members", members)
        .param("senders", senders)
        .param("rate_msgs", rate)
        .param("duration_s", duration);
    if let Some(m) = group.mode {
        r.param("mode", m);
    }
    ctx.common(a, &mut r);
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
    r.notes.push(group.note);
    super::step_tail(ctx, a, &mut r, &o, t);
    r.count("scheduled_msgs", total)
        .count("sent_msgs", sent)
        .count("acked_msgs", t.acked.load(Ordering::Relaxed))
        .count("msgs_reaching_every_member", completed)
        .count("deliveries", unique)
        .count("missing", (total * expected as u64).saturating_sub(unique))
        .count("duplicates", extra);
    r.figure("offered", rate, "msg/s into the group");
    if let Some(x) = run::achieved(completed, o.start, last) {
        r.figure("messages completed", x, "msg/s (reached every member)");
    }
    health_notes(a, &conns, &mut r);
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}
