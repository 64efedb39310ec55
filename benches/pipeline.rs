//! Throughput of the processor on MockCluster with a local webhook receiver, beside the two raw
//! rates it is later held to: the HTTP client alone against the same receiver, and a bare
//! consumer reading the same topic.
//!
//! `cargo bench --bench pipeline` (HERALD_BENCH_EVENTS, default 20000; HERALD_BENCH_WORKSPACES,
//! default 50). Prints a Markdown table for docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald::app::App;
use herald::kafka::{self, topic_plan};
use herald::settings::Settings;
use herald::settings::interpolate::Vars;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

const SECRET: &str = "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn receiver() -> String {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Requests/s of the shared HTTP client alone, `concurrency` at a time.
async fn raw_http(url: &str, n: usize, concurrency: usize) -> f64 {
    let client = herald::destinations::http::client(true);
    let body = serde_json::to_vec(&serde_json::json!({"type": "bench", "data": {"n": 1}})).unwrap();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| {
            let req = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone());
            async move { req.send().await.unwrap().bytes().await.unwrap() }
        })
        .buffer_unordered(concurrency)
        .for_each(|_| async {})
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Records/s of a bare consumer reading the whole events topic.
fn raw_consume(settings: &Settings, n: usize) -> f64 {
    let consumer: BaseConsumer = kafka::reader_config(settings).create().unwrap();
    let started = Instant::now();
    let mut seen = 0;
    kafka::read_to_end(&consumer, &settings.topics.events, |_| seen += 1).unwrap();
    assert_eq!(seen, n);
    let _ = consumer.unassign();
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let events = env_or("HERALD_BENCH_EVENTS", 20_000);
    let workspaces = env_or("HERALD_BENCH_WORKSPACES", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = receiver().await;
        let mock = MockCluster::new(1).unwrap();
        let mut settings = Settings::defaults();
        settings.kafka.brokers = mock.bootstrap_servers();
        settings.kafka.session_timeout_ms = 6000;
        settings.destinations.allow_private_networks = true;
        settings.log.filter = "warn".into();
        for t in topic_plan(&settings) {
            mock.create_topic(&t.name, t.partitions, 1).unwrap();
        }

        // Workspaces with one webhook rule each, so deliveries = events.
        let files: Vec<(String, String)> = (0..workspaces)
            .map(|i| {
                (
                    format!("ws{i}.yaml"),
                    format!(
                        "workspace: ws_{i}\nconnections:\n  - {{ id: hook, type: webhook, url: \"{url}\", credentials: {{ secret: \"{SECRET}\" }} }}\nrules:\n  - id: r\n    event: lesson.completed\n    connection: hook\n    action: post\n    with: {{ email: \"{{{{ payload.email }}}}\", pct: \"{{{{ payload.completion_percentage }}}}\" }}\n"
                    ),
                )
            })
            .collect();
        let configs = herald::cli::workspace::validate_files(&settings, &files, &Vars::default()).unwrap();
        herald::cli::workspace::publish(&settings, &configs).await.unwrap();

        let producer: FutureProducer = kafka::producer_config(&settings).create().unwrap();
        let started = Instant::now();
        futures::stream::iter(0..events)
            .map(|i| {
                let producer = producer.clone();
                let topic = settings.topics.events.clone();
                async move {
                    let key = format!("ws_{}", i % workspaces);
                    let value = format!(
                        r#"{{"event":"lesson.completed","resource":"course","payload":{{"email":"s{i}@example.com","completion_percentage":{}}}}}"#,
                        i % 100
                    );
                    producer
                        .send(FutureRecord::to(&topic).key(&key).payload(&value), Duration::from_secs(30))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(1000)
            .for_each(|_| async {})
            .await;
        let produce_rate = events as f64 / started.elapsed().as_secs_f64();

        let consume_rate = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || raw_consume(&settings, events)).await.unwrap()
        };
        let http_rate = raw_http(&url, events.min(20_000), 64).await;

        let app = Arc::new(App::start(settings.clone(), Vars::default()).unwrap());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let processor = tokio::spawn({
            let app = app.clone();
            async move { app.run_processor(rx).await.unwrap() }
        });
        let routed = || app.metrics.events.with_label_values(&["routed"]).get() as usize;
        // The clock starts at the first routed event, so the group join is not counted.
        while routed() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let mut last = 0;
        while last < events {
            tokio::time::sleep(Duration::from_millis(5)).await;
            last = routed();
        }
        let elapsed = started.elapsed().as_secs_f64();
        // Events are counted when routed; wait until every delivery was made and its history
        // record acknowledged (nothing in flight).
        let delivered = || app.metrics.deliveries.with_label_values(&["webhook", "post", "delivered"]).get() as usize;
        while delivered() < events || app.metrics.in_flight.get() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = started.elapsed().as_secs_f64();
        let _ = stop.send(true);
        processor.await.unwrap();

        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        println!("| measure | value |");
        println!("|---|---|");
        println!("| machine cores | {cores} |");
        println!("| events (workspaces) | {events} ({workspaces}) |");
        println!("| raw produce, events/s | {produce_rate:.0} |");
        println!("| raw consume (bare consumer), records/s | {consume_rate:.0} |");
        println!("| raw HTTP client, 64 concurrent, requests/s | {http_rate:.0} |");
        println!("| processor, events/s (routed) | {:.0} |", events as f64 / elapsed);
        println!("| processor, deliveries/s (history acknowledged) | {:.0} |", events as f64 / total);
    });
}
