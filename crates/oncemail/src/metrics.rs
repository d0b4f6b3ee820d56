//! metrics: counters and histograms for dashboards, in the Prometheus text format.
//!
//! One process-wide registry ([`get`]), declared here with a help string per metric, moved
//! by the stage that knows (receive, queue, deliver) and read by the `/metrics` endpoint.
//! Label values come from small fixed sets only, never from message data.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Relay {
    /// "local" or "remote".
    pub relay: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Scope {
    /// "message", "recipients" or "transid".
    pub scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    /// "active", "deferred" or "held".
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Result {
    /// "ok" or "failed".
    pub result: &'static str,
}

pub struct Metrics {
    pub final_dot_gap: Histogram,
    pub accepted: Counter,
    pub picked_up: Counter,
    pub rejected: Counter,
    pub delivered: Family<Relay, Counter>,
    pub deferred: Family<Relay, Counter>,
    pub possibly_delivered: Counter,
    pub failed: Counter,
    pub bounces: Counter,
    pub double_bounces: Counter,
    pub suppressed: Family<Scope, Counter>,
    pub ended_in_gap: Counter,
    pub queue_messages: Family<State, Gauge>,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub tls_handshakes: Family<Result, Counter>,
    pub auth_attempts: Family<Result, Counter>,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        // 50 µs to ~3 s: the fsync floor is ~0.2 ms; anything past a second is trouble.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(5e-5, 2.0, 17);
        let metrics = Metrics {
            final_dot_gap: Histogram::new(buckets),
            accepted: Counter::default(),
            picked_up: Counter::default(),
            rejected: Counter::default(),
            delivered: Family::default(),
            deferred: Family::default(),
            possibly_delivered: Counter::default(),
            failed: Counter::default(),
            bounces: Counter::default(),
            double_bounces: Counter::default(),
            suppressed: Family::default(),
            ended_in_gap: Counter::default(),
            queue_messages: Family::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            tls_handshakes: Family::default(),
            auth_attempts: Family::default(),
            registry: Registry::with_prefix("oncemail"),
        };
        metrics.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "final_dot_gap_seconds",
            "End of data received to 250 written (the RFC 1047 gap)",
            self.final_dot_gap.clone(),
        );
        r.register(
            "messages_accepted",
            "Messages committed and acknowledged",
            self.accepted.clone(),
        );
        r.register(
            "messages_picked_up",
            "Messages queued from the maildrop (local submission with sendmail)",
            self.picked_up.clone(),
        );
        r.register("replies_rejected", "Error replies sent to clients", self.rejected.clone());
        r.register("recipients_delivered", "Recipients delivered", self.delivered.clone());
        r.register("recipients_deferred", "Delivery attempts deferred", self.deferred.clone());
        r.register(
            "recipients_possibly_delivered",
            "Attempts lost after our final dot, before its reply",
            self.possibly_delivered.clone(),
        );
        r.register("recipients_failed", "Recipients failed for good", self.failed.clone());
        r.register("bounces", "Delivery status notifications queued", self.bounces.clone());
        r.register(
            "double_bounces",
            "Failures of messages from <> (no report sent)",
            self.double_bounces.clone(),
        );
        r.register(
            "duplicates_suppressed",
            "Retries of accepted messages answered 250 and not queued",
            self.suppressed.clone(),
        );
        r.register(
            "sessions_ended_in_gap",
            "Sessions that ended without QUIT right after a 250",
            self.ended_in_gap.clone(),
        );
        r.register("queue_messages", "Messages in the queue by state", self.queue_messages.clone());
        r.register("connections", "SMTP connections open now", self.connections.clone());
        r.register(
            "connections_opened",
            "SMTP connections accepted",
            self.connections_total.clone(),
        );
        r.register("tls_handshakes", "Server TLS handshakes", self.tls_handshakes.clone());
        r.register("auth_attempts", "SMTP AUTH attempts", self.auth_attempts.clone());
        self
    }

    /// The whole registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn queue_gauge(&self, state: &'static str) -> Gauge<i64, std::sync::atomic::AtomicI64> {
        self.queue_messages.get_or_create(&State { state }).clone()
    }
}

/// Counts one event of a labelled counter family.
pub fn inc<L>(family: &Family<L, Counter<u64, AtomicU64>>, labels: L)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    family.get_or_create(&labels).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_encodes_every_metric() {
        let m = get();
        m.accepted.inc();
        m.final_dot_gap.observe(0.0004);
        inc(&m.suppressed, Scope { scope: "message" });
        m.queue_gauge("active").inc();
        let text = m.encode();
        for name in [
            "oncemail_final_dot_gap_seconds_bucket",
            "oncemail_messages_accepted_total",
            "oncemail_duplicates_suppressed_total{scope=\"message\"}",
            "oncemail_queue_messages{state=\"active\"}",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
