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
use serde_json::{json, Value};
use tributary::domain::RunMode;
use tributary_e2e::broker::{Received, TopicReader};
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{of_run, values, wait_run_end};
use tributary_e2e::{check_event_schema, repo_root};

/// Generous for a run of a few pages; the first one includes the mock cluster's initial
/// rebalance delay (3 s) before the worker's group gets its partitions.
const WAIT: Duration = Duration::from_secs(60);

fn ids(answer: &Value, key: &str) -> HashSet<String> {
    answer[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect()
}

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
    let mut events = rig.events();
    let mut statuses = rig.statuses();

    let first = rig.job(RunMode::Full);
    rig.enqueue(&first).await;
    let end = wait_run_end(&mut statuses, &first.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], n, "{end}");
    assert!(
        end["counts"]["slices"].as_i64().unwrap() >= 3,
        "bounded slices: {end}"
    );
    events.read_until(WAIT, "N created events", |all| all.len() >= n as usize);
    let created = of_run(&events.received, &first.run_id);
    assert_eq!(created.len(), n as usize);
    let records: HashSet<&str> = created
        .iter()
        .map(|v| v["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), n as usize, "one event per record");
    assert!(created.iter().all(|v| v["op"] == "created"));
    let r = &events.received[0];
    let record_id = r.value.as_ref().unwrap()["record_id"].as_str().unwrap();
    assert_eq!(r.key, format!("acme:{record_id}"));
    assert_eq!(r.header("tenant"), Some("acme"));
    assert_eq!(r.header("type"), Some("crm.contact.created"));
    all_schema_valid(&events, &statuses);

    let changed = rig.control.mutate("contacts", 4, 3, 0).await.unwrap();
    let (updated_ids, deleted_ids) = (ids(&changed, "updated"), ids(&changed, "deleted"));

    let inc = rig.job(RunMode::Incremental);
    rig.enqueue(&inc).await;
    let end = wait_run_end(&mut statuses, &inc.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    let total = n as usize + 4;
    events.read_until(WAIT, "4 updated events", |all| all.len() >= total);
    let updates = of_run(&events.received, &inc.run_id);
    assert_eq!(updates.len(), 4, "exactly the k changed: {updates:?}");
    for v in &updates {
        assert_eq!(v["op"], "updated", "{v}");
        assert!(
            updated_ids.contains(v["record_id"].as_str().unwrap()),
            "{v}"
        );
        assert!(
            v["changed_fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "title"),
            "{v}"
        );
    }

    let full = rig.job(RunMode::Full);
    rig.enqueue(&full).await;
    let end = wait_run_end(&mut statuses, &full.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["deleted"], 3, "{end}");
    let total = total + 3;
    events.read_until(WAIT, "3 deleted events", |all| all.len() >= total);
    let deletes = of_run(&events.received, &full.run_id);
    assert_eq!(deletes.len(), 3, "exactly the d removed, nothing else");
    for v in &deletes {
        assert_eq!(v["op"], "deleted", "{v}");
        assert!(v["data"].is_null(), "{v}");
        assert!(
            deleted_ids.contains(v["record_id"].as_str().unwrap()),
            "{v}"
        );
    }
    all_schema_valid(&events, &statuses);

    // The replay and the sentinel share a partition (same tenant key) and the resource's
    // lock, so the sentinel's end comes after the replay was handled; the replay's events,
    // had there been any, were acknowledged before that.
    rig.enqueue(&first).await;
    let sentinel = rig.job(RunMode::Incremental);
    rig.enqueue(&sentinel).await;
    let end = wait_run_end(&mut statuses, &sentinel.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    let all = values(events.drain_for(Duration::from_millis(300))).len();
    assert_eq!(all, total, "the replay added no events");
    assert_eq!(
        rig.store.run(&first.run_id).await.unwrap().counts.created,
        n as i64,
        "the replay did not run again"
    );
    assert_eq!(
        of_run(&statuses.received, &first.run_id)
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
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let first = rig.job(RunMode::Full);
    rig.enqueue(&first).await;
    let end = wait_run_end(&mut statuses, &first.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    let removed = rig.control.mutate("contacts", 0, 5, 0).await.unwrap();
    let removed = ids(&removed, "deleted");
    rig.control
        .faults(json!([{"kind": "status", "status": 500, "page": 2, "times": 0}]))
        .await
        .unwrap();
    let broken = rig.job(RunMode::Full);
    rig.enqueue(&broken).await;
    let end = wait_run_end(&mut statuses, &broken.run_id, WAIT);
    assert_eq!(end["type"], "run.failed", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("page 2"), "{end}");
    rig.control.faults(json!([])).await.unwrap();
    let fixed = rig.job(RunMode::Full);
    rig.enqueue(&fixed).await;
    let end = wait_run_end(&mut statuses, &fixed.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["deleted"], 5, "{end}");
    events.read_until(WAIT, "the deletes", |all| all.len() >= 305);
    let deletes: Vec<&Value> = values(&events.received)
        .into_iter()
        .filter(|v| v["op"] == "deleted")
        .collect();
    assert_eq!(deletes.len(), 5, "{deletes:?}");
    for v in &deletes {
        assert_eq!(
            v["sync_run"],
            fixed.run_id.as_str(),
            "no delete from the failed run: {v}"
        );
        assert!(removed.contains(v["record_id"].as_str().unwrap()), "{v}");
    }
    assert!(
        of_run(&events.received, &broken.run_id)
            .iter()
            .all(|v| v["op"] != "deleted"),
        "the failed run deleted nothing"
    );
    all_schema_valid(&events, &statuses);
}

/// A record that fails its mapping goes to the dead-letter topic (schema-valid, with the
/// error and the raw record), is counted, does not stop the run and is never deleted.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_published_counted_and_never_deleted() {
    let rig = InProcess::start(120).await;
    let specs = std::env::temp_dir().join(format!(
        "tributary-inprocess-specs-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&specs).unwrap();
    let spec = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    // Every 50th contact gets a number as its title, which crm.contact refuses.
    let broken = spec.replace(
        "\"title\": $p.jobtitle,",
        "\"title\": $number(id) % 50 = 0 ? 42 : $p.jobtitle,",
    );
    assert_ne!(
        broken, spec,
        "the mapping line to break is still in the spec"
    );
    std::fs::write(specs.join("hubspot.yaml"), broken).unwrap();
    let _worker = rig.worker(|s| s.specs_dir = specs.clone());
    let mut statuses = rig.statuses();
    let mut dead = rig.dead_letters();
    for round in 0..2 {
        let job = rig.job(RunMode::Full);
        rig.enqueue(&job).await;
        let end = wait_run_end(&mut statuses, &job.run_id, WAIT);
        assert_eq!(end["type"], "run.completed", "{end}");
        assert_eq!(end["counts"]["dead_lettered"], 2, "{end}");
        assert_eq!(end["counts"]["deleted"], 0, "not deleted: {end}");
        if round == 0 {
            assert_eq!(end["counts"]["created"], 118, "{end}");
        }
    }
    dead.read_until(WAIT, "4 dead letters", |all| all.len() >= 4);
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
        .set("bootstrap.servers", &rig.brokers)
        .set("group.id", rig.topics.consumer_group())
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
    rig.control
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
    let jobs = rig.topics.jobs();
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
    let requests = rig.control.stats().await.unwrap().by_resource["contacts"];
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
