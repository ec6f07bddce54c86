//! A deployment with no Kafka at all (`TRIBUTARY_EVENTS_BUS=rabbitmq`,
//! `TRIBUTARY_JOBS_BUS=rabbitmq`): the scheduler binary, two worker binaries, PostgreSQL
//! and this machine's RabbitMQ (a virtual host of the test's own, removed afterwards).
//! Every process is pointed at a Kafka address where nothing listens. The pipeline's
//! lifecycle (first sync all created, incremental updates, full-run deletes, a replay
//! adds nothing) with the jobs on the quorum queues, and a resync through the scheduler's
//! API taken from the urgent queue.
//!
//! Process-level tier: needs PostgreSQL and RabbitMQ (see the README).
#![cfg(feature = "process-tests")]

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tributary_e2e::outage::worker_binary;
use tributary_e2e::pipeline::{of_run, values, wait_run_end, Rig, SCHEDULER_ADMIN_TOKEN};
use tributary_e2e::stories::Story;

const SCHEDULER: &str = env!("CARGO_BIN_EXE_tributary-scheduler");
const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn the_lifecycle_with_no_kafka_at_all() {
    let n = 240;
    let rig = Rig::without_kafka(
        "postgres",
        tributary_e2e::fresh_postgres().await,
        &worker_binary(),
        n,
    )
    .await;
    // The test enqueues the lifecycle's runs itself: the scheduler's tick must not add one
    // of its own to the first sync.
    let tomorrow = tributary::domain::time::stamp(chrono::Utc::now() + chrono::Duration::days(1));
    sqlx::query("UPDATE schedules SET next_run_at = $1, next_full_at = $1")
        .bind(tomorrow)
        .execute(rig.lane.store.pool())
        .await
        .unwrap();
    let scheduler = rig.scheduler(SCHEDULER, &[]).await;
    let pages = [("TRIBUTARY_SLICE_MAX_PAGES", "1".to_string())];
    let workers = [rig.worker(&pages), rig.worker(&pages)];
    let mut story = Story::new(&rig, "no-kafka", LONG);

    let first = story.first_full_sync(n).await;
    assert_eq!(
        of_run(&story.events.received, &first.run_id).len(),
        n as usize
    );
    let (_, total) = story.updates_then_deletes(n).await;
    story.replay_adds_nothing(&first, n, total).await;
    let ids: HashSet<&str> = values(&story.events.received)
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), total, "every event once");

    // A resync through the scheduler's API: an urgent job on RabbitMQ, run by a worker.
    let resync: Value = reqwest::Client::new()
        .post(format!(
            "{}/v1/connections/{}/resync",
            scheduler.base, rig.lane.connection
        ))
        .bearer_auth(SCHEDULER_ADMIN_TOKEN)
        .json(&serde_json::json!({"full": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = resync["jobs"][0]["run_id"].as_str().expect("a run id");
    let end = wait_run_end(&mut story.statuses, run, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], 0, "nothing new: {end}");

    // Both workers took jobs from the queues, and neither touched Kafka.
    for worker in &workers {
        let log = worker.log_text();
        assert!(worker_ran_jobs(&log), "each worker runs jobs:\n{log}");
        assert!(!log.contains("127.0.0.1:1"), "no Kafka client:\n{log}");
    }
}

/// Whether a worker's log shows a slice it ran.
fn worker_ran_jobs(log: &str) -> bool {
    ["run completed", "slice done", "skipped"]
        .iter()
        .any(|line| log.contains(line))
}
