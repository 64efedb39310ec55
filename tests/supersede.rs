//! A retried write never overwrites what a later event wrote: on MockCluster with the sandbox
//! failing lesson 2's calls once, lesson 3's upsert succeeds first, so the retried upsert of
//! lesson 2 is skipped as superseded, while the retried webhook post of lesson 2 (additive) is
//! still delivered.

mod common;

use common::Harness;
use herald::model::records::{DeliveryRecord, DeliveryStatus};
use herald_sandbox::Fault;
use serde_json::json;

const WORKSPACE: &str = r#"
workspace: ws_progress
connections:
  - { id: crm, type: hubspot, base_url: "http://127.0.0.1:7780/hubspot", batch_window_ms: 0, credentials: { token: "${env:HERALD_CRED_ACADEMYFLOW_HUBSPOT_TOKEN}" } }
  - { id: hook, type: webhook, url: "http://127.0.0.1:7780/webhook/progress", credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" } }
rules:
  - id: progress-to-hubspot
    event: lesson.completed
    connection: crm
    action: upsert_contact
    with: { email: "{{ payload.email }}", properties: { course_completion_pct: "{{ payload.pct }}" } }
  - { id: progress-to-hook, event: lesson.completed, connection: hook, action: post }
"#;

fn fail_once(path: &str) -> Fault {
    Fault {
        path: path.into(),
        count: 1,
        status: 503,
        body: "simulated 503".into(),
        retry_after: None,
        delay_ms: 0,
        rate: None,
    }
}

fn record<'a>(history: &'a [DeliveryRecord], event: &str, rule: &str) -> &'a DeliveryRecord {
    history
        .iter()
        .find(|r| r.event_id == event && r.rule_id.as_deref() == Some(rule))
        .unwrap_or_else(|| panic!("no record of {event} by {rule}: {history:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_upsert_is_skipped_when_a_later_event_wrote_the_contact_but_a_post_is_sent() {
    // The first tier is long enough for lesson 3 to be delivered before lesson 2 is retried.
    let h = Harness::new_with(|s| {
        s.retry.tiers = ["2s", "4s", "8s"].map(String::from).to_vec();
        s.retry.jitter = 0.0;
    })
    .await;
    h.apply(&[("ws.yaml", WORKSPACE)]).await;
    h.sandbox
        .inject(fail_once("/hubspot/crm/v3/objects/contacts/batch/upsert"));
    h.sandbox.inject(fail_once("/webhook/progress"));
    let running = h.start();
    let email = "nina@academyflow.io";
    h.emit(
        "ws_progress",
        "lesson.completed",
        "lesson_2",
        None,
        json!({"email": email, "pct": 40}),
    )
    .await;
    h.emit(
        "ws_progress",
        "lesson.completed",
        "lesson_3",
        None,
        json!({"email": email, "pct": 60}),
    )
    .await;

    let history = h
        .wait_for_history("ws_progress", "four settled deliveries", |r| {
            r.len() == 4
                && r.iter().all(|d| {
                    matches!(
                        d.status,
                        DeliveryStatus::Delivered | DeliveryStatus::Skipped
                    )
                })
        })
        .await;

    let stale = record(&history, "lesson_2", "progress-to-hubspot");
    assert_eq!(stale.status, DeliveryStatus::Skipped, "{stale:#?}");
    assert!(
        stale
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("superseded"),
        "{stale:#?}"
    );
    assert_eq!(
        stale.attempts.len(),
        1,
        "only the failed first attempt was made"
    );
    let newer = record(&history, "lesson_3", "progress-to-hubspot");
    assert_eq!(newer.status, DeliveryStatus::Delivered);

    // After the 503, HubSpot received lesson 3's write and nothing else.
    let upserts: Vec<(u16, serde_json::Value)> = h
        .requests("hubspot")
        .iter()
        .map(|r| {
            (
                r.status,
                r.body["inputs"][0]["properties"]["course_completion_pct"].clone(),
            )
        })
        .collect();
    assert_eq!(upserts, [(503, json!("40")), (200, json!("60"))]);
    let contact = &h.sandbox.state()["hubspot"]["contacts"][email]["properties"];
    assert_eq!(
        contact["course_completion_pct"], "60",
        "the newer progress stays"
    );

    // The post is additive: lesson 2's is retried and delivered after lesson 3's.
    let post = record(&history, "lesson_2", "progress-to-hook");
    assert_eq!(post.status, DeliveryStatus::Delivered, "{post:#?}");
    assert_eq!(post.attempts.len(), 2);
    let posts: Vec<(u16, serde_json::Value)> = h
        .requests("webhook")
        .iter()
        .map(|r| (r.status, r.body["data"]["event_id"].clone()))
        .collect();
    assert_eq!(
        posts,
        [
            (503, json!("lesson_2")),
            (200, json!("lesson_3")),
            (200, json!("lesson_2"))
        ]
    );

    let metrics = running.app.metrics.render();
    assert!(
        metrics.contains(
            r#"herald_deliveries_total{action="upsert_contact",destination="hubspot",outcome="superseded"} 1"#
        ),
        "{metrics}"
    );
    running.stop().await;
}
