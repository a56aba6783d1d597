//! The comparison table of `bench/compare.sh`: reads the JSON reports of one run (tern
//! and each peer, every scenario) and prints one row per (scenario, system) with
//! tern's ratio to each peer.
//!
//! Ratios are tern / peer: throughput (achieved rate; above 1 = tern moved more), p99
//! of the headline latency (below 1 = tern faster), and the scenario's key figure (idle:
//! server RSS per connection, storm: time until every device has all it missed; below 1
//! = tern better).

use serde_json::Value;

/// One report, as the table needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub scenario: String,
    pub system: String,
    pub unit: String,
    pub offered: Option<f64>,
    pub achieved: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub cpu: Option<f64>,
    pub rss_mib: Option<f64>,
    /// (value, unit) of the scenario's key figure.
    pub key: Option<(f64, &'static str)>,
    pub missing: Option<u64>,
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

impl Row {
    pub fn from_json(v: &Value) -> Option<Self> {
        let scenario = v["scenario"].as_str()?.to_string();
        let system = v["params"]["system"].as_str().unwrap_or("tern").to_string();
        let lat = v["latency"].as_object();
        // The headline latency: named in the report, else by scenario.
        let head = v["headline_latency"]
            .as_str()
            .and_then(|h| lat.and_then(|l| l.get(h)))
            .or_else(|| {
                lat.and_then(|l| {
                    l.iter()
                        .find(|(k, _)| {
                            k.starts_with("e2e")
                                || k.starts_with("last member")
                                || k.starts_with("device complete")
                                || k.starts_with("connect")
                        })
                        .map(|(_, v)| v)
                })
            });
        let fig = |name: &str| f(&v["figures"][name]["value"]);
        let key = match scenario.as_str() {
            "idle" => fig("server RSS per connection (RSS_after - RSS_before) / N")
                .map(|x| (x, "KiB/conn")),
            "storm" => {
                fig("time until every device has all it missed").map(|x| (x, "s all synced"))
            }
            _ => None,
        };
        let server = &v["server"];
        let rss_kib = if scenario == "storm" {
            f(&server["vmhwm_kib"])
        } else {
            f(&server["rss_after_kib"])
        };
        let missing = match scenario.as_str() {
            "storm" => v["counts"]["devices"]
                .as_u64()
                .zip(v["counts"]["devices_complete"].as_u64())
                .map(|(a, b)| a.saturating_sub(b)),
            _ => v["counts"]["missing"].as_u64(),
        };
        Some(Self {
            scenario,
            system,
            unit: v["rate_unit"].as_str().unwrap_or("").to_string(),
            offered: f(&v["offered_rate"]),
            achieved: f(&v["achieved_rate"]),
            p50: head.and_then(|h| f(&h["p50_ms"])),
            p99: head.and_then(|h| f(&h["p99_ms"])),
            max: head.and_then(|h| f(&h["max_ms"])),
            cpu: f(&server["cpu_pct_of_one_core"]),
            rss_mib: rss_kib.map(|k| k / 1024.0),
            key,
            missing,
        })
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// The table: scenarios in the order first seen; within one, the rows in input order.
/// The baseline of a scenario is its row whose system is exactly "tern"; rows of other
/// systems get ratios to it (other tern variants, e.g. "tern (flush per write)", none).
pub fn table(rows: &[Row]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let head = [
        "scenario",
        "system",
        "unit",
        "offered",
        "achieved",
        "p50 ms",
        "p99 ms",
        "max ms",
        "srv CPU%",
        "srv RSS MiB",
        "key figure",
        "missing",
        "tern thru x",
        "tern p99 x",
        "tern key x",
    ];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for s in scenarios {
        let of: Vec<&Row> = rows.iter().filter(|r| r.scenario == s).collect();
        let base = of.iter().find(|r| r.system == "tern").copied();
        for r in of {
            let peer = !r.system.starts_with("tern");
            let (thru, p99, key) = match (base, peer) {
                (Some(b), true) => (
                    ratio(b.achieved, r.achieved),
                    ratio(b.p99, r.p99),
                    ratio(b.key.map(|k| k.0), r.key.map(|k| k.0)),
                ),
                _ => ("".into(), "".into(), "".into()),
            };
            cells.push(vec![
                r.scenario.clone(),
                r.system.clone(),
                r.unit.clone(),
                opt(r.offered, 0),
                opt(r.achieved, 0),
                opt(r.p50, 2),
                opt(r.p99, 2),
                opt(r.max, 2),
                opt(r.cpu, 1),
                opt(r.rss_mib, 1),
                r.key
                    .map(|(v, u)| format!("{v:.2} {u}"))
                    .unwrap_or_else(|| "-".into()),
                r.missing
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                thru,
                p99,
                key,
            ]);
        }
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c < 3 {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

/// Rows from text holding JSON reports, one per line; other lines are skipped.
pub fn rows_from(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Row::from_json(&v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(system: &str, achieved: f64, p99: f64) -> String {
        serde_json::json!({
            "scenario": "one-to-one",
            "params": {"system": system},
            "rate_unit": "msg/s",
            "offered_rate": 1000.0,
            "achieved_rate": achieved,
            "headline_latency": "e2e",
            "latency": {"e2e": {"p50_ms": 1.0, "p99_ms": p99, "max_ms": 9.0}, "ack": {"p99_ms": 100.0}},
            "counts": {"missing": 0},
            "server": {"cpu_pct_of_one_core": 50.0, "rss_after_kib": 2048},
            "figures": {},
        })
        .to_string()
    }

    #[test]
    fn ratios_are_tern_over_the_peer() {
        let text = [
            "some stderr line".to_string(),
            report("tern", 1000.0, 2.0),
            report("mosquitto 2.0.11", 500.0, 4.0),
        ]
        .join("\n");
        let rows = rows_from(&text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].p99, Some(2.0));
        assert_eq!(rows[0].rss_mib, Some(2.0));
        let t = table(&rows);
        let peer = t.lines().find(|l| l.contains("mosquitto")).unwrap();
        let cols: Vec<&str> = peer.split_whitespace().collect();
        assert_eq!(cols[cols.len() - 3..], ["2.00x", "0.50x", "-"], "{peer}");
        let tern = t
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("tern"))
            .unwrap();
        assert!(!tern.contains("x"), "{tern}");
    }
}
