//! The history query store over a large `herald.deliveries`: time to build it from the topic,
//! query latency for the management API's queries, memory and size on disk.
//!
//! `cargo bench --bench history_store` (HERALD_BENCH_DELIVERIES, default 1,000,000, spread over
//! HERALD_BENCH_WORKSPACES, default 1,000). The store is built from scratch in a temporary file
//! by applying the records in the follower's batches (no broker: MockCluster keeps at most 5 MiB
//! per partition, dropping the oldest records beyond it), queried, and reopened. RSS is read from /proc. Prints a
//! Markdown table for docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald::history::store::{DeliveryQuery, HistoryStore};
use herald::model::records::{Attempt, DeliveryRecord, DeliveryStatus};

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

fn main() {
    let deliveries = env_or("HERALD_BENCH_DELIVERIES", 1_000_000);
    let workspaces = env_or("HERALD_BENCH_WORKSPACES", 1_000);
    // The records are applied the way the follower applies what it reads (batches of 2,000,
    // one transaction each, positions included), without a broker: librdkafka's mock broker
    // keeps at most 5 MiB per partition and drops the oldest message sets beyond it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let (rss_before, _) = memory_mib();
    let store = Arc::new(HistoryStore::open(&path).unwrap());
    let start = Utc::now() - chrono::Duration::days(30);
    let mut bytes = 0usize;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(2_000);
    for i in 0..deliveries {
        let r = record(i, workspaces, start);
        let value = serde_json::to_vec(&r).unwrap();
        bytes += value.len();
        let partition = (i % 6) as i32;
        batch.push((
            partition,
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
    let build = started.elapsed();
    let (rss_built, _) = memory_mib();
    eprintln!("store built in {:.1} s", build.as_secs_f64());

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
    drop(store);
    let file_mib = std::fs::metadata(&path).map(|m| m.len() >> 20).unwrap_or(0);

    // A restart: the file holds the rows and the positions the follower resumes from.
    let started = Instant::now();
    let store = HistoryStore::open(&path).unwrap();
    let resumed = store.positions().unwrap().len();
    let reopen = started.elapsed();
    assert_eq!(resumed, 6, "positions of every partition kept");

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{deliveries} deliveries ({} MiB of JSON records), {workspaces} workspaces, {cores} cores\n",
        bytes >> 20
    );
    println!("| figure | value |\n|---|---|");
    println!(
        "| build: every record applied as the follower applies them | {:.1} s ({:.0} records/s) |",
        build.as_secs_f64(),
        deliveries as f64 / build.as_secs_f64()
    );
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
