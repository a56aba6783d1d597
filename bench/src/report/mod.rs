//! Reports: what was run, what was offered and achieved, latency percentiles from HDR
//! histograms, and what the server used. Printed as a human-readable block (and a table
//! for sweeps), or as one JSON object per report. [`compare`] reads those JSON lines
//! back into bench/compare.sh's table.

pub mod compare;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A latency histogram in microseconds, 1 µs .. 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Records a latency in nanoseconds (clamped into the histogram's range).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}

/// p50 / p99 / p99.9 / max of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": ms_f(self.p50),
            "p99_ms": ms_f(self.p99),
            "p999_ms": ms_f(self.p999),
            "max_ms": ms_f(self.max),
        })
    }

    /// `p50 1.234  p99 5.678  p99.9 9.012  max 12.345 ms (n=1000)`
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {} ms  (n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.count
        )
    }
}

fn ms_f(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Microseconds as milliseconds with three decimals (µs resolution, nothing rounded away).
pub fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Rates with one decimal.
pub fn rate(r: f64) -> String {
    format!("{r:.1}")
}

/// What the server used over the measured window.
#[derive(Debug, Clone, Default)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_secs: f64,
    pub wall_secs: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// VmHWM at the end: peak RSS since the reset at the window's start when
    /// `hwm_reset`, else since the server started.
    pub hwm_kib: u64,
    pub hwm_reset: bool,
    /// Highest VmRSS seen by sampling every 100 ms during the window.
    pub rss_sampled_peak_kib: u64,
    pub threads: u64,
    /// The server's own figures over the window (from its `/metrics`); empty for peers.
    pub metrics: Vec<(String, f64)>,
}

impl ServerUsage {
    pub fn cpu_pct(&self) -> f64 {
        crate::probe::procfs::cpu_percent(self.cpu_secs, self.wall_secs)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "pid": self.pid,
            "cpu_secs": round3(self.cpu_secs),
            "wall_secs": round3(self.wall_secs),
            "cpu_pct_of_one_core": round1(self.cpu_pct()),
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "vmhwm_kib": self.hwm_kib,
            "vmhwm_since": if self.hwm_reset { "window start" } else { "server start" },
            "rss_sampled_peak_kib": self.rss_sampled_peak_kib,
            "threads": self.threads,
            "server_metrics": self
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), json!(round3(*v))))
                .collect::<serde_json::Map<String, Value>>(),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "CPU {:.2} s user+sys over {:.2} s = {:.1} % of one core; RSS {} -> {} MiB, \
             peak {} MiB (VmHWM since {}), sampled peak {} MiB; {} threads",
            self.cpu_secs,
            self.wall_secs,
            self.cpu_pct(),
            mib(self.rss_before_kib),
            mib(self.rss_after_kib),
            mib(self.hwm_kib),
            if self.hwm_reset {
                "window start"
            } else {
                "server start"
            },
            mib(self.rss_sampled_peak_kib),
            self.threads
        )
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One named latency distribution of a report.
#[derive(Debug, Clone)]
pub struct Latency {
    pub name: String,
    pub p: Percentiles,
}

/// One report: a scenario run (or one rate of a sweep).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    /// Parameters, in the order given.
    pub params: Vec<(String, String)>,
    /// What the rates count ("msg/s", "deliveries/s", "connections/s", ...).
    pub rate_unit: String,
    pub offered: Option<f64>,
    pub achieved: Option<f64>,
    /// The first entry is the headline latency.
    pub latency: Vec<Latency>,
    pub counts: Vec<(String, u64)>,
    /// Derived figures (name, value, unit).
    pub figures: Vec<(String, f64, String)>,
    pub server: Option<ServerUsage>,
    pub generator_cpu_pct: Option<f64>,
    /// Errors and close reasons seen, by name.
    pub errors: Vec<(String, u64)>,
    pub notes: Vec<String>,
    /// Said instead of the server line when `server` is None.
    pub no_server: Option<String>,
}

impl Report {
    pub fn new(scenario: &str, rate_unit: &str) -> Self {
        Self {
            scenario: scenario.into(),
            rate_unit: rate_unit.into(),
            ..Default::default()
        }
    }

    pub fn param(&mut self, k: &str, v: impl ToString) -> &mut Self {
        self.params.push((k.into(), v.to_string()));
        self
    }

    pub fn latency(&mut self, name: &str, h: &Histogram<u64>) -> &mut Self {
        self.latency.push(Latency {
            name: name.into(),
            p: Percentiles::of(h),
        });
        self
    }

    pub fn count(&mut self, k: &str, v: u64) -> &mut Self {
        self.counts.push((k.into(), v));
        self
    }

    pub fn figure(&mut self, k: &str, v: f64, unit: &str) -> &mut Self {
        self.figures.push((k.into(), v, unit.into()));
        self
    }

    pub fn get_count(&self, k: &str) -> Option<u64> {
        self.counts.iter().find(|(n, _)| n == k).map(|(_, v)| *v)
    }

    pub fn get_figure(&self, k: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _, _)| n == k)
            .map(|(_, v, _)| *v)
    }

    pub fn headline(&self) -> Percentiles {
        self.latency.first().map(|l| l.p).unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        let mut params = serde_json::Map::new();
        for (k, v) in &self.params {
            params.insert(k.clone(), Value::String(v.clone()));
        }
        let mut lat = serde_json::Map::new();
        for l in &self.latency {
            lat.insert(l.name.clone(), l.p.to_json());
        }
        let mut counts = serde_json::Map::new();
        for (k, v) in &self.counts {
            counts.insert(k.clone(), json!(v));
        }
        let mut figures = serde_json::Map::new();
        for (k, v, unit) in &self.figures {
            figures.insert(k.clone(), json!({"value": round3(*v), "unit": unit}));
        }
        let mut errors = serde_json::Map::new();
        for (k, v) in &self.errors {
            errors.insert(k.clone(), json!(v));
        }
        json!({
            "scenario": self.scenario,
            "params": params,
            "rate_unit": self.rate_unit,
            "headline_latency": self.latency.first().map(|l| l.name.clone()),
            "offered_rate": self.offered.map(round1),
            "achieved_rate": self.achieved.map(round1),
            "latency": lat,
            "counts": counts,
            "figures": figures,
            "server": self.server.as_ref().map(|s| s.to_json()),
            "generator_cpu_pct_of_one_core": self.generator_cpu_pct.map(round1),
            "errors": errors,
            "notes": self.notes,
        })
    }

    /// The human-readable block.
    pub fn human(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("== {} ==\n", self.scenario));
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!("parameters: {}\n", params.join(" ")));
        let show = |r: Option<f64>| r.map(rate).unwrap_or_else(|| "n/a".into());
        s.push_str(&format!(
            "offered: {} {u}   achieved: {} {u}\n",
            show(self.offered),
            show(self.achieved),
            u = self.rate_unit
        ));
        for l in &self.latency {
            s.push_str(&format!("latency {}: {}\n", l.name, l.p.line()));
        }
        if !self.counts.is_empty() {
            let c: Vec<String> = self
                .counts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("counts: {}\n", c.join(" ")));
        }
        for (k, v, unit) in &self.figures {
            s.push_str(&format!("{k}: {} {unit}\n", trim_float(*v)));
        }
        match &self.server {
            Some(u) => {
                s.push_str(&format!("server: {}\n", u.line()));
                if !u.metrics.is_empty() {
                    let m: Vec<String> = u
                        .metrics
                        .iter()
                        .map(|(k, v)| format!("{k}={}", trim_float(*v)))
                        .collect();
                    s.push_str(&format!("server metrics: {}\n", m.join(" ")));
                }
            }
            None => s.push_str(&format!(
                "server: {}\n",
                self.no_server.as_deref().unwrap_or("not measured (no pid)")
            )),
        }
        if let Some(g) = self.generator_cpu_pct {
            s.push_str(&format!("generator: CPU {g:.1} % of one core\n"));
        }
        if self.errors.is_empty() {
            s.push_str("errors: none\n");
        } else {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("errors: {}\n", e.join(" ")));
        }
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// A sweep row is sustained when p99 is under the bound and nothing went missing or
/// failed.
pub fn sustained(r: &Report, p99_bound_us: u64) -> bool {
    let p = r.headline();
    p.count > 0
        && p.p99 < p99_bound_us
        && r.get_count("missing").unwrap_or(0) == 0
        && r.errors.is_empty()
}

/// The highest offered rate among the sustained rows.
pub fn peak_sustained(rows: &[Report], p99_bound_us: u64) -> Option<&Report> {
    rows.iter()
        .filter(|r| sustained(r, p99_bound_us))
        .max_by(|a, b| {
            a.offered
                .unwrap_or(0.0)
                .total_cmp(&b.offered.unwrap_or(0.0))
        })
}

/// One table row per rate.
pub fn sweep_table(rows: &[Report]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8}\n",
        "offered/s",
        "achieved/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "missing",
        "errors",
        "srv CPU%",
        "srv RSS",
        "gen CPU%"
    ));
    for r in rows {
        let p = r.headline();
        let errs: u64 = r.errors.iter().map(|(_, v)| v).sum();
        s.push_str(&format!(
            "{:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8}\n",
            r.offered.map(rate).unwrap_or_default(),
            r.achieved.map(rate).unwrap_or_default(),
            ms(p.p50),
            ms(p.p99),
            ms(p.p999),
            ms(p.max),
            r.get_count("missing").unwrap_or(0),
            errs,
            r.server
                .as_ref()
                .map(|u| format!("{:.1}", u.cpu_pct()))
                .unwrap_or_else(|| "-".into()),
            r.server
                .as_ref()
                .map(|u| format!("{}M", mib(u.rss_after_kib)))
                .unwrap_or_else(|| "-".into()),
            r.generator_cpu_pct
                .map(|g| format!("{g:.1}"))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = histogram();
        for v in values_us {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 µs, once each.
        let p = Percentiles::of(&hist(1..=1000));
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500);
        assert_eq!(p.p99, 990);
        assert_eq!(p.p999, 999);
        assert_eq!(p.max, 1000);
        assert_eq!(
            p.line(),
            "p50 0.500  p99 0.990  p99.9 0.999  max 1.000 ms  (n=1000)"
        );
    }

    #[test]
    fn a_tail_shows_in_p99_and_max_only() {
        // 990 fast (1 ms) and 10 slow (250 ms): p99 is at the edge, p99.9 and max slow.
        let p = Percentiles::of(&hist(
            std::iter::repeat_n(1000, 990).chain(std::iter::repeat_n(250_000, 10)),
        ));
        assert_eq!(ms(p.p50), "1.000");
        assert_eq!(ms(p.p99), "1.000");
        // 3 significant digits: 250000 is stored as 250112's bucket, whose highest
        // equivalent value is what HDR reports.
        assert!(p.p999 >= 250_000 && p.p999 < 250_300, "{}", p.p999);
        assert!(p.max >= 250_000 && p.max < 250_300);
    }

    #[test]
    fn empty_histogram_says_so() {
        let p = Percentiles::of(&histogram());
        assert_eq!(p.count, 0);
        assert_eq!(p.line(), "no samples");
    }

    #[test]
    fn ms_formatting_keeps_microseconds() {
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(7), "0.007");
        assert_eq!(ms(12_345), "12.345");
        assert_eq!(ms(3_600_000_000), "3600000.000");
        assert_eq!(mib(1536), "1.5");
    }

    #[test]
    fn record_ns_rounds_down_to_microseconds_and_clamps() {
        let mut h = histogram();
        record_ns(&mut h, 1_999);
        record_ns(&mut h, 10);
        record_ns(&mut h, u64::MAX);
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= 3_600_000_000);
    }

    fn row(offered: f64, p99_us: u64, missing: u64) -> Report {
        let mut r = Report::new("one-to-one", "msg/s");
        r.offered = Some(offered);
        r.achieved = Some(offered);
        r.latency("e2e", &hist([p99_us / 2, p99_us]));
        r.count("missing", missing);
        r
    }

    #[test]
    fn peak_sustained_is_the_highest_rate_under_the_bound() {
        let rows = vec![
            row(1000.0, 2_000, 0),
            row(2000.0, 4_000, 0),
            row(4000.0, 9_000, 0),
            row(8000.0, 40_000, 0),
            row(16000.0, 5_000, 12), // fast but lost messages: not sustained
        ];
        let peak = peak_sustained(&rows, 10_000).unwrap();
        assert_eq!(peak.offered, Some(4000.0));
        assert!(peak_sustained(&rows[3..4], 10_000).is_none());
        let table = sweep_table(&rows);
        assert_eq!(table.lines().count(), 6);
        assert!(table.lines().next().unwrap().contains("p99.9 ms"));
    }

    #[test]
    fn human_and_json_carry_the_same_figures() {
        // 2000 µs is exact in the histogram (values up to 2048 are, with 3 digits).
        let mut r = row(1000.0, 2_000, 0);
        r.param("pairs", 10).param("transport", "tcp");
        r.server = Some(ServerUsage {
            pid: 42,
            cpu_secs: 1.5,
            wall_secs: 3.0,
            rss_before_kib: 10240,
            rss_after_kib: 20480,
            hwm_kib: 30720,
            hwm_reset: true,
            rss_sampled_peak_kib: 20480,
            threads: 5,
            metrics: vec![("sends".into(), 3000.0), ("writes_per_flush".into(), 2.5)],
        });
        r.errors.push(("RATE_LIMITED".into(), 3));
        let h = r.human();
        assert!(h.contains("parameters: pairs=10 transport=tcp"), "{h}");
        assert!(
            h.contains("server metrics: sends=3000 writes_per_flush=2.500"),
            "{h}"
        );
        assert!(
            h.contains("offered: 1000.0 msg/s   achieved: 1000.0 msg/s"),
            "{h}"
        );
        assert!(h.contains("50.0 % of one core"), "{h}");
        assert!(h.contains("RSS 10.0 -> 20.0 MiB, peak 30.0 MiB"), "{h}");
        assert!(h.contains("errors: RATE_LIMITED=3"), "{h}");
        let j = r.to_json();
        assert_eq!(j["scenario"], "one-to-one");
        assert_eq!(j["params"]["pairs"], "10");
        assert_eq!(j["server"]["cpu_pct_of_one_core"], 50.0);
        assert_eq!(j["latency"]["e2e"]["p99_ms"], 2.0);
        assert_eq!(j["errors"]["RATE_LIMITED"], 3);
        // One line per report.
        assert!(!j.to_string().contains('\n'));
    }
}
