//! The result of a run: what was measured, the raw limits beside it, Herald ÷ raw, and the
//! machine's load, as one JSON document and as text.

use serde::Serialize;

/// Everything one `herald bench` run measured. Phases a mode skips are `null`.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub herald_version: &'static str,
    pub started_at: String,
    pub machine: Machine,
    pub load: Load,
    pub raw: Raw,
    /// Webhooks to the local receiver, as fast as Herald goes.
    pub webhook: Option<Throughput>,
    /// The `noop` destination: the pipeline alone.
    pub noop: Option<Throughput>,
    /// Produce → delivered at a fixed rate, webhooks.
    pub latency: Option<Latency>,
    /// The same with one workspace's webhook hanging and its backlog queued first.
    pub noisy: Option<Latency>,
    pub ratios: Ratios,
    /// The whole process's highest resident memory over the run (with `--embedded` it holds
    /// the broker's records too).
    pub process_peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and when it ended.
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    /// `embedded` (MockCluster) or the bootstrap servers.
    pub broker: String,
}

/// The load as configured.
#[derive(Debug, Serialize)]
pub struct Load {
    pub events: usize,
    pub workspaces: usize,
    pub fan_out: usize,
    pub partitions: i32,
    pub http_concurrency: usize,
}

/// The machine's own limits for the same work, measured in the same run.
#[derive(Debug, Default, Serialize)]
pub struct Raw {
    /// Records/s the producer took (1,000 in flight), for reference.
    pub produce_events_per_s: Option<f64>,
    /// Records/s of a bare consumer reading the same events with no processing.
    pub consume_records_per_s: Option<f64>,
    /// Requests/s of Herald's HTTP client against the same receiver.
    pub http_requests_per_s: Option<f64>,
    pub http_cpu_s_per_1000_requests: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub events: usize,
    pub deliveries: u64,
    /// From the first routed event to the last (the group join is not counted).
    pub events_per_s: f64,
    /// The in-flight window's mean occupancy while routing (`processor.max_in_flight_events`
    /// is its size).
    pub mean_in_flight_events: f64,
    /// From the first routed event until every delivery was made and its history record
    /// acknowledged.
    pub deliveries_per_s: f64,
    /// CPU seconds of the whole process (processor, receiver, embedded broker) over the phase.
    pub cpu_s_per_1000_deliveries: Option<f64>,
    /// Resident memory: before the processor started, and the highest while it ran.
    pub rss_before_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub rate_events_per_s: f64,
    pub seconds: f64,
    pub expected_deliveries: u64,
    pub measured_deliveries: usize,
    /// From the processor's start until one event of each workspace, produced after any
    /// backlog, was delivered (includes the consumer-group join).
    pub warm_up_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The p99 of each 5 s of arrival time, in order: shows when a phase slowed.
    pub p99_ms_by_5s: Vec<Option<f64>>,
    pub cpu_s_per_1000_deliveries: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Herald ÷ raw limit, and the noisy neighbour's effect.
#[derive(Debug, Default, Serialize)]
pub struct Ratios {
    /// Webhook deliveries/s ÷ raw HTTP requests/s (target ≥ 0.7).
    pub deliveries_vs_raw_http: Option<f64>,
    /// Noop events/s ÷ raw consume records/s (target ≥ 0.5).
    pub noop_events_vs_raw_consume: Option<f64>,
    /// Webhook CPU per delivery ÷ raw HTTP client CPU per request.
    pub cpu_per_delivery_vs_raw_http: Option<f64>,
    /// The other workspaces' p99 with a hanging neighbour ÷ without (target ≤ 2).
    pub noisy_p99_vs_alone: Option<f64>,
}

impl Ratios {
    pub fn of(
        raw: &Raw,
        webhook: Option<&Throughput>,
        noop: Option<&Throughput>,
        alone: Option<&Latency>,
        noisy: Option<&Latency>,
    ) -> Self {
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Self {
            deliveries_vs_raw_http: div(
                webhook.map(|w| w.deliveries_per_s),
                raw.http_requests_per_s,
            ),
            noop_events_vs_raw_consume: div(
                noop.map(|n| n.events_per_s),
                raw.consume_records_per_s,
            ),
            cpu_per_delivery_vs_raw_http: div(
                webhook.and_then(|w| w.cpu_s_per_1000_deliveries),
                raw.http_cpu_s_per_1000_requests,
            ),
            noisy_p99_vs_alone: div(noisy.and_then(|n| n.p99_ms), alone.and_then(|a| a.p99_ms)),
        }
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

impl BenchResult {
    /// The result for people: one line per figure, the ratio to its raw limit beside it.
    pub fn print_text(&self) {
        let m = &self.machine;
        let load = |l: Option<[f64; 3]>| {
            l.map_or("–".into(), |l| {
                format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
            })
        };
        println!(
            "herald bench {}: {} cores, broker {}, load average {} → {}",
            self.herald_version,
            m.cores,
            m.broker,
            load(m.load_average_start),
            load(m.load_average_end)
        );
        let l = &self.load;
        println!(
            "load: {} events, {} workspaces, fan-out {}, {} partitions",
            l.events, l.workspaces, l.fan_out, l.partitions
        );
        println!();
        println!("raw limits");
        println!(
            "  produce                      {:>12} events/s",
            num(self.raw.produce_events_per_s, 0)
        );
        println!(
            "  bare consumer                {:>12} records/s",
            num(self.raw.consume_records_per_s, 0)
        );
        println!(
            "  HTTP client ({:>3} at once)    {:>12} requests/s   {} CPU s / 1000 requests",
            l.http_concurrency,
            num(self.raw.http_requests_per_s, 0),
            num(self.raw.http_cpu_s_per_1000_requests, 3)
        );
        let r = &self.ratios;
        if let Some(w) = &self.webhook {
            println!();
            println!("herald, webhooks");
            println!(
                "  events/s                     {:>12}   (mean in flight {:.0})",
                num(Some(w.events_per_s), 0),
                w.mean_in_flight_events
            );
            println!(
                "  deliveries/s                 {:>12}   ÷ raw HTTP {} (target ≥ 0.70)",
                num(Some(w.deliveries_per_s), 0),
                num(r.deliveries_vs_raw_http, 2)
            );
            println!(
                "  CPU s / 1000 deliveries      {:>12}   ÷ raw HTTP {}",
                num(w.cpu_s_per_1000_deliveries, 3),
                num(r.cpu_per_delivery_vs_raw_http, 2)
            );
            println!(
                "  peak RSS MiB                 {:>12}   (before start {})",
                num(w.peak_rss_mib, 0),
                num(w.rss_before_mib, 0)
            );
        }
        if let Some(n) = &self.noop {
            println!();
            println!("herald, noop destination (the pipeline alone)");
            println!(
                "  events/s                     {:>12}   ÷ raw consume {} (target ≥ 0.50)",
                num(Some(n.events_per_s), 0),
                num(r.noop_events_vs_raw_consume, 2)
            );
            println!(
                "  deliveries/s                 {:>12}   (mean in flight {:.0} events)",
                num(Some(n.deliveries_per_s), 0),
                n.mean_in_flight_events
            );
            println!(
                "  CPU s / 1000 deliveries      {:>12}",
                num(n.cpu_s_per_1000_deliveries, 3)
            );
            println!(
                "  peak RSS MiB                 {:>12}",
                num(n.peak_rss_mib, 0)
            );
        }
        for (name, l) in [
            ("latency", &self.latency),
            ("noisy neighbour (the other workspaces)", &self.noisy),
        ] {
            let Some(l) = l else { continue };
            println!();
            println!(
                "{name}, {} events/s for {:.0} s",
                num(Some(l.rate_events_per_s), 0),
                l.seconds
            );
            println!(
                "  delivered / expected         {:>12}",
                format!("{} / {}", l.measured_deliveries, l.expected_deliveries)
            );
            println!(
                "  warm-up                      {:>12} s",
                num(Some(l.warm_up_s), 1)
            );
            println!(
                "  p50 / p99 / p99.9 / max ms   {:>12}",
                format!(
                    "{} / {} / {} / {}",
                    num(l.p50_ms, 1),
                    num(l.p99_ms, 1),
                    num(l.p999_ms, 1),
                    num(l.max_ms, 1)
                )
            );
            let by_5s: Vec<String> = l.p99_ms_by_5s.iter().map(|p| num(*p, 1)).collect();
            println!("  p99 ms by 5 s                {}", by_5s.join(" "));
            println!(
                "  CPU s / 1000 deliveries      {:>12}",
                num(l.cpu_s_per_1000_deliveries, 3)
            );
        }
        if let Some(ratio) = r.noisy_p99_vs_alone {
            println!("  p99 ÷ alone                  {ratio:>12.2}   (target ≤ 2)");
        }
        println!();
        println!(
            "process peak RSS MiB           {:>12}",
            num(self.process_peak_rss_mib, 0)
        );
    }
}
