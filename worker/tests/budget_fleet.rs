//! Rate budgets across a fleet: three worker processes share one provider app's budget
//! (kept in PostgreSQL) and never send more than it, while using most of it.
//!
//! Process-level tier: needs tansu and PostgreSQL (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use tributary_e2e::fleet::{completed_at, Fleet, HEADROOM, PAGE, R};
use tributary_e2e::rig::PipelineRig;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_never_exceed_the_app_budget_and_use_most_of_it() {
    let records = 100; // 10 pages of 10 per tenant
    let fleet = Fleet::start(WORKER, records).await;
    let workers = fleet.workers(3);
    let base = fleet.rig.lane.sandbox.base_url();
    let mut connections = Vec::new();
    for i in 0..20 {
        let tenant = format!("tenant{i:02}");
        let c = fleet.tenant(&tenant, &base).await;
        connections.push((tenant, c));
    }
    let mut statuses = fleet.rig.statuses();
    let runs = fleet.start_runs(&connections).await;
    completed_at(&mut statuses, &runs);

    let stats = fleet.rig.lane.control.stats().await.unwrap();
    assert_eq!(
        stats.data_requests,
        20 * (records / PAGE),
        "every tenant read every page once, none throttled and retried: {stats:?}"
    );
    assert_eq!(
        stats.over_budget, 0,
        "requests over the app's budget: {stats:?}"
    );
    // Each tenant's first run discovers its fields first: one more request on the budget.
    assert_eq!(
        stats.schema_requests, 20,
        "one discovery per tenant: {stats:?}"
    );
    let sent = stats.data_requests + stats.schema_requests;
    let span = (stats.last_budgeted_ms - stats.first_budgeted_ms) as f64 / 1000.0;
    let used = (sent - 1) as f64 / span / f64::from(R);
    eprintln!(
        "{sent} requests in {span:.2}s across 3 workers: {:.1}% of the budget of {R}/s, 0 over",
        used * 100.0
    );
    // At most 1/(1 + headroom) of the budget; a slot woken up too late is skipped.
    let most = 1.0 / (1.0 + HEADROOM);
    assert!(
        used >= most - 0.06,
        "used {:.1}% of the budget over the run",
        used * 100.0
    );
    assert!(used <= 1.0, "more than the budget: {:.1}%", used * 100.0);
    drop(workers);
}
