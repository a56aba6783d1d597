//! tern only: a steady-state soak with retention on (docs/PROTOCOL.md 8.11). The same 1:1
//! load runs in back-to-back samples against a server started with small retention
//! settings; after each sample the data dir's size on disk (allocated blocks, as `du`
//! counts them) and the server's RSS are read. With retention doing its job the size
//! levels off once the retained window is full, while the messages sent keep growing;
//! `--retention-off` runs the same soak without retention for contrast.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::{health_notes, one_to_one, rss_now, Ctx};
use crate::engine::run::{self, Tracker, Trackers};
use crate::report::Report;
use crate::systems::tern::{self, Tern};
use crate::systems::Adapter;

/// The soak's options.
pub struct SoakArgs {
    pub pairs: usize,
    pub rate: f64,
    pub duration: f64,
    pub sample_secs: f64,
    pub inbox_entries: u64,
    pub timeline_entries: u64,
    pub sweep_ms: u64,
    pub retention_off: bool,
}

/// Bytes allocated on disk under `dir` (st_blocks * 512, like `du`).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub async fn run(ctx: &Ctx, s: SoakArgs) -> anyhow::Result<()> {
    if ctx.g.server.is_some() {
        bail!("soak starts its own server (it reads the data dir); drop --server");
    }
    if !s.retention_off
        && !tern::knows(&tern::server_help(&ctx.g)?, "--retention-inbox-max-entries")
    {
        bail!("this server binary has no retention flags");
    }
    let (inbox, timeline, sweep) = (
        s.inbox_entries.to_string(),
        s.timeline_entries.to_string(),
        s.sweep_ms.to_string(),
    );
    let flags: Vec<&str> = if s.retention_off {
        vec![]
    } else {
        vec![
            "--retention-inbox-max-entries",
            &inbox,
            "--retention-timeline-max-entries",
            &timeline,
            // The soak is minutes long: no minimum age (the default keeps a day).
            "--retention-timeline-min-age-secs",
            "0",
            "--retention-sweep-interval-ms",
            &sweep,
        ]
    };
    let a = Tern::start(ctx, &flags, None)?;
    let dir = a.data_dir().context("the started server's data dir")?;
    let samples = (s.duration / s.sample_secs).ceil().max(1.0) as usize;
    let trackers = Arc::new(Trackers(
        (0..samples)
            .map(|_| Tracker::new(run::step_total(s.rate, s.sample_secs), 1))
            .collect(),
    ));
    let (senders, conns) = one_to_one::setup(&a, s.pairs, &trackers).await?;
    let start = std::time::Instant::now();
    let mut rows: Vec<(f64, u64, u64, u64)> = Vec::new(); // (elapsed s, acked, disk, rss KiB)
    let mut acked_total = 0;
    let mut missing = 0;
    for i in 0..samples {
        let o = one_to_one::step(ctx, &a, &senders, &trackers, i, s.rate, s.sample_secs).await;
        let t = &trackers.0[i];
        let acked = t.acked.load(std::sync::atomic::Ordering::Relaxed);
        let delivered = t.delivered.load(std::sync::atomic::Ordering::Relaxed);
        acked_total += acked;
        missing += t.total.saturating_sub(delivered);
        if !o.drained {
            eprintln!("tern-bench: sample {i}: not drained within the drain time");
        }
        let row = (
            start.elapsed().as_secs_f64(),
            acked_total,
            disk_usage(&dir),
            rss_now(a.pid()),
        );
        eprintln!(
            "tern-bench: soak t={:.0}s acked={} data_dir={:.1} MiB rss={:.1} MiB",
            row.0,
            row.1,
            mib(row.2),
            row.3 as f64 / 1024.0
        );
        rows.push(row);
        if a.server_exited() {
            break;
        }
    }
    let label = if s.retention_off {
        "soak (retention off)"
    } else {
        "soak (retention on)"
    };
    let mut r = Report::new(label, "msg/s");
    r.param("pairs", s.pairs)
        .param("rate", s.rate)
        .param("duration_s", s.duration)
        .param("sample_s", s.sample_secs);
    if !s.retention_off {
        r.param("inbox_max_entries", s.inbox_entries)
            .param("timeline_max_entries", s.timeline_entries)
            .param("sweep_ms", s.sweep_ms);
    }
    ctx.common(&a, &mut r);
    r.offered = Some(s.rate);
    r.achieved = Some(acked_total as f64 / start.elapsed().as_secs_f64());
    r.count("acked", acked_total).count("missing", missing);
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let mid = &rows[rows.len() / 2];
        r.figure("data dir after the first sample", mib(first.2), "MiB")
            .figure("data dir at half time", mib(mid.2), "MiB")
            .figure("data dir at the end", mib(last.2), "MiB")
            .figure(
                "data dir growth over the second half",
                mib(last.2) - mib(mid.2),
                "MiB",
            )
            .figure(
                "message bytes sent over the second half",
                mib((last.1 - mid.1) * ctx.g.size as u64),
                "MiB",
            )
            .figure("server RSS at the end", last.3 as f64 / 1024.0, "MiB");
    }
    for (t, acked, disk, rss) in &rows {
        r.notes.push(format!(
            "t={t:.0}s acked={acked} data_dir={:.1}MiB rss={:.1}MiB",
            mib(*disk),
            *rss as f64 / 1024.0
        ));
    }
    health_notes(&a, &conns, &mut r);
    a.notes(&mut r);
    drop(conns);
    ctx.print(&r);
    Ok(())
}
