//! The sync pipeline in one process, with no external service (librdkafka's mock cluster,
//! SQLite, the sandbox, the real consumer loop): first sync, updates, deletes, a failed
//! full sync, dead letters, a replayed job and a worker handing over its run. Plain
//! `cargo test` runs these; `worker/tests/pipeline.rs` runs the same stories against
//! tansu, PostgreSQL and worker processes.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tributary::domain::RunMode;
use tributary_e2e::broker::{Received, TopicReader};
use tributary_e2e::check_event_schema;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{of_run, values, wait_run_end};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::stories::{broken_title_specs, Story};

/// Generous for a run of a few pages; the first one includes the mock cluster's initial
/// rebalance delay (3 s) before the worker's group gets its partitions.
const WAIT: Duration = Duration::from_secs(60);

/// Reads run ends and every event as the run goes, all checked against the committed schemas.
fn all_schema_valid(events: &TopicReader, statuses: &TopicReader) {
    for v in values(&events.received) {
        check_event_schema("change-event", v).unwrap_or_else(|e| panic!("{e}: {v}"));
    }
    for s in values(&statuses.received) {
        check_event_schema("status-event", s).unwrap_or_else(|e| panic!("{e}: {s}"));
    }
}

/// First full sync: N created; k changed and d removed at the provider: the incremental
/// run gives exactly the k updated, the next full run exactly the d deleted; replaying
/// the first job adds no event and does not run it again.
#[tokio::test(flavor = "multi_thread")]
async fn created_updated_deleted_and_a_replay_adds_nothing() {
    let n = 240;
    let rig = InProcess::start(n).await;
    let _worker = rig.worker(|s| s.slice_max_pages = 1);
    let mut story = Story::new(&rig, "in-process", WAIT);

    let first = story.first_full_sync(n).await;
    assert!(of_run(&story.events.received, &first.run_id)
        .iter()
        .all(|v| v["op"] == "created"));
    all_schema_valid(&story.events, &story.statuses);

    let (end, total) = story.updates_then_deletes(n).await;
    assert_eq!(end["type"], "run.completed", "{end}");
    all_schema_valid(&story.events, &story.statuses);

    story.replay_adds_nothing(&first, n, total).await;
    assert_eq!(
        of_run(&story.statuses.received, &first.run_id)
            .iter()
            .filter(|v| v["type"] == "run.completed")
            .count(),
        1,
        "one end for the first run"
    );
}

/// A full sync that fails on page 2 emits no delete and is `run.failed`; the next complete
/// full sync emits exactly the deletes.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_full_sync_never_deletes() {
    let rig = InProcess::start(300).await;
    let _worker = rig.worker(|s| {
        s.slice_max_pages = 2;
        s.engine.retry_base = Duration::from_millis(10);
    });
    let mut story = Story::new(&rig, "in-process", WAIT);
    let runs = story.failed_full_sync_then_a_complete_one().await;
    let end = &runs.fixed_end;
    assert_eq!(end["type"], "run.completed", "{end}");
    for v in &runs.deletes {
        assert!(
            runs.removed.contains(v["record_id"].as_str().unwrap()),
            "{v}"
        );
    }
    assert!(
        of_run(&story.events.received, &runs.broken.run_id)
            .iter()
            .all(|v| v["op"] != "deleted"),
        "the failed run deleted nothing"
    );
    all_schema_valid(&story.events, &story.statuses);
}

/// A record that fails its mapping goes to the dead-letter topic (schema-valid, with the
/// error and the raw record), is counted, does not stop the run and is never deleted.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_published_counted_and_never_deleted() {
    let rig = InProcess::start(120).await;
    let specs = broken_title_specs();
    let _worker = rig.worker(|s| s.specs_dir = specs.clone());
    let mut story = Story::new(&rig, "in-process", WAIT);
    let dead = story.two_syncs_with_dead_letters().await;
    let mut records = Vec::new();
    for letter in values(&dead.received) {
        check_event_schema("dead-letter", letter).unwrap_or_else(|e| panic!("{e}: {letter}"));
        assert!(
            letter["error"].as_str().unwrap().contains("/title"),
            "{letter}"
        );
        assert_eq!(
            letter["raw"]["id"], letter["record_id"],
            "the raw record travels: {letter}"
        );
        assert!(letter["spec"].as_str().unwrap().ends_with("hubspot.yaml"));
        records.push(letter["record_id"].as_str().unwrap().to_string());
    }
    records.sort();
    assert_eq!(records, ["100", "100", "50", "50"]);
}

/// The group's committed offsets on a jobs topic, summed over its partitions.
fn committed(rig: &InProcess, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &rig.lane.brokers)
        .set("group.id", rig.lane.topics.consumer_group())
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let list = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    list.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// A drained worker's run is finished by the next worker from its checkpoint (no page
/// read twice, every record once, with one id), and every job message's offset is
/// committed once its slice is done: the consumer group and its commits, on the mock cluster.
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_worker_hands_its_run_to_the_next() {
    let n = 500;
    let rig = InProcess::start(n).await;
    // Slow pages, so the drain lands mid-run.
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 150, "times": 0}]))
        .await
        .unwrap();
    let worker = rig.worker(|s| s.slice_max_pages = 1);
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(WAIT, "the first page", |all| !all.is_empty());
    worker.drain().await.expect("the first loop drains cleanly");
    let jobs = rig.lane.topics.jobs();
    assert!(
        committed(&rig, &jobs, 3) >= 1,
        "the drained worker committed its finished slices"
    );
    let ended = |all: &[Received]| {
        of_run(all, &job.run_id)
            .iter()
            .any(|v| v["type"] == "run.completed" || v["type"] == "run.failed")
    };
    assert!(
        !ended(statuses.drain_for(Duration::from_millis(300))),
        "the drain came before the run's end"
    );
    let next = rig.worker(|s| s.slice_max_pages = 1);
    let end = wait_run_end(&mut statuses, &job.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], n, "{end}");
    events.read_until(WAIT, "every record", |all| {
        values(all)
            .iter()
            .map(|v| v["record_id"].as_str().unwrap_or_default())
            .collect::<HashSet<_>>()
            .len()
            >= n as usize
    });
    let mut id_of: std::collections::HashMap<&str, &str> = Default::default();
    for v in values(&events.received) {
        assert_eq!(v["op"], "created", "{v}");
        let (record, id) = (v["record_id"].as_str().unwrap(), v["id"].as_str().unwrap());
        assert_eq!(
            *id_of.entry(record).or_insert(id),
            id,
            "a duplicate has its original's id"
        );
    }
    let pages = n.div_ceil(100);
    let requests = rig.lane.control.stats().await.unwrap().by_resource["contacts"];
    assert_eq!(
        requests, pages,
        "resumed from the checkpoint: no page read twice"
    );
    // After the second drain every job message read (the first and each continuation,
    // one per slice) has its offset committed.
    next.drain().await.expect("the second loop drains cleanly");
    let slices = end["counts"]["slices"].as_i64().unwrap();
    assert_eq!(
        committed(&rig, &jobs, 3),
        slices,
        "one committed job message per slice"
    );
}
