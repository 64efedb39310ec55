//! `/metrics` after a scenario: every metric of the catalog in docs/operations.md is exported,
//! a few values match what happened, and no label carries a workspace id, an email or a URL.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use herald::model::records::DeliveryStatus;
use herald_sandbox::Fault;
use serde_json::json;

fn catalog() -> Vec<String> {
    include_str!("../docs/operations.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `herald_"))
        .map(|l| format!("herald_{}", &l[..l.find('`').unwrap()]))
        .collect()
}

/// The value of the series `name{labels}` (labels exactly as rendered), if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_the_catalog_after_a_scenario() {
    let mut h = Harness::new().await;
    h.settings.kafka.statistics_interval_ms = 200;
    h.apply_fixtures().await;
    h.sandbox.inject(Fault {
        path: "/webhook/academyflow".into(),
        count: 1,
        status: 429,
        body: String::new(),
        retry_after: Some("1".into()),
        delay_ms: 0,
        rate: None,
    });
    let running = h.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let routes = running.app.http_routes();
    tokio::spawn(async move { axum::serve(listener, routes).await });

    let mut seed = json!({"email": "nina@academyflow.io", "lesson_title": "L", "module_title": "M",
        "course_id": "c", "completion_percentage": 62});
    h.emit(
        "ws_academyflow",
        "lesson.completed",
        "evt_m1",
        Some("course"),
        seed.take(),
    )
    .await;
    h.produce(Some("ws_academyflow"), b"not json").await;
    h.wait_for_history("ws_academyflow", "both delivered", |r| {
        r.iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count()
            == 2
    })
    .await;

    let deadline = Instant::now() + common::PATIENCE;
    let scrape = loop {
        let scrape = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let missing: Vec<_> = catalog()
            .into_iter()
            .filter(|m| !scrape.contains(&format!("# TYPE {m} ")))
            .collect();
        let dead_lettered = value(
            &scrape,
            r#"herald_dlq_records_total{kind="undecodable_input"}"#,
        );
        if missing.is_empty() && dead_lettered == Some(1.0) {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "missing from /metrics: {missing:?}\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(catalog().len() >= 13, "the catalog table was found");
    assert_eq!(
        value(&scrape, r#"herald_events_total{outcome="routed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, r#"herald_events_total{outcome="dead_lettered"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            r#"herald_deliveries_total{action="post",destination="webhook",outcome="rate_limited"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            r#"herald_deliveries_total{action="post",destination="webhook",outcome="delivered"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            r#"herald_rate_limit_waits_total{destination="webhook"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&scrape, "herald_workspaces"), Some(2.0));
    assert_eq!(
        value(&scrape, r#"herald_build_info{version="0.1.0"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            r#"herald_delivery_end_to_end_latency_seconds_count{destination="slack"}"#
        ),
        Some(1.0)
    );
    // Lag is reported for the partitions this replica fetches from (those holding records here).
    assert!(
        scrape.lines().any(
            |l| l.starts_with("herald_consumer_lag{") && l.contains(r#"topic="herald.events""#)
        ),
        "{scrape}"
    );
    assert!(scrape.contains(r#"herald_retry_waiting_records{tier="200ms"}"#));
    for private in ["ws_academyflow", "@", "http://", "evt_m1"] {
        assert!(!scrape.contains(private), "`{private}` leaked into a label");
    }
    running.stop().await;
}
