//! Logs and metrics. Metric names follow `herald_<noun>_<unit>`; labels never carry a
//! workspace id, an email or a URL.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::settings::{LogFormat, LogSettings};

/// Installs the global tracing subscriber (text or JSON lines on stderr).
pub fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second install (tests) keeps the first subscriber.
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The processor's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Input records by outcome: `routed`, `skipped`, `dead_lettered`.
    pub events: IntCounterVec,
    /// Delivery attempts by destination type, action and outcome kind.
    pub deliveries: IntCounterVec,
    /// Duration of one destination call.
    pub attempt_latency: HistogramVec,
    /// Events being processed.
    pub in_flight: IntGauge,
    /// Workspaces in the table.
    pub workspaces: IntGauge,
    /// Connections marked broken (bad credentials) and not called until re-applied.
    pub broken_connections: IntGauge,
    /// From the event's `occurred_at` (or arrival) to its delivery, retries included.
    pub end_to_end_latency: HistogramVec,
    /// Records written to the dead-letter topic, by kind.
    pub dlq_records: IntCounterVec,
    /// Produces that failed, by topic kind (`history`, `retry`, `dlq`) and reason
    /// (`transient`, `too_large`, `permanent`).
    pub produce_failures: IntCounterVec,
    /// Deliveries that waited because the destination rate-limited.
    pub rate_limit_waits: IntCounterVec,
    /// Records between the group's position and the partition end, per owned partition.
    pub consumer_lag: IntGaugeVec,
    /// Deliveries waiting in each retry tier.
    pub retry_waiting: IntGaugeVec,
    /// Age of the oldest delivery held waiting in each retry tier.
    pub retry_oldest_age: GaugeVec,
    /// Deliveries sent to a retry tier without a call, by reason (`circuit_open`,
    /// `connection_backlog_full`).
    pub deferred: IntCounterVec,
    /// Connections whose circuit breaker is open or half-open.
    pub open_circuits: IntGauge,
    /// Panics caught while processing an input record or a delivery.
    pub panics: IntCounter,
    /// Workspaces whose newest config this replica rejected.
    pub rejected_configs: IntGauge,
    /// Owned partitions running with a partly loaded dedupe set.
    pub dedupe_degraded: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("herald_events_total", "Input records consumed, by outcome."),
            &["outcome"],
        )
        .expect("valid metric");
        let deliveries = IntCounterVec::new(
            Opts::new(
                "herald_deliveries_total",
                "Delivery attempts, by destination type, action and outcome (already_delivered: skipped by dedupe).",
            ),
            &["destination", "action", "outcome"],
        )
        .expect("valid metric");
        let attempt_latency = HistogramVec::new(
            HistogramOpts::new(
                "herald_delivery_attempt_latency_seconds",
                "Duration of one destination call.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["destination"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("herald_in_flight_events", "Events being processed.")
            .expect("valid metric");
        let workspaces =
            IntGauge::new("herald_workspaces", "Workspaces in the table.").expect("valid metric");
        let broken_connections = IntGauge::new(
            "herald_broken_connections",
            "Connections marked broken (bad credentials), not called until their workspace is applied again.",
        )
        .expect("valid metric");
        let end_to_end_latency = HistogramVec::new(
            HistogramOpts::new(
                "herald_delivery_end_to_end_latency_seconds",
                "From the event's occurred_at (or its arrival) to its delivery, retries included.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
            ]),
            &["destination"],
        )
        .expect("valid metric");
        let dlq_records = IntCounterVec::new(
            Opts::new(
                "herald_dlq_records_total",
                "Records written to the dead-letter topic, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let produce_failures = IntCounterVec::new(
            Opts::new(
                "herald_produce_failures_total",
                "Produces that failed, by topic kind and reason (transient: produced again; too_large: written as a truncated stub; permanent: the process stops).",
            ),
            &["topic_kind", "reason"],
        )
        .expect("valid metric");
        // Every series exists from the start at 0, so an alert on `permanent` sees its rise.
        for kind in ["history", "retry", "dlq"] {
            for reason in ["transient", "too_large", "permanent"] {
                produce_failures.with_label_values(&[kind, reason]);
            }
        }
        let rate_limit_waits = IntCounterVec::new(
            Opts::new(
                "herald_rate_limit_waits_total",
                "Deliveries that waited because the destination rate-limited them.",
            ),
            &["destination"],
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "herald_consumer_lag",
                "Records between the group's position and the end of each owned partition.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let retry_waiting = IntGaugeVec::new(
            Opts::new(
                "herald_retry_waiting_records",
                "Deliveries waiting in each retry tier.",
            ),
            &["tier"],
        )
        .expect("valid metric");
        let retry_oldest_age = GaugeVec::new(
            Opts::new(
                "herald_retry_oldest_age_seconds",
                "Age of the oldest delivery held waiting in each retry tier.",
            ),
            &["tier"],
        )
        .expect("valid metric");
        let deferred = IntCounterVec::new(
            Opts::new(
                "herald_deliveries_deferred_total",
                "Deliveries sent to a retry tier without a call, by reason (circuit_open, connection_backlog_full).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // Exported at 0 from the start, so alerts and dashboards see the series before the
        // first deferral.
        for reason in ["circuit_open", "connection_backlog_full"] {
            deferred.with_label_values(&[reason]);
        }
        let open_circuits = IntGauge::new(
            "herald_open_circuits",
            "Connections whose circuit breaker is open: their deliveries wait in retry tiers without a call.",
        )
        .expect("valid metric");
        let panics = IntCounter::new(
            "herald_panics_total",
            "Panics caught while processing an input record or a delivery (each is a bug; the record or delivery went to the dead-letter topic).",
        )
        .expect("valid metric");
        let rejected_configs = IntGauge::new(
            "herald_workspace_configs_rejected",
            "Workspaces whose newest config does not compile on this replica (e.g. a missing variable): the last good version runs, or without one their events are skipped.",
        )
        .expect("valid metric");
        let dedupe_degraded = IntGauge::new(
            "herald_dedupe_degraded_partitions",
            "Owned partitions whose events went ahead before their delivery history loaded (the wait timed out): dedupe checks only the part loaded so far.",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "herald_build_info",
                "Always 1; the label carries Herald's version.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Names are unique within this fresh registry, so registering cannot fail.
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(deliveries.clone()),
            Box::new(attempt_latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(workspaces.clone()),
            Box::new(broken_connections.clone()),
            Box::new(end_to_end_latency.clone()),
            Box::new(dlq_records.clone()),
            Box::new(produce_failures.clone()),
            Box::new(rate_limit_waits.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(retry_waiting.clone()),
            Box::new(retry_oldest_age.clone()),
            Box::new(deferred.clone()),
            Box::new(open_circuits.clone()),
            Box::new(panics.clone()),
            Box::new(rejected_configs.clone()),
            Box::new(dedupe_degraded.clone()),
            Box::new(build_info),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            events,
            deliveries,
            attempt_latency,
            in_flight,
            workspaces,
            broken_connections,
            end_to_end_latency,
            dlq_records,
            produce_failures,
            rate_limit_waits,
            consumer_lag,
            retry_waiting,
            retry_oldest_age,
            deferred,
            open_circuits,
            panics,
            rejected_configs,
            dedupe_degraded,
        }
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
