//! OAuth across the fleet: one refresh per expiry for many concurrent jobs over
//! several worker processes; a rotated refresh token survives a crash right after
//! the token endpoint answered.
//!
//! Process-level tier: needs tansu and PostgreSQL (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use std::time::{Duration, Instant};

use serde_json::json;
use tributary::domain::RunMode;
use tributary_e2e::pipeline::{wait_run_end, Rig};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::{fresh_postgres, fresh_sqlite};

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");
const LONG: Duration = Duration::from_secs(120);

/// Wait (polling the sandbox's counters) until `check` holds.
async fn until(rig: &Rig, what: &str, check: impl Fn(&tributary_sandbox::Stats) -> bool) {
    let deadline = Instant::now() + LONG;
    loop {
        if check(&rig.lane.control.stats().await.unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_refresh_per_expiry(backend: &'static str, url: String) {
    let rig = Rig::start(backend, url, WORKER, 120).await;
    let env = [("TRIBUTARY_SLICE_MAX_PAGES", "100".to_string())];
    let _workers = [rig.worker(&env), rig.worker(&env), rig.worker(&env)];
    let mut statuses = rig.statuses();
    let jobs: Vec<_> = (0..50).map(|_| rig.job(RunMode::Full)).collect();
    for j in &jobs {
        rig.enqueue(j).await;
    }
    // Halfway through, every access token the provider issued expires.
    until(&rig, "some runs", |s| {
        s.by_resource.get("contacts").copied().unwrap_or(0) >= 40
    })
    .await;
    let expired_after = rig.lane.control.stats().await.unwrap().refreshes;
    reqwest::Client::new()
        .post(format!(
            "{}/_sandbox/oauth/expire",
            rig.lane.sandbox.base_url()
        ))
        .send()
        .await
        .unwrap();
    for j in &jobs {
        let end = wait_run_end(&mut statuses, &j.run_id, LONG);
        assert_eq!(
            end["type"], "run.completed",
            "{backend}: no job fails: {end}"
        );
    }
    let stats = rig.lane.control.stats().await.unwrap();
    assert_eq!(
        expired_after, 1,
        "{backend}: one refresh for the first token, whatever the concurrency"
    );
    assert_eq!(
        stats.refreshes, 2,
        "{backend}: exactly one refresh per expiry: {stats:?}"
    );
    assert_eq!(stats.invalid_grants, 0);
}

async fn rotated_token_survives_a_crash(backend: &'static str, url: String) {
    let rig = Rig::start_with(backend, url, WORKER, 120, |p| {
        p.oauth.as_mut().unwrap().rotate_refresh_tokens = true;
    })
    .await;
    // The first page answers slowly: the worker is killed after the token endpoint answered.
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 5000, "times": 1}]))
        .await
        .unwrap();
    let mut first = rig.worker(&[]);
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    until(&rig, "the refresh", |s| s.refreshes == 1).await;
    until(&rig, "the first page request", |s| s.data_requests >= 1).await;
    first.kill();
    let stored = rig.stored_connection().await.credentials;
    let rotated = stored.get("refresh_token").unwrap().to_string();
    assert_ne!(
        rotated, "sandbox-hubspot-refresh",
        "{backend}: the rotated refresh token is in the store"
    );
    assert!(stored.get("access_token").is_some());
    // Force the next job to refresh again: it must use the rotated token.
    reqwest::Client::new()
        .post(format!(
            "{}/_sandbox/oauth/expire",
            rig.lane.sandbox.base_url()
        ))
        .send()
        .await
        .unwrap();
    let _second = rig.worker(&[]);
    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{backend}: {end}");
    let stats = rig.lane.control.stats().await.unwrap();
    assert_eq!(
        (stats.refreshes, stats.invalid_grants),
        (2, 0),
        "{backend}: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_refresh_per_expiry_on_postgres() {
    one_refresh_per_expiry("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_refresh_per_expiry_on_sqlite() {
    one_refresh_per_expiry("sqlite", fresh_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_token_survives_a_crash_on_postgres() {
    rotated_token_survives_a_crash("postgres", fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_token_survives_a_crash_on_sqlite() {
    rotated_token_survives_a_crash("sqlite", fresh_sqlite()).await;
}
