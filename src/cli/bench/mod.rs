//! `herald bench`: Herald's throughput, latency and cost on this machine, beside the machine's
//! own limits for the same work, measured in one run against the same broker and the same
//! local receiver.
//!
//! Phases, each on topics of its own (see [`phase`]):
//! 1. raw limits: N events produced, read back by a bare consumer; Herald's HTTP client alone
//!    against the receiver;
//! 2. Herald on those events, webhooks with fan-out F to the receiver, as fast as it goes;
//! 3. the same load to the `noop` destination (the pipeline without HTTP);
//! 4. latency: events at a fixed rate (half of phase 2's, or `--rate`), produce → arrival at
//!    the receiver;
//! 5. with `--noisy`, phase 4 again while one more workspace's webhook hangs with a backlog.
//!
//! The processor, the receiver and the load share this process, so CPU and memory figures are
//! the whole process's; with `--embedded` the broker runs in a child process ([`broker`]) and
//! is not counted.

mod broker;
mod load;
mod phase;
mod process;
mod receiver;
mod result;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};

use self::load::Target;
use self::phase::{Cluster, Running};
use self::receiver::Receiver;
use self::result::{BenchResult, Latency, Load, Machine, Ratios, Raw, Throughput};
use super::output::{Output, Progress};
use crate::settings::Settings;

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("broker")
        .required(true)
        .args(["embedded", "brokers", "serve_mock_broker"])
))]
pub struct BenchArgs {
    /// Run against an embedded broker (librdkafka's MockCluster, in a child process).
    #[arg(long)]
    embedded: bool,
    /// The embedded broker's own process (started by `--embedded`).
    #[arg(long, hide = true)]
    serve_mock_broker: bool,
    /// Run against these bootstrap servers; topics named `herald-bench.<run>.…` are created.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Events per throughput phase.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Workspaces the events are spread over.
    #[arg(long, default_value_t = 100)]
    workspaces: usize,
    /// Rules (each on its own connection) per workspace matching every event.
    #[arg(long, default_value_t = 4)]
    fan_out: usize,
    /// Fixed-rate mode: measure latency at this many events/s only (no throughput phases).
    #[arg(long, value_name = "EVENTS_PER_S")]
    rate: Option<f64>,
    /// How long the latency phases produce.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Noisy-neighbour mode: also measure latency while one more workspace's webhook hangs
    /// until its timeout, with this many of its events queued first.
    #[arg(long, value_name = "QUEUED", num_args = 0..=1, default_missing_value = "3000")]
    noisy: Option<usize>,
    /// Partitions of the events topic (default: `topics.partitions`; with --embedded, enough
    /// that the mock broker, which keeps at most 5 MiB per partition, loses nothing).
    #[arg(long)]
    partitions: Option<i32>,
    /// Requests in flight at once when measuring the raw HTTP client.
    #[arg(long, default_value_t = 64)]
    http_concurrency: usize,
    /// Where to write the JSON result.
    #[arg(long, value_name = "FILE", default_value = "herald-bench.json")]
    result: std::path::PathBuf,
}

/// Runs the benchmark, prints the result and writes it to `--result`.
pub fn run(
    mut settings: Settings,
    args: BenchArgs,
    runtime: &tokio::runtime::Runtime,
    output: Output,
) -> anyhow::Result<()> {
    if args.serve_mock_broker {
        return broker::serve();
    }
    if args.events == 0 || args.workspaces == 0 || args.fan_out == 0 {
        bail!("--events, --workspaces and --fan-out must be at least 1");
    }
    crate::destinations::noop::enable_for_benchmark();
    settings.destinations.allow_private_networks = true;
    settings.history.store_path.clear();
    // Hanging deliveries are abandoned when a phase ends, not waited for.
    settings.processor.shutdown_timeout_ms = 1000;
    let mock;
    let cluster = match &args.brokers {
        Some(brokers) => {
            settings.kafka.brokers = brokers.clone();
            Cluster::Brokers
        }
        None => {
            mock = broker::EmbeddedBroker::start()?;
            settings.kafka.brokers = mock.bootstrap_servers().to_owned();
            settings.kafka.session_timeout_ms = 6000;
            Cluster::Embedded(&mock)
        }
    };
    settings.topics.partitions = args.partitions.unwrap_or(match cluster {
        Cluster::Brokers => settings.topics.partitions,
        Cluster::Embedded(_) => {
            let needed = (args.events * load::EVENT_BYTES).div_ceil(2 << 20) as i32;
            settings.topics.partitions.max(needed)
        }
    });
    let result = runtime.block_on(measure(&cluster, &settings, &args))?;
    let json = serde_json::to_string_pretty(&result)?;
    std::fs::write(&args.result, format!("{json}\n"))
        .with_context(|| format!("cannot write {}", args.result.display()))?;
    if output.is_json() {
        println!("{json}");
    } else {
        result.print_text();
        println!("\nresult written to {}", args.result.display());
    }
    // Requests to the hanging webhook are abandoned with the runtime.
    Ok(())
}

async fn measure(
    cluster: &Cluster<'_>,
    settings: &Settings,
    args: &BenchArgs,
) -> anyhow::Result<BenchResult> {
    let started_at = chrono::Utc::now();
    let load_average_start = process::load_average();
    let run = started_at.format("%Y%m%d%H%M%S").to_string();
    let progress = Progress::start("starting the receiver");
    let receiver = Receiver::start().await?;
    let mut raw = Raw::default();
    let (mut webhook, mut noop) = (None, None);
    let rate = match args.rate {
        Some(rate) => rate,
        None => {
            let s = phase::settings_for(settings, &run, "webhook");
            let files = workspace_files(args, Target::Webhook, &receiver.url);
            phase::prepare(cluster, &s, &files).await?;
            raw.produce_events_per_s = Some(produce(&s, args, "w", &progress).await?);
            progress.say("raw limits: a bare consumer reads the events");
            raw.consume_records_per_s = Some(raw_consume(&s, args.events).await?);
            progress.say("raw limits: Herald's HTTP client alone");
            let (http, cpu) = raw_http(&receiver, args).await;
            raw.http_requests_per_s = Some(http);
            raw.http_cpu_s_per_1000_requests = cpu;
            let w = throughput(&s, args, Target::Webhook, &progress).await?;
            let half = w.events_per_s / 2.0;
            webhook = Some(w);

            let s = phase::settings_for(settings, &run, "noop");
            phase::prepare(
                cluster,
                &s,
                &workspace_files(args, Target::Noop, &receiver.url),
            )
            .await?;
            produce(&s, args, "n", &progress).await?;
            noop = Some(throughput(&s, args, Target::Noop, &progress).await?);
            half
        }
    };
    let s = phase::settings_for(settings, &run, "latency");
    let latency = Some(measure_latency(cluster, &s, args, &receiver, rate, 0, &progress).await?);
    let noisy = match args.noisy {
        Some(queued) => {
            let s = phase::settings_for(settings, &run, "noisy");
            Some(measure_latency(cluster, &s, args, &receiver, rate, queued, &progress).await?)
        }
        None => None,
    };
    drop(progress);
    let ratios = Ratios::of(
        &raw,
        webhook.as_ref(),
        noop.as_ref(),
        latency.as_ref(),
        noisy.as_ref(),
    );
    Ok(BenchResult {
        herald_version: env!("CARGO_PKG_VERSION"),
        started_at: started_at.to_rfc3339(),
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average_start,
            load_average_end: process::load_average(),
            broker: match cluster {
                Cluster::Embedded(_) => "embedded".into(),
                Cluster::Brokers => settings.kafka.brokers.clone(),
            },
        },
        load: Load {
            events: args.events,
            workspaces: args.workspaces,
            fan_out: args.fan_out,
            partitions: settings.topics.partitions,
            http_concurrency: args.http_concurrency,
        },
        raw,
        webhook,
        noop,
        latency,
        noisy,
        ratios,
        process_peak_rss_mib: process::peak_rss_mib(),
    })
}

fn workspace_files(args: &BenchArgs, target: Target, base_url: &str) -> Vec<(String, String)> {
    (0..args.workspaces)
        .map(|i| load::workspace_file(&load::workspace_id(i), target, args.fan_out, base_url))
        .collect()
}

/// Produces the phase's N events; returns the producer's rate.
async fn produce(
    settings: &Settings,
    args: &BenchArgs,
    tag: &str,
    progress: &Progress,
) -> anyhow::Result<f64> {
    let producer = load::producer(settings)?;
    let ids: Vec<String> = (0..args.workspaces).map(load::workspace_id).collect();
    let started = Instant::now();
    load::produce_all(
        &producer,
        &settings.topics.events,
        (0..args.events).map(|n| load::event(tag, n, &ids[n % ids.len()])),
        |sent| progress.say(format!("producing {sent} / {} events", args.events)),
    )
    .await;
    Ok(args.events as f64 / started.elapsed().as_secs_f64())
}

/// Records/s of a bare consumer reading the whole events topic, with no processing.
async fn raw_consume(settings: &Settings, events: usize) -> anyhow::Result<f64> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = crate::kafka::reader_config(&settings).create()?;
        let started = Instant::now();
        let mut seen = 0;
        crate::kafka::read_to_end(&consumer, &settings.topics.events, |_| seen += 1)?;
        let elapsed = started.elapsed().as_secs_f64();
        let _ = consumer.unassign();
        if seen < events {
            bail!("the bare consumer read {seen} of {events} events: the broker lost some");
        }
        Ok(seen as f64 / elapsed)
    })
    .await?
}

/// Requests/s of Herald's HTTP client alone against the receiver, `--http-concurrency` at a
/// time, with bodies like the deliveries'; and CPU seconds per 1,000 requests.
async fn raw_http(receiver: &Receiver, args: &BenchArgs) -> (f64, Option<f64>) {
    let n = (args.events * args.fan_out).min(50_000);
    let client = crate::destinations::http::client(true);
    let url = format!("{}/hook/0", receiver.url);
    let cpu = process::cpu_seconds();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let body = serde_json::json!({
                "email": format!("s{i}@example.com"),
                "lesson": "Customer Research Fundamentals",
                "completion": (i % 100).to_string(),
                "sent_at_us": receiver::now_us(),
            });
            let request = client.post(&url).json(&body);
            async move {
                if let Ok(response) = request.send().await {
                    let _ = response.bytes().await;
                }
            }
        })
        .buffer_unordered(args.http_concurrency.max(1))
        .for_each(|()| async {})
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    receiver.reset();
    let cpu = per_1000(cpu, n as u64);
    (n as f64 / elapsed, cpu)
}

/// CPU seconds since `before`, per 1,000 of `count`.
fn per_1000(before: Option<f64>, count: u64) -> Option<f64> {
    let used = process::cpu_seconds()? - before?;
    (count > 0).then(|| used / count as f64 * 1000.0)
}

/// Herald on the phase's N events, as fast as it goes.
async fn throughput(
    settings: &Settings,
    args: &BenchArgs,
    target: Target,
    progress: &Progress,
) -> anyhow::Result<Throughput> {
    let events = args.events as u64;
    let expected = events * args.fan_out as u64;
    let rss_before_mib = process::rss_mib();
    let sampler = process::RssSampler::start();
    progress.say(format!("{}: joining the consumer group", target.kind()));
    let herald = Running::start(settings)?;
    let stall = Duration::from_secs(60);
    phase::wait_until(
        "the processor's first event",
        stall,
        || 0,
        || herald.routed() > 0,
    )
    .await?;
    let started = Instant::now();
    let cpu = process::cpu_seconds();
    let say = |routed: u64, delivered: u64| {
        progress.say(format!(
            "{}: {routed} / {events} events routed, {delivered} / {expected} deliveries",
            target.kind()
        ))
    };
    let delivered = || herald.delivered(target.kind(), target.action());
    // How full the in-flight window was while routing: full means the processor's own work
    // bounds the rate, far from full that its input does.
    let (mut samples, mut in_flight_sum) = (0u64, 0i64);
    phase::wait_until(
        "routing",
        stall,
        || herald.routed(),
        || {
            say(herald.routed(), delivered());
            samples += 1;
            in_flight_sum += herald.in_flight();
            herald.routed() >= events
        },
    )
    .await?;
    let routed_after = started.elapsed().as_secs_f64();
    phase::wait_until("delivering", stall, delivered, || {
        say(events, delivered());
        delivered() >= expected && herald.in_flight() == 0
    })
    .await?;
    let total = started.elapsed().as_secs_f64();
    let cpu = per_1000(cpu, expected);
    let peak_rss_mib = sampler.peak_mib();
    herald.stop().await?;
    Ok(Throughput {
        events: args.events,
        deliveries: expected,
        events_per_s: events as f64 / routed_after,
        mean_in_flight_events: in_flight_sum as f64 / samples.max(1) as f64,
        deliveries_per_s: expected as f64 / total,
        cpu_s_per_1000_deliveries: cpu,
        rss_before_mib,
        peak_rss_mib,
    })
}

/// Produce → delivered latency of webhook deliveries at `rate` events/s; with `hanging` > 0,
/// one more workspace's webhook hangs and that many of its events are queued first.
async fn measure_latency(
    cluster: &Cluster<'_>,
    settings: &Settings,
    args: &BenchArgs,
    receiver: &Receiver,
    rate: f64,
    hanging: usize,
    progress: &Progress,
) -> anyhow::Result<Latency> {
    if rate <= 0.0 {
        bail!("the latency phase needs a rate above 0 events/s");
    }
    let mut files = workspace_files(args, Target::Webhook, &receiver.url);
    if hanging > 0 {
        files.push(load::hanging_workspace_file(&receiver.url));
    }
    phase::prepare(cluster, settings, &files).await?;
    let producer = load::producer(settings)?;
    let topic = &settings.topics.events;
    if hanging > 0 {
        progress.say(format!(
            "noisy neighbour: queueing {hanging} events of the hanging workspace"
        ));
        let events = (0..hanging).map(|n| load::event("h", n, load::HANGING_WORKSPACE));
        load::produce_all(&producer, topic, events, |_| {}).await;
    }
    let ids: Vec<String> = (0..args.workspaces).map(load::workspace_id).collect();
    let fan_out = args.fan_out as u64;
    receiver.reset();
    let warm = Instant::now();
    progress.say("latency: joining the consumer group");
    let herald = Running::start(settings)?;
    let first = ids
        .iter()
        .enumerate()
        .map(|(n, id)| load::event("warm", n, id));
    load::produce_all(&producer, topic, first, |_| {}).await;
    let warm_expected = ids.len() as u64 * fan_out;
    phase::wait_until(
        "warming up",
        Duration::from_secs(120),
        || receiver.arrived(),
        || receiver.arrived() >= warm_expected,
    )
    .await?;
    let warm_up_s = warm.elapsed().as_secs_f64();
    receiver.record();
    let sampler = process::RssSampler::start();
    let cpu = process::cpu_seconds();
    let total = ((rate * args.seconds as f64) as usize).max(1);
    let expected = total as u64 * fan_out;
    load::produce_at_rate(
        &producer,
        topic,
        rate,
        total,
        |n| load::event("l", n, &ids[n % ids.len()]),
        |sent| {
            progress.say(format!(
                "latency at {rate:.0} events/s: {sent} / {total} produced"
            ))
        },
    )
    .await;
    progress.say("latency: waiting for the last deliveries");
    let waited = phase::wait_until(
        "latency",
        Duration::from_secs(30),
        || receiver.arrived(),
        || receiver.arrived() >= expected,
    )
    .await;
    if let Err(e) = waited {
        tracing::warn!(error = %e, "not every delivery arrived; the percentiles cover those that did");
    }
    let cpu = per_1000(cpu, receiver.arrived());
    let peak_rss_mib = sampler.peak_mib();
    let l = receiver.latencies();
    herald.stop().await?;
    Ok(Latency {
        rate_events_per_s: rate,
        seconds: args.seconds as f64,
        expected_deliveries: expected,
        measured_deliveries: l.len(),
        warm_up_s,
        p50_ms: l.quantile_ms(0.50),
        p99_ms: l.quantile_ms(0.99),
        p999_ms: l.quantile_ms(0.999),
        max_ms: l.max_ms(),
        p99_ms_by_5s: l.p99_ms_by_window(),
        cpu_s_per_1000_deliveries: cpu,
        peak_rss_mib,
    })
}
