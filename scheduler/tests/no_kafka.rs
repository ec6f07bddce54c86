//! A deployment with no Kafka at all (`TRIBUTARY_EVENTS_BUS=rabbitmq`,
//! `TRIBUTARY_JOBS_BUS=rabbitmq`): the scheduler binary, two worker binaries, PostgreSQL
//! and this machine's RabbitMQ (a virtual host of the test's own, removed afterwards).
//! Every process is pointed at a Kafka address where nothing listens. The pipeline's
//! lifecycle (first sync all created, incremental updates, full-run deletes, a replay
//! adds nothing) with the jobs on the quorum queues, a resync through the scheduler's API
//! taken from the urgent queue, and HubSpot webhooks received by the scheduler, stored on
//! the `<prefix>.webhooks` queue, turned into fetch jobs by a worker's intake and published.
//!
//! Process-level tier: needs PostgreSQL and RabbitMQ (see the README).
#![cfg(feature = "process-tests")]

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary::store::NewConnection;
use tributary_e2e::outage::worker_binary;
use tributary_e2e::pipeline::{
    await_record_ops, of_run, values, wait_run_end, Rig, SCHEDULER_ADMIN_TOKEN,
};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::stories::Story;
use tributary_e2e::{new_connection, shipped_sandbox};

const APPS: &str = "apps:
  hubspot: {client_id: sandbox-client, client_secret: sandbox-client-secret}
";
const PORTAL: &str = "4711";

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
    // A second HubSpot account (portal 4711) whose changes arrive as app webhooks.
    let (hubspot, portal) = shipped_sandbox("hubspot.yaml", |p| {
        p.resources.get_mut("contacts").unwrap().count = 20;
        p.rate_limit = None;
    })
    .await;
    let hooked = NewConnection {
        resources: vec!["contacts".into()],
        external_id: Some(PORTAL.into()),
        ..new_connection(
            &rig.lane.tenant,
            "hubspot",
            json!({"base_url": hubspot.base_url()}),
            json!({"access_token": "sandbox-hubspot-token"}),
        )
    };
    let hooked = rig.lane.store.create_connection(&hooked).await.unwrap();
    let apps = std::env::temp_dir().join(format!(
        "tributary-apps-no-kafka-{}.yaml",
        tributary_e2e::broker::free_port()
    ));
    std::fs::write(&apps, APPS).unwrap();
    // The test enqueues the lifecycle's runs itself: the scheduler's tick must not add one
    // of its own to the first sync.
    let tomorrow = tributary::domain::time::stamp(chrono::Utc::now() + chrono::Duration::days(1));
    sqlx::query("UPDATE schedules SET next_run_at = $1, next_full_at = $1")
        .bind(tomorrow)
        .execute(rig.lane.store.pool())
        .await
        .unwrap();
    let apps_file = [("TRIBUTARY_APPS_FILE", apps.display().to_string())];
    let scheduler = rig.scheduler(SCHEDULER, &apps_file).await;
    let pages = [
        ("TRIBUTARY_SLICE_MAX_PAGES", "1".to_string()),
        ("TRIBUTARY_WEBHOOK_WINDOW_MS", "100".to_string()),
    ];
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

    // Webhooks: the portal's first sync, then five changes announced in one delivery to
    // the scheduler's receiver; each arrives as one `updated` event of its connection.
    let first = Job::new_run(
        &rig.lane.tenant,
        &hooked,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&first).await;
    let end = wait_run_end(&mut story.statuses, &first.run_id, LONG);
    assert_eq!(end["counts"]["created"], 20, "{end}");
    let at = story.events.received.len();
    story
        .events
        .read_until(LONG, "the portal's first sync", |all| all.len() >= at + 20);
    let changed: Vec<String> = portal.mutate("contacts", 5, 0, 0).await.unwrap()["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let items: Vec<Value> = (changed.iter())
        .map(|id| json!({"resource": "contacts", "id": id, "op": "updated", "account": PORTAL}))
        .collect();
    let url = format!("{}/webhooks/hubspot", scheduler.base);
    let answer = portal
        .send_webhooks(json!({"url": url, "events": items}))
        .await
        .unwrap();
    assert_eq!(
        answer["deliveries"][0]["attempts"][0]["status"], 200,
        "the receiver stored the delivery on RabbitMQ: {answer}"
    );
    await_record_ops(&mut story.events, &hooked, "updated", &changed);

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
