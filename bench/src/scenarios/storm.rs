//! N devices offline while M messages arrive for each, then all reconnect at once and
//! catch up; reports how long until every device had everything it missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{run_id, Ctx, StormArgs};
use crate::engine::clock;
use crate::probe::Probe;
use crate::report::{histogram, record_ns, Report};
use crate::systems::Adapter;

pub async fn run<A: Adapter>(ctx: &Ctx, a: Arc<A>, s: StormArgs) -> anyhow::Result<()> {
    let run = run_id();
    let names: Vec<String> = (0..s.devices).map(|i| format!("{run}-d{i}")).collect();
    let writers: Vec<String> = (0..s.senders).map(|j| format!("{run}-w{j}")).collect();
    let all: Vec<String> = names.iter().chain(&writers).cloned().collect();
    // 1. Devices: accounts, and each one's durable session, then offline.
    let t0 = std::time::Instant::now();
    a.prepare(&all).await?;
    let tokens: Vec<Option<String>> = futures_util::stream::iter(names.iter().enumerate())
        .map(|(i, u)| a.enroll(i, u, &s))
        .buffered(a.concurrency())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    eprintln!(
        "tern-bench: {} devices set up in {:.1} s; sending {} messages each while they are offline",
        s.devices,
        t0.elapsed().as_secs_f64(),
        s.missed
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 2. The missed messages.
    let (sent, send_secs) = a.fill(&writers, &names, &s).await?;
    let expected = (s.devices * s.missed) as u64;
    eprintln!(
        "tern-bench: {sent} of {expected} messages acked in {send_secs:.1} s ({:.0} msg/s); now all {} devices reconnect",
        sent as f64 / send_secs,
        s.devices
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 3. The storm: every device at once.
    let errors_before = ctx.stats.snapshot();
    let probe = Probe::start(a.pid(), true);
    let storm_start = clock::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(s.timeout_secs);
    let s = Arc::new(s);
    let mut tasks = Vec::with_capacity(s.devices);
    for (i, (name, token)) in names.into_iter().zip(tokens).enumerate() {
        let (a, s, stats) = (a.clone(), s.clone(), ctx.stats.clone());
        tasks.push(tokio::spawn(async move {
            a.catch_up(i, name, token, &s, deadline, stats).await
        }));
    }
    let mut results = Vec::with_capacity(s.devices);
    for t in tasks {
        results.push(t.await?);
    }
    let (usage, gen) = probe.finish();
    let (mut complete_lat, mut auth_lat) = (histogram(), histogram());
    let (mut done, mut items, mut retries) = (0u64, 0u64, 0u64);
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
    r.param("devices", s.devices)
        .param("missed_per_device", s.missed);
    a.storm_params(&s, &mut r);
    r.param("senders", s.senders);
    ctx.common(&*a, &mut r);
    let storm_secs = clock::secs(last_done - storm_start);
    r.achieved = (items > 0 && storm_secs > 0.0).then(|| items as f64 / storm_secs);
    let (complete_label, auth_label) = a.storm_labels(&s);
    r.latency(&complete_label, &complete_lat);
    r.latency(&auth_label, &auth_lat);
    r.count("devices", s.devices as u64)
        .count("devices_complete", done)
        .count("messages_expected", expected)
        .count("messages_acked_before_storm", sent)
        .count("items_synced", items)
        .count("reconnect_retries", retries);
    if done == s.devices as u64 {
        r.figure("time until every device has all it missed", storm_secs, "s");
    } else {
        r.notes.push(format!(
            "{} devices did not complete within {} s",
            s.devices as u64 - done,
            s.timeout_secs
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
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}
