//! The override hierarchy in the pipeline, in one process (mock cluster, SQLite, the
//! HubSpot-shaped sandbox, the real consumer loop): an environment overlay changes `title`
//! for every HubSpot connection; a connection's own override changes it again for that
//! connection only, whose next full run emits `updated` events naming `title` while the
//! other connection's emits nothing.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary_e2e::broker::{end_offsets, Received, TopicReader};
use tributary_e2e::check_event_schema;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{oauth_contacts_connection, of_run, wait_run_end};
use tributary_e2e::rig::PipelineRig;

const WAIT: Duration = Duration::from_secs(60);
const CONTACTS: u64 = 25;

/// An overrides directory holding this environment's HubSpot overlay.
fn environment_overlay() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tributary-overlay-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hubspot.yaml"),
        "resources:\n  contacts:\n    fields:\n      title: \"'Env ' & $string(id)\"\n",
    )
    .unwrap();
    dir
}

/// Run a full sync of `connection` to its end; its change events and its end.
async fn full_run(
    rig: &InProcess,
    tenant: &str,
    connection: &str,
    events: &mut TopicReader,
    statuses: &mut TopicReader,
) -> (Vec<Value>, Value) {
    let lane = rig.lane();
    let topic = lane.topics.model("crm.contact");
    let before: i64 = end_offsets(&lane.brokers, &topic).iter().sum();
    let job = Job::new_run(
        tenant,
        connection,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&job).await;
    let end = wait_run_end(statuses, &job.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    // A run's events are acknowledged before its end is published: the topic's growth
    // since the run started is exactly what it emitted (no other run was going).
    let published = (end_offsets(&lane.brokers, &topic).iter().sum::<i64>() - before) as usize;
    let of_this = |all: &[Received]| of_run(all, &job.run_id).len();
    events.read_until(WAIT, "the run's events", |all| of_this(all) == published);
    let emitted = of_run(&events.received, &job.run_id)
        .into_iter()
        .cloned()
        .collect();
    (emitted, end)
}

fn titles_are(events: &[Value], prefix: &str) {
    for e in events {
        check_event_schema("change-event", e).unwrap_or_else(|err| panic!("{err}: {e}"));
        let id = e["record_id"].as_str().unwrap();
        assert_eq!(e["data"]["title"], format!("{prefix} {id}"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_then_connection_overrides_change_only_what_they_cover() {
    let rig = InProcess::start(CONTACTS).await;
    let lane = &rig.lane;
    let other = oauth_contacts_connection(&lane.store, "beta", &lane.sandbox).await;
    let overlay = environment_overlay();
    let _worker = rig.worker(|s| s.overrides_dir = Some(overlay.clone()));
    let (mut events, mut statuses) = (rig.events(), rig.statuses());

    // The environment's overlay applies to every HubSpot connection.
    for (tenant, conn) in [("acme", &lane.connection), ("beta", &other)] {
        let (emitted, _) = full_run(&rig, tenant, conn, &mut events, &mut statuses).await;
        assert_eq!(emitted.len() as u64, CONTACTS, "{conn}");
        assert!(emitted.iter().all(|e| e["op"] == "created"));
        titles_are(&emitted, "Env");
    }

    // acme's connection gets its own title; beta's keeps the environment's.
    let layer = json!({"resources": {"contacts": {"fields": {"title": "'Conn ' & $string(id)"}}}});
    let version = lane
        .store
        .set_connection_overrides(&lane.connection, Some(&layer))
        .await
        .unwrap();
    assert_eq!(version, 1);

    let (emitted, end) = full_run(&rig, "acme", &lane.connection, &mut events, &mut statuses).await;
    assert_eq!(emitted.len() as u64, CONTACTS, "{end}");
    for e in &emitted {
        assert_eq!(e["op"], "updated", "{e}");
        assert_eq!(e["changed_fields"], json!(["title"]), "{e}");
    }
    titles_are(&emitted, "Conn");
    assert_eq!(end["counts"]["updated"], CONTACTS, "{end}");

    let (emitted, end) = full_run(&rig, "beta", &other, &mut events, &mut statuses).await;
    assert!(emitted.is_empty(), "nothing changed for beta: {emitted:?}");
    assert_eq!(end["counts"]["updated"], 0, "{end}");
    assert_eq!(end["counts"]["created"], 0, "{end}");
    std::fs::remove_dir_all(&overlay).unwrap();
}
