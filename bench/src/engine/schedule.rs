//! Open-loop scheduling, without I/O.
//!
//! A run offers `rate` messages per second for `duration`, spread over `senders` senders.
//! Message `k` of sender `i` has an *intended* send time fixed before the run starts:
//!
//! ```text
//! intended(i, k) = start + (k * senders + i) / rate
//! ```
//!
//! so the senders interleave and the whole run is one evenly spaced stream of
//! `1 / rate` gaps. Latency is always measured from the intended time, never from the
//! moment the generator got round to writing the message: a sender that falls behind
//! (a slow server pushing back, a late timer) sends its overdue messages at once and their
//! wait counts in their latency. That is what avoids coordinated omission.

/// Nanoseconds.
pub type Nanos = u64;

/// The schedule of one sender.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Time of the run's first message (offset from the process's time base).
    pub start: Nanos,
    /// Gap between two consecutive messages of the whole run (1 / rate), in ns.
    pub gap: f64,
    /// Messages this sender sends in the run.
    pub count: u64,
    /// This sender's index and the number of senders: it sends the run's messages
    /// `index`, `index + senders`, `index + 2 * senders`, ...
    pub index: u64,
    pub senders: u64,
}

impl Schedule {
    /// The schedule of sender `index` of `senders` offering `rate` msg/s in total for
    /// `duration_secs`.
    pub fn new(start: Nanos, rate: f64, duration_secs: f64, senders: u64, index: u64) -> Self {
        assert!(rate > 0.0 && senders > 0 && index < senders);
        let total = total(rate, duration_secs);
        let count = if index < total {
            (total - index).div_ceil(senders)
        } else {
            0
        };
        Self {
            start,
            gap: 1e9 / rate,
            count,
            index,
            senders,
        }
    }

    /// Intended send time of message `k`.
    pub fn intended(&self, k: u64) -> Nanos {
        self.start + (self.global(k) as f64 * self.gap).round() as u64
    }

    /// The run-wide number of message `k` of this sender: unique in `0..total(..)`, and
    /// in the order of intended times.
    pub fn global(&self, k: u64) -> u64 {
        k * self.senders + self.index
    }
}

/// Messages a run of `rate` msg/s for `duration_secs` sends in all (the sum of the
/// senders' counts, whatever the number of senders): those whose intended time is
/// before the end.
pub fn total(rate: f64, duration_secs: f64) -> u64 {
    // Rounded first so that 0.1 * 30.0 is 3, not 3.0000000000000004 -> 4.
    let x = (rate * duration_secs * 1e6).round() / 1e6;
    if x <= 0.0 {
        0
    } else {
        x.ceil() as u64
    }
}

/// The `client_msg_id` of a benchmark message: step of the run, global message number,
/// and intended send time in microseconds since the time base. Everything a receiver
/// needs to compute the latency is in the id, which the server echoes in the `SendAck`
/// and carries in every push.
pub fn msg_id(step: usize, global: u64, intended: Nanos) -> String {
    format!("{step}.{global}.{}", intended / 1000)
}

/// Parses [`msg_id`]: (step, global number, intended time in ns).
pub fn parse_msg_id(id: &str) -> Option<(usize, u64, Nanos)> {
    let mut it = id.splitn(3, '.');
    let step = it.next()?.parse().ok()?;
    let global = it.next()?.parse().ok()?;
    let us: u64 = it.next()?.parse().ok()?;
    Some((step, global, us * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sender_is_evenly_spaced() {
        let s = Schedule::new(1_000, 1000.0, 2.0, 1, 0);
        assert_eq!(s.count, 2000);
        assert_eq!(total(0.1, 30.0), 3);
        assert_eq!(s.intended(0), 1_000);
        assert_eq!(s.intended(1), 1_000 + 1_000_000);
        assert_eq!(s.intended(1999), 1_000 + 1_999_000_000);
    }

    #[test]
    fn senders_interleave_into_one_stream() {
        let (rate, secs, n) = (300.0, 1.0, 7u64);
        let mut all: Vec<(Nanos, u64)> = Vec::new();
        for i in 0..n {
            let s = Schedule::new(0, rate, secs, n, i);
            for k in 0..s.count {
                all.push((s.intended(k), s.global(k)));
            }
        }
        assert_eq!(all.len() as u64, total(rate, secs));
        all.sort();
        // Global numbers are 0..total in time order, gaps are 1/rate.
        for (j, (t, g)) in all.iter().enumerate() {
            assert_eq!(*g, j as u64);
            let want = (j as f64 * 1e9 / rate).round() as i64;
            assert!((*t as i64 - want).abs() <= 1, "msg {j}: {t} vs {want}");
        }
    }

    #[test]
    fn counts_add_up_for_awkward_rates() {
        for (rate, secs, n) in [
            (10.0, 1.0, 3u64),
            (7.0, 3.0, 4),
            (1.0, 0.5, 5),
            (2500.0, 3.0, 64),
        ] {
            let sum: u64 = (0..n)
                .map(|i| Schedule::new(0, rate, secs, n, i).count)
                .sum();
            assert_eq!(
                sum,
                total(rate, secs),
                "rate {rate} secs {secs} senders {n}"
            );
        }
    }

    #[test]
    fn intended_times_only_move_forward() {
        let n = 5;
        let scheds: Vec<Schedule> = (0..n)
            .map(|i| Schedule::new(500, 333.0, 2.0, n, i))
            .collect();
        let mut prev = 0;
        for g in 0..total(333.0, 2.0) {
            let s = &scheds[(g % n) as usize];
            let t = s.intended(g / n);
            assert_eq!(s.global(g / n), g);
            assert!(t >= prev, "message {g} at {t} before {prev}");
            prev = t;
        }
        assert!(prev < 500 + 2_000_000_000);
    }

    #[test]
    fn msg_ids_round_trip() {
        let id = msg_id(3, 123_456, 9_876_543_210);
        assert_eq!(id, "3.123456.9876543");
        assert_eq!(parse_msg_id(&id), Some((3, 123_456, 9_876_543_000)));
        assert!(id.len() <= 64);
        assert_eq!(parse_msg_id("hello"), None);
        assert_eq!(parse_msg_id("1.2"), None);
    }
}
