//! Replay by offset reset on MockCluster, which cannot answer offsets-for-times: the plan falls
//! back to a binary search over record timestamps. (The broker path runs against the real
//! broker in tests/e2e_tansu.rs.)

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use herald::kafka;
use herald::kafka::by_time::Resolved;
use herald::ops::group_replay;
use herald::settings::Settings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[test]
fn offsets_for_a_time_are_found_by_search_where_the_broker_cannot_and_committed_on_execute() {
    let mock = MockCluster::new(1).unwrap();
    let mut settings = Settings::defaults();
    settings.kafka.brokers = mock.bootstrap_servers();
    let topic = "events";
    mock.create_topic(topic, 2, 1).unwrap();
    let t0 = Utc
        .with_ymd_and_hms(2026, 3, 21, 14, 0, 0)
        .unwrap()
        .timestamp_millis();

    // Partition 0: 20 records one second apart. Partition 1: 4 records, all before the time.
    let producer: BaseProducer = kafka::producer_config(&settings).create().unwrap();
    for (partition, count) in [(0, 20), (1, 4)] {
        for i in 0..count {
            let record = BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .payload("{}")
                .timestamp(t0 + i * 1000);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // The group has read everything.
    let group: BaseConsumer = kafka::consumer_config_for(&settings, "replayed")
        .create()
        .unwrap();
    let mut end = TopicPartitionList::new();
    end.add_partition_offset(topic, 0, Offset::Offset(20))
        .unwrap();
    end.add_partition_offset(topic, 1, Offset::Offset(4))
        .unwrap();
    group.commit(&end, CommitMode::Sync).unwrap();

    let reader: BaseConsumer = kafka::reader_config(&settings).create().unwrap();
    let at = Utc.timestamp_millis_opt(t0 + 12_500).unwrap();
    let plans = group_replay::plan(&reader, &group, topic, at).unwrap();
    let p0 = plans.iter().find(|p| p.partition == 0).unwrap();
    let p1 = plans.iter().find(|p| p.partition == 1).unwrap();
    assert_eq!(
        (p0.current, p0.target, p0.reread),
        (Some(20), 13, 7),
        "first record at or after 12.5 s is offset 13"
    );
    assert_eq!(
        (p1.current, p1.target, p1.reread),
        (Some(4), 4, 0),
        "nothing after the time"
    );
    assert_eq!(
        p0.resolved,
        Resolved::Search,
        "the mock cannot answer offsets for times"
    );

    group_replay::execute(&group, "replayed", topic, &plans).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    tpl.add_partition(topic, 1);
    let committed = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offsets: Vec<_> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(offsets, [Offset::Offset(13), Offset::Offset(4)]);

    // Before everything: the start of each partition.
    let plans = group_replay::plan(
        &reader,
        &group,
        topic,
        Utc.timestamp_millis_opt(t0 - 1).unwrap(),
    )
    .unwrap();
    assert!(plans.iter().all(|p| p.target == 0), "{plans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_new_offsets_while_the_group_is_live() {
    let h = common::Harness::new().await;
    h.apply_fixtures().await;
    let running = h.start();
    h.emit(
        "ws_academyflow",
        "payment.failed",
        "evt_1",
        None,
        serde_json::json!({}),
    )
    .await;
    h.wait_for_history("ws_academyflow", "the skip", |r| !r.is_empty())
        .await;

    let settings = h.settings.clone();
    let refused = tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = kafka::reader_config(&settings).create().unwrap();
        let group: BaseConsumer = kafka::consumer_config_for(&settings, &settings.kafka.group_id)
            .create()
            .unwrap();
        let plans = group_replay::plan(
            &reader,
            &group,
            &settings.topics.events,
            Utc::now() - chrono::Duration::hours(1),
        )
        .unwrap();
        group_replay::execute(
            &group,
            &settings.kafka.group_id,
            &settings.topics.events,
            &plans,
        )
    })
    .await
    .unwrap();
    assert!(
        matches!(refused, Err(group_replay::ReplayError::GroupLive { .. })),
        "{refused:?}"
    );
    running.stop().await;
}
