//! Dedupe and targeted replay on MockCluster: a delivery already `delivered` is not sent again
//! when its event is read again (offset-reset replay, restart), the delivered set is rebuilt
//! from `herald.deliveries` after a restart, and `herald replay --workspace` touches only that
//! workspace, skips what was delivered, and sends again with `--force`.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Harness, PATIENCE};
use herald::app::App;
use herald::model::records::DeliveryStatus;
use herald::ops::workspace_replay::{self, Window};
use serde_json::json;

fn already_delivered(app: &App) -> u64 {
    ["slack", "webhook"]
        .iter()
        .zip(["post_message", "post"])
        .map(|(d, a)| {
            app.metrics
                .deliveries
                .with_label_values(&[d, a, "already_delivered"])
                .get()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivered_deliveries_are_not_sent_again_on_replay_restart_or_targeted_replay() {
    let h = Harness::new().await;
    h.apply_fixtures().await;
    let before = Utc::now() - chrono::TimeDelta::seconds(1);
    let page = |i: u32| {
        json!({"user_id": format!("usr_{i}"), "email": format!("u{i}@northstar.io"),
               "page_id": "page_connect-crm", "page_title": "Connect your CRM", "sequence_step": 3})
    };
    for i in 0..3 {
        h.emit(
            "ws_northstar",
            "page.completed",
            &format!("evt_n{i}"),
            Some("onboarding_sequence"),
            page(i),
        )
        .await;
    }
    h.emit(
        "ws_academyflow",
        "lesson.completed",
        "evt_a0",
        Some("course"),
        json!({"email": "nina@academyflow.io", "lesson_title": "Research", "course_id": "c1",
               "module_title": "Growth", "completion_percentage": 62}),
    )
    .await;

    // First run: 3 events x 2 rules for northstar, every one delivered once.
    let first = h.start();
    let records = h
        .wait_for_history("ws_northstar", "6 delivered", |r| {
            r.iter()
                .filter(|r| r.status == DeliveryStatus::Delivered)
                .count()
                == 6
        })
        .await;
    assert_eq!(records.len(), 6);
    h.wait_for_history("ws_academyflow", "the academy alert", |r| {
        r.iter().any(|r| r.status == DeliveryStatus::Delivered)
    })
    .await;
    first.stop().await;
    let slack = h.requests("slack").len();
    let webhook = h.requests("webhook").len();
    assert_eq!(slack, 3 + 1, "3 northstar alerts and 1 academy alert");
    assert!(webhook >= 3);

    // Read everything again in a fresh process: as a new consumer group (MockCluster refuses
    // offset commits from outside a group that ever had members, so the offset reset itself is
    // tested on the real broker). The delivered set, rebuilt from herald.deliveries, stops all.
    let mut again = h.settings.clone();
    again.kafka.group_id = format!("{}-again", h.settings.kafka.group_id);
    let second = common::Running::start(again, h.vars());
    let deadline = std::time::Instant::now() + PATIENCE;
    while already_delivered(&second.app) < 6 + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "events were not read again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let anything that would have been sent arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.requests("slack").len(), slack, "no second Slack alert");
    assert_eq!(h.requests("webhook").len(), webhook, "no second webhook");
    second.stop().await;
    let offsets = h.committed();

    // Targeted replay of northstar: everything was delivered, so nothing is sent…
    let app = App::start(h.settings.clone(), h.vars()).unwrap();
    app.router.table.wait_ready().await;
    let mut window = Window {
        workspace_id: "ws_northstar".into(),
        since: before,
        until: None,
        rule: None,
        force: false,
    };
    let report = workspace_replay::replay(&h.settings, &app.router, &window)
        .await
        .unwrap();
    assert_eq!(report.events, 3);
    assert_eq!(
        report.scanned, 4,
        "the academy event was read and left alone"
    );
    assert_eq!(
        (report.routed.settled, report.routed.already_delivered),
        (0, 6)
    );
    assert_eq!(h.requests("slack").len(), slack);
    assert_eq!(h.requests("webhook").len(), webhook);

    // …and with --force and --rule, that rule's deliveries go out again, nothing else.
    window.force = true;
    window.rule = Some("step-to-backend".into());
    let report = workspace_replay::replay(&h.settings, &app.router, &window)
        .await
        .unwrap();
    assert_eq!(
        (report.routed.settled, report.routed.already_delivered),
        (3, 0)
    );
    let northstar_hooks = |h: &Harness| {
        h.requests("webhook")
            .iter()
            .filter(|r| r.path == "/webhook/northstar")
            .count()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while h.requests("webhook").len() < webhook + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "forced deliveries not received"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(northstar_hooks(&h), 6, "each northstar webhook twice now");
    assert_eq!(
        h.requests("slack").len(),
        slack,
        "the other rule was not replayed"
    );
    drop(app);

    // A targeted replay moves no group offsets.
    assert_eq!(h.committed(), offsets);
}
