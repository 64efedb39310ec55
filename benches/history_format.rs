//! The cost of the history record formats: encoding a history record and a dead delivery as
//! JSON and in Confluent Avro (`history.format`), and reading each back, per record, with the
//! size on the wire.
//!
//! `cargo bench --bench history_format` (HERALD_BENCH_RECORDS, default 100,000). The schemas
//! are registered once in the sandbox's registry simulator, in process; no broker takes part:
//! this is the CPU a processor spends per outcome on the format. Prints a Markdown table for
//! docs/benchmarks.md.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use herald::history::codec::HistoryCodec;
use herald::model::records::{
    Attempt, DeadDelivery, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope,
};
use herald::settings::{HistoryFormat, Settings};
use serde_json::json;

fn record(i: usize) -> DeliveryRecord {
    let at = Utc
        .timestamp_millis_opt(1_774_102_690_123 + i as i64)
        .unwrap();
    DeliveryRecord {
        delivery_id: format!("dl_{i:032x}"),
        workspace_id: format!("ws_{:05}", i % 1000),
        event_id: format!("evt_{i:010}"),
        event: "lesson.completed".into(),
        rule_id: Some("lesson-progress-to-hubspot".into()),
        connection_id: Some("hubspot".into()),
        destination: Some("hubspot".into()),
        action: Some("upsert_contact".into()),
        status: DeliveryStatus::Delivered,
        reason: None,
        attempts: vec![
            Attempt {
                at,
                outcome: "retry".into(),
                status_code: Some(503),
                error: Some("HTTP 503 from the destination: busy".into()),
                latency_ms: 120,
            },
            Attempt {
                at,
                outcome: "delivered".into(),
                status_code: Some(200),
                error: None,
                latency_ms: 80,
            },
        ],
        skipped_count: None,
        next_attempt_at: None,
        created_at: at,
        updated_at: at,
    }
}

fn dead(i: usize) -> DeadDelivery {
    let mut record = record(i);
    record.status = DeliveryStatus::Dead;
    record.reason = Some("retries exhausted: HTTP 503".into());
    let at = record.created_at;
    DeadDelivery {
        task: Some(DeliveryTask {
            delivery_id: record.delivery_id.clone(),
            envelope: EventEnvelope {
                event_id: record.event_id.clone(),
                workspace_id: record.workspace_id.clone(),
                event: record.event.clone(),
                resource: Some("course".into()),
                resource_id: Some("crs_7".into()),
                payload:
                    json!({"email": "nina@academyflow.io", "lesson_title": "Customer Research",
                                "course_id": "crs_7", "completion_percentage": 62})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                occurred_at: Some(at),
                received_at: Some(at),
            },
            rule_id: "lesson-progress-to-hubspot".into(),
            connection_id: "hubspot".into(),
            request: json!({"email": "nina@academyflow.io",
                            "properties": {"last_lesson_completed": "Customer Research"}}),
            attempt: 5,
            retries: 4,
            tier: 3,
            due_at: at,
            first_attempt_at: Some(at),
            last_error: Some("HTTP 503".into()),
            attempts: record.attempts.clone(),
            partition: Some(1),
            redriven_at: None,
            offset: Some(i as i64),
        }),
        record,
        truncated: None,
    }
}

struct Row {
    what: &'static str,
    format: &'static str,
    encode: Duration,
    decode: Duration,
    bytes: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("HERALD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sandbox = herald_sandbox::Sandbox::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/registry", listener.local_addr().unwrap());
    let router = sandbox.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut rows = Vec::new();
    for (format, name) in [(HistoryFormat::Json, "json"), (HistoryFormat::Avro, "avro")] {
        let mut settings = Settings::defaults();
        settings.ingest.schema_registry.url = url.clone();
        settings.history.format = format;
        let codec = HistoryCodec::new(&settings);
        codec.ready().await;

        let records: Vec<_> = (0..n).map(record).collect();
        let started = Instant::now();
        let mut encoded = Vec::with_capacity(n);
        for r in &records {
            encoded.push(codec.encode_record(r).await);
        }
        let encode = started.elapsed();
        let bytes = encoded.iter().map(Vec::len).sum::<usize>() / n;
        let decode = tokio::task::block_in_place(|| {
            let started = Instant::now();
            for bytes in &encoded {
                std::hint::black_box(codec.decode_record(bytes).unwrap());
            }
            started.elapsed()
        });
        rows.push(Row {
            what: "history record",
            format: name,
            encode,
            decode,
            bytes,
        });

        let letters: Vec<_> = (0..n / 10).map(dead).collect();
        let started = Instant::now();
        let mut encoded = Vec::with_capacity(letters.len());
        for d in &letters {
            encoded.push(codec.encode_dead(d).await);
        }
        let encode = started.elapsed();
        let bytes = encoded.iter().map(Vec::len).sum::<usize>() / letters.len();
        let decode = tokio::task::block_in_place(|| {
            let started = Instant::now();
            for bytes in &encoded {
                std::hint::black_box(codec.decode_dead(bytes).unwrap());
            }
            started.elapsed()
        });
        rows.push(Row {
            what: "dead delivery",
            format: name,
            encode: encode * 10,
            decode: decode * 10,
            bytes,
        });
    }

    println!("| record | format | encode µs/record | decode µs/record | bytes/record |");
    println!("|---|---|---|---|---|");
    for row in rows {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!(
            "| {} | {} | {:.2} | {:.2} | {} |",
            row.what,
            row.format,
            per(row.encode),
            per(row.decode),
            row.bytes
        );
    }
}
