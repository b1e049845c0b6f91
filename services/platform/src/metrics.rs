//! Prometheus metrics of one process, served at `/metrics`. Labels are kept
//! to bounded sets (route patterns, not paths; services, not instance ids).

use prometheus::core::{AtomicF64, GenericGaugeVec};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

type GaugeVec = GenericGaugeVec<AtomicF64>;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub events_appended: IntCounterVec,
    pub undecodable_events: IntCounterVec,
    pub outbox_published: IntCounterVec,
    pub outbox_lag_seconds: GaugeVec,
    pub consumer_processed: IntCounterVec,
    pub consumer_lag_seconds: GaugeVec,
    pub rate_limit_decisions: IntCounterVec,
    pub rate_limit_fallback: IntCounter,
    pub rate_limit_redis_up: Gauge,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_attempt_duration: HistogramVec,
    pub webhook_queue_depth: Gauge,
    pub webhook_oldest_pending_seconds: Gauge,
    pub token_group_commit_size: prometheus::Histogram,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

impl Metrics {
    #[allow(clippy::expect_used)] // fixed definitions; a failure is a programming error caught by tests
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_http_request_duration_seconds",
                "HTTP request latency by route pattern",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("metric registered once");
        let webhook_attempt_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "gatehouse_webhook_attempt_duration_seconds",
                    "Webhook delivery attempt latency by outcome",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
                ]),
                &["outcome"],
            )
            .expect("valid metric definition"),
        );
        let token_group_commit_size = register(
            &registry,
            prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "gatehouse_token_group_commit_size",
                    "Tokens committed per client_credentials group-commit transaction",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ]),
            )
            .expect("valid metric definition"),
        );
        Self {
            token_group_commit_size,
            webhook_deliveries: counter(
                &registry,
                "gatehouse_webhook_attempts_total",
                "Webhook delivery attempts by outcome (succeeded, failed_http, failed_network)",
                &["outcome"],
            ),
            webhook_attempt_duration,
            webhook_queue_depth: register(
                &registry,
                Gauge::new(
                    "gatehouse_webhook_queue_depth",
                    "Webhook deliveries pending (due or scheduled), as this process last saw",
                )
                .expect("valid metric definition"),
            ),
            webhook_oldest_pending_seconds: register(
                &registry,
                Gauge::new(
                    "gatehouse_webhook_oldest_pending_seconds",
                    "Age of the oldest pending webhook delivery, as this process last saw",
                )
                .expect("valid metric definition"),
            ),
            http_requests: counter(
                &registry,
                "gatehouse_http_requests_total",
                "HTTP requests by route pattern and status",
                &["method", "route", "status"],
            ),
            http_duration,
            events_appended: counter(
                &registry,
                "gatehouse_events_appended_total",
                "Events appended to a service's event store",
                &["store", "event_type"],
            ),
            undecodable_events: counter(
                &registry,
                "gatehouse_undecodable_events_total",
                "Stored events an aggregate could not read when loading (the command failed)",
                &["store", "event_type"],
            ),
            outbox_published: counter(
                &registry,
                "gatehouse_outbox_published_total",
                "Events the outbox publisher delivered to the bus",
                &["store"],
            ),
            outbox_lag_seconds: gauge(
                &registry,
                "gatehouse_outbox_lag_seconds",
                "Age of the oldest event not yet published (0 when caught up)",
                &["store"],
            ),
            consumer_processed: counter(
                &registry,
                "gatehouse_consumer_events_total",
                "Events seen by a consumer, by outcome (applied, duplicate, undecodable)",
                &["consumer", "outcome"],
            ),
            consumer_lag_seconds: gauge(
                &registry,
                "gatehouse_consumer_lag_seconds",
                "Time between an event being recorded and its consumer applying it",
                &["consumer"],
            ),
            rate_limit_decisions: counter(
                &registry,
                "gatehouse_rate_limit_decisions_total",
                "Backend API rate-limit decisions by instance environment and outcome",
                &["environment", "outcome"],
            ),
            rate_limit_fallback: register(
                &registry,
                IntCounter::new(
                    "gatehouse_rate_limit_fallback_total",
                    "Rate-limit decisions taken by the local limiter because Redis was unavailable",
                )
                .expect("valid metric definition"),
            ),
            rate_limit_redis_up: register(
                &registry,
                Gauge::new(
                    "gatehouse_rate_limit_redis_up",
                    "1 while rate limits are shared through Redis, 0 while this process decides alone",
                )
                .expect("valid metric definition"),
            ),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_families() {
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["GET", "/v1/users", "200"])
            .inc();
        m.events_appended
            .with_label_values(&["authz", "user.created"])
            .inc();
        let text = m.render();
        assert!(text.contains(
            "gatehouse_http_requests_total{method=\"GET\",route=\"/v1/users\",status=\"200\"} 1"
        ));
        assert!(text.contains("gatehouse_events_appended_total"));
    }
}
