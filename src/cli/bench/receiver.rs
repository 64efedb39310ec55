//! The local receiver every webhook of the benchmark posts to: it answers 200 at once, counts
//! arrivals, and while a latency phase records, notes produce → arrival latency against the
//! `sent_at_us` the event carried into the body.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

/// What arrived since the last [`Receiver::reset`].
#[derive(Default)]
struct Arrivals {
    count: AtomicU64,
    /// Whether latencies are noted: only in latency phases, so that a throughput phase of a
    /// million events does not grow the benchmark's own memory by eight bytes per delivery.
    recording: AtomicBool,
    /// Latencies in microseconds.
    latencies: Mutex<Vec<u64>>,
}

/// A running receiver: `{url}/hook/{n}` records, `{url}/hang` holds each request for ten
/// minutes (the noisy neighbour's endpoint).
pub struct Receiver {
    pub url: String,
    arrivals: Arc<Arrivals>,
}

/// Microseconds since the Unix epoch, the clock both the producer and the receiver read.
pub fn now_us() -> u64 {
    chrono::Utc::now().timestamp_micros().max(0) as u64
}

impl Receiver {
    /// Serves on an ephemeral port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let arrivals = Arc::new(Arrivals::default());
        let app = axum::Router::new()
            .route("/hook/{n}", post(hook))
            .route(
                "/hang",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    "late"
                }),
            )
            .with_state(arrivals.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, arrivals })
    }

    /// Requests recorded since the last reset.
    pub fn arrived(&self) -> u64 {
        self.arrivals.count.load(Ordering::Relaxed)
    }

    /// Forgets what arrived so far, and stops noting latencies.
    pub fn reset(&self) {
        self.arrivals.recording.store(false, Ordering::Relaxed);
        let mut latencies = self
            .arrivals
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *latencies = Vec::new();
        self.arrivals.count.store(0, Ordering::Relaxed);
    }

    /// Forgets what arrived so far, and notes latencies from now on.
    pub fn record(&self) {
        self.reset();
        self.arrivals.recording.store(true, Ordering::Relaxed);
    }

    /// The latencies recorded since the last reset, in microseconds, sorted.
    pub fn latencies(&self) -> Vec<u64> {
        let mut l = self
            .arrivals
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        l.sort_unstable();
        l
    }
}

async fn hook(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> &'static str {
    let now = now_us();
    if !arrivals.recording.load(Ordering::Relaxed) {
        arrivals.count.fetch_add(1, Ordering::Relaxed);
        return "ok";
    }
    // Rendered templates carry the timestamp as a string; the raw client sends a number.
    let sent = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| match &v["sent_at_us"] {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            n => n.as_u64(),
        });
    if let Some(sent) = sent {
        arrivals
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now.saturating_sub(sent));
    }
    // Counted after its latency is noted: whoever waits for a count reads them all.
    arrivals.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}
