//! The load: workspace files with a fan-out of rules, seed-shaped events that carry the time
//! they were produced, and producing them all at once or at a fixed rate.

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::receiver::now_us;

/// The signing secret of the benchmark's webhooks (the receiver does not verify it; Herald
/// signs every request, as it would for a user).
const SECRET: &str = "whsec_aGVyYWxkLWJlbmNoLXNlY3JldA==";

/// The only event name the benchmark's rules match.
const EVENT: &str = "lesson.completed";

/// Where a workspace's rules deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A signed webhook POST to the local receiver.
    Webhook,
    /// The benchmark-only destination that completes at once.
    Noop,
}

impl Target {
    /// The destination `type`, as the deliveries metric labels it.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Noop => "noop",
        }
    }

    pub fn action(self) -> &'static str {
        match self {
            Self::Webhook => "post",
            Self::Noop => "deliver",
        }
    }
}

/// The id of workspace `i`.
pub fn workspace_id(i: usize) -> String {
    format!("bench_{i}")
}

/// The workspace that hangs in the noisy-neighbour scenario.
pub const HANGING_WORKSPACE: &str = "bench_hanging";

/// A workspace file with `fan_out` rules on the event, each on its own connection (so the
/// deliveries of one event run side by side, as to several tools).
pub fn workspace_file(
    id: &str,
    target: Target,
    fan_out: usize,
    base_url: &str,
) -> (String, String) {
    let mut yaml = format!("workspace: {id}\nconnections:\n");
    for c in 0..fan_out {
        let connection = match target {
            Target::Webhook => format!(
                "  - {{ id: c{c}, type: webhook, url: \"{base_url}/hook/{c}\", credentials: {{ secret: \"{SECRET}\" }} }}\n"
            ),
            Target::Noop => {
                format!("  - {{ id: c{c}, type: noop, credentials: {{ token: \"unused\" }} }}\n")
            }
        };
        yaml.push_str(&connection);
    }
    yaml.push_str("rules:\n");
    for c in 0..fan_out {
        yaml.push_str(&format!(
            "  - id: r{c}\n    event: {EVENT}\n    connection: c{c}\n    action: {}\n    with:\n      email: \"{{{{ payload.email }}}}\"\n      lesson: \"{{{{ payload.lesson_title }}}}\"\n      completion: \"{{{{ payload.completion_percentage }}}}\"\n      sent_at_us: \"{{{{ payload.sent_at_us }}}}\"\n",
            target.action()
        ));
    }
    (format!("{id}.yaml"), yaml)
}

/// A workspace whose one webhook hangs until Herald's request timeout.
pub fn hanging_workspace_file(base_url: &str) -> (String, String) {
    let yaml = format!(
        "workspace: {HANGING_WORKSPACE}\nconnections:\n  - {{ id: c0, type: webhook, url: \"{base_url}/hang\", credentials: {{ secret: \"{SECRET}\" }} }}\nrules:\n  - id: r0\n    event: {EVENT}\n    connection: c0\n    action: post\n    with: {{ sent_at_us: \"{{{{ payload.sent_at_us }}}}\" }}\n"
    );
    (format!("{HANGING_WORKSPACE}.yaml"), yaml)
}

/// Event `n` of `workspace`, shaped like the product's `lesson.completed` seed, stamped now.
pub fn event(tag: &str, n: usize, workspace: &str) -> (String, String) {
    let value = format!(
        r#"{{"event":"{EVENT}","event_id":"{tag}_{n}","workspace_id":"{workspace}","resource":"course","payload":{{"student_id":"stu_{n}","email":"s{n}@example.com","lesson_id":"lesson_customer-research","lesson_title":"Customer Research Fundamentals","module_id":"module_growth-foundations","course_id":"course_creator-accelerator","completion_percentage":{},"time_spent_seconds":1840,"completed_at":"2026-03-21T14:18:00Z","sent_at_us":{}}}}}"#,
        n % 100,
        now_us()
    );
    (workspace.to_owned(), value)
}

/// About how many bytes one event takes on the broker (value, key, overhead).
pub const EVENT_BYTES: usize = 520;

/// A producer for the load: no linger, so an event's clock starts when it leaves.
pub fn producer(settings: &crate::settings::Settings) -> anyhow::Result<FutureProducer> {
    let mut config = crate::kafka::producer_config(settings);
    config.set("linger.ms", "0");
    Ok(config.create()?)
}

async fn send(producer: &FutureProducer, topic: &str, (key, value): (String, String)) {
    let record = FutureRecord::to(topic).key(&key).payload(&value);
    if let Err((e, _)) = producer.send(record, Duration::from_secs(30)).await {
        tracing::error!(error = %e, "benchmark event not produced");
    }
}

/// Produces `events` events as fast as the producer takes them, 1,000 in flight; `on_sent`
/// sees the running count.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    events: impl Iterator<Item = (String, String)>,
    on_sent: impl Fn(usize),
) {
    let mut sent = 0;
    futures::stream::iter(events)
        .map(|e| send(producer, topic, e))
        .buffer_unordered(1000)
        .for_each(|()| {
            sent += 1;
            if sent % 1000 == 0 {
                on_sent(sent);
            }
            async {}
        })
        .await;
}

/// Produces `total` events at `rate` per second (in 1 ms steps, each sending what is due), each
/// stamped when it is made; returns once all were acknowledged.
pub async fn produce_at_rate(
    producer: &FutureProducer,
    topic: &str,
    rate: f64,
    total: usize,
    mut event: impl FnMut(usize) -> (String, String),
    on_sent: impl Fn(usize),
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(total);
        while sent < due {
            pending.push(send(producer, topic, event(sent)));
            sent += 1;
        }
        while pending.next().now_or_never().flatten().is_some() {}
        on_sent(sent);
    }
    while pending.next().await.is_some() {}
}
