//! tern only: the same 1:1 load against a server with group commit on, then against
//! one with `--group-commit false` (one flush per write), and the two side by side.

use std::sync::Arc;

use anyhow::bail;

use super::{health_notes, one_to_one, Ctx};
use crate::engine::run::{self, Tracker, Trackers};
use crate::report::{self, Report};
use crate::systems::tern::{self, Tern};
use crate::systems::Adapter;

pub async fn run(ctx: &Ctx, pairs: usize, rate: f64, duration: f64) -> anyhow::Result<()> {
    if ctx.g.server.is_some() {
        bail!("durability starts its own servers (group commit on, then off); drop --server");
    }
    if !tern::knows(&tern::server_help(&ctx.g)?, "--group-commit") {
        bail!("this server binary has no --group-commit flag");
    }
    let mut reports = Vec::new();
    for (label, flag) in [("on", "true"), ("off", "false")] {
        let a = Tern::start(ctx, &["--group-commit", flag], None)?;
        let trackers = Arc::new(Trackers(vec![Tracker::new(
            run::step_total(rate, duration),
            1,
        )]));
        let (senders, conns) = one_to_one::setup(&a, pairs, &trackers).await?;
        let o = one_to_one::step(ctx, &a, &senders, &trackers, 0, rate, duration).await;
        let scenario = format!("durability (group commit {label})");
        let mut r = one_to_one::report(ctx, &a, &scenario, pairs, &o, &trackers.0[0]);
        // Headline: the durable ack.
        r.latency.swap(0, 1);
        r.param("group_commit", label);
        health_notes(&a, &conns, &mut r);
        a.notes(&mut r);
        drop(conns);
        drop(a);
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
    for (name, p) in [
        ("ack with group commit on", p_on),
        ("ack with group commit off", p_off),
    ] {
        c.latency.push(report::Latency {
            name: name.into(),
            p,
        });
    }
    c.achieved = Some(a_on);
    c.no_server = Some("see the two runs above".into());
    c.notes.push(
        "achieved = acked msg/s with group commit on; each run measured from the first intended send to the last ack (bounded by the drain time)"
            .into(),
    );
    ctx.print(&c);
    Ok(())
}
