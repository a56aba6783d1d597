//! What the server shows about itself: process-wide counters, gauges and histograms
//! (prometheus-client does the encoding; `http::metrics` serves them).
//!
//! The metrics are process-wide statics so every module can count without threading a
//! handle through; several servers in one process (tests) share them.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabel {
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LoginLabel {
    /// "login" (password) or "resume" (token).
    pub kind: String,
    /// "ok" or "refused".
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RetentionLabel {
    /// "inbox" or "timeline".
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandshakeLabel {
    /// "full" or "resumed" (a TLS session ticket from an earlier connection).
    pub kind: String,
}

/// Every metric the server exports.
pub(crate) struct Metrics {
    pub connections: Family<TransportLabel, Gauge>,
    /// TLS-over-TCP handshakes by kind.
    pub tls_handshakes: Family<HandshakeLabel, Counter>,
    pub logins: Family<LoginLabel, Counter>,
    pub frames_in: Counter,
    pub frames_out: Counter,
    /// Messages stored (new sends).
    pub sends: Counter,
    /// Sends answered from dedup: resends of a client_msg_id the server already has.
    pub dedup_hits: Counter,
    pub pushes: Counter,
    pub acks: Counter,
    pub syncs: Counter,
    pub pulls: Counter,
    pub slow_consumer_disconnects: Counter,
    /// fsync/fdatasync calls that made store flushes durable.
    pub store_fsyncs: Counter,
    /// 1 once a store flush failed: writes are refused until a restart.
    pub store_failed: Gauge,
    pub store_flush_seconds: Histogram,
    pub writes_per_flush: Histogram,
    /// Offline push (docs/PUSH.md): notifications queued (one per message and device).
    pub push_queued: Counter,
    /// Notifications the gateway took.
    pub push_sent: Counter,
    /// Gateway requests that failed (no connection, timeout, error status, garbage).
    pub push_failed: Counter,
    /// Failed requests scheduled again.
    pub push_retried: Counter,
    /// Notifications given up (too old, or refused by the gateway).
    pub push_dropped: Counter,
    /// Pushkeys the gateway rejected (their targets were removed).
    pub push_rejected: Counter,
    /// Pending notifications.
    pub push_queue_depth: Gauge,
    pub push_gateway_seconds: Histogram,
    /// Retention (PROTOCOL.md 8.11): entries trimmed, by kind (inbox, timeline).
    pub retention_trimmed: Family<RetentionLabel, Counter>,
    /// Sync and Pull requests answered CURSOR_TRIMMED.
    pub retention_cursor_trimmed: Counter,
    /// Unix time (seconds) the last complete retention sweep ended (0: none yet).
    pub retention_last_sweep: Gauge,
    /// History search: timeline entries applied to the index.
    pub search_indexed: Counter,
    /// Timeline entries stored but not yet searchable.
    pub search_index_lag: Gauge,
    pub search_seconds: Histogram,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            connections: Family::default(),
            tls_handshakes: Family::default(),
            logins: Family::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            sends: Counter::default(),
            dedup_hits: Counter::default(),
            pushes: Counter::default(),
            acks: Counter::default(),
            syncs: Counter::default(),
            pulls: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            store_fsyncs: Counter::default(),
            store_failed: Gauge::default(),
            // 50 µs .. ~1.6 s
            store_flush_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 16)),
            // 1 .. 4096
            writes_per_flush: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            push_queued: Counter::default(),
            push_sent: Counter::default(),
            push_failed: Counter::default(),
            push_retried: Counter::default(),
            push_dropped: Counter::default(),
            push_rejected: Counter::default(),
            push_queue_depth: Gauge::default(),
            // 1 ms .. ~16 s
            push_gateway_seconds: Histogram::new(exponential_buckets(1e-3, 2.0, 15)),
            retention_trimmed: Family::default(),
            retention_cursor_trimmed: Counter::default(),
            retention_last_sweep: Gauge::default(),
            search_indexed: Counter::default(),
            search_index_lag: Gauge::default(),
            // 100 µs .. ~3 s
            search_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
            registry: Registry::with_prefix("tern"),
        };
        let counters = [
            ("frames_in", "Frames received", &m.frames_in),
            ("frames_out", "Frames queued to clients", &m.frames_out),
            ("sends", "Messages stored (new sends)", &m.sends),
            (
                "dedup_hits",
                "Resends of an already stored client_msg_id, answered with the original ack",
                &m.dedup_hits,
            ),
            (
                "pushes",
                "Message pushes queued to online devices",
                &m.pushes,
            ),
            ("acks", "Cumulative Ack frames received", &m.acks),
            ("syncs", "Sync (inbox catch-up) requests served", &m.syncs),
            ("pulls", "Pull (gap and history) requests served", &m.pulls),
            (
                "slow_consumer_disconnects",
                "Sessions closed because their outbound queue was full",
                &m.slow_consumer_disconnects,
            ),
            (
                "store_fsyncs",
                "fsync/fdatasync calls that made store flushes durable",
                &m.store_fsyncs,
            ),
            (
                "push_queued",
                "Offline push notifications queued (one per message and device)",
                &m.push_queued,
            ),
            (
                "push_sent",
                "Push notifications the gateway took",
                &m.push_sent,
            ),
            (
                "push_failed",
                "Push gateway requests that failed",
                &m.push_failed,
            ),
            (
                "push_retried",
                "Failed push gateway requests scheduled again",
                &m.push_retried,
            ),
            (
                "push_dropped",
                "Push notifications given up (older than push_max_age_secs, or refused)",
                &m.push_dropped,
            ),
            (
                "push_rejected",
                "Pushkeys the gateway rejected (their targets were removed)",
                &m.push_rejected,
            ),
        ];
        let r = &mut m.registry;
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        r.register(
            "search_indexed",
            "Timeline entries applied to the search index (messages, edits, recalls, events)",
            m.search_indexed.clone(),
        );
        r.register(
            "search_index_lag",
            "Timeline entries stored but not yet searchable",
            m.search_index_lag.clone(),
        );
        r.register(
            "search_seconds",
            "Duration of one SearchMessages query (index and store reads)",
            m.search_seconds.clone(),
        );
        r.register(
            "retention_trimmed",
            "Entries deleted by retention, by kind (inbox, timeline)",
            m.retention_trimmed.clone(),
        );
        r.register(
            "retention_cursor_trimmed",
            "Sync and Pull requests answered CURSOR_TRIMMED (a position below what retention kept)",
            m.retention_cursor_trimmed.clone(),
        );
        r.register(
            "retention_last_sweep_timestamp_seconds",
            "Unix time the last complete retention sweep ended (0: none yet)",
            m.retention_last_sweep.clone(),
        );
        r.register(
            "connections",
            "Open connections by transport (quic, tcp, ws)",
            m.connections.clone(),
        );
        r.register("logins", "Logins and resumes by result", m.logins.clone());
        r.register(
            "tls_handshakes",
            "Completed TLS-over-TCP handshakes: full, or resumed with a session ticket",
            m.tls_handshakes.clone(),
        );
        r.register(
            "store_failed",
            "1 once a store flush failed: no write is acknowledged until the server restarts",
            m.store_failed.clone(),
        );
        r.register(
            "store_flush_seconds",
            "Duration of one store flush (group commit)",
            m.store_flush_seconds.clone(),
        );
        r.register(
            "push_queue_depth",
            "Pending push notifications",
            m.push_queue_depth.clone(),
        );
        r.register(
            "push_gateway_seconds",
            "Duration of one push gateway request",
            m.push_gateway_seconds.clone(),
        );
        r.register(
            "writes_per_flush",
            "Acknowledged writes completed by one store flush",
            m.writes_per_flush.clone(),
        );
        m
    }

    /// The metrics as OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn connection_opened(&self, transport: &str) -> ConnectionGauge {
        let g = self
            .connections
            .get_or_create(&TransportLabel {
                transport: transport.to_string(),
            })
            .clone();
        g.inc();
        ConnectionGauge(g)
    }

    pub(crate) fn login(&self, kind: &str, ok: bool) {
        self.logins
            .get_or_create(&LoginLabel {
                kind: kind.to_string(),
                result: if ok { "ok" } else { "refused" }.to_string(),
            })
            .inc();
    }

    pub(crate) fn tls_handshake(&self, resumed: bool) {
        self.tls_handshakes
            .get_or_create(&HandshakeLabel {
                kind: if resumed { "resumed" } else { "full" }.to_string(),
            })
            .inc();
    }

    pub(crate) fn retention_trimmed(&self, kind: &str, n: u64) {
        self.retention_trimmed
            .get_or_create(&RetentionLabel {
                kind: kind.to_string(),
            })
            .inc_by(n);
    }

    pub(crate) fn flushed(&self, took: Duration, writes: usize) {
        self.store_flush_seconds.observe(took.as_secs_f64());
        self.writes_per_flush.observe(writes as f64);
    }
}

/// Decrements the connection gauge when the connection ends.
pub(crate) struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub(crate) fn get() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_text() {
        let m = Metrics::new();
        m.sends.inc_by(3);
        m.login("resume", false);
        let _c = m.connection_opened("quic");
        m.flushed(Duration::from_micros(300), 7);
        let text = m.encode();
        assert!(text.contains("tern_sends_total 3"), "{text}");
        assert!(
            text.contains("tern_logins_total{kind=\"resume\",result=\"refused\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tern_connections{transport=\"quic\"} 1"),
            "{text}"
        );
        assert!(text.contains("tern_writes_per_flush_count 1"), "{text}");
        drop(_c);
        assert!(m
            .encode()
            .contains("tern_connections{transport=\"quic\"} 0"));
    }
}
