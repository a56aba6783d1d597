//! The open-loop engine shared by the message scenarios (one-to-one, fan-out,
//! durability): senders on fixed schedules, a per-run [`Tracker`] that readers feed, a
//! drain phase, and the server/generator resource [`Probe`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use tern_proto::pb;
use tern_proto::{encode_frame, Body, Frame};
use tokio::sync::mpsc;

use crate::clock;
use crate::net::{Handler, Stats};
use crate::procfs::{self, CpuMark};
use crate::report::{histogram, record_ns, ServerUsage};
use crate::schedule::{self, msg_id, parse_msg_id, Nanos, Schedule};

/// What one step (one rate) of a run has seen so far. Readers update it from any task.
pub struct Tracker {
    pub total: u64,
    /// Deliveries each message should get (1 for 1:1, members - 1 for a group).
    pub expected: u32,
    counts: Vec<AtomicU32>,
    max_lat: Vec<AtomicU64>,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    /// Messages that reached all `expected` recipients.
    pub completed: AtomicU64,
    /// Deliveries beyond `expected` (duplicates) or of unknown messages.
    pub extra: AtomicU64,
    pub last_delivery: AtomicU64,
    pub last_ack: AtomicU64,
    /// Every delivery: intended send time -> recipient has the push.
    pub e2e: Mutex<Histogram<u64>>,
    /// Per message: intended send time -> the last of its recipients has it.
    pub last: Mutex<Histogram<u64>>,
    /// Intended send time -> the sender has the durable SendAck.
    pub ack: Mutex<Histogram<u64>>,
    /// Intended send time -> the generator queued the frame (the generator's own lag).
    pub lag: Mutex<Histogram<u64>>,
}

impl Tracker {
    pub fn new(total: u64, expected: u32) -> Self {
        Self {
            total,
            expected,
            counts: (0..total).map(|_| AtomicU32::new(0)).collect(),
            max_lat: (0..total).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            extra: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            last_ack: AtomicU64::new(0),
            e2e: Mutex::new(histogram()),
            last: Mutex::new(histogram()),
            ack: Mutex::new(histogram()),
            lag: Mutex::new(histogram()),
        }
    }

    pub fn deliver(&self, global: u64, intended: Nanos, now: Nanos) {
        let (Some(count), Some(max)) = (
            self.counts.get(global as usize),
            self.max_lat.get(global as usize),
        ) else {
            self.extra.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let lat = now.saturating_sub(intended);
        // The max first, then the count: whoever brings the count to `expected` sees
        // every recipient's latency in the max.
        max.fetch_max(lat, Ordering::AcqRel);
        let n = count.fetch_add(1, Ordering::AcqRel) + 1;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_delivery.fetch_max(now, Ordering::Relaxed);
        record_ns(&mut self.e2e.lock().unwrap(), lat);
        if n == self.expected {
            self.completed.fetch_add(1, Ordering::Relaxed);
            record_ns(&mut self.last.lock().unwrap(), max.load(Ordering::Acquire));
        } else if n > self.expected {
            self.extra.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn acked(&self, intended: Nanos, now: Nanos) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.last_ack.fetch_max(now, Ordering::Relaxed);
        record_ns(&mut self.ack.lock().unwrap(), now.saturating_sub(intended));
    }

    /// Everything sent has been acked and delivered everywhere.
    pub fn drained(&self) -> bool {
        let sent = self.sent.load(Ordering::Relaxed);
        self.acked.load(Ordering::Relaxed) >= sent && self.completed.load(Ordering::Relaxed) >= sent
    }

    pub fn snapshot(&self, m: &Mutex<Histogram<u64>>) -> Histogram<u64> {
        m.lock().unwrap().clone()
    }
}

/// The trackers of all steps of a run, indexed by the step number in each message id.
pub struct Trackers(pub Vec<Tracker>);

impl Handler for Trackers {
    fn push(&self, me: &str, p: &pb::MessagePush, now: Nanos) {
        let Some(m) = &p.message else { return };
        // The sending device gets its own message pushed too; it is not a delivery.
        if m.sender == me {
            return;
        }
        if let Some((step, global, intended)) = parse_msg_id(&m.client_msg_id) {
            if let Some(t) = self.0.get(step) {
                t.deliver(global, intended, now);
            }
        }
    }

    fn send_ack(&self, a: &pb::SendAck, now: Nanos) {
        if let Some((step, _, intended)) = parse_msg_id(&a.client_msg_id) {
            if let Some(t) = self.0.get(step) {
                t.acked(intended, now);
            }
        }
    }
}

/// Where a sender's messages go.
#[derive(Clone)]
pub enum Target {
    Peer(String),
    Conversation(String),
}

/// One sending connection, as the pacer sees it: tern's raw-frame connections and the
/// peers' protocol adapters ([`crate::peers`]) both sit behind it.
pub trait Outbox: Send + Sync {
    /// Queues message `g` of step `step` (intended send time `intended`) for writing.
    /// Never blocks; false when the connection is gone.
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool;
}

/// One sending connection.
pub type SenderRef = Arc<dyn Outbox>;

/// A tern connection: `Send` frames into its writer task.
pub struct TernSender {
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub req: Arc<AtomicU64>,
    pub target: Target,
}

impl Outbox for TernSender {
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool {
        let (conversation, peer) = match &self.target {
            Target::Peer(p) => (String::new(), p.clone()),
            Target::Conversation(c) => (c.clone(), String::new()),
        };
        let frame = encode_frame(&Frame {
            req_id: self.req.fetch_add(1, Ordering::Relaxed),
            body: Some(Body::Send(pb::Send {
                client_msg_id: msg_id(step, g, intended),
                conversation,
                peer,
                body: body.clone(),
                content_type: String::new(),
            })),
        });
        self.tx.send(frame).is_ok()
    }
}

/// Sends a step's messages at their intended times, from one OS thread for all senders.
///
/// Tokio's timer wheel has a 1 ms resolution and rounds up, which would add up to a
/// millisecond to every latency; a plain thread sleeping with `nanosleep` wakes within
/// tens of microseconds. Message `g` of the run goes to sender `g % senders`. When the
/// pacer wakes late it sends every overdue message at once: their latency still counts
/// from their intended times (no coordinated omission), and the lag is recorded.
pub fn pace(
    start: Nanos,
    rate: f64,
    duration: f64,
    senders: Vec<SenderRef>,
    step: usize,
    body: Bytes,
    trackers: Arc<Trackers>,
) {
    let t = &trackers.0[step];
    let n = senders.len() as u64;
    let scheds: Vec<Schedule> = (0..n)
        .map(|i| Schedule::new(start, rate, duration, n, i))
        .collect();
    let total = schedule::total(rate, duration);
    let mut dead = vec![false; senders.len()];
    let mut lag = histogram();
    for g in 0..total {
        let i = (g % n) as usize;
        let (sched, s) = (&scheds[i], &senders[i]);
        let k = g / n;
        let intended = sched.intended(k);
        let mut now = clock::now();
        if now < intended {
            std::thread::sleep(Duration::from_nanos(intended - now));
            now = clock::now();
        }
        if dead[i] {
            continue;
        }
        if !s.send(step, g, intended, &body) {
            // The connection is gone: the rest of this sender's messages are missing.
            dead[i] = true;
            continue;
        }
        t.sent.fetch_add(1, Ordering::Relaxed);
        record_ns(&mut lag, now.saturating_sub(intended));
    }
    t.lag.lock().unwrap().add(&lag).ok();
}

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
            p.metrics_before = crate::server::scrape_metrics();
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
                metrics: match (&self.metrics_before, crate::server::scrape_metrics()) {
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

/// What one open-loop step measured.
pub struct StepOutcome {
    pub rate: f64,
    pub duration: f64,
    pub start: Nanos,
    pub drained: bool,
    pub server: Option<ServerUsage>,
    pub generator_cpu_pct: Option<f64>,
    pub errors: Vec<(String, u64)>,
}

/// Runs one step: every sender on its schedule, then waits (at most `drain`) until
/// every message is acked and delivered, measuring the server from the first intended
/// send time to the end of the drain.
#[allow(clippy::too_many_arguments)]
pub async fn run_step(
    pid: Option<u32>,
    senders: &[SenderRef],
    trackers: &Arc<Trackers>,
    step: usize,
    rate: f64,
    duration: f64,
    drain: Duration,
    body: Bytes,
    stats: &Stats,
) -> StepOutcome {
    let errors_before = stats.snapshot();
    let start = clock::now() + 300_000_000;
    let pacer = {
        let (senders, trackers) = (senders.to_vec(), trackers.clone());
        tokio::task::spawn_blocking(move || {
            pace(start, rate, duration, senders, step, body, trackers)
        })
    };
    tokio::time::sleep_until(clock::instant(start)).await;
    let probe = Probe::start(pid, true);
    let _ = pacer.await;
    let t = &trackers.0[step];
    let deadline = tokio::time::Instant::now() + drain;
    let mut drained = t.drained();
    while !drained && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        drained = t.drained();
    }
    let (server, generator_cpu_pct) = probe.finish();
    StepOutcome {
        rate,
        duration,
        start,
        drained,
        server,
        generator_cpu_pct,
        errors: stats.since(&errors_before),
    }
}

/// Achieved rate: what arrived, over the time from the first intended send to the last
/// arrival (so a server that falls behind shows a lower rate than offered).
pub fn achieved(count: u64, start: Nanos, last: Nanos) -> Option<f64> {
    if count == 0 || last <= start {
        return None;
    }
    Some(count as f64 / clock::secs(last - start))
}

/// Messages a step sends in all.
pub fn step_total(rate: f64, duration: f64) -> u64 {
    schedule::total(rate, duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_member_latency_is_the_slowest_delivery() {
        let t = Tracker::new(2, 3);
        t.sent.store(2, Ordering::Relaxed);
        t.deliver(0, 1_000_000, 3_000_000); // 2 ms
        t.deliver(0, 1_000_000, 9_000_000); // 8 ms
        assert_eq!(t.completed.load(Ordering::Relaxed), 0);
        t.deliver(0, 1_000_000, 5_000_000); // 4 ms: completes, the max is 8 ms
        assert_eq!(t.completed.load(Ordering::Relaxed), 1);
        let last = t.snapshot(&t.last);
        assert_eq!(last.len(), 1);
        // HDR reports the highest value equivalent to 8000 µs at 3 significant digits.
        assert!(last.equivalent(last.max(), 8000), "{}", last.max());
        assert_eq!(t.snapshot(&t.e2e).len(), 3);
        t.deliver(0, 1_000_000, 5_000_000); // a duplicate
        t.deliver(7, 1_000_000, 5_000_000); // unknown message
        assert_eq!(t.extra.load(Ordering::Relaxed), 2);
        assert!(!t.drained());
    }

    #[test]
    fn drained_needs_acks_and_deliveries() {
        let t = Tracker::new(1, 1);
        t.sent.store(1, Ordering::Relaxed);
        t.deliver(0, 0, 10);
        assert!(!t.drained());
        t.acked(0, 10);
        assert!(t.drained());
    }

    #[test]
    fn achieved_rate_counts_the_tail() {
        // 1000 messages offered over 1 s, the last one arriving at 1.25 s.
        assert_eq!(achieved(1000, 0, 1_250_000_000), Some(800.0));
        assert_eq!(achieved(0, 0, 10), None);
    }
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
