//! The local receiver every webhook of the benchmark posts to: it answers 200 at once, counts
//! arrivals, and while a latency phase records, notes produce → arrival latency against the
//! `sent_at_us` the event carried into the body, in a histogram of fixed size, and per
//! [`WINDOW`] of arrival time in a coarser one (about 26 KB per 5 s, at most an hour's): a run
//! adds little to the benchmark's own memory.

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
    /// When recording began (µs since the epoch), and the latencies of each window since.
    started_us: AtomicU64,
    windows: Mutex<Vec<Histogram<u64>>>,
}

/// The span of arrival time each window's p99 covers.
const WINDOW: Duration = Duration::from_secs(5);
/// Windows kept: an hour's; later arrivals count in the last.
const MAX_WINDOWS: usize = 720;

/// Latencies from 1 µs to an hour (longer ones count as an hour), to three significant digits:
/// about 200 KB whatever the count.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A window's latencies, to two significant digits (about 26 KB).
fn window_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// The latencies recorded in a latency phase, in all and per window of arrival time.
pub struct Latencies(Histogram<u64>, Vec<Histogram<u64>>);

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

    /// The p99 of each [`WINDOW`] since recording began, in milliseconds (`None` for a window
    /// in which nothing arrived).
    pub fn p99_ms_by_window(&self) -> Vec<Option<f64>> {
        self.1
            .iter()
            .map(|h| (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0))
            .collect()
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
            started_us: AtomicU64::new(0),
            windows: Mutex::new(Vec::new()),
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
        lock(&self.arrivals.latencies).reset();
        lock(&self.arrivals.windows).clear();
        self.arrivals.started_us.store(now_us(), Ordering::Relaxed);
        self.arrivals.count.store(0, Ordering::Relaxed);
    }

    /// Forgets what arrived so far, and notes latencies from now on.
    pub fn record(&self) {
        self.reset();
        self.arrivals.recording.store(true, Ordering::Relaxed);
    }

    /// The latencies recorded since the last reset.
    pub fn latencies(&self) -> Latencies {
        let all = lock(&self.arrivals.latencies).clone();
        Latencies(all, lock(&self.arrivals.windows).clone())
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
        let latency = now.saturating_sub(sent).max(1);
        lock(&arrivals.latencies).saturating_record(latency);
        let since = now.saturating_sub(arrivals.started_us.load(Ordering::Relaxed));
        let window = ((since / WINDOW.as_micros() as u64) as usize).min(MAX_WINDOWS - 1);
        let mut windows = lock(&arrivals.windows);
        if windows.len() <= window {
            windows.resize_with(window + 1, window_histogram);
        }
        windows[window].saturating_record(latency);
    }
    // Counted after its latency is noted: whoever waits for a count reads them all.
    arrivals.count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let l = Latencies(h.clone(), Vec::new());
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
        near(Latencies(h, Vec::new()).max_ms(), 3_600_000.0);
        assert_eq!(Latencies(histogram(), Vec::new()).quantile_ms(0.5), None);
    }

    #[tokio::test]
    async fn each_arrival_counts_in_the_window_of_its_time_and_the_windows_are_bounded() {
        let arrivals = Arc::new(Arrivals {
            count: AtomicU64::new(0),
            recording: AtomicBool::new(true),
            latencies: Mutex::new(histogram()),
            started_us: AtomicU64::new(now_us() - 12_000_000),
            windows: Mutex::new(Vec::new()),
        });
        let arrive = |sent: u64| {
            let body = Bytes::from(format!(r#"{{"sent_at_us":"{sent}"}}"#));
            hook(State(arrivals.clone()), body)
        };
        arrive(now_us() - 3_000).await;
        let windows = Latencies(histogram(), lock(&arrivals.windows).clone()).p99_ms_by_window();
        assert_eq!(windows.len(), 3, "12 s after the start is the third window");
        assert_eq!(windows[..2], [None, None]);
        let p99 = windows[2].unwrap();
        assert!((3.0..4.0).contains(&p99), "{p99} ms");
        // Two hours in: the last window of the hour kept.
        arrivals
            .started_us
            .store(now_us() - 7_200_000_000, Ordering::Relaxed);
        arrive(now_us() - 1_000).await;
        assert_eq!(lock(&arrivals.windows).len(), MAX_WINDOWS);
    }
}
