//! Fairness under throttling: a tenant whose provider answers 429 to everything opens its
//! circuit, parks (connection `rate_limited`, `connection.rate_limited` event) and does not
//! slow the other tenants of the same workers and app budget.
//!
//! Process-level tier: needs tansu and PostgreSQL (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use chrono::{DateTime, Utc};
use tributary_e2e::check_event_schema;
use tributary_e2e::fleet::{completed_at, throttling_provider, Fleet, LONG};
use tributary_e2e::rig::PipelineRig;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_throttled_on_everything_does_not_slow_the_others() {
    let records = 190; // 19 requests per tenant, 190 per phase: about 10 s at the budget
    let fleet = Fleet::start(WORKER, records).await;
    let workers = fleet.workers(3);
    let base = fleet.rig.lane.sandbox.base_url();
    let (bad_sandbox, bad_control) = throttling_provider().await;
    let mut statuses = fleet.rig.statuses();

    // Warm up every worker (specs loaded, pools and topics ready) so both timed phases start alike.
    let mut warm = Vec::new();
    for i in 0..3 {
        let tenant = format!("warm{i}");
        let c = fleet.tenant(&tenant, &base).await;
        warm.push((tenant, c));
    }
    let runs = fleet.start_runs(&warm).await;
    completed_at(&mut statuses, &runs);

    // Without the throttled tenant.
    let mut calm = Vec::new();
    for i in 0..10 {
        let tenant = format!("calm{i:02}");
        let c = fleet.tenant(&tenant, &base).await;
        calm.push((tenant, c));
    }
    let t0 = Utc::now();
    let runs = fleet.start_runs(&calm).await;
    let alone = (completed_at(&mut statuses, &runs) - t0).as_seconds_f64();

    // The same work for ten other tenants, beside one whose provider throttles everything.
    let mut busy = Vec::new();
    for i in 0..10 {
        let tenant = format!("busy{i:02}");
        let c = fleet.tenant(&tenant, &base).await;
        busy.push((tenant, c));
    }
    let bad = fleet.tenant("throttled", &bad_sandbox.base_url()).await;
    let t1 = Utc::now();
    let bad_run = fleet
        .start_runs(&[("throttled".to_string(), bad.clone())])
        .await;
    let runs = fleet.start_runs(&busy).await;
    let beside = (completed_at(&mut statuses, &runs) - t1).as_seconds_f64();
    eprintln!(
        "10 tenants finished in {alone:.2}s alone and in {beside:.2}s beside a throttled tenant ({:+.1}%)",
        (beside / alone - 1.0) * 100.0
    );
    assert!(
        beside <= alone * 1.10,
        "the throttled tenant slowed the others by more than 10%: {alone:.2}s -> {beside:.2}s"
    );
    let stats = fleet.rig.lane.control.stats().await.unwrap();
    assert_eq!(stats.over_budget, 0, "{stats:?}");

    // The throttled connection is parked behind its open circuit, visibly.
    statuses.read_until(LONG, "connection.rate_limited", |all| {
        all.iter().any(|r| {
            r.value.as_ref().is_some_and(|v| {
                v["type"] == "connection.rate_limited" && v["connection"] == bad.as_str()
            })
        })
    });
    let event = statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .find(|v| v["type"] == "connection.rate_limited")
        .unwrap()
        .clone();
    check_event_schema("status-event", &event).unwrap();
    assert_eq!(event["sync_run"], bad_run[0].run_id.as_str());
    let resume: DateTime<Utc> = event["resume_at"].as_str().unwrap().parse().unwrap();
    assert!(
        resume > Utc::now() + chrono::Duration::seconds(60),
        "{event}"
    );
    let conn = fleet.rig.lane.store.connection(&bad).await.unwrap();
    assert_eq!(conn.state, tributary::domain::ConnectionState::RateLimited);
    assert_eq!(
        conn.blocked_until.unwrap().timestamp_millis(),
        resume.timestamp_millis()
    );
    // It stopped asking: 3 throttles in a row opened its circuit.
    let asked = bad_control.stats().await.unwrap().data_requests;
    assert_eq!(asked, 3, "requests to the throttling provider");
    drop(workers);
}
