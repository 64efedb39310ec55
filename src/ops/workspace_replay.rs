//! Targeted replay: re-process one workspace's events from a time window, without touching any
//! consumer group's offsets or other workspaces. The events are read straight from
//! `herald.events` (offsets found by timestamp), routed with the workspace's current rules, and
//! their outcomes recorded in history like any other. Dedupe skips deliveries whose latest
//! history record says `delivered`, unless forced.

use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::deliver::breaker::{BreakerSettings, Breakers};
use crate::deliver::dedupe::Dedupe;
use crate::deliver::route::{RouteOptions, Routed, Router};
use crate::deliver::supersede::LastWrites;
use crate::history::skips::SkipSummaries;
use crate::ingest::{Decoder, DecoderSetupError, RawRecord, headers_of};
use crate::kafka;
use crate::kafka::by_time::offset_for_time;
use crate::model::records::EventEnvelope;
use crate::settings::Settings;

/// History records of a window's deliveries are read from this long before the window, for
/// clock differences between the producers of events and of history.
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What to replay.
#[derive(Debug, Clone)]
pub struct Window {
    pub workspace_id: String,
    pub since: DateTime<Utc>,
    /// Exclusive; `None` is up to the end of the topic now.
    pub until: Option<DateTime<Utc>>,
    pub rule: Option<String>,
    pub force: bool,
}

/// What a targeted replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records read in the window, all workspaces.
    pub scanned: usize,
    /// Events of the workspace replayed.
    pub events: usize,
    /// Records of the window that could not be decoded (left alone; they are in the DLQ).
    pub undecodable: usize,
    pub routed: Routed,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetedError {
    #[error("--until ({until}) must be after --since ({since})")]
    InvertedWindow {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Input(#[from] DecoderSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

/// Checks the window before anything is read or changed.
pub fn check(window: &Window) -> Result<(), TargetedError> {
    match window.until {
        Some(until) if until <= window.since => Err(TargetedError::InvertedWindow {
            since: window.since,
            until,
        }),
        _ => Ok(()),
    }
}

/// What [`replay`] would do, without routing anything: the window read and the workspace's
/// events counted (`report.events`); nothing is sent or recorded.
pub async fn plan(settings: &Settings, window: &Window) -> Result<Report, TargetedError> {
    check(window)?;
    let settings = settings.clone();
    let window = window.clone();
    let (events, mut report) =
        tokio::task::spawn_blocking(move || read_window(&settings, &window)).await??;
    report.events = events.len();
    Ok(report)
}

/// Replays `window` through `router` (whose workspace table is loaded).
pub async fn replay(
    settings: &Settings,
    router: &Router,
    window: &Window,
) -> Result<Report, TargetedError> {
    check(window)?;
    let (events, mut report) = {
        let settings = settings.clone();
        let window = window.clone();
        tokio::task::spawn_blocking(move || read_window(&settings, &window)).await??
    };
    if let Some(dedupe) = router.dedupe.as_ref().filter(|_| !window.force) {
        let mut partitions: Vec<i32> = events.iter().map(|(p, _)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        dedupe.assign_from(&partitions, window.since - CLOCK_MARGIN);
    }
    // One after another, in offset order: a workspace's events keep their order.
    for (partition, envelope) in &events {
        let options = RouteOptions {
            partition: Some(*partition),
            // Unknown here, so a replayed event's writes are not ordered against others.
            offset: None,
            force: window.force,
            rule: window.rule.as_deref(),
        };
        let routed = router.route(envelope, options).await;
        report.routed.settled += routed.settled;
        report.routed.already_delivered += routed.already_delivered;
        report.events += 1;
    }
    Ok(report)
}

/// Replays `window` beside a running processor (the API's replay): with the processor's
/// workspace table, writer and retry policy, but a dedupe, circuit breakers and skip summaries
/// of its own, so that the processor's delivered sets are not reloaded from the window's start.
pub async fn replay_beside(
    settings: &Settings,
    processor: &Router,
    window: &Window,
) -> Result<Report, TargetedError> {
    check(window)?;
    let dedupe = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || Dedupe::start(&settings)).await??
    };
    let router = Router {
        table: processor.table.clone(),
        writer: processor.writer.clone(),
        skips: SkipSummaries::new(Duration::from_millis(
            settings.processor.skip_summary_interval_ms,
        )),
        metrics: processor.metrics.clone(),
        policy: processor.policy.clone(),
        breakers: Breakers::new(BreakerSettings::from_settings(settings)),
        dedupe: dedupe.clone(),
        last_writes: LastWrites::new(settings.retry.supersede_max_subjects),
    };
    let replayed = replay(settings, &router, window).await;
    router.flush_skips().await;
    if let Some(dedupe) = dedupe {
        // Joins its reader thread.
        tokio::task::spawn_blocking(move || dedupe.stop()).await?;
    }
    replayed
}

/// The workspace's events in the window, per partition in offset order.
fn read_window(
    settings: &Settings,
    window: &Window,
) -> Result<(Vec<(i32, EventEnvelope)>, Report), TargetedError> {
    let mut events = Vec::new();
    let report = scan_window(settings, window, |p, _, e| {
        events.push((p, e));
        ControlFlow::Continue(())
    })?;
    Ok((events, report))
}

/// Reads `herald.events` over `window` and hands each event of its workspace to `found`, with
/// its partition and offset, per partition in offset order, until `found` breaks. Returns what
/// was read (`routed` stays empty).
pub fn scan_window(
    settings: &Settings,
    window: &Window,
    mut found: impl FnMut(i32, i64, EventEnvelope) -> ControlFlow<()>,
) -> Result<Report, TargetedError> {
    let topic = &settings.topics.events;
    let resolver: BaseConsumer = kafka::reader_config(settings).create()?;
    let count = kafka::partition_count(&resolver, topic)?;
    let mut ranges = Vec::new();
    for p in 0..count {
        let (start, _) = offset_for_time(&resolver, topic, p, window.since.timestamp_millis())?;
        let end = match window.until {
            Some(until) => offset_for_time(&resolver, topic, p, until.timestamp_millis())?.0,
            None => {
                resolver
                    .fetch_watermarks(topic, p, Duration::from_secs(10))?
                    .1
            }
        };
        if start < end {
            ranges.push((p, start, end));
        }
    }
    let reader: BaseConsumer = kafka::reader_config(settings).create()?;
    let mut report = Report::default();
    let now = Utc::now();
    let decoder = Decoder::new(settings)?;
    for (p, start, end) in ranges {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
        reader.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut next = start;
        while next < end {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
                )
                .into());
            }
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() == p && m.offset() >= next => {
                    next = m.offset() + 1;
                    if m.offset() >= end {
                        break;
                    }
                    report.scanned += 1;
                    let raw = RawRecord {
                        topic: topic.clone(),
                        partition: p,
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: headers_of(m.headers()),
                    };
                    match decoder.decode(&raw, now) {
                        Ok(e) if e.workspace_id == window.workspace_id => {
                            if found(p, m.offset(), e).is_break() {
                                return Ok(report);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => report.undecodable += 1,
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "fetch for the replay failed"),
                _ => {
                    // Compaction or transaction markers can leave gaps at the end.
                    if let Ok(pos) = reader.position()
                        && let Some(Offset::Offset(o)) =
                            pos.find_partition(topic, p).map(|e| e.offset())
                        && o >= end
                    {
                        break;
                    }
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inverted_window_is_refused() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut w = Window {
            workspace_id: "ws".into(),
            since: t("2026-03-21T14:00:00Z"),
            until: Some(t("2026-03-21T13:00:00Z")),
            rule: None,
            force: false,
        };
        let err = check(&w).unwrap_err().to_string();
        assert!(err.contains("--until") && err.contains("--since"), "{err}");
        w.until = Some(w.since);
        assert!(check(&w).is_err(), "an empty window is refused too");
        w.until = None;
        assert!(check(&w).is_ok());
    }
}
