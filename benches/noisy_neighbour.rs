//! Noisy neighbour: produce → delivered latency of well-behaved workspaces, alone and while one
//! other workspace's webhook hangs with thousands of its events queued ahead of theirs.
//!
//! `cargo bench --bench noisy_neighbour` (HERALD_BENCH_RATE events/s, default 200;
//! HERALD_BENCH_SECONDS, default 30; HERALD_BENCH_QUEUED hanging events, default 3000). Each
//! scenario runs on a fresh MockCluster and processor with default settings; the receiver
//! records the arrival time against the `sent_at` the event carries. Prints a Markdown table
//! for docs/benchmarks.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use herald::app::App;
use herald::kafka::{self, topic_plan};
use herald::settings::Settings;
use herald::settings::interpolate::Vars;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

const SECRET: &str = "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==";
const WORKSPACES: usize = 50;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

type Latencies = Arc<Mutex<Vec<i64>>>;

/// `/hook` records produce → arrival latency; `/hang` holds every request for ten minutes.
async fn receiver(latencies: Latencies) -> String {
    async fn hook(State(l): State<Latencies>, Json(body): Json<serde_json::Value>) -> &'static str {
        let sent = match &body["sent_at"] {
            serde_json::Value::String(s) => s.parse().ok(),
            v => v.as_i64(),
        };
        if let Some(sent) = sent {
            l.lock().unwrap().push(now_ms() - sent);
        }
        "ok"
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .route(
            "/hang",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(600)).await;
                "late"
            }),
        )
        .with_state(latencies);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn workspace(id: &str, url: &str) -> (String, String) {
    (
        format!("{id}.yaml"),
        format!(
            "workspace: {id}\nconnections:\n  - {{ id: hook, type: webhook, url: \"{url}\", credentials: {{ secret: \"{SECRET}\" }} }}\nrules:\n  - id: r\n    event: lesson.completed\n    connection: hook\n    action: post\n    with: {{ sent_at: \"{{{{ payload.sent_at }}}}\" }}\n"
        ),
    )
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, value: String) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(&value),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
}

/// Runs one scenario; returns the well-behaved workspaces' latencies in ms, sorted, how many
/// of their events were produced, and how long after the start their first events (one per
/// workspace, produced behind the hanging backlog) took to be delivered.
async fn scenario(hanging: usize, rate: usize, seconds: usize) -> (Vec<i64>, usize, Duration) {
    let latencies: Latencies = Arc::default();
    let base = receiver(latencies.clone()).await;
    let mock = MockCluster::new(1).unwrap();
    let mut settings = Settings::defaults();
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.session_timeout_ms = 6000;
    settings.destinations.allow_private_networks = true;
    settings.log.filter = "error".into();
    for t in topic_plan(&settings) {
        mock.create_topic(&t.name, t.partitions, 1).unwrap();
    }
    let mut files: Vec<_> = (0..WORKSPACES)
        .map(|i| workspace(&format!("ws_{i}"), &format!("{base}/hook")))
        .collect();
    files.push(workspace("ws_hang", &format!("{base}/hang")));
    let configs =
        herald::cli::workspace::validate_files(&settings, &files, &Vars::default()).unwrap();
    herald::cli::workspace::publish(&settings, &configs)
        .await
        .unwrap();

    let producer: FutureProducer = kafka::producer_config(&settings).create().unwrap();
    let topic = settings.topics.events.clone();
    futures::stream::iter(0..hanging)
        .for_each_concurrent(500, |i| {
            let value = format!(
                r#"{{"event":"lesson.completed","event_id":"hang_{i}","payload":{{"sent_at":{}}}}}"#,
                now_ms()
            );
            let (producer, topic) = (&producer, &topic);
            async move { produce(producer, topic, "ws_hang", value).await }
        })
        .await;

    let app = Arc::new(App::start(settings.clone(), Vars::default()).unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let processor = tokio::spawn({
        let app = app.clone();
        async move { app.run_processor(rx).await.unwrap() }
    });
    // One event per workspace, behind the hanging backlog: once all are delivered, the
    // processor has joined its group and read past the backlog. Then the others produce at a
    // fixed rate, measured.
    let started = Instant::now();
    for i in 0..WORKSPACES {
        let value = format!(
            r#"{{"event":"lesson.completed","event_id":"warm_{i}","payload":{{"sent_at":{}}}}}"#,
            now_ms()
        );
        produce(&producer, &topic, &format!("ws_{i}"), value).await;
    }
    while latencies.lock().unwrap().len() < WORKSPACES {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let warm = started.elapsed();
    latencies.lock().unwrap().clear();
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    let mut sends = futures::stream::FuturesUnordered::new();
    for i in 0..total {
        tick.tick().await;
        let value = format!(
            r#"{{"event":"lesson.completed","event_id":"ok_{i}","payload":{{"sent_at":{}}}}}"#,
            now_ms()
        );
        let key = format!("ws_{}", i % WORKSPACES);
        let (producer, topic) = (producer.clone(), topic.clone());
        sends.push(async move { produce(&producer, &topic, &key, value).await });
        while futures::FutureExt::now_or_never(sends.next())
            .flatten()
            .is_some()
        {}
    }
    while sends.next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(120);
    while latencies.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    processor.abort();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    (l, total, warm)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let rate = env_or("HERALD_BENCH_RATE", 200);
    let seconds = env_or("HERALD_BENCH_SECONDS", 30);
    let queued = env_or("HERALD_BENCH_QUEUED", 3000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("machine cores: {cores}; {WORKSPACES} workspaces at {rate} events/s for {seconds} s");
    println!(
        "| scenario | first events delivered after | delivered / produced | p50 ms | p99 ms | p99.9 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, hanging) in [
        ("alone".to_owned(), 0),
        (
            format!("one workspace's webhook hangs, {queued} of its events queued first"),
            queued,
        ),
    ] {
        let (l, total, warm) = runtime.block_on(scenario(hanging, rate, seconds));
        println!(
            "| {name} | {:.1} s | {} / {total} | {} | {} | {} | {} |",
            warm.as_secs_f64(),
            l.len(),
            percentile(&l, 0.50),
            percentile(&l, 0.99),
            percentile(&l, 0.999),
            l.last().copied().unwrap_or(-1),
        );
    }
    // The hanging requests are abandoned with the runtime.
    runtime.shutdown_background();
}
