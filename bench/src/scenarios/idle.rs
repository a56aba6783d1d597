//! Ramp to N logged-in idle connections (in two halves, reading the server's RSS after
//! each), hold them, and report memory per connection and idle CPU.
//!
//! How the timed connections authenticate is a [`Setup`]: [`ByLogin`] (the password,
//! an argon2id check per connection; every system) or [`ByResume`] (tern: every
//! connection first logs in untimed and is dropped, then all N come back as the SDK does
//! after a network change, with the TLS session ticket of their first connection and a
//! `Resume` with the token of its login; that second ramp is the one timed).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;

use super::{rss_now, run_id, Ctx};
use crate::engine::clock;
use crate::probe::{server, Probe};
use crate::report::{histogram, record_ns, Report};
use crate::systems::{Adapter, Hooks};

/// A system whose devices can come back with a token from an earlier login (tern).
pub trait Resumable: Adapter {
    /// Connection `i` logged in as `user` on `device`, and the token its login gave.
    fn login_for_token(
        &self,
        i: usize,
        user: &str,
        device: &str,
    ) -> impl Future<Output = anyhow::Result<(Self::Conn, String)>>;
    /// Connection `i` again (its TLS session ticket, if any), authenticated by `Resume`
    /// with `token`.
    fn resume(&self, i: usize, token: &str) -> impl Future<Output = anyhow::Result<Self::Conn>>;
}

/// How the timed connections of the idle scenario are made.
pub trait Setup<A: Adapter> {
    /// The `reconnect` parameter of the report.
    fn mode(&self) -> &'static str;
    /// The name of the connect latency.
    fn label(&self, a: &A) -> String;
    /// Untimed work after the baseline and before the timed ramp; a note for the report.
    fn before(
        &mut self,
        a: &A,
        run: &str,
        n: usize,
        dpu: usize,
    ) -> impl Future<Output = anyhow::Result<Option<String>>>;
    /// Timed: connection `i` (user `i / dpu`, device `i % dpu`).
    fn open(
        &self,
        a: &A,
        run: &str,
        i: usize,
        dpu: usize,
    ) -> impl Future<Output = anyhow::Result<A::Conn>>;
}

fn user_of(run: &str, i: usize, dpu: usize) -> (String, String) {
    (format!("{run}-u{}", i / dpu), format!("d{}", i % dpu))
}

/// Every timed connection logs in with the password (today's figures).
pub struct ByLogin;

impl<A: Adapter> Setup<A> for ByLogin {
    fn mode(&self) -> &'static str {
        "login"
    }

    fn label(&self, a: &A) -> String {
        a.connect_label().into()
    }

    async fn before(
        &mut self,
        _: &A,
        _: &str,
        _: usize,
        _: usize,
    ) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    async fn open(&self, a: &A, run: &str, i: usize, dpu: usize) -> anyhow::Result<A::Conn> {
        let (user, device) = user_of(run, i, dpu);
        a.connect(i, &user, &device, &[], Hooks::default()).await
    }
}

/// Every connection logs in once untimed and is dropped; the timed connections resume.
#[derive(Default)]
pub struct ByResume {
    tokens: Vec<String>,
}

impl<A: Resumable> Setup<A> for ByResume {
    fn mode(&self) -> &'static str {
        "resume"
    }

    fn label(&self, _: &A) -> String {
        "connect + TLS handshake (session ticket of the first connection) + Resume (token) per connection"
            .into()
    }

    async fn before(
        &mut self,
        a: &A,
        run: &str,
        n: usize,
        dpu: usize,
    ) -> anyhow::Result<Option<String>> {
        let t0 = clock::now();
        let first: Vec<(A::Conn, String)> = futures_util::stream::iter(0..n)
            .map(|i| async move {
                let (user, device) = user_of(run, i, dpu);
                a.login_for_token(i, &user, &device)
                    .await
                    .context("first login")
            })
            .buffered(a.concurrency())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let login_secs = clock::secs(clock::now() - t0);
        let (conns, tokens): (Vec<_>, Vec<_>) = first.into_iter().unzip();
        self.tokens = tokens;
        // The network change: every socket goes at once (no goodbye); the server has a
        // moment to notice before the reconnects.
        drop(conns);
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!(
            "tern-bench: {n} first logins in {login_secs:.1} s (untimed), all dropped; now all resume"
        );
        Ok(Some(format!(
            "reconnect resume: all {n} connections first logged in with the password ({:.0}/s, not the \
             figure) and were held, then dropped at once; the timed ramp is their reconnect with the TLS \
             session ticket and a Resume with the login's token; rss_before was read before the first logins",
            n as f64 / login_secs.max(1e-9)
        )))
    }

    async fn open(&self, a: &A, _: &str, i: usize, _: usize) -> anyhow::Result<A::Conn> {
        a.resume(i, &self.tokens[i]).await
    }
}

/// TLS-over-TCP handshakes (full, resumed) between two readings of the server's metrics.
fn handshakes(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> (u64, u64) {
    let d = |kind: &str| {
        let k = format!("tern_tls_handshakes_total{{kind=\"{kind}\"}}");
        let v = after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0);
        v.max(0.0) as u64
    };
    (d("full"), d("resumed"))
}

/// Opens connections `range` through `setup`, [`Adapter::concurrency`] at a time; their
/// connect latencies go into `lat`.
async fn ramp<A: Adapter, S: Setup<A>>(
    a: &A,
    setup: &S,
    run: &str,
    range: std::ops::Range<usize>,
    dpu: usize,
    lat: &mut Histogram<u64>,
) -> anyhow::Result<Vec<A::Conn>> {
    let out: Vec<anyhow::Result<(A::Conn, u64)>> = futures_util::stream::iter(range)
        .map(|i| async move {
            let t0 = clock::now();
            let c = setup
                .open(a, run, i, dpu)
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

pub async fn run<A: Adapter, S: Setup<A>>(
    ctx: &Ctx,
    a: &A,
    n: usize,
    hold_secs: f64,
    devices_per_user: usize,
    mut setup: S,
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
    let errors_before = ctx.stats.snapshot();
    let setup_note = setup.before(a, &run, n, dpu).await?;
    // 2. Ramp in two halves, reading RSS after each.
    let mut lat = histogram();
    let half = n / 2;
    let metrics0 = server::scrape_metrics();
    let setup_probe = Probe::start(a.pid(), false);
    let t_a = clock::now();
    let mut conns = ramp(a, &setup, &run, 0..half, dpu, &mut lat).await?;
    let t_b = clock::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_half = rss_now(a.pid());
    let t_c = clock::now();
    conns.extend(ramp(a, &setup, &run, half..n, dpu, &mut lat).await?);
    let t_d = clock::now();
    let (setup_usage, _) = setup_probe.finish();
    let hs = metrics0
        .zip(server::scrape_metrics())
        .map(|(b, e)| handshakes(&b, &e));
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
    r.param("connections", n)
        .param("hold_s", hold_secs)
        .param(
            "heartbeat_s",
            ctx.g
                .heartbeat_secs
                .map(|h| h.to_string())
                .unwrap_or_else(|| a.default_heartbeat().into()),
        )
        .param("reconnect", setup.mode());
    a.idle_params(&mut r, dpu, users);
    ctx.common(a, &mut r);
    r.achieved = Some(n as f64 / ramp_secs.max(1e-9));
    r.latency(&setup.label(a), &lat);
    r.count("connections", n as u64)
        .count("alive_after_hold", alive as u64)
        .count("rss_before_kib", rss0)
        .count("rss_half_kib", rss_half)
        .count("rss_full_kib", rss_full);
    if let Some((full, resumed)) = hs {
        r.count("setup_tls_handshakes_full", full)
            .count("setup_tls_handshakes_resumed", resumed);
    }
    if let Some(u) = &setup_usage {
        r.figure(
            "server CPU per connection setup (timed ramp, incl. the 1 s pause)",
            u.cpu_secs * 1e3 / n as f64,
            "ms",
        );
    }
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
    r.notes.extend(setup_note);
    a.notes(&mut r);
    ctx.print(&r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_counted_by_kind_between_two_readings() {
        let m = |full: f64, resumed: f64| {
            let mut h = HashMap::new();
            h.insert("tern_tls_handshakes_total{kind=\"full\"}".to_string(), full);
            if resumed > 0.0 {
                h.insert(
                    "tern_tls_handshakes_total{kind=\"resumed\"}".to_string(),
                    resumed,
                );
            }
            h.insert("tern_logins_total".to_string(), 9.0);
            h
        };
        assert_eq!(handshakes(&m(100.0, 0.0), &m(103.0, 5000.0)), (3, 5000));
        assert_eq!(handshakes(&m(7.0, 0.0), &m(7.0, 0.0)), (0, 0));
        assert_eq!(handshakes(&HashMap::new(), &HashMap::new()), (0, 0));
    }

    #[test]
    fn connection_i_is_device_i_mod_dpu_of_user_i_div_dpu() {
        assert_eq!(user_of("r", 0, 10), ("r-u0".into(), "d0".into()));
        assert_eq!(user_of("r", 23, 10), ("r-u2".into(), "d3".into()));
    }
}
