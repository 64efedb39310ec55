//! The history query store over a large `herald.deliveries`: time to build it from the topic,
//! query latency for the management API's queries, memory and size on disk.
//!
//! `cargo bench --bench history_store` (HERALD_BENCH_DELIVERIES, default 1,000,000, spread over
//! HERALD_BENCH_WORKSPACES, default 1,000). The records are produced to `herald.deliveries` on a
//! real broker, then the store is built from scratch in a temporary file by the follower that
//! `herald run` uses, until it reports ready; then it is queried and reopened. The broker is a
//! tansu process started by `scripts/tansu.sh` unless HERALD_BENCH_BROKERS names one;
//! HERALD_BENCH_BROKERS=none applies the records in the follower's batches without a broker
//! (MockCluster cannot serve: it keeps at most 5 MiB per partition and drops the oldest records
//! beyond it). RSS is read from /proc. Prints a Markdown table for docs/benchmarks.md.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use herald::history::store::{self, DeliveryQuery, HistoryStore};
use herald::kafka;
use herald::model::records::{Attempt, DeliveryRecord, DeliveryStatus};
use herald::settings::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident and peak resident memory of this process, in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A deterministic spread of statuses, connections and times, with one or two attempts each.
fn record(i: usize, workspaces: usize, start: DateTime<Utc>) -> DeliveryRecord {
    let status = match i % 20 {
        0 => DeliveryStatus::Dead,
        1 => DeliveryStatus::Failed,
        2 | 3 => DeliveryStatus::Retrying,
        _ => DeliveryStatus::Delivered,
    };
    let at = start + chrono::Duration::milliseconds(i as i64 * 37);
    let attempt = |outcome: &str, status_code: u16| Attempt {
        at,
        outcome: outcome.into(),
        status_code: Some(status_code),
        latency_ms: 120,
        error: (status_code >= 400).then(|| "HTTP 503 from the destination: busy".into()),
    };
    let mut attempts = vec![attempt("retry", 503)];
    if status == DeliveryStatus::Delivered {
        attempts.push(attempt("delivered", 200));
    }
    DeliveryRecord {
        delivery_id: format!("dlv_{i:010}"),
        workspace_id: format!("ws_{:05}", i % workspaces),
        event_id: format!("evt_{:010}", i / 3),
        event: ["lesson.completed", "page.completed", "payment.failed"][i % 3].into(),
        rule_id: Some(format!("rule-{}", i % 4)),
        connection_id: Some(["crm", "slack", "hook", "mail"][i % 4].into()),
        destination: Some("webhook".into()),
        action: Some("post".into()),
        status,
        reason: (status != DeliveryStatus::Delivered)
            .then(|| "HTTP 503 from the destination: busy".into()),
        attempts,
        skipped_count: None,
        next_attempt_at: None,
        created_at: at,
        updated_at: at,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Where the records come from.
enum Source {
    /// A tansu process this benchmark started (stopped on drop).
    Tansu(tempfile::TempDir),
    /// Brokers the user named.
    Brokers(String),
    /// No broker: applied in the follower's batches.
    Applied,
}

impl Source {
    fn from_env() -> Self {
        match std::env::var("HERALD_BENCH_BROKERS").ok().as_deref() {
            Some("none") => Source::Applied,
            Some(brokers) => Source::Brokers(brokers.to_owned()),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let out = tansu_script()
                    .arg("start")
                    .arg(dir.path())
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .expect("scripts/tansu.sh runs");
                assert!(out.status.success(), "tansu did not start");
                Source::Tansu(dir)
            }
        }
    }

    fn brokers(&self) -> Option<String> {
        match self {
            Source::Tansu(dir) => Some(
                std::fs::read_to_string(dir.path().join("brokers"))
                    .unwrap()
                    .trim()
                    .to_owned(),
            ),
            Source::Brokers(brokers) => Some(brokers.clone()),
            Source::Applied => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Source::Tansu(_) => "produced to tansu (SQLite storage) and read by the follower",
            Source::Brokers(_) => "produced to the given brokers and read by the follower",
            Source::Applied => "applied in the follower's batches, no broker",
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Tansu(dir) = self {
            let _ = tansu_script().arg("stop").arg(dir.path()).status();
        }
    }
}

fn tansu_script() -> std::process::Command {
    let mut command = std::process::Command::new("bash");
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tansu.sh"));
    command
}

/// Produces the records to the deliveries topic, keyed by delivery id as the history writer
/// keys them; returns the bytes of JSON produced.
fn produce(
    settings: &Settings,
    deliveries: usize,
    workspaces: usize,
    start: DateTime<Utc>,
) -> usize {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        kafka::create_topics(settings).await.unwrap();
        let producer: FutureProducer = kafka::producer_config(settings).create().unwrap();
        let topic = settings.topics.deliveries.as_str();
        let started = Instant::now();
        let bytes = futures::stream::iter(0..deliveries)
            .map(|i| {
                let producer = &producer;
                async move {
                    let r = record(i, workspaces, start);
                    let value = serde_json::to_vec(&r).unwrap();
                    producer
                        .send(
                            FutureRecord::to(topic).key(&r.delivery_id).payload(&value),
                            Duration::from_secs(60),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .unwrap();
                    value.len()
                }
            })
            .buffer_unordered(10_000)
            .fold(0, |sum, len| async move { sum + len })
            .await;
        eprintln!(
            "produced {deliveries} records in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        bytes
    })
}

/// The time a bare consumer (the store's own client settings, no processing) takes to read
/// every record of the deliveries topic: what the broker alone allows.
fn bare_read(settings: &Settings, deliveries: usize) -> Duration {
    let consumer: BaseConsumer = kafka::reader_config(settings).create().unwrap();
    let topic = settings.topics.deliveries.as_str();
    let mut tpl = TopicPartitionList::new();
    for p in 0..kafka::partition_count(&consumer, topic).unwrap() {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut read = 0;
    while read < deliveries {
        match consumer.poll(Duration::from_secs(120)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => panic!("reading the deliveries topic: {e}"),
            None => panic!("no record within 120 s after {read} of {deliveries}"),
        }
    }
    started.elapsed()
}

/// Applies the records as the follower applies what it reads (batches of 2,000, one
/// transaction each, positions included); returns the bytes of JSON applied.
fn apply(
    store: &HistoryStore,
    deliveries: usize,
    workspaces: usize,
    start: DateTime<Utc>,
) -> usize {
    let mut bytes = 0;
    let mut batch = Vec::with_capacity(2_000);
    for i in 0..deliveries {
        let r = record(i, workspaces, start);
        let value = serde_json::to_vec(&r).unwrap();
        bytes += value.len();
        batch.push((
            (i % 6) as i32,
            (i / 6) as i64,
            Some(value),
            r.delivery_id.into_bytes(),
        ));
        if batch.len() == 2_000 {
            store.apply(&batch).unwrap();
            batch.clear();
        }
    }
    store.apply(&batch).unwrap();
    bytes
}

fn main() {
    let deliveries = env_or("HERALD_BENCH_DELIVERIES", 1_000_000);
    let workspaces = env_or("HERALD_BENCH_WORKSPACES", 1_000);
    let source = Source::from_env();
    let mut settings = Settings::defaults();
    settings.log.filter = "warn".into();
    let start = Utc::now() - chrono::Duration::days(30);
    let mut bytes = 0;
    let mut raw = None;
    if let Some(brokers) = source.brokers() {
        settings.kafka.brokers = brokers;
        bytes = produce(&settings, deliveries, workspaces, start);
        raw = Some(bare_read(&settings, deliveries));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let (rss_before, _) = memory_mib();
    let store = Arc::new(HistoryStore::open(&path).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let follower = match source {
        Source::Applied => {
            bytes = apply(&store, deliveries, workspaces, start);
            None
        }
        _ => {
            let follower = store::spawn_follower(&settings, store.clone(), stop.clone()).unwrap();
            while !store.is_ready() {
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(follower)
        }
    };
    let build = started.elapsed();
    let (rss_built, _) = memory_mib();
    eprintln!("store ready in {:.1} s", build.as_secs_f64());

    // The management API's queries, each against a different workspace.
    let mut kinds: Vec<(&str, Vec<Duration>)> = Vec::new();
    let rounds = 2_000;
    let queries: [(&str, &dyn Fn(usize) -> DeliveryQuery); 4] = [
        ("newest 50 of a workspace", &|n| DeliveryQuery {
            workspace_id: format!("ws_{:05}", n % workspaces),
            limit: 50,
            ..Default::default()
        }),
        ("failed or dead of one connection, 50", &|n| DeliveryQuery {
            workspace_id: format!("ws_{:05}", n % workspaces),
            statuses: vec![DeliveryStatus::Failed, DeliveryStatus::Dead],
            connection_id: Some("crm".into()),
            limit: 50,
            ..Default::default()
        }),
        ("one event's deliveries", &|n| {
            let i = (n * 7919) % deliveries;
            DeliveryQuery {
                workspace_id: format!("ws_{:05}", i % workspaces),
                event_id: Some(format!("evt_{:010}", i / 3)),
                limit: 50,
                ..Default::default()
            }
        }),
        ("an event name in a 1-day window, 50", &|n| DeliveryQuery {
            workspace_id: format!("ws_{:05}", n % workspaces),
            event: Some("payment.failed".into()),
            since: Some(start + chrono::Duration::days((n % 20) as i64)),
            until: Some(start + chrono::Duration::days((n % 20) as i64 + 1)),
            limit: 50,
            ..Default::default()
        }),
    ];
    for (name, make) in queries {
        let mut times = Vec::with_capacity(rounds);
        for n in 0..rounds {
            let query = make(n);
            let t = Instant::now();
            let page = store.query(&query).unwrap();
            times.push(t.elapsed());
            std::hint::black_box(page);
        }
        kinds.push((name, times));
    }
    let mut pages = Vec::with_capacity(rounds);
    for n in 0..rounds / 10 {
        // Ten pages deep through one workspace's history.
        let mut query = DeliveryQuery {
            workspace_id: format!("ws_{:05}", n % workspaces),
            limit: 50,
            ..Default::default()
        };
        for _ in 0..10 {
            let t = Instant::now();
            let page = store.query(&query).unwrap();
            pages.push(t.elapsed());
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
    }
    kinds.push(("next page (cursor), up to 10 deep", pages));
    let mut gets = Vec::with_capacity(rounds);
    for n in 0..rounds {
        let i = (n * 104_729) % deliveries;
        let t = Instant::now();
        let one = store
            .get(
                &format!("ws_{:05}", i % workspaces),
                &format!("dlv_{i:010}"),
            )
            .unwrap();
        gets.push(t.elapsed());
        assert!(one.is_some(), "every produced delivery is in the store");
    }
    kinds.push(("one delivery by id", gets));
    let (rss_served, peak) = memory_mib();
    stop.store(true, Ordering::Relaxed);
    if let Some(follower) = follower {
        follower.join().unwrap();
    }
    drop(store);
    let file_mib = std::fs::metadata(&path).map(|m| m.len() >> 20).unwrap_or(0);

    // A restart: the file holds the rows and the positions the follower resumes from.
    let started = Instant::now();
    let store = HistoryStore::open(&path).unwrap();
    let resumed = store.positions().unwrap().len();
    let reopen = started.elapsed();
    let partitions = match source {
        Source::Applied => 6,
        _ => settings.topics.partitions as usize,
    };
    assert_eq!(resumed, partitions, "positions of every partition kept");

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{deliveries} deliveries ({} MiB of JSON records) {}, {workspaces} workspaces, {cores} cores\n",
        bytes >> 20,
        source.describe()
    );
    println!("| figure | value |\n|---|---|");
    println!(
        "| built from scratch until ready | {:.1} s ({:.0} records/s) |",
        build.as_secs_f64(),
        deliveries as f64 / build.as_secs_f64()
    );
    if let Some(raw) = raw {
        println!(
            "| a bare consumer reading the topic (no store) | {:.1} s ({:.0} records/s) |",
            raw.as_secs_f64(),
            deliveries as f64 / raw.as_secs_f64()
        );
    }
    println!(
        "| reopened after a restart, positions read (file kept) | {} ms |",
        reopen.as_millis()
    );
    println!("| store file on disk | {file_mib} MiB |");
    println!(
        "| RSS growth while building | {} MiB |",
        rss_built.saturating_sub(rss_before)
    );
    println!(
        "| RSS growth after {} queries | {} MiB (process peak {peak} MiB) |",
        kinds.iter().map(|(_, t)| t.len()).sum::<usize>(),
        rss_served.saturating_sub(rss_before)
    );
    println!("\n| query | p50 | p99 | max |\n|---|---|---|---|");
    for (name, mut times) in kinds {
        times.sort();
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}
