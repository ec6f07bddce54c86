//! The sync pipeline with its events on RabbitMQ (`TRIBUTARY_EVENTS_BUS=rabbitmq`): worker
//! processes from the real binary, jobs on tansu, PostgreSQL, and this machine's RabbitMQ
//! (a virtual host of the test's own, removed afterwards). The readers bind queues to the
//! `<prefix>.events` exchange as a host would.
//!
//! Process-level tier: needs tansu, PostgreSQL and RabbitMQ (see the README).
#![cfg(feature = "process-tests")]

use std::collections::HashSet;
use std::time::Duration;

use tributary_e2e::fresh_postgres;
use tributary_e2e::pipeline::{of_run, values, Rig};
use tributary_e2e::stories::Story;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");
const LONG: Duration = Duration::from_secs(90);

/// First sync all created, incremental updates, the full run's deletes, a replay adds
/// nothing: each event routed by `<model>.<op>`, persistent, its message id its event id.
#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_with_events_on_rabbitmq() {
    let n = 240;
    let rig = Rig::start("postgres", fresh_postgres().await, WORKER, n)
        .await
        .with_rabbitmq_events();
    let _worker = rig.worker(&[("TRIBUTARY_SLICE_MAX_PAGES", "1".into())]);
    let mut story = Story::new(&rig, "rabbitmq", LONG);

    let first = story.first_full_sync(n).await;
    assert_eq!(
        of_run(&story.events.received, &first.run_id).len(),
        n as usize
    );
    let (_, total) = story.updates_then_deletes(n).await;
    story.replay_adds_nothing(&first, n, total).await;

    for m in &story.events.received {
        let v = m.value.as_ref().unwrap();
        assert_eq!(m.header("routing_key"), v["type"].as_str(), "{v}");
        assert_eq!(m.header("message_id"), v["id"].as_str(), "{v}");
        assert_eq!(m.header("delivery_mode"), Some("2"), "persistent");
        assert_eq!(m.header("tenant"), v["tenant"].as_str());
        assert_eq!(m.header("connection"), v["connection"].as_str());
        assert_eq!(m.header("ce_id"), v["id"].as_str());
        tributary_e2e::check_event_schema("change-event", v).unwrap();
    }
    let ids: HashSet<&str> = values(&story.events.received)
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), total, "every event once");
    let ends: Vec<&str> = story
        .statuses
        .received
        .iter()
        .filter_map(|m| m.header("routing_key"))
        .collect();
    assert!(ends.contains(&"status.run.completed"), "{ends:?}");
}
