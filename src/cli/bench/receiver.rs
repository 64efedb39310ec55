//! The local receiver every webhook of the benchmark posts to: it answers 200 at once, counts
//! arrivals, and while a latency phase records, notes produce → arrival latency against the
//! `sent_at_us` the event carried into the body, in a histogram of fixed size: a run of any
//! length adds nothing to the benchmark's own memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use hdrhistogram::Histogram;

/// What arrived since the last [`Receiver::reset`].
struct Arrivals {
    count: AtomicU64,
    /// Whether latencies are noted: only in latency phases, so that throughput phases do not
    /// spend the receiver's CPU reading bodies.
    recording: AtomicBool,
    /// Latencies in microseconds.
    latencies: Mutex<Histogram<u64>>,
}

/// Latencies from 1 µs to an hour (longer ones count as an hour), to three significant digits:
/// about 200 KB whatever the count.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The latencies recorded in a latency phase.
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn len(&self) -> usize {
        self.0.len() as usize
    }

    /// The latency below which `q` of those recorded lie, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.max() as f64 / 1000.0)
    }
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
        let arrivals = Arc::new(Arrivals {
            count: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            latencies: Mutex::new(histogram()),
        });
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
        latencies.reset();
        self.arrivals.count.store(0, Ordering::Relaxed);
    }

    /// Forgets what arrived so far, and notes latencies from now on.
    pub fn record(&self) {
        self.reset();
        self.arrivals.recording.store(true, Ordering::Relaxed);
    }

    /// The latencies recorded since the last reset.
    pub fn latencies(&self) -> Latencies {
        let latencies = self
            .arrivals
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Latencies(latencies.clone())
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
            .saturating_record(now.saturating_sub(sent).max(1));
    }
    // Counted after its latency is noted: whoever waits for a count reads them all.
    arrivals.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_hold_to_three_digits_and_absurd_latencies_count_as_an_hour() {
        let mut h = histogram();
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let l = Latencies(h.clone());
        let near = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!((got - want).abs() <= want * 0.001, "{got} against {want}");
        };
        near(l.quantile_ms(0.50), 500.0);
        near(l.quantile_ms(0.99), 990.0);
        near(l.quantile_ms(0.999), 999.0);
        near(l.max_ms(), 1000.0);
        assert_eq!(l.len(), 1000);

        h.saturating_record(u64::MAX);
        near(Latencies(h).max_ms(), 3_600_000.0);
        assert_eq!(Latencies(histogram()).quantile_ms(0.5), None);
    }
}
