//! The open-loop engine shared by the message scenarios (one-to-one, fan-out,
//! durability, the storm's send phase): senders on fixed schedules behind [`Outbox`], a
//! per-run [`Tracker`] that the systems' readers feed, a drain phase, and the [`Stats`]
//! of errors every connection reports into. The resource probe is [`crate::probe`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::clock;
use super::schedule::{self, Nanos, Schedule};
use crate::probe::Probe;
use crate::report::{histogram, record_ns, ServerUsage};

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

impl Trackers {
    /// Message `g` of step `step` reached one recipient.
    pub fn deliver(&self, step: usize, g: u64, intended: Nanos, now: Nanos) {
        if let Some(t) = self.0.get(step) {
            t.deliver(g, intended, now);
        }
    }

    /// The system acknowledged a send of step `step`.
    pub fn ack(&self, step: usize, intended: Nanos, now: Nanos) {
        if let Some(t) = self.0.get(step) {
            t.acked(intended, now);
        }
    }
}

/// One sending connection, as the pacer sees it: every system's adapter
/// ([`crate::systems`]) gives one per (connection, destination).
pub trait Outbox: Send + Sync {
    /// Queues message `g` of step `step` (intended send time `intended`) for writing.
    /// Never blocks; false when the connection is gone.
    fn send(&self, step: usize, g: u64, intended: Nanos, body: &Bytes) -> bool;
}

/// One sending connection.
pub type SenderRef = Arc<dyn Outbox>;

/// Errors and close reasons seen on all connections, by name.
#[derive(Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn add(&self, name: &str) {
        *self.counts.lock().unwrap().entry(name.into()).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// What was added since `before`.
    pub fn since(&self, before: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
        self.snapshot()
            .into_iter()
            .filter_map(|(k, v)| {
                let d = v - before.get(&k).copied().unwrap_or(0);
                (d > 0).then_some((k, d))
            })
            .collect()
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

    #[test]
    fn stats_report_what_changed() {
        let s = Stats::default();
        s.add("EOF");
        let before = s.snapshot();
        s.add("EOF");
        s.add("RATE_LIMITED");
        assert_eq!(
            s.since(&before),
            vec![("EOF".to_string(), 1), ("RATE_LIMITED".to_string(), 1)]
        );
    }
}
