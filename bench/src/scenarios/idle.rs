//! Ramp to N logged-in idle connections (in two halves, reading the server's RSS after
//! each), hold them, and report memory per connection and idle CPU.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;

use super::{rss_now, run_id, Ctx};
use crate::engine::clock;
use crate::probe::Probe;
use crate::report::{histogram, record_ns, Report};
use crate::systems::{Adapter, Hooks};

/// Opens connections `range` as (user i / dpu, device i % dpu), [`Adapter::concurrency`]
/// at a time; their connect latencies go into `lat`.
async fn ramp<A: Adapter>(
    a: &A,
    run: &str,
    range: std::ops::Range<usize>,
    dpu: usize,
    lat: &mut Histogram<u64>,
) -> anyhow::Result<Vec<A::Conn>> {
    let out: Vec<anyhow::Result<(A::Conn, u64)>> = futures_util::stream::iter(range)
        .map(|i| async move {
            let t0 = clock::now();
            let user = format!("{run}-u{}", i / dpu);
            let c = a
                .connect(i, &user, &format!("d{}", i % dpu), &[], Hooks::default())
                .await
                .context("idle connection")?;
            Ok((c, clock::now() - t0))
        })
        .buffer_unordered(a.concurrency())
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

pub async fn run<A: Adapter>(
    ctx: &Ctx,
    a: &A,
    n: usize,
    hold_secs: f64,
    devices_per_user: usize,
) -> anyhow::Result<()> {
    let run = run_id();
    let dpu = a.devices_per_user(devices_per_user);
    let users = n.div_ceil(dpu);
    // 1. Accounts first: the work and whatever it leaves in the allocator happens
    //    before the baseline.
    let names: Vec<String> = (0..users).map(|u| format!("{run}-u{u}")).collect();
    a.prepare(&names).await?;
    let warm_note = a.warm_up(&run).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_now(a.pid());
    // 2. Ramp in two halves, reading RSS after each.
    let mut lat = histogram();
    let errors_before = ctx.stats.snapshot();
    let half = n / 2;
    let t_a = clock::now();
    let mut conns = ramp(a, &run, 0..half, dpu, &mut lat).await?;
    let t_b = clock::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_half = rss_now(a.pid());
    let t_c = clock::now();
    conns.extend(ramp(a, &run, half..n, dpu, &mut lat).await?);
    let t_d = clock::now();
    let ramp_secs = clock::secs(t_b - t_a) + clock::secs(t_d - t_c);
    eprintln!("tern-bench: {n} connections in {ramp_secs:.1} s; holding {hold_secs} s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_full = rss_now(a.pid());
    // 3. Hold: idle CPU and memory.
    let probe = Probe::start(a.pid(), true);
    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
    let (usage, gen) = probe.finish();
    let alive = conns.iter().filter(|c| a.alive(c)).count();
    let mut r = Report::new("idle", "connections/s");
    r.param("connections", n).param("hold_s", hold_secs).param(
        "heartbeat_s",
        ctx.g
            .heartbeat_secs
            .map(|h| h.to_string())
            .unwrap_or_else(|| a.default_heartbeat().into()),
    );
    a.idle_params(&mut r, dpu, users);
    ctx.common(a, &mut r);
    r.achieved = Some(n as f64 / ramp_secs.max(1e-9));
    r.latency(a.connect_label(), &lat);
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
    r.notes.extend(warm_note);
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}
