//! What the system under test used: [`Probe`] reads the server's CPU and memory from
//! `/proc` ([`procfs`]) over a window, samples its RSS, and (for a tern server started
//! here, [`server`]) the deltas of its own `/metrics` counters.

pub mod procfs;
pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procfs::CpuMark;

use crate::report::ServerUsage;

/// Server and generator resource use over a window.
pub struct Probe {
    pid: Option<u32>,
    cpu: Option<CpuMark>,
    gen: Option<CpuMark>,
    rss_before: u64,
    hwm_reset: bool,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<tokio::task::JoinHandle<()>>,
    metrics_before: Option<std::collections::HashMap<String, f64>>,
}

impl Probe {
    /// Starts the window now. `reset_hwm`: make VmHWM the peak of this window.
    pub fn start(pid: Option<u32>, reset_hwm: bool) -> Self {
        let me = std::process::id();
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = Self {
            pid,
            cpu: None,
            gen: CpuMark::take(me),
            rss_before: 0,
            hwm_reset: false,
            peak: peak.clone(),
            stop: stop.clone(),
            sampler: None,
            metrics_before: None,
        };
        if let Some(pid) = pid {
            p.metrics_before = server::scrape_metrics();
            p.hwm_reset = reset_hwm && procfs::reset_hwm(pid);
            p.rss_before = procfs::read_mem(pid).map(|m| m.rss_kib).unwrap_or(0);
            peak.store(p.rss_before, Ordering::Relaxed);
            p.cpu = CpuMark::take(pid);
            p.sampler = Some(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(m) = procfs::read_mem(pid) {
                        peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        p
    }

    /// Ends the window: (server usage, generator CPU % of one core).
    pub fn finish(mut self) -> (Option<ServerUsage>, Option<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        let me = std::process::id();
        let gen = match (self.gen, CpuMark::take(me)) {
            (Some(a), Some(b)) => {
                let (c, w) = a.since(&b);
                Some(procfs::cpu_percent(c, w))
            }
            _ => None,
        };
        let server = (|| {
            let pid = self.pid?;
            let end = CpuMark::take(pid)?;
            let (cpu_secs, wall_secs) = self.cpu?.since(&end);
            let mem = procfs::read_mem(pid)?;
            let threads = procfs::read_stat(pid).map(|s| s.threads).unwrap_or(0);
            self.peak.fetch_max(mem.rss_kib, Ordering::Relaxed);
            Some(ServerUsage {
                pid,
                cpu_secs,
                wall_secs,
                rss_before_kib: self.rss_before,
                rss_after_kib: mem.rss_kib,
                hwm_kib: mem.hwm_kib,
                hwm_reset: self.hwm_reset,
                rss_sampled_peak_kib: self.peak.load(Ordering::Relaxed),
                threads,
                metrics: match (&self.metrics_before, server::scrape_metrics()) {
                    (Some(a), Some(b)) => server_metrics(a, &b),
                    _ => Vec::new(),
                },
            })
        })();
        (server, gen)
    }
}

/// What the server says it did over a window: deltas of its counters, and averages of
/// its store flushes.
pub fn server_metrics(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
) -> Vec<(String, f64)> {
    let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let mut out: Vec<(String, f64)> = [
        ("sends", "tern_sends_total"),
        ("dedup_hits", "tern_dedup_hits_total"),
        ("pushes", "tern_pushes_total"),
        ("acks", "tern_acks_total"),
        ("syncs", "tern_syncs_total"),
        ("pulls", "tern_pulls_total"),
        ("slow_consumers", "tern_slow_consumer_disconnects_total"),
        ("frames_in", "tern_frames_in_total"),
        ("frames_out", "tern_frames_out_total"),
        ("flushes", "tern_store_flush_seconds_count"),
        ("fsyncs", "tern_store_fsyncs_total"),
    ]
    .iter()
    .map(|(name, key)| (name.to_string(), d(key)))
    .collect();
    let flushes = d("tern_store_flush_seconds_count");
    if flushes > 0.0 {
        out.push((
            "writes_per_flush".into(),
            d("tern_writes_per_flush_sum") / flushes,
        ));
        out.push((
            "flush_ms_avg".into(),
            d("tern_store_flush_seconds_sum") / flushes * 1e3,
        ));
    }
    out
}

#[cfg(test)]
mod server_metrics_tests {
    use super::server_metrics;
    use std::collections::HashMap;

    #[test]
    fn deltas_and_flush_averages() {
        let before: HashMap<String, f64> = [
            ("tern_sends_total", 100.0),
            ("tern_store_flush_seconds_count", 10.0),
            ("tern_store_flush_seconds_sum", 0.01),
            ("tern_writes_per_flush_sum", 100.0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        let mut after = before.clone();
        after.insert("tern_sends_total".into(), 400.0);
        after.insert("tern_store_flush_seconds_count".into(), 110.0);
        after.insert("tern_store_flush_seconds_sum".into(), 0.21);
        after.insert("tern_writes_per_flush_sum".into(), 400.0);
        let m: HashMap<String, f64> = server_metrics(&before, &after).into_iter().collect();
        assert_eq!(m["sends"], 300.0);
        assert_eq!(m["flushes"], 100.0);
        assert!((m["writes_per_flush"] - 3.0).abs() < 1e-9);
        assert!((m["flush_ms_avg"] - 2.0).abs() < 1e-9);
        assert_eq!(m["pushes"], 0.0);
    }
}
