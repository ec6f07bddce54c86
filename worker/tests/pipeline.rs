//! The sync pipeline end to end: a tansu broker process, PostgreSQL and SQLite,
//! the sandbox provider and worker processes from the real binary.
//!
//! Process-level tier: needs tansu and PostgreSQL (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use tributary::domain::{ConnectionState, RunMode, RunStatus};
use tributary_e2e::broker::TopicReader;
use tributary_e2e::pipeline::{of_run, values, wait_run_end, Rig};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::stories::{broken_title_specs, Story};
use tributary_e2e::{fresh_postgres, fresh_sqlite};

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");
const LONG: Duration = Duration::from_secs(90);

/// First sync: N created; k changed and d removed: incremental gives exactly k
/// updated, the next full sync exactly d deleted; a replayed job adds no ids.
async fn lifecycle(backend: &'static str, url: String) {
    let n = 240;
    let rig = Rig::start(backend, url, WORKER, n).await;
    let worker = rig.worker(&[
        ("TRIBUTARY_SLICE_MAX_PAGES", "1".into()),
        ("RUST_LOG", "debug,rdkafka=info".into()),
    ]);
    let mut story = Story::new(&rig, backend, LONG);

    let first = story.first_full_sync(n).await;
    let created = of_run(&story.events.received, &first.run_id);
    let e = created[0];
    for field in [
        "id",
        "type",
        "op",
        "tenant",
        "connection",
        "provider",
        "model",
        "record_id",
        "data",
        "occurred_at",
        "sync_run",
        "schema_version",
    ] {
        assert!(
            !e[field].is_null(),
            "{backend}: envelope field {field}: {e}"
        );
    }
    assert_eq!(
        (e["op"].as_str(), e["type"].as_str(), e["model"].as_str()),
        (
            Some("created"),
            Some("crm.contact.created"),
            Some("crm.contact")
        )
    );
    for v in values(&story.events.received) {
        tributary_e2e::check_event_schema("change-event", v)
            .unwrap_or_else(|e| panic!("{backend}: {e}: {v}"));
    }
    for s in values(&story.statuses.received) {
        tributary_e2e::check_event_schema("status-event", s)
            .unwrap_or_else(|e| panic!("{backend}: {e}: {s}"));
    }

    let (_, total) = story.updates_then_deletes(n).await;
    for v in values(&story.events.received) {
        tributary_e2e::check_event_schema("change-event", v)
            .unwrap_or_else(|e| panic!("{backend}: {e}: {v}"));
    }

    story.replay_adds_nothing(&first, n, total).await;

    // No credential in plain text: not in the database, the worker's log, or any event.
    let dump = tributary_e2e::dump_database(&rig.lane.store).await;
    assert!(dump.contains("conn_"), "{backend}: the dump has content");
    let log = worker.log_text();
    let published: Vec<String> = values(&story.events.received)
        .into_iter()
        .chain(values(&story.statuses.received))
        .map(|v| v.to_string())
        .collect();
    let published = published.join("\n");
    assert!(
        rig.lane.control.stats().await.unwrap().refreshes >= 1,
        "{backend}: a token was issued and used"
    );
    for secret in [
        "sandbox-hubspot-refresh",
        "sandbox-client-secret",
        "sbx-at-",
    ] {
        assert!(
            !dump.contains(secret),
            "{backend}: the database holds {secret} in plain text"
        );
        assert!(!log.contains(secret), "{backend}: the log holds {secret}");
        assert!(
            !published.contains(secret),
            "{backend}: an event holds {secret}"
        );
    }
}

/// A full sync that fails halfway emits no delete; the next complete one does.
async fn failed_full_sync_never_deletes(backend: &'static str, url: String) {
    let rig = Rig::start(backend, url, WORKER, 300).await;
    let _worker = rig.worker(&[("TRIBUTARY_SLICE_MAX_PAGES", "2".into())]);
    let mut story = Story::new(&rig, backend, LONG);
    let runs = story.failed_full_sync_then_a_complete_one().await;
    assert_eq!(
        rig.lane
            .store
            .run(&runs.broken.run_id)
            .await
            .unwrap()
            .status,
        RunStatus::Failed
    );
}

/// A worker killed with SIGKILL mid-sync: a second worker finishes from the last
/// checkpoint; every record arrives; duplicates carry their original's id.
async fn killed_worker_is_resumed(backend: &'static str, url: String) {
    let n = 600;
    let rig = Rig::start(backend, url, WORKER, n).await;
    // Slow pages make the kill land mid-run.
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 150, "times": 0}]))
        .await
        .unwrap();
    let mut first_worker = rig.worker(&[("TRIBUTARY_SLICE_MAX_PAGES", "2".into())]);
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(LONG, "the first pages' events", |all| all.len() >= 150);
    first_worker.kill();
    let seen_before_kill = events.received.len();
    assert!(
        seen_before_kill < n as usize,
        "{backend}: the kill came before the end"
    );
    let _second = rig.worker(&[("TRIBUTARY_SLICE_MAX_PAGES", "2".into())]);
    let end = wait_run_end(&mut statuses, &job.run_id, Duration::from_secs(150));
    assert_eq!(end["type"], "run.completed", "{backend}: {end}");
    every_record_once_with_its_ids(&mut events, n, backend);
    // Resumed from the checkpoint, not from the start: at most the killed slice is read twice.
    let pages = n.div_ceil(100);
    let requests = rig.lane.control.stats().await.unwrap().by_resource["contacts"];
    assert!(
        requests <= pages + 2,
        "{backend}: {requests} page requests for {pages} pages"
    );
}

/// After a kill and a resume: every one of the `n` records arrives, created, and a
/// duplicate carries its original's id.
fn every_record_once_with_its_ids(events: &mut TopicReader, n: u64, backend: &str) {
    events.read_until(LONG, "every record", |all| {
        all.iter()
            .filter_map(|r| r.value.as_ref())
            .map(|v| v["record_id"].as_str().unwrap_or(""))
            .collect::<HashSet<_>>()
            .len()
            >= n as usize
    });
    let mut ids_per_record: HashMap<String, HashSet<String>> = HashMap::new();
    for v in values(&events.received) {
        assert_eq!(v["op"], "created", "{backend}: {v}");
        ids_per_record
            .entry(v["record_id"].as_str().unwrap().into())
            .or_default()
            .insert(v["id"].as_str().unwrap().into());
    }
    assert_eq!(
        ids_per_record.len(),
        n as usize,
        "{backend}: every record is downstream"
    );
    assert!(
        ids_per_record.values().all(|ids| ids.len() == 1),
        "{backend}: a duplicate has its original's id"
    );
}

/// SIGKILL while pages are in flight (read, mapped or being fetched ahead of the page
/// being published and committed): nothing is lost, and every duplicate the second
/// worker sends carries its original's id.
async fn killed_with_pages_in_flight(backend: &'static str, url: String) {
    let n = 3000;
    let rig = Rig::start(backend, url, WORKER, n).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 40, "times": 0}]))
        .await
        .unwrap();
    let ahead = [
        ("TRIBUTARY_PAGES_IN_FLIGHT", "4".to_string()),
        ("TRIBUTARY_SLICE_MAX_PAGES", "100".to_string()),
    ];
    let mut first_worker = rig.worker(&ahead);
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(LONG, "a few pages' events", |all| all.len() >= 500);
    first_worker.kill();
    let requested = rig.lane.control.stats().await.unwrap().by_resource["contacts"];
    let committed = rig.lane.store.run(&job.run_id).await.unwrap().counts.pages;
    assert!(
        (committed as u64) < requested,
        "{backend}: pages were in flight at the kill ({committed} committed, {requested} requested)"
    );
    let _second = rig.worker(&ahead);
    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{backend}: {end}");
    every_record_once_with_its_ids(&mut events, n, backend);
}

/// SIGTERM drains: the slice checkpoints, its continuation is enqueued, exit 0; a
/// new worker finishes the run.
async fn sigterm_drains(backend: &'static str, url: String) {
    // Twenty slow pages (about 2 s) so the signal, sent once the first page's events
    // are read, lands well before the last page even on a loaded machine.
    let n = 2000;
    let rig = Rig::start(backend, url, WORKER, n).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 100, "times": 0}]))
        .await
        .unwrap();
    let mut worker = rig.worker(&[("TRIBUTARY_SLICE_MAX_PAGES", "100".into())]);
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(LONG, "the first page", |all| !all.is_empty());
    assert_eq!(
        worker.terminate(),
        Some(0),
        "{backend}: exit 0 after draining:\n{}",
        worker.log_text()
    );
    let log = worker.log_text();
    assert!(
        log.contains("continuation enqueued"),
        "{backend}: the slice checkpointed:\n{log}"
    );
    let _next = rig.worker(&[]);
    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{backend}: {end}");
    assert_eq!(end["counts"]["created"], n, "{backend}: {end}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_postgres() {
    lifecycle("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_sqlite() {
    lifecycle("sqlite", fresh_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_full_sync_never_deletes_on_postgres() {
    failed_full_sync_never_deletes("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_full_sync_never_deletes_on_sqlite() {
    failed_full_sync_never_deletes("sqlite", fresh_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_is_resumed_on_postgres() {
    killed_worker_is_resumed("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_is_resumed_on_sqlite() {
    killed_worker_is_resumed("sqlite", fresh_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_with_pages_in_flight_on_postgres() {
    killed_with_pages_in_flight("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_with_pages_in_flight_on_sqlite() {
    killed_with_pages_in_flight("sqlite", fresh_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_on_postgres() {
    sigterm_drains("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_on_sqlite() {
    sigterm_drains("sqlite", fresh_sqlite()).await;
}

/// A record that fails its mapping goes to the dead-letter topic, is counted, does
/// not stop the sync, and is not swept as deleted later.
async fn dead_letters(backend: &'static str, url: String) {
    let rig = Rig::start(backend, url, WORKER, 120).await;
    let specs = broken_title_specs();
    let _worker = rig.worker(&[("TRIBUTARY_SPECS_DIR", specs.display().to_string())]);
    let mut story = Story::new(&rig, backend, LONG);
    let dead = story.two_syncs_with_dead_letters().await;
    let letter = dead.received[0].value.clone().unwrap();
    tributary_e2e::check_event_schema("dead-letter", &letter)
        .unwrap_or_else(|e| panic!("{backend}: {e}: {letter}"));
    assert!(
        letter["error"].as_str().unwrap().contains("/title"),
        "{backend}: {letter}"
    );
    assert_eq!(letter["record_id"], "50");
    assert_eq!(
        letter["raw"]["id"], "50",
        "{backend}: the raw record travels with the error"
    );
    assert!(letter["spec"].as_str().unwrap().ends_with("hubspot.yaml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_on_postgres() {
    dead_letters("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_on_sqlite() {
    dead_letters("sqlite", fresh_sqlite()).await;
}

/// A resync (urgent topic) is picked up ahead of a backlog of scheduled jobs.
#[tokio::test(flavor = "multi_thread")]
async fn a_resync_runs_ahead_of_a_backlog() {
    use tributary::bus::{Job, JobReason};
    use tributary::schedule::tick::job_message;
    let rig = Rig::start("sqlite", fresh_sqlite(), WORKER, 120).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 100, "times": 0}]))
        .await
        .unwrap();
    tributary::bus::kafka::ensure_pipeline_topics(&rig.broker.addr, &rig.lane.topics, 3)
        .await
        .unwrap();
    let mut statuses = rig.statuses();
    let mut backlog = Vec::new();
    for i in 0..20 {
        let id = rig.add_static_connection(&format!("backlog-{i}")).await;
        backlog.push(Job::new_run(
            "acme",
            &id,
            "contacts",
            RunMode::Full,
            JobReason::Schedule,
        ));
    }
    let messages: Vec<_> = backlog
        .iter()
        .map(|j| job_message(&rig.lane.topics.jobs(), j))
        .collect();
    rig.lane.publisher.publish_all(&messages).await.unwrap();
    let urgent_conn = rig.add_static_connection("urgent").await;
    let resync = Job::new_run(
        "acme",
        &urgent_conn,
        "contacts",
        RunMode::Full,
        JobReason::Resync,
    );
    rig.lane
        .publisher
        .publish_all(&[job_message(&rig.lane.topics.urgent_jobs(), &resync)])
        .await
        .unwrap();
    // The backlog is waiting before any worker exists; one job at a time.
    let _worker = rig.worker(&[("TRIBUTARY_WORKER_CONCURRENCY", "1".into())]);
    let end = wait_run_end(&mut statuses, &resync.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    let backlog_done_before = statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .take_while(|v| v["sync_run"] != resync.run_id.as_str() || v["type"] != "run.completed")
        .filter(|v| v["type"] == "run.completed")
        .count();
    assert!(
        backlog_done_before <= 2,
        "the resync waited for {backlog_done_before} of 20 scheduled jobs"
    );
}

/// `invalid_grant` moves the connection to needs_reauth with a status event within one
/// job; no further job runs for it; new credentials make it sync again.
async fn invalid_grant_needs_reauth(backend: &'static str, url: String) {
    use tributary::bus::{Job, JobReason};
    let rig = Rig::start(backend, url, WORKER, 50).await;
    let _worker = rig.worker(&[]);
    let mut statuses = rig.statuses();
    // The provider revokes the grant: the first refresh answers invalid_grant.
    reqwest::Client::new()
        .post(format!(
            "{}/_sandbox/oauth/revoke",
            rig.lane.sandbox.base_url()
        ))
        .send()
        .await
        .unwrap();
    let first = rig.job(RunMode::Full);
    rig.enqueue(&first).await;
    let end = wait_run_end(&mut statuses, &first.run_id, LONG);
    assert_eq!(end["type"], "run.failed", "{backend}: {end}");
    let flagged = statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .find(|v| v["type"] == "connection.needs_reauth")
        .cloned();
    let flagged = flagged.unwrap_or_else(|| panic!("{backend}: a needs_reauth status event"));
    assert!(
        flagged["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{backend}: {flagged}"
    );
    let conn = rig.stored_connection().await;
    assert_eq!(conn.state, ConnectionState::NeedsReauth, "{backend}");
    // No further job runs for it: a later job on the same partition (same tenant) proves it was handled.
    let blocked = rig.job(RunMode::Incremental);
    rig.enqueue(&blocked).await;
    let other = rig.add_static_connection("sentinel").await;
    let sentinel = Job::new_run(
        "acme",
        &other,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&sentinel).await;
    assert_eq!(
        wait_run_end(&mut statuses, &sentinel.run_id, LONG)["type"],
        "run.completed"
    );
    assert!(
        rig.lane.store.run(&blocked.run_id).await.is_err(),
        "{backend}: the blocked job did not run"
    );
    assert_eq!(
        rig.lane.control.stats().await.unwrap().invalid_grants,
        1,
        "{backend}: one attempt only"
    );
    // New credentials (what PUT /v1/connections/{id}/credentials does) and it syncs again.
    let fresh = serde_json::from_value(json!({"access_token": "sandbox-hubspot-token"})).unwrap();
    rig.lane
        .store
        .store_credentials(&rig.lane.connection, &fresh)
        .await
        .unwrap();
    rig.lane
        .store
        .set_connection_state(&rig.lane.connection, ConnectionState::Healthy, None)
        .await
        .unwrap();
    let again = rig.job(RunMode::Full);
    rig.enqueue(&again).await;
    let end = wait_run_end(&mut statuses, &again.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{backend}: {end}");
    assert_eq!(end["counts"]["created"], 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_needs_reauth_on_postgres() {
    invalid_grant_needs_reauth("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_needs_reauth_on_sqlite() {
    invalid_grant_needs_reauth("sqlite", fresh_sqlite()).await;
}

/// A job that must wait (a parked continuation's not-before time) gives its worker slot
/// back: with one slot, the job behind it on the same partition completes while it
/// waits, and the waiting job has not started.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_job_holds_no_worker_slot() {
    use tributary::bus::{Job, JobReason};
    let rig = Rig::start("sqlite", fresh_sqlite(), WORKER, 30).await;
    tributary::bus::kafka::ensure_pipeline_topics(&rig.broker.addr, &rig.lane.topics, 1)
        .await
        .unwrap();
    let mut statuses = rig.statuses();
    let mut parked = rig.job(RunMode::Full);
    parked.not_before = Some(chrono::Utc::now() + chrono::Duration::seconds(300));
    rig.enqueue(&parked).await;
    // The same tenant, another connection: the waiting job holds neither the slot nor the
    // tenant's turn.
    let other_conn = rig.add_static_connection("second").await;
    let other = Job::new_run(
        &rig.lane.tenant,
        &other_conn,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&other).await;
    let _worker = rig.worker(&[("TRIBUTARY_WORKER_CONCURRENCY", "1".into())]);
    let end = wait_run_end(&mut statuses, &other.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert!(
        !statuses
            .received
            .iter()
            .filter_map(|r| r.value.as_ref())
            .any(|v| v["sync_run"] == parked.run_id.as_str()),
        "the waiting job started before its time"
    );
}

/// A tenant with a backlog uses at most its share of a worker (half the slots by
/// default): another tenant's job behind four of its jobs on the same partition
/// completes before the second of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_backlog_leaves_room_for_other_tenants() {
    use tributary::bus::{Job, JobReason};
    let rig = Rig::start("sqlite", fresh_sqlite(), WORKER, 200).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 150, "times": 0}]))
        .await
        .unwrap();
    tributary::bus::kafka::ensure_pipeline_topics(&rig.broker.addr, &rig.lane.topics, 1)
        .await
        .unwrap();
    let mut statuses = rig.statuses();
    let mut backlog = Vec::new();
    for i in 0..4 {
        let id = rig.add_static_connection(&format!("backlog-{i}")).await;
        let job = Job::new_run(
            &rig.lane.tenant,
            &id,
            "contacts",
            RunMode::Full,
            JobReason::Schedule,
        );
        rig.enqueue(&job).await;
        backlog.push(job.run_id);
    }
    rig.lane.store.create_tenant("globex").await.unwrap();
    let other_conn = rig
        .static_connection("globex", "globex-contacts", &rig.lane.sandbox.base_url())
        .await;
    let other = Job::new_run(
        "globex",
        &other_conn,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&other).await;
    let _worker = rig.worker(&[("TRIBUTARY_WORKER_CONCURRENCY", "2".into())]);
    let end = wait_run_end(&mut statuses, &other.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    let backlog_done = statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .filter(|v| {
            v["type"] == "run.completed" && backlog.iter().any(|b| v["sync_run"] == b.as_str())
        })
        .count();
    assert!(
        backlog_done <= 1,
        "the other tenant's job waited for {backlog_done} of the backlog's 4 runs"
    );
}

/// A throttle longer than the park threshold parks the run (no slot held), the
/// connection shows `rate_limited`; each comeback is the circuit's one probe; when the
/// provider answers again the run completes with every record exactly once and the
/// connection is healthy.
#[tokio::test(flavor = "multi_thread")]
async fn a_parked_run_resumes_and_completes() {
    let n = 120;
    let rig = Rig::start("sqlite", fresh_sqlite(), WORKER, n).await;
    rig.lane
        .control
        .faults(json!([{"kind": "throttle", "times": 3, "wait_seconds": 1}]))
        .await
        .unwrap();
    let _worker = rig.worker(&[
        ("TRIBUTARY_PARK_AFTER_SECONDS", "0.5".into()),
        ("TRIBUTARY_BREAKER_OPEN_SECONDS", "0.5".into()),
    ]);
    let mut statuses = rig.statuses();
    let mut events = rig.events();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], n, "{end}");
    let parked: Vec<&Value> = of_run(&statuses.received, &job.run_id)
        .into_iter()
        .filter(|v| v["type"] == "connection.rate_limited")
        .collect();
    assert_eq!(parked.len(), 3, "one park per throttle: {parked:?}");
    for p in &parked {
        tributary_e2e::check_event_schema("status-event", p).unwrap();
        assert!(p["reason"].as_str().unwrap().contains("throttled"), "{p}");
    }
    events.read_until(LONG, "every record", |all| all.len() >= n as usize);
    let ids: HashSet<&str> = values(&events.received)
        .iter()
        .map(|v| v["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), n as usize);
    let conn = rig.stored_connection().await;
    assert_eq!(
        (conn.state, conn.failure_streak, conn.blocked_until),
        (ConnectionState::Healthy, 0, None)
    );
    assert_eq!(rig.lane.control.stats().await.unwrap().throttled, 3);
}
