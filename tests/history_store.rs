//! The history query store follows `herald.deliveries` into its SQLite file: what the processor
//! records is queryable per workspace, and a store whose file is gone is rebuilt from the topic.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use herald::history::store::{DeliveryQuery, HistoryStore, Page};
use herald::model::records::DeliveryStatus;
use serde_json::json;

async fn wait_for_page(
    store: &HistoryStore,
    query: &DeliveryQuery,
    what: &str,
    done: impl Fn(&Page) -> bool,
) -> Page {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let page = store.query(query).expect("query");
        if store.is_ready() && done(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: ready {}, {} deliveries",
            store.is_ready(),
            page.deliveries.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_queryable_from_the_store_and_a_missing_file_is_rebuilt() {
    const EVENTS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new().await;
    h.settings.history.store_path = dir.path().join("history.db").display().to_string();
    h.apply_fixtures().await;
    for i in 0..EVENTS {
        h.emit(
            "ws_academyflow",
            "lesson.completed",
            &format!("evt_{i}"),
            Some("course"),
            json!({"email": format!("s{i}@academyflow.io"), "lesson_title": "L",
                "module_title": "M", "course_id": "c", "completion_percentage": 62}),
        )
        .await;
    }
    let running = h.start();
    let store = running.app.history.clone().expect("a store is configured");
    let all = DeliveryQuery {
        workspace_id: "ws_academyflow".into(),
        limit: 500,
        ..Default::default()
    };
    // Two rules of the workspace match each event.
    let page = wait_for_page(&store, &all, "every delivery stored", |p| {
        p.deliveries.len() == 2 * EVENTS
            && p.deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    let from_topic = h.history("ws_academyflow").await;
    assert_eq!(
        page.deliveries.len(),
        from_topic.len(),
        "the store holds what the topic holds"
    );
    let one = store
        .query(&DeliveryQuery {
            event_id: Some("evt_3".into()),
            ..all.clone()
        })
        .unwrap();
    assert!(!one.deliveries.is_empty());
    assert!(one.deliveries.iter().all(|d| d.event_id == "evt_3"));
    let first = &page.deliveries[0];
    assert_eq!(
        store
            .get("ws_academyflow", &first.delivery_id)
            .unwrap()
            .as_ref(),
        Some(first)
    );
    assert!(
        store.get("ws_other", &first.delivery_id).unwrap().is_none(),
        "another workspace cannot read it"
    );
    running.stop().await;

    // The file removed: the next start rebuilds it from the topic before it is ready.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let running = h.start();
    let store = running.app.history.clone().unwrap();
    let rebuilt = wait_for_page(
        &store,
        &all,
        &format!("rebuilt (want {})", page.deliveries.len()),
        |p| p.deliveries.len() == page.deliveries.len(),
    )
    .await;
    assert_eq!(rebuilt, page);
    running.stop().await;
}
